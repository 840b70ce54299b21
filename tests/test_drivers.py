"""Each driver keeps the contract written in ``fastopt.drivers.interface``: every member,
with the protocol's parameter names, and its ``ON_DEVICE`` flag saying which protocol."""

from __future__ import annotations

import inspect

import pytest
from cuda_support import needs_numba_cuda

from fastopt.drivers import cpu, interface


def _members(protocol: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object,) or klass.__name__ in ("Protocol", "Generic"):
            continue
        out.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
        out.update({k: None for k in getattr(klass, "__annotations__", {})})
    return out


def _check(module, protocol) -> None:
    for name, member in _members(protocol).items():
        assert hasattr(module, name), f"{module.__name__} lacks {name} ({protocol.__name__})"
        if inspect.isfunction(member):
            want = [p for p in inspect.signature(member).parameters if p != "self"]
            params = inspect.signature(getattr(module, name)).parameters
            got = list(params)
            # the protocol's parameters first; a driver may add optional ones after them
            assert got[:len(want)] == want, (
                f"{module.__name__}.{name}{tuple(got)}: the protocol has {want}")
            extra = [params[p] for p in got[len(want):]]
            assert all(p.default is not inspect.Parameter.empty for p in extra), (
                f"{module.__name__}.{name} adds required parameters {got[len(want):]}")


def test_the_cpu_driver_is_a_host_driver():
    assert cpu.ON_DEVICE is False
    _check(cpu, interface.HostDriver)


@needs_numba_cuda
def test_the_cuda_driver_is_a_device_driver():
    from fastopt.drivers import cuda_driver

    cuda = cuda_driver()
    assert cuda.ON_DEVICE is True
    _check(cuda, interface.DeviceDriver)


def test_a_missing_member_is_caught():
    class Fake:
        ON_DEVICE = False

    with pytest.raises(AssertionError, match="lacks"):
        _check(Fake, interface.HostDriver)
