"""The optimizer base class: parameters, groups, state, the step's order, checkpoints.

A rule's class (:mod:`fastopt.optim.classes`, made from the rule's registry entry) says
which hyperparameters it has, which state arrays a group needs, which rule it runs and the
rule's constants.
"""

from __future__ import annotations

import contextvars
import math
import operator
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import parallel
from .._checks import MAX_STEP, check_grad_array, check_nonneg, check_param_array, lr_at
from .._memory import ALIGNMENT
from ..drivers import backend_of, cpu, is_device_array, overlap
from ..flat import FlatParams, FlatSubset
from ..functional import launch, noise_at, step_scalars
from ..noise import GradientNoise
from . import precision, saved

#: An ndarray or GPU array, a list of them, a FlatParams, or a list of group dicts.
Params = Any


@dataclass
class _Segment:
    """A contiguous run of parameters stepped by one kernel call."""

    p: Any  # 1-D view of the parameter memory (an ndarray, or a Numba device array)
    lo: int  # position in the optimizer's layout: where its state lies
    group: int
    param: int  # index of the user's array (list mode); -1 for a FlatParams run
    state: tuple[Any, ...] = ()  # 1-D views of the state buffers, in rule order
    grad: Any = None  # FlatParams mode: the view of flat.grad
    #: position of the first value in the whole model's layout: what the gradient noise
    #: and stochastic rounding count by. ``lo`` unless the optimizer holds a shard.
    pos: int = -1

    def __post_init__(self) -> None:
        if self.pos < 0:
            self.pos = self.lo


#: A shard cut (``fastopt.distributed``): while set, an optimizer being made keeps only
#: the pieces ``cut(segments)`` returns. ``segments``: ``(layout offset, size, whole)``
#: per segment of the one-process optimizer, ``whole`` where the segment must not be split
#: (a trust-ratio rule's array); returns ``(segment, start, stop)`` per piece, in layout
#: order. Private: the distributed optimizer sets it around the rule class's constructor.
SHARD_CUT: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "fastopt_shard_cut", default=None)


def shard_units(pieces: Sequence[tuple[int, int, int]], itemsize: int
                ) -> tuple[list[tuple[int, int]], int]:
    """A shard's layout: each piece's ``(offset, size)``, each aligned as the one-process
    layout aligns arrays, and the layout's size."""
    step = ALIGNMENT // itemsize
    units, lo = [], 0
    for _, a, b in pieces:
        units.append((lo, b - a))
        lo += -(-(b - a) // step) * step
    return units, lo


class Optimizer:
    """Base class. ``params``: an ndarray, a list of ndarrays, a :class:`FlatParams`, or a
    list of group dicts ``{"params": ..., **overrides}`` as in torch.optim (a group's
    ``"params"`` is an array, a list of arrays, or ``flat.subset(...)``).

    GPU arrays (Numba device arrays, CuPy arrays, detached torch CUDA tensors) or a
    ``FlatParams(..., device="cuda")`` make every step run as CUDA kernels, on the current
    stream of the arrays' library; the state then lives on the device too.

    Common options (``docs/equations.md``, applied in this order before the rule):
    ``maximize``; ``clip_norm`` (global L2 norm over all parameters, torch's
    ``clip_grad_norm_``); ``grad_noise`` (:class:`fastopt.GradientNoise`); ``weight_decay``
    (L2, or AdamW-style with ``decoupled_weight_decay=True``); ``skip_nonfinite`` (a
    NaN/Inf gradient skips the whole step, counted in ``skipped_steps``). ``lr`` is a float
    or a schedule ``t' -> lr`` (t' = completed steps, 0 on the first step).
    """

    #: How each hyperparameter is checked, by name (``check(name, value)`` returns the
    #: checked value): constructor arguments and every group's overrides, so a bad value
    #: is refused wherever it comes from. Each rule's class fills it from the registry.
    _hyper_checks: dict[str, Callable[[str, Any], Any]] = {}

    def __init__(
        self,
        params: Params,
        defaults: dict[str, Any],
        *,
        clip_norm: float | None = None,
        grad_noise: GradientNoise | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        master_weights: bool = False,
        stochastic_rounding: bool = False,
        grad_dtype: str | None = None,
        min_8bit_size: int = 4096,
        rounding_seed: int = 0,
    ) -> None:
        self.defaults = self._checked_hyperparameters(defaults)
        if clip_norm is not None:
            clip_norm = check_nonneg("clip_norm", clip_norm)
        if grad_noise is not None and not isinstance(grad_noise, GradientNoise):
            raise ValueError(
                f"grad_noise must be a fastopt.GradientNoise(eta, gamma, seed), got {grad_noise!r}"
            )
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(f"skip_nonfinite must be True or False, got {skip_nonfinite!r}")
        self.clip_norm = clip_norm
        self.grad_noise = grad_noise
        self.skip_nonfinite = skip_nonfinite
        self._flat: FlatParams | None = None
        self._params: list[Any] = []
        self.param_groups: list[dict[str, Any]] = []
        self._segments: list[_Segment] = []
        # 8-bit state is blockwise per parameter array: a FlatParams steps each on its own
        self._per_array = state_dtype in precision.EIGHT_BIT
        self._build(params)
        self._pieces: list[tuple[int, int, int]] | None = None
        cut = SHARD_CUT.get()
        if cut is not None:
            self._keep_shard(cut)
        self._precision = precision.plan(
            self.dtype, state_dtype=state_dtype, master_weights=master_weights,
            stochastic_rounding=stochastic_rounding, grad_dtype=grad_dtype,
            min_8bit_size=min_8bit_size, rounding_seed=rounding_seed,
            rule_name=type(self).__name__, signs=self._state_signs(),
            on_device=self._be is not cpu)
        if self._flat is not None and self._precision.grad != self._precision.param:
            raise ValueError("grad_dtype: a FlatParams keeps its gradients in flat.grad, in "
                             "the parameters' dtype")
        self._gdtype = np.dtype(self._precision.grad) if self._precision.grad != \
            self._precision.param else self.dtype
        self._storage: precision.Storage | None = None
        self._allocate_state()
        self.step_count = 0
        self.skipped_steps = 0
        self._group_state = [self._initial_group_state(g) for g in self.param_groups]

    # ----------------------------------------------------------------- for subclasses
    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state arrays a group needs, in the order the rule's state tuple has them."""
        return ()

    def _initial_state_value(self, name: str, group: dict[str, Any]) -> float:
        return 0.0

    def _initial_group_state(self, group: dict[str, Any]) -> dict[str, float]:
        return {}

    def _state_signs(self) -> tuple[str, ...]:
        """What each state buffer's values can be (``rules.registry.State.sign``), in the
        order of :meth:`_state_names` over all groups."""
        return ()

    def _checked_group_state(self, name: str, value: float, key: str) -> float:
        """A per-group scalar read from a state dict (finite already), checked."""
        return value

    def _rule(self, group: dict[str, Any]) -> Callable:
        """The element rule (``fastopt.rules``) this group's options select."""
        raise NotImplementedError

    def _transform_decay(self, group: dict[str, Any]) -> tuple[float, bool]:
        """``(weight_decay, decoupled)`` for the common transforms."""
        return group["weight_decay"], group["decoupled_weight_decay"]

    def _trust(self, group: dict[str, Any]) -> Any:
        """A trust-ratio rule's ``(direction, (‖w‖, ‖u‖) -> r)`` for this group, or None
        (``functional.launch``)."""
        return None

    def _constants(
        self, t: int, lr: float, group: dict[str, Any], group_state: dict[str, float]
    ) -> tuple[tuple[float, ...], dict[str, float]]:
        """The rule's host constants for step ``t`` (its ``rules.*_constants``), and the
        group state after this step."""
        raise NotImplementedError

    # ----------------------------------------------------------------- construction
    def _checked_hyperparameters(self, hp: Mapping[str, Any], where: str = "") -> dict:
        out = {}
        own = getattr(self, "defaults", hp)  # while checking the defaults themselves: all
        for name, value in hp.items():
            check = self._hyper_checks.get(name)
            if check is None or name not in own:
                raise ValueError(
                    f"{type(self).__name__} has no hyperparameter {name!r}{where}; "
                    f"it has {sorted(own)}"
                )
            try:
                out[name] = check(name, value)
            except ValueError as exc:
                raise ValueError(f"{exc}{where}") from None
        return out

    def _build(self, params: Params) -> None:
        if isinstance(params, (np.ndarray, FlatParams, FlatSubset)) or is_device_array(params):
            groups = [{"params": params}]
        else:
            try:
                items = list(params)
            except TypeError:
                raise TypeError(
                    "params must be an ndarray, a list of ndarrays, a FlatParams or a list of "
                    f"group dicts, got {type(params).__name__}"
                ) from None
            if not items:
                raise ValueError("the optimizer got an empty parameter list")
            groups = items if all(isinstance(x, Mapping) for x in items) else [{"params": items}]
        flats, arrays = [], []
        for k, group in enumerate(groups):
            if not isinstance(group, Mapping) or "params" not in group:
                raise ValueError(f"parameter group {k} must be a dict with a 'params' entry")
            where = f" (in parameter group {k})"
            overrides = self._checked_hyperparameters(
                {n: v for n, v in group.items() if n != "params"}, where
            )
            self.param_groups.append({**self.defaults, **overrides})
            ps = group["params"]
            if isinstance(ps, FlatParams):
                ps = ps.subset(*ps.names)
            if isinstance(ps, FlatSubset):
                flats.append((k, ps))
            elif isinstance(ps, np.ndarray) or is_device_array(ps):
                arrays.append((k, [ps]))
            elif isinstance(ps, Iterable) and not isinstance(ps, (str, bytes, Mapping)):
                arrays.append((k, list(ps)))
            else:
                raise ValueError(
                    f"parameter group {k}'s 'params' must be an array, a list of arrays or "
                    f"a FlatParams (or flat.subset(...)), got {type(ps).__name__}"
                )
        if flats and arrays:
            raise ValueError(
                "an optimizer steps either one FlatParams or separate arrays, not both"
            )
        if flats:
            self._build_flat(flats)
        else:
            self._build_arrays(arrays)

    def _build_flat(self, flats: list[tuple[int, FlatSubset]]) -> None:
        flat = flats[0][1].flat
        if any(sub.flat is not flat for _, sub in flats):
            raise ValueError("all parameter groups must come from the same FlatParams")
        owner: dict[str, int] = {}
        for k, sub in flats:
            for name in sub.names:
                if name in owner:
                    raise ValueError(
                        f"FlatParams array {name!r} is in groups {owner[name]} and {k}"
                    )
                owner[name] = k
        self._flat = flat
        self._flat_names = list(owner)  # the arrays this optimizer steps
        self._group_members: list = [[] for _ in self.param_groups]  # names, per group
        for k, sub in flats:
            self._group_members[k] = list(sub.names)
        self._group_members_of = owner  # name -> group
        self._be = backend_of([flat.data])
        self._origin = self._be.origin(flat.data)
        self._layout_size = flat.data.size
        # Arrays that follow each other in the buffer and share a group form one run (but
        # each array is its own under a trust-ratio rule: its norms are the array's).
        runs: list[list[int]] = []  # [lo, hi, group]
        previous = None
        for name in flat.names:
            if flat.size_of(name) == 0:
                continue
            k = owner.get(name)
            lo, hi = flat.offset(name), flat.offset(name) + flat.size_of(name)
            if k is not None and k == previous and self._trust(self.param_groups[k]) is None \
                    and not self._per_array:
                runs[-1][1] = hi
            elif k is not None:
                runs.append([lo, hi, k])
            previous = k
        for lo, hi, k in runs:
            self._segments.append(_Segment(flat.data[lo:hi], lo, k, -1, grad=flat.grad[lo:hi]))
        if not self._segments:
            raise ValueError("the optimizer got no parameters (its FlatParams subsets hold no "
                             "values)")

    def _build_arrays(self, arrays: list[tuple[int, list[Any]]]) -> None:
        offset = 0
        seen: dict[int, str] = {}
        self._be = backend_of([p for _, ps in arrays for p in ps], "parameters")
        self._origin = self._be.origin(arrays[0][1][0]) if arrays[0][1] else "numpy"
        self._group_members = [[] for _ in self.param_groups]  # param indices, per group
        self._param_offsets: list[int] = []  # each parameter's place in the state layout
        for k, ps in arrays:
            for j, p in enumerate(ps):
                what = f"params[{j}]" if len(self.param_groups) == 1 else (
                    f"param_groups[{k}]['params'][{j}]"
                )
                if id(p) in seen:
                    raise ValueError(f"{what} is the same array as {seen[id(p)]}")
                seen[id(p)] = what
                p = self._be.check_param(p, what, half=True) if self._be is not cpu else \
                    check_param_array(p, what, half=True)
                if self._params and p.dtype != self._params[0].dtype:
                    raise TypeError(
                        f"{what} is {p.dtype} but the first parameter is "
                        f"{self._params[0].dtype}; use one optimizer per dtype"
                    )
                idx = len(self._params)
                self._params.append(p)
                self._group_members[k].append(idx)
                self._param_offsets.append(offset)
                if p.size:
                    self._segments.append(_Segment(self._be.flat_view(p), offset, k, idx))
                step = ALIGNMENT // p.dtype.itemsize
                offset += -(-p.size // step) * step
        if not self._params:
            raise ValueError("the optimizer got no parameters")
        self._check_no_overlap()
        self._layout_size = offset
        if self._be is cpu:  # what holds the parameters' memory (overlap.host_grads_apart)
            owners = [cpu.owner(p) for p in self._params]
            plain = all(o is not None for o in owners)
            self._param_owners = frozenset(map(id, owners)) if plain else None
            # one parameter: the array a gradient must not belong to (None: a foreign
            # owner, every gradient is checked)
            self._one_owner = owners[0] if plain else None

    def _keep_shard(self, cut: Callable) -> None:
        """Keep only this shard's pieces of the segments (:data:`SHARD_CUT`): its state is
        laid out over the pieces alone, and each piece counts noise and rounding from its
        place in the whole model's layout."""
        full = self._segments
        self._full_units = self._units()
        self._full_layout_size = self._layout_size
        pieces = cut([(s.lo, s.p.size, self._trust(self.param_groups[s.group]) is not None)
                      for s in full])
        units, size = shard_units(pieces, self.dtype.itemsize)
        self._full_segments = full  # the views only: state is allocated for the pieces
        self._segments = [
            _Segment(full[i].p[a:b], lo, full[i].group, full[i].param,
                     grad=None if full[i].grad is None else full[i].grad[a:b],
                     pos=full[i].lo + a)
            for (i, a, b), (lo, _) in zip(pieces, units, strict=True)]
        self._layout_size = size
        self._pieces = [(int(i), int(a), int(b)) for i, a, b in pieces]
        self._piece_whole = [full[i].p.size for i, _, _ in pieces]
        # where each piece holds array values (not the padding between a run's arrays)
        self._piece_fill = []
        for j, (i, a, b) in enumerate(self._pieces):
            first, stop = full[i].lo + a, full[i].lo + b
            for lo, n in self._full_units:
                lo_, hi_ = max(lo, first), min(lo + n, stop)
                if hi_ > lo_:
                    self._piece_fill.append((j, lo_ - first, hi_ - lo_))

    @staticmethod
    def _host_segment(rule: Callable, p: np.ndarray, st: tuple, off: int, i: int) -> tuple:
        """``(serial kernel, parallel kernel or None, Choice, bytes moved, p, state, noise
        offset, gradient index)`` of a host segment."""
        nbytes = cpu.step_bytes(p, len(st))
        par = cpu.step_kernel(rule, True) if nbytes >= parallel.PARALLEL_MIN_BYTES else None
        return (cpu.step_kernel(rule, False), par, parallel.Choice(), nbytes, p, st, off, i)

    def _check_no_overlap(self) -> None:
        self._param_spans = [self._be.span(p) for p in self._params]
        overlap.check_params_apart(self._param_spans)

    def _param_sizes(self) -> np.ndarray:
        if self._flat is not None:
            return np.array([self._flat.size_of(n) for n in self._flat.names], np.int64)
        return np.array([p.size for p in self._params], np.int64)

    @property
    def dtype(self) -> np.dtype:
        return self._flat.dtype if self._flat is not None else np.dtype(self._params[0].dtype)

    def _state_buffer_names(self) -> list[str]:
        names: list[str] = []
        for group in self.param_groups:
            names += [n for n in self._state_names(group) if n not in names]
        return names

    def _units(self) -> list[tuple[int, int]]:
        """Each stepped parameter array's ``(layout offset, size)``, in layout order (a
        shard's: each piece's)."""
        if self._pieces is not None:
            return [(s.lo, s.p.size) for s in self._segments]
        if self._flat is not None:
            return [(self._flat.offset(n), self._flat.size_of(n)) for n in self._flat.names
                    if n in self._group_members_of]
        return [(off, p.size) for off, p in zip(self._param_offsets, self._params,
                                                strict=True)]

    def _allocate_precision(self) -> None:
        """State, master copy and kernels of a precision optimizer (``optim.precision``)."""
        names = self._state_buffer_names()
        signs = dict(zip(names, self._state_signs(), strict=True))
        initial = {}
        for group in self.param_groups:
            for n in self._state_names(group):
                initial[n] = self._initial_state_value(n, group)
        units = self._units()
        self._storage = precision.Storage(
            self._precision, tuple(names), tuple(signs[n] for n in names), units,
            self._layout_size, initial, self._be,
            whole=None if self._pieces is None else self._piece_whole,
            fill=None if self._pieces is None else self._piece_fill)
        if self._storage.master is not None:  # the master copy starts at the parameters
            for (lo, n), seg in zip(units, self._segments, strict=True):
                self._be.copy_from_host(self._storage.master[lo:lo + n],
                                        self._be.to_host(seg.p).astype(np.float32))
        unit_at = {lo: u for u, (lo, _) in enumerate(units)}
        self._group_arrays = []
        self._precision_launchers = []
        for k, group in enumerate(self.param_groups):
            ids = [i for i, seg in enumerate(self._segments) if seg.group == k]
            segs = [self._segments[i] for i in ids]
            self._group_arrays.append((self._rule(group), ids, len(ids) == len(self._segments),
                                       [s.p for s in segs], [], [s.pos for s in segs]))
            trust = self._trust(group)
            self._precision_launchers.append(self._storage.launchers(
                self._rule(group), [s.p for s in segs], [unit_at[s.lo] for s in segs],
                None if trust is None else trust[0], [s.pos for s in segs]))
        self._host_kernels = None
        self._tables = [None] * len(self.param_groups)
        self._tables_only = False
        self._segment_params = [seg.param for seg in self._segments]
        self._one_array = len(self._params) == 1 and self._segment_params == [0]
        self._grad_memo = None
        self._flat_grads = [seg.grad for seg in self._segments]
        self._workspace = self._be.NormWorkspace([s.p.size for s in self._segments],
                                                 np.float32)

    def state_bytes(self) -> int:
        """Bytes of memory this optimizer's state holds (state buffers, 8-bit block maxima,
        the master copy); the parameters and gradients are the caller's."""
        if self._storage is not None:
            return self._storage.nbytes()
        return sum(int(b.nbytes) for b in self._state.values())

    def _allocate_state(self) -> None:
        names = self._state_buffer_names()
        self._group_layout = [self._state_names(g) for g in self.param_groups]
        self._validated_groups = [dict(g) for g in self.param_groups]
        if self._precision.active:
            self._state = {}
            self._allocate_precision()
            return
        self._state = {n: self._be.zeros(self._layout_size, self.dtype) for n in names}
        for seg in self._segments:
            group = self.param_groups[seg.group]
            seg.state = tuple(
                self._state[n][seg.lo : seg.lo + seg.p.size] for n in self._state_names(group)
            )
            for n, s in zip(self._state_names(group), seg.state, strict=True):
                if self._initial_state_value(n, group):
                    self._be.fill(s, self._initial_state_value(n, group))
        # Per group, what each step launches: the rule, and the segments' arrays as lists
        # (the functional layer's form; one launch per group and step).
        self._group_arrays = []
        for k, group in enumerate(self.param_groups):
            ids = [i for i, seg in enumerate(self._segments) if seg.group == k]
            segs = [self._segments[i] for i in ids]
            self._group_arrays.append((
                self._rule(group), ids, len(ids) == len(self._segments),
                [seg.p for seg in segs], [seg.state for seg in segs], [seg.pos for seg in segs],
            ))
        # On the host, each segment's compiled kernels, picked once: a step then calls
        # them directly. After a forward and backward pass have swept the caches, every
        # Python function a step runs costs microseconds: through the functional layer's
        # generic launch, an Adam step over 1e3 values took 109 us here right after a
        # sweep, 84 us this way (the kernel called alone: 20-38 us). A segment big enough
        # for threads to pay has a parallel kernel too, and a Choice between the two.
        # (A trust-ratio rule's group takes two passes per array: through launch.)
        self._host_kernels = None if self._be is not cpu else [
            None if self._trust(group) is not None else
            [self._host_segment(rule, p, st, off, i)
             for i, p, st, off in zip(ids, ps, sts, offs, strict=True)]
            for group, (rule, ids, _, ps, sts, offs) in zip(self.param_groups,
                                                             self._group_arrays, strict=True)
        ]
        # On a GPU, a group of several arrays steps in one launch through a table of
        # their addresses, made once here.
        self._tables = [
            self._be.ArrayTable(ps, sts, offs)
            if len(ps) > 1 and self._be.ON_DEVICE and self._trust(group) is None else None
            for group, (_, _, _, ps, sts, offs) in zip(self.param_groups, self._group_arrays,
                                                       strict=True)
        ]
        self._tables_only = all(t is not None or not ids for t, (_, ids, *_) in
                                zip(self._tables, self._group_arrays, strict=True))
        self._segment_params = [seg.param for seg in self._segments]
        self._one_array = self._be is cpu and len(self._params) == 1 and \
            self._segment_params == [0]
        # (weak references to the last gradients, their checked addresses), where those
        # were Numba device arrays, whose address and layout never change.
        self._grad_memo: tuple[list, tuple] | None = None
        self._flat_grads = [seg.grad for seg in self._segments]  # FlatParams: flat.grad
        self._workspace = self._be.NormWorkspace([s.p.size for s in self._segments],
                                                 self.dtype)

    # ----------------------------------------------------------------- stepping
    def _check_groups(self) -> None:
        """Re-check groups edited between steps (lr, weight_decay, ...), before any write."""
        if len(self.param_groups) != len(self._group_layout):
            raise ValueError(
                f"param_groups has {len(self.param_groups)} groups; this optimizer was built "
                f"with {len(self._group_layout)}: make a new optimizer to add or remove groups"
            )
        for k, group in enumerate(self.param_groups):
            if not isinstance(group, dict):
                raise ValueError(f"parameter group {k} must stay a dict of hyperparameters, "
                                 f"got {type(group).__name__}")
            missing = [n for n in self.defaults if n not in group]
            if missing:
                raise ValueError(f"parameter group {k} has lost its hyperparameters {missing}")
            # the checked values replace what was set: plain floats and tuples, which no
            # later in-place edit can change behind the next step's back
            group.update(self._checked_hyperparameters(group, f" (in parameter group {k})"))
            if self._state_names(group) != self._group_layout[k]:
                raise ValueError(
                    f"parameter group {k} now needs state {self._state_names(group)} but was "
                    f"built with {self._group_layout[k]}; make a new optimizer to change that"
                )
        self._validated_groups = [dict(g) for g in self.param_groups]

    def _groups_edited(self) -> bool:
        """Whether a group or a value of one was set since the last check: values compared
        by identity (an equal value set again is checked again, cheaply; an ndarray set
        as a hyperparameter never meets ``==``)."""
        seen = self._validated_groups
        if len(self.param_groups) != len(seen):
            return True
        for group, old in zip(self.param_groups, seen, strict=True):
            if type(group) is not dict or group.keys() != old.keys() \
                    or not all(map(operator.is_, group.values(), old.values())):
                return True
        return False

    def _gradients(self, grads: Any) -> Sequence[Any]:
        """One validated 1-D gradient per segment (nothing is written here)."""
        if self._flat is not None:
            if grads is None:
                return self._flat_grads
            data = self._flat.data
            g = self._be.check_grad(grads, data, "the gradient buffer")
            if self._be.overlap(g, data) and self._be.span(g) != self._be.span(data):
                raise ValueError("the gradient buffer overlaps the parameters' buffer: the "
                                 "step would read gradients it has already overwritten")
            return [g[s.lo : s.lo + s.p.size] for s in self._segments]
        if grads is None:
            raise ValueError(
                "step() needs the gradients (an array, or a list in the order of the params)"
            )
        if type(grads) is np.ndarray and self._one_array:
            p = self._params[0]  # the commonest call, one array: its checks inlined
            if grads.shape == p.shape and grads.dtype == self._gdtype and \
                    grads.flags.c_contiguous:
                o = grads.base  # drivers.overlap.host_grads_apart for one array, inlined
                if o is None:
                    o = grads
                if o is self._one_owner or self._one_owner is None or \
                        type(o) is not np.ndarray or not o.flags.owndata:
                    overlap.host_grads_apart(self._param_owners, self._params, (grads,))
                return [grads if grads.ndim == 1 else grads.reshape(-1)]
        if isinstance(grads, np.ndarray) or is_device_array(grads):
            grads = [grads]
        elif not isinstance(grads, (list, tuple)):
            raise ValueError(f"grads must be an ndarray or a list of them, got {type(grads)}")
        if len(grads) != len(self._params):
            raise ValueError(f"got {len(grads)} gradients for {len(self._params)} parameters")
        if self._be is cpu:  # the common case, with the per-array checks inlined
            checked = None
            for j, (g, p) in enumerate(zip(grads, self._params, strict=True)):
                if not (type(g) is np.ndarray and g.shape == p.shape and g.dtype == self._gdtype
                        and g.flags.c_contiguous):
                    # says what is wrong; a subclass comes back as its plain view
                    checked = checked or list(grads)
                    checked[j] = check_grad_array(g, p, f"grads[{j}]", self._gdtype)
            grads = grads if checked is None else checked
            overlap.host_grads_apart(self._param_owners, self._params, grads)
            return [g if g.ndim == 1 else g.reshape(-1)
                    for g in [grads[j] for j in self._segment_params]]
        if self._tables_only:
            # Every group steps (and clips) through an address table: the gradients'
            # addresses, checked. Any problem: the full checks below, which say what.
            memo = self._grad_memo
            if memo is not None and all(map(operator.is_, map(_deref, memo[0]), grads)):
                return memo[1]  # the very arrays of the last step: checked then
            try:
                addrs = [self._be.grad_address(g, p, f"grads[{j}]")
                         for j, (g, p) in enumerate(zip(grads, self._params, strict=True))]
            except (TypeError, ValueError):
                pass
            else:
                overlap.device_grads_apart(self._param_spans, addrs)
                # A tuple: the table sees the same object next time and skips its compare.
                out = tuple(addrs[j] for j in self._segment_params)
                self._grad_memo = ((list(map(weakref.ref, grads)), out)
                                   if self._be.fixed_addresses(grads) else None)
                return out
        # GPU arrays (any shape: the kernels see them through 1-D views or addresses).
        # Numba device arrays skip the host/device probe, a few µs per array.
        if not self._be.all_numba_arrays(grads) and backend_of(grads, "gradients") is not \
                self._be:
            raise ValueError(
                "the gradients and the parameters must be on the same device (both NumPy "
                "arrays, or both GPU arrays)"
            )
        checked = [self._be.check_grad(g, p, f"grads[{j}]", self._gdtype)
                   for j, (g, p) in enumerate(zip(grads, self._params, strict=True))]
        overlap.device_grads_apart(self._param_spans, [self._be.span(g)[0] for g in checked])
        return [checked[j] for j in self._segment_params]

    def step(self, grads: Any = None) -> None:
        """Take one step in place. ``grads`` mirrors the params (an array, or a list in the
        same order); for a FlatParams, leave it out to use ``flat.grad``."""
        if self._pieces is not None:
            raise TypeError("this optimizer holds one rank's shard: step the "
                            "fastopt.distributed.ShardedOptimizer that made it")
        self._step(self._gradients(grads))

    def _prepare(self) -> tuple[int, list[float]]:
        """What a step checks before it writes anything, beyond its gradients: the groups
        (re-checked where edited), the step number ``t`` and each group's learning rate."""
        if self._groups_edited():
            self._check_groups()
        t = self.step_count + 1
        if t > MAX_STEP:
            raise ValueError("this optimizer has taken 2**63 - 1 steps, the most its kernels "
                             "count (int64); make a new one")
        return t, [lr_at(group["lr"], t - 1) for group in self.param_groups]

    def _step(self, gs: Sequence[Any], prepared: tuple[int, list[float]] | None = None,
              decided: tuple[bool, float] | None = None) -> None:
        """The step over validated per-segment gradients ``gs``; ``prepared``:
        :meth:`_prepare`'s result where the caller took it already; ``decided``: the
        ``(skip, clip factor)`` of a norm taken elsewhere (a shard's: over all of them),
        else the norm is taken here when clipping or ``skip_nonfinite`` asks for it."""
        t, lrs = self._prepare() if prepared is None else prepared
        stream = None if self._be is cpu else self._be.current_stream(self._origin)
        scale, dscale = 1.0, None
        if decided is not None:
            skip, scale = decided
            if skip:
                self.skipped_steps += 1
                return
        elif self.clip_norm is not None or self.skip_nonfinite:
            tables = None
            if self._tables_only:  # one reduction launch per group, through its table
                tables = [(table, gs if every else [gs[i] for i in seg_ids])
                          for table, (_, seg_ids, every, *_) in
                          zip(self._tables, self._group_arrays, strict=True) if seg_ids]
            if self._be.ON_DEVICE:
                skip, scale, dscale = self._be.clip_or_skip(
                    gs, self._workspace, self.clip_norm, self.skip_nonfinite, stream, tables)
            else:
                kernels, stored = None, gs  # 16-bit gradients: a reduction decoding them
                if self._gdtype.itemsize == 2:
                    kernels = precision.sumsq_kernels(self._precision.grad)
                    stored = [precision.as_kernel_array(g) for g in gs]
                skip, scale = self._be.clip_or_skip(stored, self._workspace, self.clip_norm,
                                                    self.skip_nonfinite, kernels)
            if skip:
                self.skipped_steps += 1
                return
            if dscale is not None:  # the clip factor stays on the GPU
                scale = 1.0
        # Every group's constants before the first launch: a step changes all groups or
        # none.
        consts, new_group_state = [], []
        for k, group in enumerate(self.param_groups):
            c, state = self._constants(t, lrs[k], group, self._group_state[k])
            consts.append(c)
            new_group_state.append(state)
        host = self._host_kernels
        for k, (rule, seg_ids, every, ps, states, offsets) in enumerate(self._group_arrays):
            if not seg_ids:
                continue
            group = self.param_groups[k]
            weight_decay, decoupled = self._transform_decay(group)
            if self._storage is not None:
                h, sc, wd, decay, nz = step_scalars(
                    consts[k], t, lrs[k], weight_decay, decoupled, group["maximize"], scale,
                    dscale, self.grad_noise)
                grads = gs if every else [gs[i] for i in seg_ids]
                trust = self._trust(group)
                ratio = None if trust is None else trust[1]
                if self._be.ON_DEVICE:
                    precision.launch_device(self._storage, self._precision_launchers[k],
                                            grads, h, sc, dscale, wd, decay,
                                            lambda off, nz=nz: noise_at(nz, off), t, stream,
                                            ratio)
                else:
                    precision.launch(self._storage, self._precision_launchers[k], grads, h,
                                     sc, wd, decay, lambda off, nz=nz: noise_at(nz, off), t,
                                     ratio)
                continue
            if host is None or host[k] is None:
                launch(self._be, rule, ps, gs if every else [gs[i] for i in seg_ids], states,
                       offsets, consts[k], t, lrs[k], weight_decay, decoupled,
                       group["maximize"], scale, dscale, self.grad_noise, stream,
                       self._tables[k], self._trust(group))
                continue
            h, sc, wd, decay, nz = step_scalars(
                consts[k], t, lrs[k], weight_decay, decoupled, group["maximize"], scale, None,
                self.grad_noise)
            for serial, par, choice, nbytes, p, st, off, i in host[k]:
                args = (p, gs[i], st, h, sc, wd, decay, noise_at(nz, off))
                if par is None:
                    serial(*args)
                else:
                    parallel.run(choice, serial, par, args, nbytes)
        self._group_state = new_group_state
        self.step_count = t

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """A plain dict of ndarrays and Python scalars (pickle- and ``np.savez``-friendly;
        host arrays also when the state lives on a GPU).

        Keys: ``rule``, ``step``, ``skipped_steps``, ``param_sizes`` (the size of each
        parameter array, to refuse a checkpoint of another model), ``state.<name>`` (one
        array over the optimizer's layout per state buffer), ``group.<k>.<name>`` for
        per-group scalars, ``param_groups`` (each group's hyperparameters) and ``options``
        (``clip_norm``, the gradient noise's ``eta``, ``gamma`` and ``seed``,
        ``skip_nonfinite``), both JSON strings. A learning-rate schedule from
        :mod:`fastopt.schedules` is stored by its class and fields; a callable of your own
        cannot be, and :meth:`load_state_dict` keeps the optimizer's own there.
        """
        sd: dict[str, Any] = {
            "rule": type(self).__name__,
            "step": self.step_count,
            "skipped_steps": self.skipped_steps,
            "param_sizes": self._param_sizes(),
        }
        for name, buf in self._state.items():
            sd[f"state.{name}"] = self._be.to_host(buf)
        if self._storage is not None:  # codes, block maxima, the master copy: as stored
            sd.update(self._storage.to_host())
            sd["precision"] = self._storage.text()
        for k, gs in enumerate(self._group_state):
            for name, value in gs.items():
                sd[f"group.{k}.{name}"] = float(value)
        sd["param_groups"] = saved.groups_text(self.param_groups)
        sd["options"] = saved.options_text(self.clip_norm, self.grad_noise, self.skip_nonfinite)
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also one read back with ``dict(np.load(...))``):
        the state, the step count, and, as torch.optim does, each group's hyperparameters
        and the options (gradient clipping, noise and its seed, ``skip_nonfinite``) the
        checkpoint was written with. Checkpoints written before fastopt stored those keep
        the optimizer's own.

        Everything is checked before anything is changed."""
        if not isinstance(sd, Mapping):
            raise ValueError(f"load_state_dict takes the dict state_dict() returned, got "
                             f"{type(sd).__name__}")

        def scalar(key: str) -> Any:
            if key not in sd:
                raise ValueError(f"state dict has no {key!r}")
            value = sd[key]
            return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value

        rule = scalar("rule")
        if rule != type(self).__name__:
            raise ValueError(f"state dict is for {rule!r}, this optimizer is {type(self).__name__}")
        step, skipped = scalar("step"), scalar("skipped_steps")
        for key, value in (("step", step), ("skipped_steps", skipped)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"state dict {key!r} must be an int >= 0, got {value!r}")
            if value > MAX_STEP:  # step numbers are the kernels' int64
                raise ValueError(f"state dict {key!r} must be at most 2**63 - 1, got {value!r}")
        sizes = sd.get("param_sizes")
        try:
            given = np.asarray(sizes)
        except Exception:  # noqa: BLE001 - an object NumPy cannot take: reported below
            given = None
        if given is None or given.dtype.kind not in "iu" or \
                not np.array_equal(given, self._param_sizes()):
            raise ValueError(
                f"state dict 'param_sizes' {sizes!r} does not match this optimizer's parameter "
                f"sizes {self._param_sizes().tolist()}: a checkpoint of another model?"
            )
        stored = precision.loaded_precision(sd["precision"]) if "precision" in sd else None
        convert = self._storage is not None and stored != self._precision or \
            self._storage is None and stored is not None
        if self._storage is not None and not convert:
            expected = set(self._storage.buffers) | {"precision"}
        elif convert:
            expected = set(precision.stored_keys(stored, self._state_buffer_names(),
                                                 self._storage)) | (
                {"precision"} if stored is not None else set())
        else:
            expected = set()
        expected |= {f"state.{n}" for n in self._state}
        expected |= {f"group.{k}.{n}" for k, gs in enumerate(self._group_state) for n in gs}
        expected |= {"rule", "step", "skipped_steps", "param_sizes"}
        expected |= {"param_groups", "options"} & set(sd)  # absent from older checkpoints
        found = set(sd)
        if found != expected:
            raise ValueError(
                f"state dict does not fit this optimizer: missing {sorted(expected - found)}, "
                f"unexpected {sorted(found - expected)}"
            )
        converted = None
        if convert:  # another storage: its values, read in float32, rounded into ours
            converted = precision.converted_state(
                sd, stored, self._precision, self._state_buffer_names(), self._units(),
                self._layout_size, self._state_signs(),
                None if self._pieces is None else self._piece_whole)
        elif self._storage is not None:
            precision.check_buffers(sd, self._storage.buffers)
        for name, buf in self._state.items():
            if converted is not None:
                continue
            a = sd[f"state.{name}"]
            if not isinstance(a, np.ndarray) or a.shape != buf.shape or a.dtype != buf.dtype:
                raise ValueError(
                    f"state dict 'state.{name}' must be a {buf.dtype} array of shape "
                    f"{buf.shape}, got {getattr(a, 'dtype', type(a))} "
                    f"{getattr(a, 'shape', '')}"
                )
        group_state = []
        for k, gs in enumerate(self._group_state):
            values = {}
            for n in gs:
                value = scalar(f"group.{k}.{n}")
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                        or not math.isfinite(value):
                    raise ValueError(
                        f"state dict 'group.{k}.{n}' must be a finite number, got {value!r}"
                    )
                values[n] = self._checked_group_state(n, float(value), f"group.{k}.{n}")
            group_state.append(values)
        groups = self._loaded_groups(scalar("param_groups")) if "param_groups" in sd else None
        options = saved.load_options(scalar("options")) if "options" in sd else None
        if options is not None:
            options["clip_norm"] = _checked_option(options)
        if converted is not None:
            precision.store_converted(converted, self._storage, self._state, self._units())
            precision.convert_warning(stored, self._precision)
        elif self._storage is not None:
            self._storage.from_host(sd)
        else:
            for name, buf in self._state.items():
                self._be.copy_from_host(buf, sd[f"state.{name}"])
        if groups is not None:
            for group, loaded in zip(self.param_groups, groups, strict=True):
                group.update(loaded)
            self._validated_groups = [dict(g) for g in self.param_groups]
        if options is not None:
            self.clip_norm = options["clip_norm"]
            self.grad_noise = options["grad_noise"]
            self.skip_nonfinite = options["skip_nonfinite"]
        self._group_state = group_state
        self.step_count = int(step)
        self.skipped_steps = int(skipped)

    def _loaded_groups(self, text: Any) -> list[dict[str, Any]]:
        """A checkpoint's group hyperparameters, checked as constructor arguments are, for a
        checkpoint with this optimizer's groups and state layout; a value the checkpoint
        could not store (a callable of the user's) keeps this optimizer's."""
        loaded = saved.load_groups(text)
        if len(loaded) != len(self.param_groups):
            raise ValueError(f"state dict 'param_groups' has {len(loaded)} groups; this "
                             f"optimizer has {len(self.param_groups)}")
        out = []
        for k, (group, mine) in enumerate(zip(loaded, self.param_groups, strict=True)):
            if set(group) != set(mine) - {"params"}:
                raise ValueError(f"state dict 'param_groups' group {k} has hyperparameters "
                                 f"{sorted(group)}; this {type(self).__name__} has "
                                 f"{sorted(set(mine) - {'params'})}")
            group = {n: (mine[n] if v is saved.NOT_STORED else v) for n, v in group.items()}
            group = self._checked_hyperparameters(group, f" (in state dict group {k})")
            if self._state_names(group) != self._group_layout[k]:
                raise ValueError(
                    f"state dict group {k}'s hyperparameters keep the state "
                    f"{self._state_names(group)}; this optimizer was built with "
                    f"{self._group_layout[k]}: build it with the checkpoint's options")
            out.append(group)
        return out

    # ----------------------------------------------------------------- state views
    @property
    def state(self) -> StateViews:
        """Each parameter's state arrays as writable views shaped like the parameter:
        ``opt.state[i]["m"]`` for the i-th array of a list, ``opt.state["w1"]["m"]`` for
        a FlatParams array (``opt.state.keys()`` lists them; names as in
        :meth:`state_dict`, e.g. Adam's ``m`` and ``v``). Reading them costs nothing;
        writing them sets the optimizer's state (a framework restoring moments)."""
        return StateViews(self)

    def _state_views(self, key: Any) -> dict[str, Any]:
        if self._pieces is not None:
            raise TypeError("this optimizer holds a shard of the state: its pieces do not "
                            "follow the parameter arrays (consolidate the state dicts)")
        if self._flat is not None:
            if key not in self._group_members_of:
                raise KeyError(f"{key!r} is not an array this optimizer steps; it steps "
                               f"{self._flat_names}")
            k = self._group_members_of[key]
            lo, shape = self._flat.offset(key), self._flat.shapes[key]
        else:
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or \
                    not -len(self._params) <= key < len(self._params):
                raise KeyError(f"the state of parameter {key!r}: give its index in the "
                               f"params list, 0 to {len(self._params) - 1}")
            i = int(key) % len(self._params)
            k = next(g for g, idx in enumerate(self._group_members) if i in idx)
            lo, shape = self._param_offsets[i], tuple(self._params[i].shape)
        n = int(np.prod(shape, dtype=np.int64))
        if self._storage is not None:  # decoded copies: the stored form is not float
            u = [off for off, _ in self._storage.units].index(lo)
            return {name: self._storage.read_unit(name, u).reshape(shape)
                    for name in self._group_layout[k]}
        return {name: self._state[name][lo : lo + n].reshape(shape)
                for name in self._group_layout[k]}

    # ----------------------------------------------------------------- precompile
    def _warm_calls(self, parallel_kernels: bool | None = None) -> list[tuple[Callable, tuple]]:
        """``(kernel, arguments)`` for each kernel variant this optimizer's steps can run,
        on one-element scratch arrays, with the argument types its steps pass (Numba
        compiles one version per type signature): each group's rule, with and without a
        clip factor where clipping can apply; the norm reduction where the step takes
        one. Serial kernels, and parallel ones where a step could choose them (or as
        ``parallel_kernels`` says), with two or more threads. For
        :func:`fastopt.precompile`."""
        if self._be is not cpu:
            raise TypeError(f"fastopt.precompile covers optimizers over host arrays; this "
                            f"{type(self).__name__} over GPU arrays compiles its CUDA kernels "
                            "at its first step")
        threads = parallel.get_num_threads() > 1

        def scratch() -> np.ndarray:
            return np.zeros(1, self.dtype)

        if self._storage is not None:
            return self._precision_warm_calls(threads, parallel_kernels)

        calls: list[tuple[Callable, tuple]] = []
        any_parallel = False
        for k, (rule, ids, _, _, sts, _) in enumerate(self._group_arrays):
            if not ids:
                continue
            group = self.param_groups[k]
            lr = lr_at(group["lr"], 0)
            consts, _ = self._constants(1, lr, group, self._group_state[k])
            trust = self._trust(group)
            host = self._host_kernels[k]
            has_parallel = (any(cpu.step_bytes(seg, len(sts[0])) >= parallel.PARALLEL_MIN_BYTES
                                for seg in self._group_arrays[k][3])
                            if host is None else any(par is not None for _, par, *_ in host))
            use = has_parallel if parallel_kernels is None else parallel_kernels
            modes = (False, True) if threads and use else (False,)
            any_parallel |= len(modes) == 2
            weight_decay, decoupled = self._transform_decay(group)
            for grad_scale in ((1.0, 0.5) if self.clip_norm is not None else (1.0,)):
                h, sc, wd, decay, nz = step_scalars(
                    consts, 1, lr, weight_decay, decoupled, group["maximize"], grad_scale,
                    None, self.grad_noise)
                tail = (sc, wd, decay, noise_at(nz, 0))
                state = tuple(scratch() for _ in sts[0])
                if trust is None:
                    args = (scratch(), scratch(), state, h, *tail)
                    calls += [(cpu.step_kernel(rule, mode), args) for mode in modes]
                    continue
                # a trust-ratio rule: its first pass, then the step with the ratio
                calls += [(cpu.trust_kernel(trust[0], mode),
                           (scratch(), scratch(), state, h, *tail, np.empty(2)))
                          for mode in modes]
                calls += [(cpu.step_kernel(rule, mode),
                           (scratch(), scratch(), state, (*h, 1.0), *tail)) for mode in modes]
        if self.clip_norm is not None or self.skip_nonfinite:
            for mode in ((False, True) if any_parallel else (False,)):
                calls.append((cpu.sumsq_kernel(mode), (scratch(), np.empty(1))))
        return calls

    def _precision_warm_calls(self, threads: bool, parallel_kernels: bool | None
                              ) -> list[tuple[Callable, tuple]]:
        """:meth:`_warm_calls` of a precision optimizer: each segment's kernel (a
        trust-ratio rule's first pass too) with the scalars each group's steps pass, and
        the norm reduction over the gradients' storage where the step takes one."""
        calls: list[tuple[Callable, tuple]] = []
        any_parallel = False
        for k, launchers in enumerate(self._precision_launchers):
            if not launchers:
                continue
            group = self.param_groups[k]
            lr = lr_at(group["lr"], 0)
            consts, _ = self._constants(1, lr, group, self._group_state[k])
            weight_decay, decoupled = self._transform_decay(group)
            scalars = []
            for grad_scale in ((1.0, 0.5) if self.clip_norm is not None else (1.0,)):
                h, sc, wd, decay, nz = step_scalars(
                    consts, 1, lr, weight_decay, decoupled, group["maximize"], grad_scale,
                    None, self.grad_noise)
                scalars.append((h, sc, wd, decay, noise_at(nz, 0)))
            use = threads and (parallel_kernels is not False)
            any_parallel |= use and any(par is not None for _, par, *_ in launchers)
            calls += self._storage.warm_calls(launchers, scalars, use)
        if self.clip_norm is not None or self.skip_nonfinite:
            if self._gdtype.itemsize == 2:  # the reduction that decodes 16-bit gradients
                pair = precision.sumsq_kernels(self._precision.grad)
                scratch_g = np.zeros(1, np.uint16)
            else:
                pair = (cpu.sumsq_kernel(False), cpu.sumsq_kernel(True))
                scratch_g = np.zeros(1, self._gdtype)
            for mode in ((False, True) if any_parallel else (False,)):
                calls.append((pair[mode], (scratch_g, np.empty(1))))
        return calls

    # ----------------------------------------------------------------- pickle, deepcopy
    def __getstate__(self) -> dict[str, Any]:
        """What pickle and ``copy.deepcopy`` keep: the parameters (the user's arrays, or
        the FlatParams), the groups with their hyperparameters, the options and the
        :meth:`state_dict`. The kernels, views and checks are made again on loading."""
        if self._be is not cpu:
            raise TypeError(
                f"a {type(self).__name__} over GPU arrays cannot be pickled: save its "
                "state_dict() (host arrays) and load it into a new optimizer over the "
                "parameters on the device"
            )
        if self._flat is not None:
            members = [self._flat.subset(*names) for names in self._group_members]
        else:
            members = [[self._params[i] for i in idx] for idx in self._group_members]
        return {
            "defaults": self.defaults,
            "groups": [{**group, "params": m}
                       for group, m in zip(self.param_groups, members, strict=True)],
            "options": {"clip_norm": self.clip_norm, "grad_noise": self.grad_noise,
                        "skip_nonfinite": self.skip_nonfinite, **self._precision.options()},
            "state": self.state_dict(),
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        Optimizer.__init__(self, saved["groups"], saved["defaults"], **saved["options"])
        self.load_state_dict(saved["state"])

    def __repr__(self) -> str:
        n = (sum(map(self._flat.size_of, self._flat_names)) if self._flat is not None
             else sum(p.size for p in self._params))
        return f"{type(self).__name__}({n} parameters, {len(self.param_groups)} group(s))"


class StateViews(Mapping):
    """``opt.state``: parameter (index, or FlatParams name) -> ``{state name: view}``."""

    def __init__(self, opt: Optimizer) -> None:
        self._opt = opt

    def __getitem__(self, key: Any) -> dict[str, Any]:
        return self._opt._state_views(key)

    def __iter__(self):
        opt = self._opt
        return iter(opt._flat_names if opt._flat is not None else range(len(opt._params)))

    def __len__(self) -> int:
        opt = self._opt
        return len(opt._flat_names if opt._flat is not None else opt._params)

    def __repr__(self) -> str:
        return f"<state of {len(self)} parameters of {self._opt!r}>"


def _checked_option(options: dict[str, Any]) -> float | None:
    """A checkpoint's ``clip_norm`` and ``skip_nonfinite``, checked (``clip_norm``
    returned)."""
    if not isinstance(options["skip_nonfinite"], bool):
        raise ValueError("state dict 'options' skip_nonfinite must be True or False")
    clip = options["clip_norm"]
    return None if clip is None else check_nonneg("state dict 'options' clip_norm", clip)


#: A weak reference's referent (None once it is gone), for ``map``.
_deref = weakref.ref.__call__
