"""Sharded checkpoints: each rank's shard with its layout, joined into the one-process
state dict, and cut again for any number of ranks.

A shard dict is the wrapped optimizer's :meth:`~fastopt.optim.Optimizer.state_dict` over
its pieces, plus ``shard``: a JSON string with the rank, the number of ranks, every rank's
pieces and the one-process layout. Its stored buffers (plain, bfloat16 or 8-bit state, the
master copy) are cut where the pieces are, on 8-bit block boundaries, so joining copies
stored values (codes and block maxima included) and rounds nothing: a checkpoint resumes
bit-identically on any number of ranks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..optim import precision
from ..optim.base import Optimizer, shard_units

_INFO_KEYS = {"rank", "world", "segments", "parts", "units", "layout_size", "names", "dtype",
              "itemsize"}


def shard_info(opt: Optimizer, rank: int, world: int, segments: list, parts: list) -> str:
    """The ``shard`` entry of a rank's state dict."""
    return json.dumps({
        "rank": rank, "world": world, "segments": [list(s) for s in segments],
        "parts": [[list(p) for p in part] for part in parts],
        "units": [list(u) for u in opt._full_units], "layout_size": opt._full_layout_size,
        "names": opt._state_buffer_names(), "dtype": str(opt.dtype),
        "itemsize": opt.dtype.itemsize})


def _info(sd: Any) -> dict[str, Any]:
    if not isinstance(sd, Mapping) or "shard" not in sd:
        raise ValueError("consolidate takes the state dicts of a ShardedOptimizer's ranks "
                         "(each has a 'shard' entry)")
    text = sd["shard"]
    if isinstance(text, np.ndarray) and text.ndim == 0:  # read back with np.load
        text = text.item()
    try:
        info = json.loads(text)
    except (TypeError, ValueError):
        raise ValueError("state dict 'shard' must be the JSON string ShardedOptimizer "
                         "wrote") from None
    if not isinstance(info, dict) or set(info) != _INFO_KEYS:
        raise ValueError(f"state dict 'shard' must hold {sorted(_INFO_KEYS)}")
    return info


def _stored(sd: Mapping[str, Any]) -> precision.Precision | None:
    return precision.loaded_precision(sd["precision"]) if "precision" in sd else None


def _unit_of_segment(units: list, segments: list) -> list[int]:
    """Each segment's unit: the array its first value belongs to."""
    at = {lo: u for u, (lo, n) in enumerate(units) if n}
    return [at[lo] for lo, _, _ in segments]


def _piece_slices(part: list, unit_of: list[int], full: precision.StoredLayout,
                  mine: precision.StoredLayout):
    """For each piece of ``part`` and each stored buffer: ``(key, slice of the one-process
    buffer, slice of the shard's)`` (``full``, ``mine``: the two stored layouts)."""
    for j, (i, a, b) in enumerate(part):
        piece = mine.slices(j, 0, b - a)
        for key, whole in full.slices(unit_of[i], a, b - a).items():
            yield key, whole, piece[key]


def _piece_layout(stored: precision.Precision | None, info: dict, rank: int):
    """The stored layout of rank ``rank``'s shard."""
    part = info["parts"][rank]
    units, size = shard_units(part, info["itemsize"])  # (a bfloat16 dtype's name needs
    # ml_dtypes imported to be read back; its size does not)
    whole = [info["segments"][i][1] for i, _, _ in part]
    return precision.stored_layout(stored, info["names"], units, size, info["dtype"], whole)


def _described(prec: precision.Precision | None) -> str:
    if prec is None:
        return "plain float arrays"
    return ", ".join(f"{k}={v!r}" for k, v in prec.options().items())


def _array(sd: Mapping[str, Any], key: str, size: int, where: str) -> np.ndarray:
    a = sd.get(key)
    if not isinstance(a, np.ndarray) or a.shape != (size,):
        raise ValueError(f"{where} {key!r} must be an array of shape ({size},), got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    return a


def consolidate(shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The one-process state dict of the model, joined from the state dicts of all the
    ranks of a :class:`~fastopt.distributed.ShardedOptimizer` (in any order): what the
    wrapped optimizer made in one process would have written, loadable there with
    ``load_state_dict``."""
    if isinstance(shards, Mapping) or not isinstance(shards, Sequence) or not shards:
        raise ValueError("consolidate takes a list of every rank's shard state dict")
    infos = [_info(sd) for sd in shards]
    world = infos[0]["world"]
    ranks = sorted(info["rank"] for info in infos)
    if ranks != list(range(world)) or len(shards) != world:
        raise ValueError(f"consolidate needs the shards of ranks 0 to {world - 1}, one each; "
                         f"got ranks {ranks}")
    order = sorted(range(world), key=lambda k: infos[k]["rank"])
    shards = [shards[k] for k in order]
    infos = [infos[k] for k in order]
    first = infos[0]
    for info in infos[1:]:
        if {k: v for k, v in info.items() if k != "rank"} != \
                {k: v for k, v in first.items() if k != "rank"}:
            raise ValueError("the shards come from different models or runs: their layouts "
                             "differ")
    stored = _stored(shards[0])
    full = precision.stored_layout(stored, first["names"], first["units"],
                                   first["layout_size"], first["dtype"])
    out: dict[str, Any] = {}
    for key, value in shards[0].items():
        if key in full.specs or key == "shard":
            continue
        for q, sd in enumerate(shards[1:], 1):
            other = sd.get(key)
            same = np.array_equal(other, value) if isinstance(value, np.ndarray) else \
                other == value
            if not same:
                raise ValueError(f"the shards disagree on {key!r} (rank 0: {value!r}, rank "
                                 f"{q}: {other!r}): not one checkpoint")
        out[key] = value
    buffers = {key: np.zeros(size, dt) for key, (size, dt) in full.specs.items()}
    unit_of = _unit_of_segment(first["units"], first["segments"])
    for q, (sd, info) in enumerate(zip(shards, infos, strict=True)):
        mine = _piece_layout(stored, info, q)
        arrays = {key: _array(sd, key, size, f"rank {q}'s state dict")
                  for key, (size, _) in mine.specs.items()}
        for key, whole, piece in _piece_slices(info["parts"][q], unit_of, full, mine):
            buffers[key][whole] = arrays[key][piece]
    out.update(buffers)
    return out


def shard_of(sd: Any, opt: Optimizer, rank: int, world: int, segments: list,
             parts: list) -> dict[str, Any]:
    """What ``opt`` (rank ``rank``'s shard) loads from ``sd``: a one-process state dict, a
    list of every rank's shard dicts (from any number of ranks), or this rank's own."""
    if isinstance(sd, Sequence) and not isinstance(sd, (str, bytes, Mapping)):
        sd = consolidate(sd)
    elif isinstance(sd, Mapping) and "shard" in sd:
        info = _info(sd)
        mine = json.loads(shard_info(opt, rank, world, segments, parts))
        if info != mine:
            raise ValueError(
                f"this is the shard of rank {info['rank']} of {info['world']}, not this "
                f"rank's ({rank} of {world}) in this layout: to load a checkpoint written "
                "by another number of ranks, give the list of every rank's state dicts, or "
                "one consolidated state dict")
        return {k: v for k, v in sd.items() if k != "shard"}
    if not isinstance(sd, Mapping):
        raise ValueError(f"load_state_dict takes a state dict or a list of every rank's, "
                         f"got {type(sd).__name__}")
    stored = _stored(sd)
    ours = opt._precision if opt._storage is not None else None
    if stored != ours:
        raise ValueError(
            f"the checkpoint stores the state as {_described(stored)}, this optimizer as "
            f"{_described(ours)}: convert it in one process first (load it into the wrapped "
            "optimizer class made with this optimizer's options, over the same parameters, "
            "and save that one's state_dict), then load the result")
    names = opt._state_buffer_names()
    full = precision.stored_layout(stored, names, opt._full_units, opt._full_layout_size,
                                   opt.dtype)
    mine = precision.stored_layout(stored, names, opt._units(), opt._layout_size, opt.dtype,
                                   opt._piece_whole)
    out = {k: v for k, v in sd.items() if k not in full.specs}
    unit_of = _unit_of_segment(opt._full_units, segments)
    for key, (size, _) in full.specs.items():
        a = _array(sd, key, size, "state dict")
        out[key] = np.zeros(mine.specs[key][0], a.dtype)
    for key, whole, piece in _piece_slices(parts[rank], unit_of, full, mine):
        out[key][piece] = sd[key][whole]
    return out
