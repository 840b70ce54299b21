"""The rule registry: every entry keeps its conventions, and everything derived from it shows
every rule and every keyword.

The conventions are what make a rule one file: the element function's state and constants
are unpacked by name (``m, v = s``; ``step_size, ... = h``), and those names must be the
registry's, in its order, for every variant the options select.
"""

from __future__ import annotations

import ast
import inspect
import pickle
import textwrap

import numpy as np
import pytest
from reference import STEPS

import fastopt
import fastopt.functional as F
from fastopt._jit import device
from fastopt.drivers import cpu
from fastopt.rules.registry import COMMON, registry

CASES = [(name, options) for name, rule in registry().items() for options in rule.variants]
IDS = [name + "".join(f"-{k}={v}" for k, v in o.items()) for name, o in CASES]


def _unpacked(fn, source_name: str) -> list[str] | None:
    """The names ``fn`` unpacks ``source_name`` into (``a, b = s``), or None."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)
                and node.value.id == source_name and isinstance(node.targets[0], ast.Tuple)):
            return [t.id for t in node.targets[0].elts]
    return None


def _hp(rule, options):
    return {**rule.defaults, **options, **{s.name: s.initial for s in rule.group_state}}


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_element_unpacks_the_registrys_names_in_order(name, options):
    rule = registry()[name]
    hp = _hp(rule, options)
    element = rule.element_for(hp)
    state = [s.name for s in rule.state_of(hp)]
    assert (_unpacked(element, "s") or []) == state, (
        f"{element.__name__} must unpack its state as {', '.join(state)} = s")
    # a trust-ratio rule's step gets each array's ratio after its constants
    names = list(rule.constants_names) + (["trust_ratio"] if rule.direction else [])
    assert _unpacked(element, "h") == names, (
        f"{element.__name__} must unpack its constants as {', '.join(names)} = h")
    if rule.direction is not None:
        assert (_unpacked(rule.direction, "s") or []) == state
        assert _unpacked(rule.direction, "h") == list(rule.constants_names)
    consts = rule.constants(1, 0.1, hp)
    assert isinstance(consts, tuple) and len(consts) == len(rule.constants_names)
    assert all(isinstance(c, (int, float)) for c in consts)


@pytest.mark.parametrize("name", list(registry()))
def test_every_rule_has_an_independent_test_reference(name):
    assert registry()[name].function in STEPS, (
        f"tests/reference.py needs step_{registry()[name].function}, written from the "
        "rule's paper (see docs/adding-a-rule.md)")


@pytest.mark.parametrize("name", list(registry()))
def test_class_and_function_show_every_keyword(name):
    rule = registry()[name]
    cls, fn = getattr(fastopt, name), getattr(F, rule.function)
    assert cls is getattr(fastopt.optim, name) and name in fastopt.__all__
    assert rule.function in F.__all__
    sig, fsig = inspect.signature(cls), inspect.signature(fn)
    for h in rule.all_hyperparameters:
        assert sig.parameters[h.name].default == h.default, h.name
        assert fsig.parameters[h.name].default == h.default, h.name
        kind = sig.parameters[h.name].kind
        assert (kind is inspect.Parameter.KEYWORD_ONLY) == h.keyword_only, h.name
        assert f"{h.name} :" in cls.__doc__ and f"{h.name} :" in fn.__doc__
    for option in ("clip_norm", "grad_noise", "skip_nonfinite"):
        assert option in sig.parameters and f"{option} :" in cls.__doc__
    for s in rule.state:
        assert f"``{s.name}``" in cls.__doc__
        assert s.name in fsig.parameters
    assert rule.summary in cls.__doc__ and rule.summary in fn.__doc__


def test_common_keywords_are_every_rules():
    for rule in registry().values():
        names = [h.name for h in rule.all_hyperparameters]
        assert names[0] == "lr"
        assert {h.name for h in COMMON} <= set(names)


@pytest.mark.parametrize("name", list(registry()))
def test_classes_pickle_by_name_and_step_on_identically(name):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(50)
    opt = getattr(fastopt, name)(p)
    opt.step(rng.standard_normal(50))
    twin = pickle.loads(pickle.dumps(opt))
    assert type(twin) is type(opt)
    g = rng.standard_normal(50)
    opt.step(g)
    twin.step(g)
    assert p.tobytes() == twin._params[0].tobytes()


def test_a_bad_hyperparameter_is_refused_by_name_in_every_class():
    for name in registry():
        with pytest.raises(ValueError, match="lr must be finite"):
            getattr(fastopt, name)(np.zeros(3), lr=-1.0)
        with pytest.raises(ValueError, match=f"{name} has no hyperparameter 'nope'"):
            getattr(fastopt, name)([{"params": np.zeros(3), "nope": 1}])


# ----------------------------------------------------------- any number of state buffers
@device
def _five_states(p, g, s, h):
    a, b, c, d, e = s
    (lr,) = h
    a = a + g
    b = b + a
    c = c + b
    d = d + c
    e = e + d
    return p - lr * e, (a, b, c, d, e)


@pytest.mark.parametrize("parallel", [False, True])
def test_the_cpu_driver_steps_any_number_of_state_arrays(parallel):
    rng = np.random.default_rng(2)
    p, g = rng.standard_normal(100), rng.standard_normal(100)
    st = tuple(np.zeros(100) for _ in range(5))
    p0 = p.copy()
    cpu.step_kernel(_five_states, parallel)(p, g, st, (0.5,), None, None, None, None)
    # from zeros, one step makes every buffer g (a = g, b = 0 + a, ...)
    np.testing.assert_array_equal(p, p0 - 0.5 * g)
    for s in st:
        np.testing.assert_array_equal(s, g)


# ------------------------------------------------------------ layer-wise trust ratios
@pytest.mark.parametrize("name", [n for n, r in registry().items() if r.direction])
def test_trust_ratio_rules_take_each_arrays_norms_in_every_form(name):
    """A list, a FlatParams (whose arrays would otherwise step as one run) and the
    functional call step identically: the ratio is each array's."""
    rng = np.random.default_rng(3)
    shapes = {"w": (30, 4), "b": (4,), "v": (50,)}
    init = {k: rng.standard_normal(s) * (10.0 if k == "b" else 1.0) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(4)]
    listed = [init[k].copy() for k in shapes]
    by_list = getattr(fastopt, name)(listed, weight_decay=0.01)
    flat = fastopt.FlatParams(shapes, dtype=np.float64)
    for k in shapes:
        flat[k] = init[k]
    by_flat = getattr(fastopt, name)(flat, weight_decay=0.01)
    rule = registry()[name]
    fn_params = [init[k].copy() for k in shapes]
    fn_state = [[np.zeros(s) for _ in rule.state] for s in shapes.values()]
    for t, g in enumerate(grads, 1):
        by_list.step([g[k] for k in shapes])
        for k in shapes:
            flat.grads[k][...] = g[k]
        by_flat.step()
        getattr(F, rule.function)(fn_params, [g[k] for k in shapes],
                                  *zip(*fn_state, strict=True), t, weight_decay=0.01)
    for j, k in enumerate(shapes):
        assert listed[j].tobytes() == flat[k].tobytes(), k
        assert listed[j].tobytes() == fn_params[j].tobytes(), k


BAD_HYPERPARAMETERS = [
    ("Rprop", {"etas": (1.2, 0.5)}, "0 < eta_minus < 1 < eta_plus"),
    ("Rprop", {"etas": 0.5}, "etas must be a pair (eta_minus, eta_plus)"),
    ("Rprop", {"step_sizes": (1.0, 0.1)}, "min <= max"),
    ("Adadelta", {"rho": 1.0}, "rho must be in [0, 1)"),
    ("ASGD", {"t0": -1.0}, "t0 must be finite and >= 0"),
    ("ASGD", {"alpha": float("nan")}, "alpha must not be NaN"),
    ("Lion", {"betas": (0.9, 1.5)}, "betas[1] must be in [0, 1)"),
    ("LARS", {"trust_coefficient": -1e-3}, "trust_coefficient must be finite and >= 0"),
    ("LAMB", {"eps": float("inf")}, "eps must be finite and >= 0"),
    ("Adamax", {"betas": (1.0, 0.9)}, "betas[0] must be in [0, 1)"),
]


@pytest.mark.parametrize(("name", "kw", "message"), BAD_HYPERPARAMETERS,
                         ids=[f"{n}-{next(iter(k))}" for n, k, _ in BAD_HYPERPARAMETERS])
def test_new_rules_refuse_bad_hyperparameters_everywhere_before_anything_changes(
        name, kw, message):
    import re

    rule = registry()[name]
    p = np.ones(8)
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(fastopt, name)(p, **kw)
    opt = getattr(fastopt, name)(p)
    opt.step(np.ones(8))
    before = p.copy(), opt.state_dict()["param_groups"]
    opt.param_groups[0].update(kw)  # edited between steps: checked at the next step
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.step(np.ones(8))
    assert p.tobytes() == before[0].tobytes()
    state = [np.zeros(8) for _ in rule.state]
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(F, rule.function)(p, np.ones(8), *state, 1, **kw)
    assert p.tobytes() == before[0].tobytes() and not any(s.any() for s in state)
