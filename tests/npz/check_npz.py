# Reads the .npz that npz_writer writes with Debian's numpy (run as /usr/bin/python3, the interpreter that has it)
# and checks every key, dtype, shape and value: the export opens in numpy without convgemm.
# Usage: /usr/bin/python3 check_npz.py NPZ_WRITER OUTPUT_DIRECTORY
import os
import subprocess
import sys

import numpy

writer, directory = sys.argv[1], sys.argv[2]
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, "export-%d.npz" % os.getpid())
subprocess.run([writer, path], check=True)
try:
    with numpy.load(path) as archive:
        expected = {
            "0.weight": ((4, 2, 3, 3), 0.0),
            "0.bias": ((4,), 0.5),
            "4.weight": ((3, 36), 4.0),
            "4.bias": ((3,), 4.5),
        }
        assert sorted(archive.files) == sorted(expected), archive.files
        for name, (shape, offset) in expected.items():
            array = archive[name]
            assert array.dtype == numpy.float32, (name, array.dtype)
            assert array.shape == shape, (name, array.shape)
            assert array.flags["C_CONTIGUOUS"], name
            want = (numpy.float32(offset) + numpy.arange(array.size, dtype=numpy.float32) / numpy.float32(1000))
            assert numpy.array_equal(array.ravel(), want.astype(numpy.float32)), name
    print("npz: %d arrays read back by numpy %s" % (len(expected), numpy.__version__))
finally:
    os.remove(path)
