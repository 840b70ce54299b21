"""How fastopt compiles its kernels.

The element-wise equations (``fastopt.rules``) and the counter-based generator
(``fastopt.philox``) are plain Python functions. A backend turns them into machine code by
*binding*: :func:`bind` rebuilds a function with some of its global names pointing at
compiled helpers, and the backend's decorator compiles the result. The CPU driver binds the
same loop template to each rule; a CUDA driver binds the same rules to its kernels. So each
equation exists once.

Compilation is lazy (nothing at import) and cached on disk (``cache=True``). Numba keys its
cache on the source file of the compiled function only, so :func:`source_tag` folds the
sources of everything bound into the function's name: editing a rule can never load a stale
kernel. Where no cache directory is writable, numba raises at decoration time; we fall back
to an uncached kernel instead of failing (``docs/numba.md``).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit

#: Options for every CPU kernel. fastmath stays off: it breaks NaN checks and bitwise
#: reproducibility and buys nothing in a bandwidth-bound loop. error_model="numpy" lets a
#: serial loop vectorise (the default python model adds a divide-by-zero check per element).
CPU_OPTIONS: dict[str, Any] = {"error_model": "numpy", "fastmath": False}

_cache_warned = False


def device(fn: Callable) -> Callable:
    """Mark a plain function as backend-neutral device code (a rule, a helper, the RNG).

    The function is returned unchanged; backends compile it with :func:`compile_tree`.
    """
    fn.__fastopt_device__ = True
    return fn


def compile_tree(fn: Callable, compile_one: Callable[[Callable], Callable]) -> Callable:
    """Compile ``fn`` with ``compile_one`` after compiling every device function it calls."""
    deps = {}
    for name in fn.__code__.co_names:
        obj = fn.__globals__.get(name)
        if getattr(obj, "__fastopt_device__", False):
            deps[name] = compile_tree(obj, compile_one)
    return compile_one(bind(fn, **deps) if deps else fn)


def bind(fn: Callable, name: str | None = None, **globals_: Any) -> types.FunctionType:
    """Return a copy of ``fn`` whose global names in ``globals_`` point at new objects."""
    namespace = dict(fn.__globals__)
    namespace.update(globals_)
    new = types.FunctionType(fn.__code__, namespace, name or fn.__name__, fn.__defaults__,
                             fn.__closure__)
    new.__qualname__ = name or fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    return new


def source_tag(*modules: types.ModuleType) -> str:
    """A short hash of the source of ``modules`` (packages: every ``.py`` file in them)."""
    paths: set[Path] = set()
    for mod in modules:
        path = Path(mod.__file__)
        paths.update(path.parent.glob("*.py") if path.name == "__init__.py" else [path])
    h = hashlib.sha1()
    for path in sorted(paths):
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


def cpu_jit(fn: Callable, *, parallel: bool = False, cache: bool = True) -> Callable:
    """``numba.njit`` with fastopt's options, cached where a cache directory is writable."""
    global _cache_warned
    if cache:
        try:
            return njit(parallel=parallel, cache=True, **CPU_OPTIONS)(fn)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            if not _cache_warned:
                warnings.warn(
                    f"fastopt: kernels will be compiled without a disk cache ({exc}); set "
                    "NUMBA_CACHE_DIR to a writable directory to keep them between runs.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                _cache_warned = True
    return njit(parallel=parallel, cache=False, **CPU_OPTIONS)(fn)


def device_function(fn: Callable) -> Callable:
    """Compile a plain element-wise helper for the CPU (inlined by LLVM into the loops)."""
    return njit(**CPU_OPTIONS)(fn)


#: Seconds a kernel's first call may take before fastopt says it is compiling.
COMPILE_NOTICE_AFTER = 2.0


def announce_compile(dispatcher: Any, what: str) -> Callable:
    """``dispatcher`` as is once it holds a compiled or cached version; before that, a
    wrapper that calls it and, if the call is still running after
    :data:`COMPILE_NOTICE_AFTER` seconds (compiling, not loading from the disk cache),
    says on stderr what is being compiled, and how long it took when done."""
    if dispatcher.overloads:
        return dispatcher

    def first_call(*args: Any) -> Any:
        start = time.perf_counter()
        said: list[bool] = []

        def notice() -> None:
            said.append(True)
            sys.stderr.write(f"fastopt: compiling {what}, once (Numba keeps it in its disk "
                             "cache for later runs)...\n")
            sys.stderr.flush()

        timer = threading.Timer(COMPILE_NOTICE_AFTER, notice)
        timer.daemon = True
        timer.start()
        try:
            return dispatcher(*args)
        finally:
            timer.cancel()
            if said:
                sys.stderr.write(f"fastopt: {what} compiled in "
                                 f"{time.perf_counter() - start:.1f} s\n")
                sys.stderr.flush()

    return first_call



#: Every ``overload_inline`` registration, replayed for numba-cuda's own registry
#: (:func:`register_cuda_overloads`): numba-cuda types and compiles with its own copy of
#: Numba's machinery, which does not always take the CPU's overloads (an implementation
#: calling ``np.uint32`` failed to type there).
_OVERLOADS: list[tuple[Callable, Callable]] = []
_cuda_registered = False
_overload_lock = threading.Lock()


def overload_inline(fn: Callable) -> Callable[[Callable], Callable]:
    """``@overload(fn, inline="always")`` on the CPU and, once the CUDA driver is loaded,
    in numba-cuda: ``typer(*types) -> implementation``."""
    from numba.extending import overload

    def decorate(typer: Callable) -> Callable:
        overload(fn, inline="always")(typer)
        with _overload_lock:
            _OVERLOADS.append((fn, typer))
            if _cuda_registered:
                _cuda_overload(fn, typer)
        return typer

    return decorate


def _cuda_overload(fn: Callable, typer: Callable) -> None:
    from numba.cuda.extending import overload as cuda_overload

    cuda_overload(fn, inline="always")(typer)


def register_cuda_overloads() -> None:
    """Register every :func:`overload_inline` function with numba-cuda (the CUDA driver
    calls this when it loads; later registrations follow at once). Not in the simulator,
    which runs the plain Python functions."""
    global _cuda_registered
    with _overload_lock:
        if _cuda_registered:
            return
        for fn, typer in _OVERLOADS:
            _cuda_overload(fn, typer)
        _cuda_registered = True


def inline(fn: Callable) -> Callable:
    """Mark a plain function as code every Numba target (CPU, CUDA) inlines where it is
    called, in Numba's own IR: an ``overload`` with ``inline="always"`` whose
    implementation is a copy of ``fn`` (:func:`overload_inline`). The function itself
    stays plain Python (what the CUDA simulator runs) and needs no :func:`compile_tree`.

    For the small bit-level helpers of the storage formats: called through LLVM as
    separately compiled functions, a loop that passes them a tuple of arrays keeps
    reloading the arrays' pointers and does not vectorise (6x the time, measured)."""
    impl = bind(fn, f"{fn.__name__}_inline")
    code = fn.__code__
    params = ", ".join(code.co_varnames[: code.co_argcount])
    scope: dict[str, Any] = {"impl": impl}
    exec(f"def typer({params}):\n    return impl", scope)  # noqa: S102 - same signature
    overload_inline(fn)(scope["typer"])
    return fn
