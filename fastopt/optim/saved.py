"""Hyperparameters and options in a checkpoint: to JSON text and back.

``state_dict()`` keeps each group's hyperparameters and the optimizer's options (clipping,
the gradient noise's ``eta``, ``gamma`` and ``seed``, ``skip_nonfinite``) as JSON strings,
so a checkpoint stays a flat dict of arrays and strings that ``np.savez`` writes and
``np.load`` reads without pickle. Numbers, booleans, None and tuples are stored as they
are; a learning-rate schedule from :mod:`fastopt.schedules` by its class and fields. What
cannot be stored, a user's own callable, is stored as its ``repr`` and marked: loading
keeps the optimizer's own value there (say so to whoever resumes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

from .. import schedules
from ..noise import GradientNoise

#: What a loaded hyperparameter is when the checkpoint could not store it.
NOT_STORED = object()


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if dataclasses.is_dataclass(value) and getattr(schedules, type(value).__name__, None) \
            is type(value):
        return {"schedule": type(value).__name__,
                "fields": {f.name: encode(getattr(value, f.name))
                           for f in dataclasses.fields(value) if f.init}}
    return {"not_stored": repr(value)}


def decode(data: Any) -> Any:
    """The value :func:`encode` stored (tuples for lists; :data:`NOT_STORED` where it could
    not store one). A ValueError for anything else."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if isinstance(data, list):
        items = [decode(v) for v in data]
        return NOT_STORED if any(v is NOT_STORED for v in items) else tuple(items)
    if isinstance(data, dict) and set(data) == {"float"}:
        return float(data["float"])
    if isinstance(data, dict) and set(data) == {"not_stored"}:
        return NOT_STORED
    if isinstance(data, dict) and set(data) == {"schedule", "fields"}:
        cls = getattr(schedules, str(data["schedule"]), None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"fastopt.schedules has no schedule {data['schedule']!r}")
        fields = {k: decode(v) for k, v in data["fields"].items()}
        if any(v is NOT_STORED for v in fields.values()):
            return NOT_STORED
        return cls(**fields)
    raise ValueError(f"not a stored hyperparameter: {data!r}")


def dumps(value: Any) -> str:
    return json.dumps(encode(value), allow_nan=False)


def options_text(clip_norm: float | None, grad_noise: GradientNoise | None,
                 skip_nonfinite: bool) -> str:
    noise = None if grad_noise is None else {
        "eta": grad_noise.eta, "gamma": grad_noise.gamma, "seed": int(grad_noise.seed)}
    return json.dumps({"clip_norm": encode(clip_norm), "grad_noise": noise,
                       "skip_nonfinite": skip_nonfinite}, allow_nan=False)


def groups_text(groups: list[dict[str, Any]]) -> str:
    return json.dumps([{k: encode(v) for k, v in g.items() if k != "params"} for g in groups],
                      allow_nan=False)


def load_groups(text: Any) -> list[dict[str, Any]]:
    """The groups' hyperparameters from :func:`groups_text`'s string, or a ValueError."""
    data = _json(text, "param_groups")
    if not isinstance(data, list) or not all(isinstance(g, dict) for g in data):
        raise ValueError("state dict 'param_groups' must be a JSON list of objects")
    return [{k: decode(v) for k, v in g.items()} for g in data]


def load_options(text: Any) -> dict[str, Any]:
    """``clip_norm``, ``grad_noise`` (a GradientNoise or None) and ``skip_nonfinite`` from
    :func:`options_text`'s string, checked, or a ValueError."""
    data = _json(text, "options")
    if not isinstance(data, dict) or set(data) != {"clip_norm", "grad_noise", "skip_nonfinite"}:
        raise ValueError("state dict 'options' must hold clip_norm, grad_noise and "
                         "skip_nonfinite")
    noise = data["grad_noise"]
    if noise is not None:
        if not isinstance(noise, dict) or set(noise) != {"eta", "gamma", "seed"}:
            raise ValueError("state dict 'options' grad_noise must hold eta, gamma and seed")
        noise = GradientNoise(noise["eta"], noise["gamma"], noise["seed"])
    return {"clip_norm": decode(data["clip_norm"]), "grad_noise": noise,
            "skip_nonfinite": data["skip_nonfinite"]}


def _json(text: Any, key: str) -> Any:
    if not isinstance(text, str):
        raise ValueError(f"state dict {key!r} must be the JSON string state_dict() wrote, got "
                         f"{type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"state dict {key!r} is not valid JSON: {exc}") from None
