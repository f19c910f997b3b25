"""The ctypes binding of convgemm's C ABI (include/convgemm/convgemm.h): loading the library, the structs, the
status-to-exception translation, and Conv2dPlan, which owns one convgemm_conv2d_plan. No torch here: tensors
arrive as (data pointer, shape) pairs, so nothing is copied on the way in."""

import ctypes
import os
from pathlib import Path

# The C ABI these declarations mirror. ctypes cannot check struct layouts or signatures against the header, so
# the binding refuses any other major.minor: while the major version is 0, a minor release may change them.
ABI_VERSION = (0, 2)

_SONAME = "libconvgemm.so.0"


class ConvgemmError(RuntimeError):
    """convgemm reported CONVGEMM_INTERNAL_ERROR (or a status this binding does not know)."""


def _candidates():
    explicit = os.environ.get("CONVGEMM_LIBRARY")
    if explicit:
        return [explicit]  # when set, it is the only place looked at: a wrong path is an error, not a fallback
    package = Path(__file__).resolve().parent
    source_root = package.parents[2]  # lib/python/convgemm -> the repository
    return [str(package / _SONAME), str(source_root / "build" / "lib" / _SONAME), _SONAME]


def _load():
    tried = []
    for candidate in _candidates():
        if os.sep in candidate and not os.path.exists(candidate):
            tried.append(f"{candidate} (no such file)")
            continue
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError as error:
            tried.append(f"{candidate} ({error})")
    raise ImportError("convgemm: cannot load the shared library; set CONVGEMM_LIBRARY to the path of "
                      f"{_SONAME}. Tried: " + "; ".join(tried))


_lib, _path = _load()


class _Params(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "batch", "in_channels", "in_height", "in_width",
        "out_channels", "kernel_height", "kernel_width",
        "stride_height", "stride_width",
        "pad_top", "pad_bottom", "pad_left", "pad_right",
        "dilation_height", "dilation_width",
        "groups")] + [("has_bias", ctypes.c_int32)]


class _Tensor(ctypes.Structure):  # convgemm_tensor and convgemm_const_tensor: the same layout
    _fields_ = [("data", ctypes.c_void_p), ("dims", ctypes.c_int64 * 4)]


class _BuildInfo(ctypes.Structure):
    _fields_ = [("version", ctypes.c_char_p), ("blas_vendor", ctypes.c_char_p), ("blas_config", ctypes.c_char_p),
                ("blas_kernel", ctypes.c_char_p), ("tbb_version", ctypes.c_char_p),
                ("default_threads", ctypes.c_int32), ("cpu_has_avx512", ctypes.c_int32)]


_Status = ctypes.c_int
_Plan = ctypes.c_void_p
_int64_p = ctypes.POINTER(ctypes.c_int64)


def _declare(name, restype, *argtypes):
    function = getattr(_lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


_version = _declare("convgemm_version", None, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                    ctypes.POINTER(ctypes.c_int))
_last_error = _declare("convgemm_last_error", ctypes.c_char_p)
_get_build_info = _declare("convgemm_get_build_info", ctypes.c_int, ctypes.POINTER(_BuildInfo))
_conv_gemm_kernel = _declare("convgemm_conv_gemm_kernel", ctypes.c_char_p)
_params_init = _declare("convgemm_conv2d_params_init", _Status, ctypes.POINTER(_Params))
_set_same_padding = _declare("convgemm_conv2d_params_set_same_padding", _Status, ctypes.POINTER(_Params))
_plan_create = _declare("convgemm_conv2d_plan_create", _Status, ctypes.POINTER(_Params), ctypes.c_int32,
                        ctypes.POINTER(_Plan))
_plan_destroy = _declare("convgemm_conv2d_plan_destroy", None, _Plan)
_output_dims = _declare("convgemm_conv2d_output_dims", _Status, _Plan, _int64_p)
_forward = _declare("convgemm_conv2d_forward", _Status, _Plan, _Tensor, _Tensor, ctypes.c_void_p, ctypes.c_int64,
                    _Tensor, ctypes.c_void_p, ctypes.c_size_t)
_forward_relu = _declare("convgemm_conv2d_forward_relu", _Status, _Plan, _Tensor, _Tensor, ctypes.c_void_p,
                         ctypes.c_int64, _Tensor, ctypes.c_void_p, ctypes.c_size_t)
_backward_data = _declare("convgemm_conv2d_backward_data", _Status, _Plan, _Tensor, _Tensor, _Tensor,
                          ctypes.c_void_p, ctypes.c_size_t)
_backward_weights = _declare("convgemm_conv2d_backward_weights", _Status, _Plan, _Tensor, _Tensor, _Tensor,
                             ctypes.c_int32, ctypes.c_void_p, ctypes.c_size_t)
_backward_bias = _declare("convgemm_conv2d_backward_bias", _Status, _Plan, _Tensor, ctypes.c_void_p, ctypes.c_int64,
                          ctypes.c_int32)

_SUCCESS, _INVALID_ARGUMENT, _UNSUPPORTED, _OUT_OF_MEMORY = 0, 1, 2, 3


def _check(status):
    """Raises the Python exception for a convgemm_status; the message is convgemm_last_error() of this thread."""
    if status == _SUCCESS:
        return
    message = _last_error().decode(errors="replace")
    if status in (_INVALID_ARGUMENT, _UNSUPPORTED):
        raise ValueError(message)
    if status == _OUT_OF_MEMORY:
        raise MemoryError(message)
    raise ConvgemmError(message)


def library_path():
    """The path (or soname) the shared library was loaded from."""
    return _path


def library_version():
    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    _version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return major.value, minor.value, patch.value


def runtime_info():
    """What the loaded library runs on, as a dict: its version, the BLAS (vendor, configuration, the CPU kernel set
    OpenBLAS chose), the kernels of the convolutions' GEMMs, TBB's version, the default thread count and whether
    the CPU has AVX-512. Worth logging next to any timing."""
    info = _BuildInfo()
    _check(_get_build_info(ctypes.byref(info)))
    text = {name: getattr(info, name).decode() for name in
            ("version", "blas_vendor", "blas_config", "blas_kernel", "tbb_version")}
    return {**text, "conv_gemm_kernel": _conv_gemm_kernel().decode(), "default_threads": info.default_threads,
            "cpu_has_avx512": bool(info.cpu_has_avx512)}


if library_version()[:2] != ABI_VERSION:
    raise ImportError(f"convgemm: {_path} is version {library_version()}, these bindings are for "
                      f"{ABI_VERSION[0]}.{ABI_VERSION[1]}.x")


def tensor(data_ptr, shape):
    """The C view of caller memory: a pointer and the shape the caller claims (the library checks it)."""
    return _Tensor(data_ptr, (ctypes.c_int64 * 4)(*shape))


def same_padding(in_size, kernel, dilation):
    """(pad_top, pad_bottom, pad_left, pad_right) of "same" at stride 1, as the library defines it: a total of
    dilation*(kernel-1), the odd pixel at the bottom/right (as torch's padding='same')."""
    params = _Params()
    _check(_params_init(ctypes.byref(params)))
    params.in_height, params.in_width = in_size
    params.kernel_height, params.kernel_width = kernel
    params.dilation_height, params.dilation_width = dilation
    _check(_set_same_padding(ctypes.byref(params)))
    return params.pad_top, params.pad_bottom, params.pad_left, params.pad_right


class Conv2dPlan:
    """One convgemm_conv2d_plan: the validated problem, its output shape, and the calls. Usable from several
    threads at once (the library gives each call its own workspace); the calls release the GIL (ctypes.CDLL)."""

    def __init__(self, input_shape, weight_shape, stride, padding, dilation, groups, has_bias, threads):
        params = _Params()
        _check(_params_init(ctypes.byref(params)))
        params.batch, params.in_channels, params.in_height, params.in_width = input_shape
        params.out_channels, _, params.kernel_height, params.kernel_width = weight_shape
        params.stride_height, params.stride_width = stride
        params.pad_top, params.pad_bottom, params.pad_left, params.pad_right = padding
        params.dilation_height, params.dilation_width = dilation
        params.groups = groups
        params.has_bias = int(has_bias)
        handle = _Plan()
        _check(_plan_create(ctypes.byref(params), threads, ctypes.byref(handle)))
        self._handle = handle
        self._destroy = _plan_destroy  # kept here: module globals may already be gone when __del__ runs at exit
        dims = (ctypes.c_int64 * 4)()
        _check(_output_dims(handle, dims))
        self.input_shape = tuple(input_shape)
        self.weight_shape = tuple(weight_shape)
        self.output_shape = tuple(dims)
        self.has_bias = has_bias

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle:
            self._destroy(handle)

    def __copy__(self):
        return self  # immutable, and owning its handle: copies share it

    def __deepcopy__(self, memo):
        return self

    # Each call takes data pointers of contiguous float32 buffers; the library checks every shape, writes the
    # whole output, and writes nothing when it reports an error. Gradients overwrite (autograd accumulates).
    def forward(self, input_ptr, weight_ptr, bias_ptr, output_ptr, relu=False):
        """relu: max(y, 0) applied in the GEMM's epilogue (convgemm_conv2d_forward_relu)."""
        _check((_forward_relu if relu else _forward)(
            self._handle, tensor(input_ptr, self.input_shape), tensor(weight_ptr, self.weight_shape), bias_ptr,
            self.weight_shape[0] if self.has_bias else 0, tensor(output_ptr, self.output_shape), None, 0))

    def backward_data(self, output_grad_ptr, weight_ptr, input_grad_ptr):
        _check(_backward_data(self._handle, tensor(output_grad_ptr, self.output_shape),
                              tensor(weight_ptr, self.weight_shape), tensor(input_grad_ptr, self.input_shape),
                              None, 0))

    def backward_weights(self, input_ptr, output_grad_ptr, weight_grad_ptr):
        _check(_backward_weights(self._handle, tensor(input_ptr, self.input_shape),
                                 tensor(output_grad_ptr, self.output_shape),
                                 tensor(weight_grad_ptr, self.weight_shape), 0, None, 0))

    def backward_bias(self, output_grad_ptr, bias_grad_ptr):
        _check(_backward_bias(self._handle, tensor(output_grad_ptr, self.output_shape), bias_grad_ptr,
                              self.weight_shape[0], 0))
