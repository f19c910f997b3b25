"""convgemm for PyTorch: convgemm.nn.Conv2d, a drop-in torch.nn.Conv2d whose forward and backward run in the
convgemm library (im2col + SGEMM) through its C ABI, over ctypes.

The shared library is looked for, in order: at $CONVGEMM_LIBRARY (the path of libconvgemm.so.0), next to this
package's files, in the source tree's build/lib/, then through the dynamic loader's search path (an installed
convgemm). convgemm.library_path() says which one was loaded.
"""

from convgemm import nn
from convgemm._capi import ConvgemmError, library_path, library_version, runtime_info

__all__ = ["ConvgemmError", "library_path", "library_version", "nn", "runtime_info"]
