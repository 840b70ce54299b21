"""The models, options and gradients of the distributed tests, shared by the MPI worker
(tests/mpi_worker.py, run under mpiexec) and the one-process reference
(tests/test_distributed.py). Everything is a function of (case, step, rank): each rank's
gradients come from its own seeded generator, and the reference averages them in NumPy."""

from __future__ import annotations

import numpy as np

import fastopt
from fastopt import schedules

STEPS = 4
#: Values received per round of the exchange, where a case sets it: many short rounds
BUCKETS = {"flat_groups": 3001, "list_skip": 2999}
#: case -> (optimizer class name, stage)
CASES = {
    "flat_groups": ("Adam", 2),
    "list_skip": ("Momentum", 1),
    "eight_bit": ("Adam", 2),
    "bf16_rounding": ("AMSGrad", 2),
    "lamb": ("LAMB", 2),
    "bf16_master": ("Adam", 2),
    "fp16_rounding": ("Momentum", 1),
    "same_everywhere": ("Adam", 1),
}
SHAPES = {
    # "frozen" is in no group: the exchange packs the stepped arrays (not sent in place)
    "flat_groups": {"w1": (60, 400), "b1": (400,), "frozen": (20,), "w2": (400, 10),
                    "b2": (10,), "t": (3,)},
    "list_skip": [(5000,), (3,), (1,), (70, 90), (0,), (2,)],
    "eight_bit": {"big": (20000,), "mid": (5000,), "small": (1000,)},
    "bf16_rounding": [(9000,), (5,)],
    "lamb": [(3000,), (50,), (7,)],
    "bf16_master": [(9000,), (33,)],
    "fp16_rounding": [(6000,), (5,)],
    # every rank's gradient the same multiples of 1/64: their sum is exact and so is the
    # sum divided by N, so every N steps on the same average, and must end with the same
    # bits (the split among ranks changes nothing)
    "same_everywhere": {"w": (5000, 3), "b": (3,), "v": (4099,)},
}
# Every rule of the registry, with clipping, noise and weight decay: "rule_<name>"
for _name in fastopt.optim.RULE_NAMES:
    CASES[f"rule_{_name}"] = (_name, 2)
    SHAPES[f"rule_{_name}"] = [(5000,), (7,)]


def dtypes(case: str) -> tuple[np.dtype, np.dtype]:
    """The case's (parameter, gradient) dtypes."""
    if case == "bf16_master":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.bfloat16)
    if case == "fp16_rounding":
        return np.dtype(np.float16), np.dtype(np.float32)
    if case == "lamb":
        return np.dtype(np.float64), np.dtype(np.float64)
    return np.dtype(np.float32), np.dtype(np.float32)


def is_flat(case: str) -> bool:
    return isinstance(SHAPES[case], dict)


def make_params(case: str):
    """The case's parameters, with the same starting values on every rank."""
    rng = np.random.default_rng(11)
    shapes = SHAPES[case]
    if is_flat(case):
        flat = fastopt.FlatParams(shapes)
        for name, shape in shapes.items():
            flat[name][...] = rng.standard_normal(shape).astype(np.float32)
        return flat
    return [rng.standard_normal(s).astype(np.float32).astype(dtypes(case)[0])
            for s in shapes]


def options(case: str, params) -> tuple[object, dict]:
    """``(params argument, keyword options)`` of the case's optimizer."""
    noise = fastopt.GradientNoise(0.3, 0.55, 5)
    if case == "flat_groups":
        groups = [{"params": params.subset("w1", "b1"),
                   "lr": schedules.Step(0.02, 2, 0.5)},
                  {"params": params.subset("w2", "b2", "t"), "lr": 0.005,
                   "weight_decay": 0.1}]
        return groups, dict(lr=0.01, clip_norm=0.5, grad_noise=noise, weight_decay=0.01,
                            decoupled_weight_decay=True)
    if case == "list_skip":
        groups = [{"params": params[:2], "momentum": 0.8}, {"params": params[2:]}]
        return groups, dict(lr=0.05, momentum=0.9, skip_nonfinite=True, clip_norm=2.0,
                            weight_decay=0.01)
    if case == "eight_bit":
        return params, dict(lr=0.01, state_dtype="8bit", clip_norm=1.0, grad_noise=noise)
    if case == "bf16_rounding":
        return params, dict(lr=0.01, state_dtype="bfloat16",
                            rounding_seed=9)
    if case == "lamb":
        return params, dict(lr=0.01, clip_norm=1.0, weight_decay=0.01)
    if case == "same_everywhere":
        return params, dict(lr=0.01, clip_norm=3.0, grad_noise=noise, weight_decay=0.01)
    if case.startswith("rule_"):
        return params, dict(lr=0.01, clip_norm=50.0, grad_noise=noise, weight_decay=0.01)
    if case == "bf16_master":
        return params, dict(lr=0.01, master_weights=True, clip_norm=1.0, grad_noise=noise)
    if case == "fp16_rounding":
        return params, dict(lr=0.01, stochastic_rounding=True, grad_dtype="float32",
                            rounding_seed=3, clip_norm=5.0)
    raise KeyError(case)


def rank_grads(case: str, step: int, rank: int) -> list[np.ndarray]:
    """Rank ``rank``'s gradients at step ``step`` (one per array, in the case's order)."""
    if case == "same_everywhere":
        rank = 0
    rng = np.random.default_rng([step, rank, len(case)])
    shapes = list(SHAPES[case].values()) if is_flat(case) else SHAPES[case]
    out = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if case == "same_everywhere":
        out = [np.round(g * 64) / np.float32(64) for g in out]
    if case == "list_skip" and step == 1 and rank == 0:
        out[3][5, 7] = np.nan  # every rank must skip this step
    return [g.astype(dtypes(case)[1]) for g in out]


def averaged(case: str, step: int, ranks: int) -> list[np.ndarray]:
    """The ranks' gradients summed in rank order, divided by their number, in their dtype
    (16-bit gradients: decoded, summed and divided in float32, then rounded to nearest)."""
    per = [rank_grads(case, step, r) for r in range(ranks)]
    out = []
    for j in range(len(per[0])):
        dtype = per[0][j].dtype
        acc = np.float32 if dtype.itemsize == 2 else dtype.type  # 16-bit: in float32
        s = per[0][j].astype(acc)
        for r in range(1, ranks):
            s = s + per[r][j].astype(acc)
        out.append((s / acc(ranks)).astype(dtype))
    return out


def set_grads(case: str, params, grads: list[np.ndarray]):
    """What ``step`` takes: fills a FlatParams' gradients (returns None), or the list."""
    if is_flat(case):
        for name, g in zip(SHAPES[case], grads, strict=True):
            params.grads[name][...] = g
        return None
    return grads


def values(case: str, params) -> np.ndarray:
    """All parameter values, concatenated (16-bit ones as their uint16 bits)."""
    if is_flat(case):
        return params.data.copy()
    out = np.concatenate([p.reshape(-1) for p in params])
    return out.view(np.uint16) if out.dtype.itemsize == 2 else out
