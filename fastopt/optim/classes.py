"""One optimizer class per registered rule, made from its registry entry.

:func:`optimizer_class` writes each class's ``__init__`` with an explicit signature (every
hyperparameter with its default and type, the common transforms and options), so
``help(fastopt.Adam)`` and ``inspect.signature`` show every keyword, and its docstring
from the rule's equations and the hyperparameters' meanings. What a class does at a step
is :class:`RuleOptimizer`'s, reading the rule's entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._checks import lr_at
from ..noise import GradientNoise
from ..rules.registry import Hyper, Rule, annotation, hyperparameter_doc, signature_order
from .base import Optimizer, Params


class RuleOptimizer(Optimizer):
    """An optimizer whose rule is the registry entry :attr:`RULE`."""

    RULE: Rule

    def _state_names(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(s.name for s in self.RULE.state_of(group))

    def _initial_state_value(self, name: str, group: Mapping[str, Any]) -> float:
        state = next(s for s in self.RULE.state if s.name == name)
        if state.initial == "lr":  # the schedule is asked only by a rule that needs it
            return self.RULE.initial_value(state, group, lr_at(group["lr"], 0))
        return self.RULE.initial_value(state, group, 0.0)

    def _state_signs(self) -> tuple[str, ...]:
        signs = {s.name: s.sign for s in self.RULE.state}
        return tuple(signs[n] for n in self._state_buffer_names())

    def _initial_group_state(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {s.name: s.initial for s in self.RULE.group_state}

    def _checked_group_state(self, name: str, value: float, key: str) -> float:
        scalar = next(s for s in self.RULE.group_state if s.name == name)
        try:
            return scalar.check(name, value)
        except ValueError as exc:
            raise ValueError(f"state dict {key!r}: {exc}") from None

    def _rule(self, group: Mapping[str, Any]) -> Callable:
        return self.RULE.element_for(group)

    def _transform_decay(self, group: Mapping[str, Any]) -> tuple[float, bool]:
        return self.RULE.transform_decay(group)

    def _trust(self, group: Mapping[str, Any]) -> Any:
        rule = self.RULE
        if rule.direction is None:
            return None
        return rule.direction, lambda pn, un: rule.trust_ratio(pn, un, group)

    def _constants(self, t: int, lr: float, group: Mapping[str, Any],
                   group_state: dict[str, float]) -> tuple[tuple[float, ...], dict[str, float]]:
        rule = self.RULE
        if rule.advance is None:
            return rule.constants(t, lr, group), group_state
        group_state = rule.advance(t, {**group, **group_state})
        return rule.constants(t, lr, {**group, **group_state}), group_state


#: The options every optimizer takes after its hyperparameters.
OPTIONS_DOC = """clip_norm : float | None, default None
    Clip the gradients to this global L2 norm over all parameters before the step
    (torch's ``clip_grad_norm_``, a float64 reduction with the same bits at any thread
    count).
grad_noise : GradientNoise | None, default None
    Annealed gradient noise ``g ← g + N(0, η/(1 + t)^γ)`` (:class:`fastopt.GradientNoise`).
skip_nonfinite : bool, default False
    A NaN or infinite gradient skips the whole step (counted in ``skipped_steps``).
state_dtype : str | None, default None
    How the state is stored (``docs/precision.md``): None (the parameters' float32 or
    float64), ``"bfloat16"`` (rounded stochastically), ``"8bit"`` (the faster 8-bit
    format, today ``"fp8"``), ``"int8"`` (blocks of 256 codes of
    bitsandbytes' dynamic map and a float32 maximum each) or ``"fp8"`` (8-bit floats,
    E4M3 for signed state and E5M2 for second moments, a float32 scale per block).
master_weights : bool, default False
    With 16-bit (float16, ``ml_dtypes.bfloat16``) parameters: keep a float32 copy that
    the step updates, and write the parameters rounded from it.
stochastic_rounding : bool, default False
    With 16-bit parameters and no master copy: round each stepped parameter up or down
    with probability by its distance, so updates below half an ulp still count on
    average. Deterministic: random bits from (rounding_seed, step, element).
grad_dtype : str | None, default None
    The gradients' dtype when it is not the parameters' (float32 parameters with
    bfloat16 gradients, or the reverse).
min_8bit_size : int, default 4096
    With 8-bit state, arrays with fewer values keep float32 state (as bitsandbytes).
rounding_seed : int, default 0
    The seed of the stochastic rounding's random bits."""

def class_doc(rule: Rule) -> str:
    state = "\n".join(
        f"    ``{s.name}``: {s.doc}" + (f" Starts at ``{s.initial}``." if s.initial else "")
        for s in rule.state) or "    none"
    parts = [rule.summary]
    if rule.details:
        parts.append(rule.details)
    parts.append(
        "Parameters\n----------\n"
        "params : ndarray | list | FlatParams | list[dict]\n"
        "    An ndarray, a list of ndarrays, a :class:`fastopt.FlatParams`, or a list of "
        "group dicts\n    ``{\"params\": ..., **hyperparameters}`` as in torch.optim; GPU "
        "arrays step on the GPU.\n"
        f"{hyperparameter_doc(rule.all_hyperparameters)}\n{OPTIONS_DOC}")
    parts.append("Notes\n-----\nState buffers (``opt.state[i][name]``, "
                 "``opt.state_dict()['state.<name>']``):\n\n" + state)
    return "\n\n".join(parts)


def optimizer_class(rule: Rule) -> type[RuleOptimizer]:
    """The optimizer class for ``rule``, named as the rule."""
    hps = rule.all_hyperparameters
    positional, keyword = signature_order(hps)
    names = [h.name for h in hps]
    ns: dict[str, Any] = {"_init": RuleOptimizer.__init__, "_defaults": rule.defaults}

    def param(h: Hyper) -> str:
        return f"{h.name}=_defaults[{h.name!r}]"

    params = ["self", "params", *map(param, positional), "*", *map(param, keyword),
              "clip_norm=None", "grad_noise=None", "skip_nonfinite=False", "state_dtype=None",
              "master_weights=False", "stochastic_rounding=False", "grad_dtype=None",
              "min_8bit_size=4096", "rounding_seed=0"]
    hp = ", ".join(f"{n!r}: {n}" for n in names)
    source = (f"def __init__({', '.join(params)}):\n"
              f"    _init(self, params, {{{hp}}}, clip_norm=clip_norm, "
              "grad_noise=grad_noise, skip_nonfinite=skip_nonfinite, state_dtype=state_dtype, "
              "master_weights=master_weights, stochastic_rounding=stochastic_rounding, "
              "grad_dtype=grad_dtype, min_8bit_size=min_8bit_size, "
              "rounding_seed=rounding_seed)\n")
    exec(source, ns)  # noqa: S102 - a signature written from the registry, as dataclasses do
    init = ns["__init__"]
    init.__annotations__ = {"params": Params, **{h.name: annotation(h) for h in hps},
                            "clip_norm": float | None, "grad_noise": GradientNoise | None,
                            "skip_nonfinite": bool, "state_dtype": str | None,
                            "master_weights": bool, "stochastic_rounding": bool,
                            "grad_dtype": str | None, "min_8bit_size": int,
                            "rounding_seed": int, "return": None}
    init.__qualname__ = f"{rule.name}.__init__"
    init.__module__ = __package__
    checks = {h.name: h.check for h in hps}
    cls = type(rule.name, (RuleOptimizer,), {
        "RULE": rule, "_hyper_checks": checks, "__init__": init, "__doc__": class_doc(rule),
        "__module__": __package__, "__qualname__": rule.name,
    })
    return cls
