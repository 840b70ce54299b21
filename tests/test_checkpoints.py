"""Checkpoints carry their hyperparameters and options, as torch.optim's do: a run resumed
into an optimizer built with other settings continues the run it resumes."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fastopt
from fastopt.schedules import Cosine, LinearWarmup


def _grads(n=64, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n) for _ in range(steps)]


def _through_npz(sd):
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    return dict(np.load(buf))  # no allow_pickle: strings and arrays only


@pytest.mark.parametrize("name", list(fastopt.optim.RULE_NAMES))
def test_a_resumed_run_continues_with_the_saved_noise_seed_and_hyperparameters(name):
    grads = _grads()
    p0 = np.random.default_rng(1).standard_normal(64)
    kw = {"clip_norm": 0.5, "grad_noise": fastopt.GradientNoise(0.3, 0.55, seed=7)}
    whole = p0.copy()
    opt = getattr(fastopt, name)(whole, lr=Cosine(0.01, 10), weight_decay=0.01, **kw)
    for g in grads:
        opt.step(g)

    first = p0.copy()
    a = getattr(fastopt, name)(first, lr=Cosine(0.01, 10), weight_decay=0.01, **kw)
    for g in grads[:3]:
        a.step(g)
    sd = _through_npz(a.state_dict())
    resumed = first.copy()
    # built with other settings: another seed, lr, decay, no clipping
    b = getattr(fastopt, name)(resumed, lr=0.5, grad_noise=fastopt.GradientNoise(0.3, seed=8))
    b.load_state_dict(sd)
    assert b.grad_noise == kw["grad_noise"] and b.clip_norm == 0.5
    assert b.param_groups[0]["lr"] == Cosine(0.01, 10)
    assert b.param_groups[0]["weight_decay"] == 0.01
    for g in grads[3:]:
        b.step(g)
    assert resumed.tobytes() == whole.tobytes()


def test_without_the_saved_settings_the_resumed_run_diverges():
    """The control: an old-style checkpoint (no param_groups/options) keeps the new
    optimizer's seed, and the run differs."""
    grads = _grads()
    p = np.zeros(64)
    a = fastopt.SGD(p, grad_noise=fastopt.GradientNoise(0.3, seed=7))
    a.step(grads[0])
    sd = a.state_dict()
    del sd["param_groups"], sd["options"]
    twin_p, other_p = p.copy(), p.copy()
    twin = fastopt.SGD(twin_p, grad_noise=fastopt.GradientNoise(0.3, seed=7))
    other = fastopt.SGD(other_p, grad_noise=fastopt.GradientNoise(0.3, seed=8))
    twin.load_state_dict(sd)
    other.load_state_dict(sd)  # an old checkpoint still loads
    twin.step(grads[1])
    other.step(grads[1])
    assert other.grad_noise.seed == 8
    assert twin_p.tobytes() != other_p.tobytes()


def test_schedules_are_stored_by_class_and_a_users_callable_is_kept():
    p = np.zeros(4)
    a = fastopt.Adam([{"params": [p], "lr": LinearWarmup(Cosine(0.1, 100), 5)},
                      {"params": [np.zeros(3)], "lr": lambda t: 0.5}], betas=(0.8, 0.9))
    sd = _through_npz(a.state_dict())
    mine = lambda t: 0.25  # noqa: E731
    b = fastopt.Adam([{"params": [np.zeros(4)], "lr": 0.3},
                      {"params": [np.zeros(3)], "lr": mine}])
    b.load_state_dict(sd)
    assert b.param_groups[0]["lr"] == LinearWarmup(Cosine(0.1, 100), 5)
    assert b.param_groups[1]["lr"] is mine  # not storable: this optimizer's own is kept
    assert b.param_groups[0]["betas"] == b.param_groups[1]["betas"] == (0.8, 0.9)


def test_bad_saved_settings_are_refused_before_anything_changes():
    p = np.ones(8)
    opt = fastopt.RMSprop(p, lr=0.1)
    good = opt.state_dict()
    opt.step(np.ones(8))
    before = (p.copy(), opt.state_dict())
    cases = [
        ({**good, "param_groups": "not json"}, "not valid JSON"),
        ({**good, "param_groups": good["param_groups"].replace('"lr": 0.1', '"lr": -1.0')},
         "lr must be finite and >= 0"),
        ({**good, "param_groups": "[]"}, "has 0 groups"),
        ({**good, "options": good["options"].replace('"skip_nonfinite"', '"skip"')},
         "must hold clip_norm, grad_noise and skip_nonfinite"),
        ({**good, "options": good["options"].replace('"clip_norm": null', '"clip_norm": -2')},
         "clip_norm must be finite and >= 0"),
        ({**good, "param_groups": good["param_groups"].replace('"centered": false',
                                                               '"centered": true')},
         "keep the state"),
    ]
    for sd, message in cases:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(sd)
        assert p.tobytes() == before[0].tobytes()
        after = opt.state_dict()
        assert after["param_groups"] == before[1]["param_groups"]
        assert after["step"] == before[1]["step"]
