"""Test-session setup.

The GPU path (``fastopt.drivers.cuda``) is tested in Numba's CUDA simulator, which must be
switched on before numba is first imported. On a machine with a GPU, run the CUDA tests
for real with ``FASTOPT_TEST_GPU=1 python -m pytest tests/test_cuda*.py``.

Where the simulator is more permissive than a GPU, it is made as strict here, so that CI
sees what a GPU would refuse (each difference was found on an H200): a device array takes
no ``[...]`` assignment.
"""

import importlib.util
import os

if os.environ.get("FASTOPT_TEST_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def _strict_simulator() -> None:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    setitem = FakeCUDAArray.__setitem__

    def __setitem__(self, idx, val):  # noqa: N807 - the method it stands in for
        keys = idx if isinstance(idx, tuple) else (idx,)
        if any(k is Ellipsis for k in keys):  # numba-cuda's DeviceNDArray: TypeError
            raise TypeError("a numba-cuda device array takes no [...] assignment on a GPU; "
                            "use copy_to_device")
        return setitem(self, idx, val)

    FakeCUDAArray.__setitem__ = __setitem__


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" and importlib.util.find_spec("numba_cuda"):
    _strict_simulator()


def _hypothesis_profiles() -> None:
    """The fuzzer's (tests/test_fuzz.py) runs: ``fuzz-ci``, bounded and derandomised (the
    same cases every run: the test command), and ``fuzz-long`` (random, 2,000 cases per
    entry point): ``python -m pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long``."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    slow = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("fuzz-ci", max_examples=150, deadline=None, derandomize=True,
                              suppress_health_check=slow, print_blob=True)
    settings.register_profile("fuzz-long", max_examples=2000, deadline=None,
                              suppress_health_check=slow, print_blob=True)
    settings.load_profile("fuzz-ci")


_hypothesis_profiles()
