"""Test-session setup.

The GPU path (``fastopt.drivers.cuda``) is tested in Numba's CUDA simulator, which must be
switched on before numba is first imported. On a machine with a GPU, run the CUDA tests
for real with ``FASTOPT_TEST_GPU=1 python -m pytest tests/test_cuda*.py``.
"""

import os

if os.environ.get("FASTOPT_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
