"""What a rule is, in one place: the registry every other layer derives from.

Each rule module in :mod:`fastopt.rules` ends with ``RULE = Rule(...)``: its element
function (or the variants its options choose between), its per-step constants, its named
state buffers, its hyperparameters with their defaults and valid ranges, its counterparts
in torch and optax, and what the demo and the bench need. :data:`REGISTRY` collects every
such module, found by name, so adding a rule is adding its module:

* ``fastopt.optim`` makes the optimizer class (``fastopt.Lion``) with an explicit
  signature and a docstring listing every keyword;
* ``fastopt.functional`` makes the in-place function (``fastopt.functional.lion``);
* the bench, the demo, the precompile step and the tests take their lists from here.

Conventions a rule module keeps (``tests/test_registry.py`` checks them for every rule):
the element function unpacks its state tuple as ``a, b = s`` in the order of
:attr:`Rule.state` (for the state its options keep) and its constants as ``x, y, ... =
h`` in the order of :attr:`Rule.constants_names`; it returns ``(p, (a, b))``. See
``docs/adding-a-rule.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._checks import check_bool, check_hp_betas, check_hp_lr, check_nonneg, check_unit


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: its name, default, check (``check(name, value)`` returns the
    checked value or raises ``ValueError`` naming it), annotation and meaning."""

    name: str
    default: Any
    check: Callable[[str, Any], Any]
    doc: str
    annotation: str = "float"
    #: After ``*`` in the signatures (an option rather than a coefficient).
    keyword_only: bool = False


@dataclass(frozen=True)
class State:
    """A state buffer, shaped and typed like the parameters (one value per parameter).

    ``initial``: its value before the first step, a number or the name of a
    hyperparameter whose value it starts at (Rprop's step sizes start at ``lr``).
    ``when``: for a buffer only some options keep (RMSprop's ``grad_avg``), a predicate on
    the hyperparameters, and ``option`` says it in words (``"centered=True"``); None:
    always kept. ``sign``: what its values can be, for 8-bit storage: ``"signed"``,
    ``"nonnegative"`` (second moments: the unsigned code book, twice the resolution), or
    ``"exact"`` for a buffer 8 bits cannot hold (ASGD's average of the iterates)."""

    name: str
    doc: str
    initial: float | str = 0.0
    when: Callable[[Mapping[str, Any]], bool] | None = None
    option: str = ""
    sign: str = "signed"


@dataclass(frozen=True)
class GroupScalar:
    """A per-group scalar a rule carries from step to step (Nadam's ``Π_t``): returned by
    the functional call, kept in the optimizer's state_dict as ``group.<k>.<name>``."""

    name: str
    initial: float
    check: Callable[[str, Any], float]
    doc: str


@dataclass(frozen=True)
class Counterpart:
    """The same rule in another library: a dotted name and the keywords that make it
    compute what fastopt's defaults compute (or the closest it has, with ``note``)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


#: The transforms every rule has (``docs/equations.md``, "Common transforms").
COMMON: tuple[Hyper, ...] = (
    Hyper("weight_decay", 0.0, check_nonneg,
          "λ: L2 decay ``g ← g + λw``, or with ``decoupled_weight_decay`` ``w ← w(1 − ηλ)``.",
          keyword_only=True),
    Hyper("decoupled_weight_decay", False, check_bool,
          "Decay the weights directly (AdamW, Loshchilov & Hutter 2019) instead of adding "
          "``λw`` to the gradient.", "bool", True),
    Hyper("maximize", False, check_bool, "Ascend the objective: ``g ← −g``.", "bool", True),
)


def LR(default: float) -> Hyper:  # noqa: N802 - reads as the constant it makes
    """The learning rate hyperparameter with this rule's default."""
    return Hyper("lr", default, check_hp_lr,
                 "η: a number >= 0, or a schedule ``t' -> η`` (t' = completed steps, 0 on "
                 "the first step; see :mod:`fastopt.schedules`).", "float | Callable[[int], float]")


def EPS(default: float, doc: str = "ε, added to the denominator.") -> Hyper:  # noqa: N802
    return Hyper("eps", default, check_nonneg, doc)


def BETAS(default: tuple[float, float],  # noqa: N802
          doc: str = "(β₁, β₂): the decay rates of the first and second moments, in [0, 1).",
          ) -> Hyper:
    return Hyper("betas", default, check_hp_betas, doc, "tuple[float, float]")


MOMENTUM = Hyper("momentum", 0.9, check_nonneg, "γ, the velocity's decay.")
VELOCITY = State("velocity", "v, the velocity (a step's worth of η-scaled gradients).")
EPS_INSIDE_SQRT = Hyper(
    "eps_inside_sqrt", True, check_bool,
    "The spec's ``√(s + ε)``; False: torch's ``√s + ε``.", "bool", True)
BIAS_CORRECTION = Hyper("bias_correction", True, check_bool,
                        "Divide the moments by ``1 − βᵗ``.", "bool", True)
ALPHA = Hyper("alpha", 0.9, check_unit, "α, the decay of the mean square (the spec's γ).")


@dataclass(frozen=True)
class Rule:
    """Everything fastopt knows about one update rule."""

    #: The class name (``"Adam"``); the functional name is its lower case.
    name: str
    #: One line: the equation and where it comes from (the docstrings start with it).
    summary: str
    #: The element function ``(p, g, s, h) -> (p, s)``, marked ``@device``.
    element: Callable
    #: ``(t, lr, hp) -> h``: the constants of step ``t`` (1 on the first) at learning rate
    #: ``lr``; ``hp`` maps every hyperparameter (and group scalar, after :attr:`advance`).
    constants: Callable[[int, float, Mapping[str, Any]], tuple]
    #: The names of the constants, in the order the element unpacks ``h``.
    constants_names: tuple[str, ...]
    #: The hyperparameters after ``params`` (``lr`` first), with their defaults.
    hyperparameters: tuple[Hyper, ...]
    #: The state buffers, in the order of the element's state tuple.
    state: tuple[State, ...] = ()
    #: More of the docstring: the options, the torch/optax forms.
    details: str = ""
    #: ``hp -> element`` where options choose between element functions (RMSprop).
    variant: Callable[[Mapping[str, Any]], Callable] | None = None
    #: Per-group scalars carried between steps, and ``(t, hp) -> {name: value}``, their
    #: values after step t (computed before the constants, which see them in ``hp``).
    group_state: tuple[GroupScalar, ...] = ()
    advance: Callable[[int, Mapping[str, Any]], dict[str, float]] | None = None
    #: Defaults of the common transforms that differ for this rule (Lion decays the
    #: weights decoupled, as its paper).
    common_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Option sets that, between them, select every element variant and state layout
    #: (for the tests, the PTX check and precompiling).
    variants: tuple[Mapping[str, Any], ...] = ({},)
    #: A layer-wise trust-ratio rule (LAMB, LARS) takes two passes over each array: the
    #: first runs ``direction`` ``(p, g, s, h) -> (u, s)``, writes the state it returns
    #: and sums ``w²`` and ``u²`` over the array (float64, fixed blocks); the host makes
    #: the array's ratio ``trust_ratio(‖w‖, ‖u‖, hp)``; the second runs :attr:`element`
    #: with the ratio appended to its constants (it unpacks ``..., trust_ratio = h``).
    direction: Callable | None = None
    trust_ratio: Callable[[float, float, Mapping[str, Any]], float] | None = None
    #: With ``decoupled_weight_decay``, the rule applies ``weight_decay`` itself, inside its
    #: update (LAMB's ``u + λw``), instead of the common ``w ← w(1 − ηλ)``: the constants
    #: read it from ``hp``.
    decay_in_update: bool = False
    torch: Counterpart | None = None
    optax: Counterpart | None = None
    #: A learning rate that trains the demo's network well with this rule, and one that
    #: keeps it stable on the demo's Rosenbrock valley.
    demo_lr: float = 1e-2
    rosenbrock_lr: float = 1e-3
    #: Whether it takes a square root and a division per value (in cache, the divide unit
    #: limits such rules before memory does: the bench's divider yardstick).
    divides: bool = True
    #: The bench's NumPy yardstick, ``(p, g, state tuple, t)`` in place, with the default
    #: hyperparameters: what a careful NumPy user would write.
    numpy_step: Callable | None = None
    #: Where the rule sits in listings (the spec's rules first, in the spec's order).
    rank: int = 100
    #: One of the lecture notes' rules (``docs/spec.md``): the demo trains these by default.
    spec: bool = False

    @property
    def function(self) -> str:
        """The functional layer's name for the rule (``"adam"``)."""
        return self.name.lower()

    @property
    def all_hyperparameters(self) -> tuple[Hyper, ...]:
        """The rule's hyperparameters, then the common ones (with this rule's defaults)."""
        common = tuple(
            Hyper(h.name, self.common_defaults[h.name], h.check, h.doc, h.annotation,
                  h.keyword_only) if h.name in self.common_defaults else h
            for h in COMMON)
        return self.hyperparameters + common

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.all_hyperparameters}

    def state_of(self, hp: Mapping[str, Any]) -> tuple[State, ...]:
        """The state buffers a group with hyperparameters ``hp`` keeps, in rule order."""
        return tuple(s for s in self.state if s.when is None or s.when(hp))

    def element_for(self, hp: Mapping[str, Any]) -> Callable:
        """The element function these hyperparameters select."""
        return self.element if self.variant is None else self.variant(hp)

    def transform_decay(self, hp: Mapping[str, Any]) -> tuple[float, bool]:
        """``(weight_decay, decoupled)`` for the common transforms: ``(0, False)`` where
        the rule applies its decoupled decay itself (:attr:`decay_in_update`)."""
        if self.decay_in_update and hp["decoupled_weight_decay"]:
            return 0.0, False
        return hp["weight_decay"], hp["decoupled_weight_decay"]

    def initial_value(self, state: State, hp: Mapping[str, Any], lr: float) -> float:
        """The value ``state`` starts at for a group with hyperparameters ``hp`` (``lr``:
        the group's learning rate at the first step)."""
        if isinstance(state.initial, str):
            return lr if state.initial == "lr" else float(hp[state.initial])
        return float(state.initial)

    def __post_init__(self) -> None:
        names = [h.name for h in self.hyperparameters]
        if not names or names[0] != "lr":
            raise ValueError(f"rule {self.name}: the first hyperparameter must be lr")
        if len(set(names)) != len(names) or set(names) & {h.name for h in COMMON}:
            raise ValueError(f"rule {self.name}: hyperparameter names repeat")
        if self.hyperparameters[0].check is not check_hp_lr:
            raise ValueError(f"rule {self.name}: lr must be checked by check_hp_lr")
        if (self.direction is None) != (self.trust_ratio is None):
            raise ValueError(f"rule {self.name}: a trust-ratio rule needs direction and "
                             "trust_ratio both")


_NAMESPACE: dict[str, Any] = {
    "Callable": Callable, "Any": Any,
}


def annotation(h: Hyper) -> Any:
    """The type a hyperparameter's annotation names, for signatures."""
    return eval(h.annotation, dict(_NAMESPACE))  # noqa: S307 - our own type expressions


def signature_order(hps: tuple[Hyper, ...]) -> tuple[list[Hyper], list[Hyper]]:
    """(positional-or-keyword, keyword-only) hyperparameters, each in registry order."""
    return [h for h in hps if not h.keyword_only], [h for h in hps if h.keyword_only]


def hyperparameter_doc(hps: tuple[Hyper, ...]) -> str:
    """A numpydoc ``Parameters`` body for ``hps``."""
    return "\n".join(f"{h.name} : {h.annotation}, default {h.default!r}\n"
                     f"    {h.doc}" for h in hps)


def safe_trust_ratio(param_norm: float, update_norm: float, ratio: float) -> float:
    """``ratio``, or 1 where either norm is 0 (optax's ``scale_by_trust_ratio``): a zero
    parameter array (biases at their start) or a zero update keeps the plain step."""
    return 1.0 if param_norm == 0.0 or update_norm == 0.0 else ratio


def _discover() -> dict[str, Rule]:
    from .. import rules

    found: list[Rule] = []
    for info in pkgutil.iter_modules(rules.__path__):
        if info.name.startswith("_") or info.name in ("registry", "transforms"):
            continue
        rule = getattr(importlib.import_module(f"{rules.__name__}.{info.name}"), "RULE", None)
        if isinstance(rule, Rule):
            found.append(rule)
    found.sort(key=lambda r: (r.rank, r.name))
    out: dict[str, Rule] = {}
    for rule in found:
        if rule.name in out:
            raise ValueError(f"two rule modules define {rule.name}")
        out[rule.name] = rule
    return out


#: Every rule, by class name, the spec's first.
REGISTRY: dict[str, Rule] = {}


def registry() -> dict[str, Rule]:
    """:data:`REGISTRY`, filled on first use."""
    if not REGISTRY:
        REGISTRY.update(_discover())
    return REGISTRY


def rule_named(name: str) -> Rule:
    """The rule with class name ``name`` (or functional name: ``"adam"``)."""
    rules = registry()
    if name in rules:
        return rules[name]
    for rule in rules.values():
        if rule.function == name:
            return rule
    raise KeyError(f"fastopt has no rule {name!r}; it has {sorted(rules)}")
