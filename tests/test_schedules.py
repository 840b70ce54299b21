"""Learning-rate schedules: values against hand-written formulas, flags, and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt.schedules import (
    Constant,
    Cosine,
    Exponential,
    InverseTime,
    LinearWarmup,
    Power,
    Schedule,
    Step,
)

TS = [0, 1, 2, 3, 7, 10, 99, 1000, 123_456]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


# ------------------------------------------------------------------------------- values


@pytest.mark.parametrize("t", TS)
def test_constant(t):
    assert Constant(0.3)(t) == 0.3


@pytest.mark.parametrize("lr0, decay", [(0.1, 1.0), (1.0, 0.01), (0.5, 0.0), (2.0, 3.5)])
@pytest.mark.parametrize("t", TS)
def test_inverse_time(lr0, decay, t):
    assert close(InverseTime(lr0, decay)(t), lr0 / (1 + decay * t))


def test_inverse_time_hand_values():
    s = InverseTime(1.0, decay=0.5)
    assert [s(t) for t in (0, 1, 2, 6)] == [1.0, 1 / 1.5, 0.5, 0.25]
    assert InverseTime(0.2)(4) == pytest.approx(0.04)  # default decay = 1


@pytest.mark.parametrize(
    "lr0, power, decay", [(0.1, 0.55, 1.0), (1.0, 1.0, 0.1), (0.3, 0.5, 2.0), (1.0, 2.0, 1.0)]
)
@pytest.mark.parametrize("t", TS)
def test_power(lr0, power, decay, t):
    assert close(Power(lr0, power, decay)(t), lr0 / (1 + decay * t) ** power)


def test_power_hand_values():
    s = Power(1.0, power=0.5, decay=1.0)
    assert s(0) == 1.0
    assert s(3) == pytest.approx(0.5)  # 1 / sqrt(4)
    assert s(99) == pytest.approx(0.1)  # 1 / sqrt(100)
    assert Power(2.0)(0) == 2.0
    assert Power(2.0)(1) == pytest.approx(2.0 * 2.0**-0.55)  # defaults power=.55, decay=1


@pytest.mark.parametrize("lr0, gamma", [(0.1, 0.9), (1.0, 0.5), (0.3, 1.0), (2.0, 0.999)])
@pytest.mark.parametrize("t", TS)
def test_exponential(lr0, gamma, t):
    assert close(Exponential(lr0, gamma)(t), lr0 * math.exp(t * math.log(gamma)))


def test_exponential_hand_values():
    s = Exponential(1.0, 0.5)
    assert [s(t) for t in range(4)] == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("lr0, step_size, gamma", [(0.1, 1, 0.1), (1.0, 30, 0.5), (0.3, 7, 1.0)])
@pytest.mark.parametrize("t", TS)
def test_step(lr0, step_size, gamma, t):
    assert close(Step(lr0, step_size, gamma)(t), lr0 * gamma ** math.floor(t / step_size))


def test_step_hand_values():
    s = Step(1.0, step_size=3)  # default gamma = 0.1
    got = [s(t) for t in range(8)]
    want = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert got == pytest.approx(want)


@pytest.mark.parametrize("lr0, total, min_lr", [(0.1, 100, 0.0), (1.0, 7, 0.2), (0.5, 1, 0.1)])
@pytest.mark.parametrize("t", TS)
def test_cosine(lr0, total, min_lr, t):
    tt = min(t, total)
    want = min_lr + (lr0 - min_lr) * (1 + math.cos(math.pi * tt / total)) / 2
    assert math.isclose(Cosine(lr0, total, min_lr)(t), want, rel_tol=1e-12, abs_tol=1e-15)


def test_cosine_hand_values_and_hold():
    s = Cosine(1.0, total_steps=4, min_lr=0.2)
    assert s(0) == 1.0
    assert s(2) == pytest.approx(0.6)  # halfway: midpoint of lr0 and min_lr
    assert s(1) == pytest.approx(0.2 + 0.8 * (1 + math.sqrt(0.5)) / 2)
    assert s(1) > s(2) > s(3) > s(4)
    for t in (4, 5, 10, 10**6):
        assert s(t) == 0.2
    assert Cosine(0.5, 10)(10) == 0.0  # default min_lr = 0
    assert Cosine(0.5, 10)(11) == 0.0


# ------------------------------------------------------------------------------- warmup


def test_warmup_constant_default_start():
    s = LinearWarmup(0.4, warmup_steps=4)
    assert [s(t) for t in range(7)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_warmup_start_factor():
    s = LinearWarmup(1.0, warmup_steps=5, start_factor=0.5)
    assert s(0) == 0.5
    assert s(1) == pytest.approx(0.6)
    assert s(4) == pytest.approx(0.9)
    assert s(5) == 1.0
    assert s(50) == 1.0


def test_warmup_start_factor_one_is_identity():
    base = InverseTime(0.1, 0.3)
    s = LinearWarmup(base, warmup_steps=10, start_factor=1.0)
    for t in TS:
        assert s(t) == base(t)


@pytest.mark.parametrize("warmup, f0", [(1, 0.0), (3, 0.25), (20, 0.1)])
@pytest.mark.parametrize("t", TS + [2, 19, 20, 21])
def test_warmup_wraps_schedule(warmup, f0, t):
    base = Cosine(0.5, total_steps=50, min_lr=0.01)
    want = base(t) * (f0 + (1 - f0) * t / warmup) if t < warmup else base(t)
    assert close(LinearWarmup(base, warmup, f0)(t), want)


def test_warmup_uses_undelayed_t_of_base():
    seen = []

    def base(t):
        seen.append(t)
        return 2.0

    s = LinearWarmup(base, warmup_steps=3, start_factor=0.0)
    assert [s(t) for t in range(5)] == pytest.approx([0.0, 2 / 3, 4 / 3, 2.0, 2.0])
    assert seen == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------- Robbins–Monro


@pytest.mark.parametrize(
    "sched, expected",
    [
        (Constant(0.1), False),
        (InverseTime(0.1), True),
        (InverseTime(0.1, decay=1e-4), True),
        (InverseTime(0.1, decay=0.0), False),
        (InverseTime(0.0, decay=1.0), False),  # Σ η = 0
        (Power(0.1), True),  # default power 0.55
        (Power(0.1, power=0.5), False),  # Σ η² harmonic: diverges
        (Power(0.1, power=0.5000001), True),
        (Power(0.1, power=1.0), True),
        (Power(0.1, power=1.2), False),  # Σ η converges
        (Power(0.1, power=0.3), False),
        (Power(0.1, power=0.75, decay=0.0), False),  # constant
        (Power(0.0, power=0.75), False),
        (Exponential(0.1, 0.99), False),
        (Exponential(0.1, 1.0), False),
        (Step(0.1, 10), False),
        (Step(0.1, 10, gamma=1.0), False),
        (Cosine(0.1, 100), False),
        (Cosine(0.1, 100, min_lr=0.1), False),
        (LinearWarmup(0.1, 10), False),
        (LinearWarmup(InverseTime(0.1), 10), True),
        (LinearWarmup(Power(0.1, power=0.75), 10, 0.5), True),
        (LinearWarmup(Power(0.1, power=0.5), 10), False),
        (LinearWarmup(Cosine(0.1, 100), 10), False),
        (LinearWarmup(LinearWarmup(InverseTime(0.1), 5), 10), True),
        (LinearWarmup(lambda t: 0.1 / (1 + t), 10), False),  # no flag to inherit
    ],
)
def test_robbins_monro_flag(sched, expected):
    assert sched.robbins_monro is expected


def test_robbins_monro_flag_matches_partial_sums():
    """Numerical sanity: RM schedules' partial sums of η grow without bound, of η² level off."""

    def sums(s, n):
        eta = np.array([s(t) for t in range(n)])
        return eta.sum(), (eta**2).sum()

    rm = Power(1.0, power=0.6)
    s1, q1 = sums(rm, 10_000)
    s2, q2 = sums(rm, 100_000)
    assert s2 > 2.0 * s1  # Σ η keeps growing (~ n^0.4)
    assert q2 < 1.01 * q1 + 0.5  # Σ η² nearly converged
    assert rm.robbins_monro

    ex = Exponential(1.0, 0.99)
    s1, _ = sums(ex, 10_000)
    s2, _ = sums(ex, 100_000)
    assert s2 == pytest.approx(s1)  # Σ η converged: no Robbins–Monro
    assert not ex.robbins_monro


def test_all_satisfy_protocol():
    for s in (
        Constant(1.0),
        InverseTime(1.0),
        Power(1.0),
        Exponential(1.0, 0.5),
        Step(1.0, 2),
        Cosine(1.0, 2),
        LinearWarmup(1.0, 2),
    ):
        assert isinstance(s, Schedule)
        assert isinstance(s(3), float)


def test_int_arguments_give_float_results():
    assert type(Exponential(1, 1)(5)) is float
    assert type(Step(2, 3, 1)(5)) is float
    assert type(Constant(1)(0)) is float
    assert type(LinearWarmup(1, 2)(5)) is float


def test_numpy_integer_step():
    assert InverseTime(1.0)(np.int64(3)) == 0.25
    assert Step(1.0, 2, 0.5)(np.int32(4)) == 0.25


def test_frozen():
    s = InverseTime(0.1)
    with pytest.raises(AttributeError):
        s.lr0 = 1.0  # type: ignore[misc]


# -------------------------------------------------------------------------- validation

NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: Constant(-0.1), "lr"),
        (lambda: Constant(NAN), "lr"),
        (lambda: InverseTime(-1.0), "lr0"),
        (lambda: InverseTime(NAN), "lr0"),
        (lambda: InverseTime(INF), "lr0"),
        (lambda: InverseTime(-INF), "lr0"),
        (lambda: InverseTime(0.1, decay=-0.5), "decay"),
        (lambda: InverseTime(0.1, decay=NAN), "decay"),
        (lambda: Power(-0.1), "lr0"),
        (lambda: Power(NAN), "lr0"),
        (lambda: Power(0.1, power=0.0), "power"),
        (lambda: Power(0.1, power=-1.0), "power"),
        (lambda: Power(0.1, power=NAN), "power"),
        (lambda: Power(0.1, decay=-1.0), "decay"),
        (lambda: Exponential(-0.1, 0.9), "lr0"),
        (lambda: Exponential(INF, 0.9), "lr0"),
        (lambda: Exponential(0.1, 0.0), "gamma"),
        (lambda: Exponential(0.1, -0.5), "gamma"),
        (lambda: Exponential(0.1, 1.0001), "gamma"),
        (lambda: Exponential(0.1, NAN), "gamma"),
        (lambda: Step(-0.1, 10), "lr0"),
        (lambda: Step(NAN, 10), "lr0"),
        (lambda: Step(0.1, 0), "step_size"),
        (lambda: Step(0.1, -3), "step_size"),
        (lambda: Step(0.1, 2.5), "step_size"),
        (lambda: Step(0.1, 2.0), "step_size"),
        (lambda: Step(0.1, True), "step_size"),
        (lambda: Step(0.1, 10, gamma=0.0), "gamma"),
        (lambda: Step(0.1, 10, gamma=1.5), "gamma"),
        (lambda: Cosine(-0.1, 100), "lr0"),
        (lambda: Cosine(NAN, 100), "lr0"),
        (lambda: Cosine(0.1, 0), "total_steps"),
        (lambda: Cosine(0.1, -5), "total_steps"),
        (lambda: Cosine(0.1, 10.0), "total_steps"),
        (lambda: Cosine(0.1, 100, min_lr=-0.01), "min_lr"),
        (lambda: Cosine(0.1, 100, min_lr=0.2), "min_lr"),
        (lambda: Cosine(0.1, 100, min_lr=NAN), "min_lr"),
        (lambda: LinearWarmup(0.1, 0), "warmup_steps"),
        (lambda: LinearWarmup(0.1, -1), "warmup_steps"),
        (lambda: LinearWarmup(0.1, 1.5), "warmup_steps"),
        (lambda: LinearWarmup(0.1, 10, start_factor=-0.1), "start_factor"),
        (lambda: LinearWarmup(0.1, 10, start_factor=1.1), "start_factor"),
        (lambda: LinearWarmup(0.1, 10, start_factor=NAN), "start_factor"),
        (lambda: LinearWarmup(-0.1, 10), "schedule"),
        (lambda: LinearWarmup(NAN, 10), "schedule"),
        (lambda: LinearWarmup("0.1", 10), "schedule"),
    ],
)
def test_bad_arguments(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_boundary_arguments_accepted():
    Constant(0.0)
    InverseTime(0.0, decay=0.0)
    Power(0.1, power=1e-9, decay=0.0)
    Exponential(0.1, 1.0)
    Step(0.1, 1, gamma=1.0)
    Step(0.1, np.int64(3))
    Cosine(0.1, 1, min_lr=0.1)
    LinearWarmup(0.0, 1, start_factor=0.0)
    LinearWarmup(0.1, 1, start_factor=1.0)


@pytest.mark.parametrize(
    "sched",
    [
        Constant(0.1),
        InverseTime(0.1),
        Power(0.1),
        Exponential(0.1, 0.9),
        Step(0.1, 3),
        Cosine(0.1, 10),
        LinearWarmup(0.1, 5),
        LinearWarmup(InverseTime(0.1), 5),
    ],
)
def test_negative_t_raises(sched):
    with pytest.raises(ValueError, match="t must be >= 0"):
        sched(-1)
    with pytest.raises(ValueError):
        sched(-100)
    sched(0)  # and t = 0 is fine


@pytest.mark.parametrize("t", [1.5, 2.0, "3", None])
def test_non_integer_t_raises(t):
    with pytest.raises(TypeError):
        InverseTime(0.1)(t)
