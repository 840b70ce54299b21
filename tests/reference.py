"""Plain-NumPy float64 reference implementations of the equations fastopt implements.

Written from ``docs/spec.md`` (the spec) and ``docs/equations.md`` in the most
literal textbook form (Adamax, Adadelta, RAdam, Rprop, ASGD, Lion, LAMB and LARS from their
papers and the torch.optim / optax documentation they are compared with, each cited at its step),
deliberately *not* in the algebraically rearranged forms the package's kernels use (e.g.
Adam here forms ``m̂ = m/(1−β₁ᵗ)`` and ``v̂ = v/(1−β₂ᵗ)`` explicitly). Nothing in this module
calls fastopt's rules, drivers or functional layer.
The one exception is the gradient noise: the pure-Python counter-based generator
``fastopt.philox.standard_normal`` supplies the N(0, 1) draws (it is checked separately
against known-answer vectors).

Every computation is float64, whatever the dtype of the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fastopt import philox

# ---------------------------------------------------------------------------- defaults

#: Each rule's hyperparameters with the defaults of the spec / docs/equations.md (the learning
#: rates are the "per rule" defaults of the classes).
DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 1e-2},
    "momentum": {"lr": 1e-2, "momentum": 0.9},
    "nesterov": {"lr": 1e-2, "momentum": 0.9},
    "adagrad": {"lr": 1e-2, "eps": 1e-6, "eps_inside_sqrt": True,
                "initial_accumulator_value": 0.0},
    "rmsprop": {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "eps_inside_sqrt": True,
                "centered": False, "momentum": 0.0},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "bias_correction": True,
             "eps_hat": False},
    "nadam": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "momentum_decay": None},
    "amsgrad": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "bias_correction": False},
    "adamax": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
    "radam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    "rprop": {"lr": 1e-2, "etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)},
    "asgd": {"lr": 1e-2, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6},
    "lion": {"lr": 1e-4, "betas": (0.9, 0.99)},
    "lamb": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6},
    "lars": {"lr": 1.0, "momentum": 0.9, "trust_coefficient": 1e-3, "eps": 0.0},
}

#: Common hyperparameters every rule has (docs/equations.md, "Common transforms").
COMMON = {"weight_decay": 0.0, "decoupled_weight_decay": False, "maximize": False}

#: Rules whose defaults for a common hyperparameter differ from ``COMMON``.
COMMON_OVERRIDES: dict[str, dict[str, Any]] = {
    # Lion's weight decay is decoupled unless asked otherwise (Chen et al. 2023, optax.lion)
    "lion": {"decoupled_weight_decay": True},
    # LAMB's own decay λw is part of the update whose norm the trust ratio takes (You et al.
    # 2019, Algorithm 2; optax.lamb)
    "lamb": {"decoupled_weight_decay": True},
}

#: Rules whose *decoupled* weight decay is not the common ``w ← w(1 − ηλ)`` but part of the
#: rule's own update: the step function applies ``hp["weight_decay"]`` itself when
#: ``hp["decoupled_weight_decay"]``, and the common transforms leave ``w`` alone. (Their
#: L2 decay, ``g ← g + λw``, is still the common transform's.)
DECAY_IN_UPDATE = frozenset({"lamb"})


def common_defaults(rule: str) -> dict[str, Any]:
    """The common hyperparameters' defaults for ``rule``: ``COMMON`` and its overrides."""
    overrides = COMMON_OVERRIDES.get(rule, {})
    unknown = set(overrides) - set(COMMON)
    if unknown:
        raise KeyError(f"COMMON_OVERRIDES[{rule!r}]: {sorted(unknown)} are not in COMMON")
    return {**COMMON, **overrides}


def state_names(rule: str, hp: Mapping[str, Any]) -> tuple[str, ...]:
    """The state a rule keeps (named as fastopt's ``state_dict`` names them)."""
    if rule in ("momentum", "nesterov"):
        return ("velocity",)
    if rule == "adagrad":
        return ("sum_sq",)
    if rule == "rmsprop":
        names = ("square_avg",)
        if hp["centered"]:
            names += ("grad_avg",)
        if hp["momentum"] > 0:
            names += ("momentum_buffer",)
        return names
    if rule in ("adam", "nadam"):
        return ("m", "v")
    if rule == "amsgrad":
        return ("m", "v", "v_max")
    if rule == "adamax":
        return ("m", "u")
    if rule == "adadelta":
        return ("square_avg", "acc_delta")
    if rule == "radam":
        return ("m", "v")
    if rule == "rprop":
        return ("prev", "step_size")
    if rule == "asgd":
        return ("ax",)
    if rule == "lion":
        return ("m",)
    if rule == "lamb":
        return ("m", "v")
    if rule == "lars":
        return ("velocity",)
    return ()


def initial_lr(hp: Mapping[str, Any]) -> float:
    """The group's learning rate at construction: ``lr``, or ``lr(0)`` for a schedule."""
    lr = hp["lr"]
    return float(lr(0)) if callable(lr) else float(lr)


def init_state(rule: str, hp: Mapping[str, Any], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    state = {name: np.zeros(shape, np.float64) for name in state_names(rule, hp)}
    if rule == "adagrad":
        state["sum_sq"][...] = hp["initial_accumulator_value"]  # G₀
    if rule == "rprop":
        state["step_size"][...] = initial_lr(hp)  # Δ₀ = η (torch.optim.Rprop)
    return state


# ---------------------------------------------------------------------------- the rules
#
# ``step_<rule>(w, g, s, t, lr, hp)``: one step of the rule on the float64 array ``w`` (the
# point the optimizer holds) given the transformed gradient ``g``, the state dict ``s``, the
# step number ``t`` (1 on the first step) and this step's learning rate ``lr``. In place.


def step_sgd(w, g, s, t, lr, hp):
    # w_{t+1} = w_t − η g
    w -= lr * g


def step_momentum(w, g, s, t, lr, hp):
    # v_t = γ v_{t−1} + η g;  w_{t+1} = w_t − v_t
    gamma = hp["momentum"]
    s["velocity"][...] = gamma * s["velocity"] + lr * g
    w -= s["velocity"]


def step_nesterov(w, g, s, t, lr, hp):
    # Spec: v_t = γ v_{t−1} + η ∇L(w_t − γ v_{t−1});  w_{t+1} = w_t − v_t.
    # The optimizer holds the look-ahead point φ = w_t − γ v_{t−1} (where the caller
    # evaluates g), so recover w_t, take the spec's step, and hold the next look-ahead point.
    gamma = hp["momentum"]
    v_prev = s["velocity"].copy()
    w_t = w + gamma * v_prev
    v_t = gamma * v_prev + lr * g
    w_next = w_t - v_t
    w[...] = w_next - gamma * v_t
    s["velocity"][...] = v_t


def _denominator(x, eps, eps_inside_sqrt):
    # The spec's √(x + ε), or torch's √x + ε.
    return np.sqrt(x + eps) if eps_inside_sqrt else np.sqrt(x) + eps


def step_adagrad(w, g, s, t, lr, hp):
    # G_t = G_{t−1} + g²;  w_{t+1} = w_t − η g / √(G_t + ε)
    G = s["sum_sq"]
    G += g**2
    w -= lr / _denominator(G, hp["eps"], hp["eps_inside_sqrt"]) * g


def step_rmsprop(w, g, s, t, lr, hp):
    # E[g²]_t = α E[g²]_{t−1} + (1 − α) g²;  w_{t+1} = w_t − η g / √(E[g²]_t + ε)
    alpha = hp["alpha"]
    E = s["square_avg"]
    E[...] = alpha * E + (1 - alpha) * g**2
    if hp["centered"]:
        # Graves 2013: ḡ_t = α ḡ_{t−1} + (1 − α) g; the variance estimate E − ḡ².
        gbar = s["grad_avg"]
        gbar[...] = alpha * gbar + (1 - alpha) * g
        mean_square = E - gbar**2
    else:
        mean_square = E
    denom = _denominator(mean_square, hp["eps"], hp["eps_inside_sqrt"])
    if hp["momentum"] > 0:
        # b_t = μ b_{t−1} + g / denom;  w_{t+1} = w_t − η b_t
        b = s["momentum_buffer"]
        b[...] = hp["momentum"] * b + g / denom
        w -= lr * b
    else:
        w -= lr / denom * g


def _moments(g, s, betas):
    b1, b2 = betas
    s["m"][...] = b1 * s["m"] + (1 - b1) * g
    s["v"][...] = b2 * s["v"] + (1 - b2) * g**2
    return s["m"], s["v"]


def step_adam(w, g, s, t, lr, hp):
    b1, b2 = hp["betas"]
    m, v = _moments(g, s, hp["betas"])
    if not hp["bias_correction"]:
        w -= lr * m / (np.sqrt(v) + hp["eps"])
    elif hp["eps_hat"]:
        # Kingma & Ba, end of section 2 (Keras, TensorFlow): the corrections in the step size
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        w -= lr_t * m / (np.sqrt(v) + hp["eps"])
    else:
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w -= lr / (np.sqrt(v_hat) + hp["eps"]) * m_hat


def nadam_mu(t: int, beta1: float, psi: float) -> float:
    """Dozat's warming momentum μ_t = β₁ (1 − ½·0.96^(tψ))."""
    return beta1 * (1 - 0.5 * 0.96 ** (t * psi))


def nadam_mu_product(t: int, beta1: float, psi: float) -> float:
    """Π_t = ∏_{i ≤ t} μ_i, computed from scratch."""
    return math.prod(nadam_mu(i, beta1, psi) for i in range(1, t + 1))


def step_nadam(w, g, s, t, lr, hp):
    b1, b2 = hp["betas"]
    m, v = _moments(g, s, hp["betas"])
    psi = hp["momentum_decay"]
    if psi is None:
        # Dozat with a constant β₁ (optax.nadam):
        # m̂ = β₁ m / (1 − β₁^(t+1)) + (1 − β₁) g / (1 − β₁ᵗ)
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
    else:
        # Dozat's schedule (torch NAdam): m̂ = μ_{t+1} m / (1 − Π_{t+1}) + (1 − μ_t) g / (1 − Π_t)
        mu_t, mu_next = nadam_mu(t, b1, psi), nadam_mu(t + 1, b1, psi)
        prod_t = nadam_mu_product(t, b1, psi)
        prod_next = prod_t * mu_next
        m_hat = mu_next * m / (1 - prod_next) + (1 - mu_t) * g / (1 - prod_t)
    v_hat = v / (1 - b2**t)
    w -= lr / (np.sqrt(v_hat) + hp["eps"]) * m_hat


def step_amsgrad(w, g, s, t, lr, hp):
    b1, b2 = hp["betas"]
    m, v = _moments(g, s, hp["betas"])
    v_max = s["v_max"]
    v_max[...] = np.maximum(v_max, v)  # v̂_t = max(v̂_{t−1}, v_t)
    if hp["bias_correction"]:
        # torch Adam(amsgrad=True): bias-correct m and the running max of the raw v.
        m_hat = m / (1 - b1**t)
        v_max_hat = v_max / (1 - b2**t)
        w -= lr / (np.sqrt(v_max_hat) + hp["eps"]) * m_hat
    else:
        # Spec: no renormalisation, w_{t+1} = w_t − η m_t / (√v̂_t + ε)
        w -= lr / (np.sqrt(v_max) + hp["eps"]) * m


def step_adamax(w, g, s, t, lr, hp):
    # Kingma & Ba 2015, section 7.1 (Algorithm 2), with torch.optim.Adamax's ε:
    # m_t = β₁ m_{t−1} + (1 − β₁) g;  u_t = max(β₂ u_{t−1}, |g| + ε);
    # w_{t+1} = w_t − (η / (1 − β₁ᵗ)) m_t / u_t
    b1, b2 = hp["betas"]
    m, u = s["m"], s["u"]
    m[...] = b1 * m + (1 - b1) * g
    u[...] = np.maximum(b2 * u, np.abs(g) + hp["eps"])
    w -= (lr / (1 - b1**t)) * m / u


def step_adadelta(w, g, s, t, lr, hp):
    # Zeiler 2012, Algorithm 1, with torch.optim.Adadelta's learning rate η:
    # E[g²]_t = ρ E[g²]_{t−1} + (1 − ρ) g²;
    # Δ_t = √(E[Δ²]_{t−1} + ε) / √(E[g²]_t + ε) · g;
    # E[Δ²]_t = ρ E[Δ²]_{t−1} + (1 − ρ) Δ_t²;  w_{t+1} = w_t − η Δ_t
    rho, eps = hp["rho"], hp["eps"]
    E, D = s["square_avg"], s["acc_delta"]
    E[...] = rho * E + (1 - rho) * g**2
    delta = np.sqrt(D + eps) / np.sqrt(E + eps) * g
    D[...] = rho * D + (1 - rho) * delta**2
    w -= lr * delta


def radam_rho(t: int, beta2: float) -> tuple[float, float]:
    """(ρ_∞, ρ_t) of Liu et al. 2020: ρ_∞ = 2/(1 − β₂) − 1, ρ_t = ρ_∞ − 2tβ₂ᵗ/(1 − β₂ᵗ)."""
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def step_radam(w, g, s, t, lr, hp):
    # Liu et al. 2020, Algorithm 2, in torch.optim.RAdam's form (ε added to √v):
    # m, v as Adam; m̂ = m/(1 − β₁ᵗ); if ρ_t > 5 (the variance is tractable):
    #   r_t = √((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t)),
    #   w_{t+1} = w_t − η r_t m̂ √(1 − β₂ᵗ)/(√v + ε);
    # else w_{t+1} = w_t − η m̂ (un-adapted momentum SGD).
    b1, b2 = hp["betas"]
    m, v = _moments(g, s, hp["betas"])
    m_hat = m / (1 - b1**t)
    rho_inf, rho_t = radam_rho(t, b2)
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                      / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = math.sqrt(1 - b2**t) / (np.sqrt(v) + hp["eps"])
        w -= lr * r * m_hat * adaptive
    else:
        w -= lr * m_hat


def step_rprop(w, g, s, t, lr, hp):
    # Riedmiller & Braun 1993 (Rprop without weight-backtracking, torch.optim.Rprop), per
    # element: s = g · g_prev;  Δ ← clamp(Δ · (η₊ if s > 0, η₋ if s < 0, 1 if s = 0),
    # Δ_min, Δ_max);  if s < 0 then g ← 0;  w ← w − sign(g) Δ;  g_prev ← g.
    # (The learning rate enters only as Δ₀, see init_state.)
    eta_minus, eta_plus = hp["etas"]
    step_min, step_max = hp["step_sizes"]
    prev, step_size = s["prev"], s["step_size"]
    product = g * prev
    factor = np.where(product > 0, eta_plus, np.where(product < 0, eta_minus, 1.0))
    step_size[...] = np.clip(step_size * factor, step_min, step_max)
    g = np.where(product < 0, 0.0, g)
    w -= np.sign(g) * step_size
    prev[...] = g


def asgd_eta(t: int, lr: float, lambd: float, alpha: float) -> float:
    """η_t = η / (1 + λη(t − 1))^α (torch.optim.ASGD; t = 1 on the first step)."""
    return lr / (1 + lambd * lr * (t - 1)) ** alpha


def asgd_mu(t: int, t0: float) -> float:
    """μ_t = 1 / max(1, t − 1 − t₀) (torch.optim.ASGD; t = 1 on the first step)."""
    return 1 / max(1, t - 1 - t0)


def step_asgd(w, g, s, t, lr, hp):
    # Averaged SGD (Polyak & Juditsky 1992) as torch.optim.ASGD, with this step's η:
    # w_{t+1} = w_t (1 − λ η_t) − η_t g;
    # ax ← w_{t+1} if μ_t = 1, else ax + μ_t (w_{t+1} − ax)
    eta = asgd_eta(t, lr, hp["lambd"], hp["alpha"])
    mu = asgd_mu(t, hp["t0"])
    w[...] = w * (1 - hp["lambd"] * eta) - eta * g
    ax = s["ax"]
    if mu == 1:
        ax[...] = w
    else:
        ax[...] = ax + mu * (w - ax)


def step_lion(w, g, s, t, lr, hp):
    # Chen et al. 2023, Program 1 (optax.lion):
    # c = β₁ m + (1 − β₁) g;  w_{t+1} = w_t − η sign(c)  (sign(0) = 0);
    # m_t = β₂ m_{t−1} + (1 − β₂) g
    b1, b2 = hp["betas"]
    m = s["m"]
    c = b1 * m + (1 - b1) * g
    w -= lr * np.sign(c)
    m[...] = b2 * m + (1 - b2) * g


def trust_ratio(w: np.ndarray, u: np.ndarray, coefficient: float = 1.0,
                eps: float = 0.0) -> float:
    """The layer-wise trust ratio of one parameter array: ``c‖w‖₂ / (‖u‖₂ + ε)``, both norms
    over the whole array in float64, and 1 where either norm is 0 (the parameters would
    never move otherwise: optax.scale_by_trust_ratio's safe ratio)."""
    w_norm = math.sqrt(float(np.sum(np.asarray(w, np.float64) ** 2)))
    u_norm = math.sqrt(float(np.sum(np.asarray(u, np.float64) ** 2)))
    if w_norm == 0.0 or u_norm == 0.0:
        return 1.0
    return coefficient * w_norm / (u_norm + eps)


def step_lamb(w, g, s, t, lr, hp):
    # You et al. 2019 ("Large Batch Optimization for Deep Learning", Algorithm 2; optax.lamb),
    # per parameter array (layer):
    # m_t = β₁ m + (1 − β₁) g;  v_t = β₂ v + (1 − β₂) g²;  m̂ = m_t/(1 − β₁ᵗ);
    # v̂ = v_t/(1 − β₂ᵗ);  u = m̂/(√v̂ + ε) + λ w;  r = ‖w‖/‖u‖ (1 where either is 0);
    # w_{t+1} = w_t − η r u.
    # λ w is LAMB's own (decoupled) decay, here only when decoupled_weight_decay; with L2
    # decay the common transform has already added λ w to g (DECAY_IN_UPDATE).
    b1, b2 = hp["betas"]
    m, v = _moments(g, s, hp["betas"])
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    u = m_hat / (np.sqrt(v_hat) + hp["eps"])
    if hp["decoupled_weight_decay"]:
        u = u + hp["weight_decay"] * w
    r = trust_ratio(w, u)
    w -= lr * r * u


def step_lars(w, g, s, t, lr, hp):
    # You et al. 2017 ("Large Batch Training of Convolutional Networks", Algorithm 1;
    # optax.lars with nesterov=False), per parameter array (layer):
    # u = g + λ w (the common L2 decay: already in g);  r = c‖w‖/(‖u‖ + ε) (1 where either
    # norm is 0);  v_t = μ v_{t−1} + η r u;  w_{t+1} = w_t − v_t.
    r = trust_ratio(w, g, hp["trust_coefficient"], hp["eps"])
    velocity = s["velocity"]
    velocity[...] = hp["momentum"] * velocity + lr * r * g
    w -= velocity


STEPS: dict[str, Callable] = {
    "sgd": step_sgd, "momentum": step_momentum, "nesterov": step_nesterov,
    "adagrad": step_adagrad, "rmsprop": step_rmsprop, "adam": step_adam,
    "nadam": step_nadam, "amsgrad": step_amsgrad, "adamax": step_adamax,
    "adadelta": step_adadelta, "radam": step_radam, "rprop": step_rprop,
    "asgd": step_asgd, "lion": step_lion, "lamb": step_lamb, "lars": step_lars,
}


# ---------------------------------------------------------------------------- noise


def noise_std(eta: float, gamma: float, completed_steps: int) -> float:
    """σ_t = √(η / (1 + t')^γ)."""
    return math.sqrt(eta / (1 + completed_steps) ** gamma)


def noise_draws(size: int, offset: int, completed_steps: int, key) -> np.ndarray:
    """The N(0, 1) draws for layout positions ``offset .. offset + size − 1`` at step t'."""
    k0, k1 = key
    t = np.uint64(completed_steps)
    return np.array(
        [philox.standard_normal(np.uint64(offset + i), t, k0, k1) for i in range(size)],
        np.float64,
    )


# ---------------------------------------------------------------------------- optimizer


def resolve_hp(rule: str, **overrides: Any) -> dict[str, Any]:
    hp = {**common_defaults(rule), **DEFAULTS[rule]}
    unknown = set(overrides) - set(hp)
    if unknown:
        raise KeyError(f"{rule} has no hyperparameters {sorted(unknown)}")
    hp.update(overrides)
    return hp


def apply_weight_decay(rule: str, w: np.ndarray, g: np.ndarray, lr: float,
                       hp: Mapping[str, Any]) -> np.ndarray:
    """The common weight decay (docs/equations.md, step 4) on one array: L2 returns
    ``g + λw``; decoupled decays ``w ← w(1 − ηλ)`` in place and returns ``g`` — except for
    the ``DECAY_IN_UPDATE`` rules, whose step applies their decoupled decay itself."""
    lam = hp["weight_decay"]
    if not hp["decoupled_weight_decay"]:
        return g + lam * w
    if rule not in DECAY_IN_UPDATE:
        w *= 1 - lr * lam
    return g


class RefOptimizer:
    """A float64 reference optimizer: common transforms in docs/equations.md's order, then the rule.

    ``params``: a list of arrays (copied to float64). ``groups``: optional list of dicts
    ``{"params": [indices into params], **overrides}``; by default one group holds all.
    ``grad_noise``: a ``fastopt.GradientNoise`` (only its eta, gamma and key are read);
    ``noise_offsets``: each array's position in the optimizer's layout (its noise counter).
    """

    def __init__(
        self,
        rule: str,
        params: Sequence[np.ndarray],
        groups: Sequence[Mapping[str, Any]] | None = None,
        *,
        clip_norm: float | None = None,
        grad_noise: Any = None,
        noise_offsets: Sequence[int] | None = None,
        **defaults: Any,
    ) -> None:
        self.rule = rule
        self.params = [np.array(p, dtype=np.float64) for p in params]
        if groups is None:
            groups = [{"params": list(range(len(self.params)))}]
        self.groups = []
        for group in groups:
            overrides = {k: v for k, v in group.items() if k != "params"}
            self.groups.append((list(group["params"]),
                                resolve_hp(rule, **{**defaults, **overrides})))
        self.state: list[dict[str, np.ndarray] | None] = [None] * len(self.params)
        for idx, hp in self.groups:
            for j in idx:
                self.state[j] = init_state(rule, hp, self.params[j].shape)
        self.clip_norm = clip_norm
        self.grad_noise = grad_noise
        self.noise_offsets = list(noise_offsets) if noise_offsets is not None else [0]
        if grad_noise is not None and len(self.noise_offsets) != len(self.params):
            raise ValueError("give one noise offset per parameter array")
        self.t = 0
        self.clipped = []  # the clip factor of each step (for the tests' own checks)

    def lr_at(self, hp: Mapping[str, Any], completed_steps: int) -> float:
        lr = hp["lr"]
        return float(lr(completed_steps)) if callable(lr) else float(lr)

    def step(self, grads: Sequence[np.ndarray]) -> None:
        t = self.t + 1
        t_prime = t - 1
        gs = [np.array(g, dtype=np.float64) for g in grads]
        # 1. maximize: g ← −g (per group)
        for idx, hp in self.groups:
            if hp["maximize"]:
                for j in idx:
                    gs[j] = -gs[j]
        # 2. clip_norm: one factor from the global L2 norm over ALL parameters
        if self.clip_norm is not None:
            norm = math.sqrt(sum(float(np.sum(g**2)) for g in gs))
            # torch's clip_grad_norm_: NaN propagates (np.minimum, not Python's min)
            s = float(np.minimum(1.0, self.clip_norm / (norm + 1e-6)))
            gs = [s * g for g in gs]
            self.clipped.append(s)
        # 3. gradient noise: g ← g + σ_t z, σ_t² = η / (1 + t')^γ
        if self.grad_noise is not None and self.grad_noise.eta > 0:
            sigma = noise_std(self.grad_noise.eta, self.grad_noise.gamma, t_prime)
            for j, g in enumerate(gs):
                z = noise_draws(g.size, self.noise_offsets[j], t_prime, self.grad_noise.key)
                gs[j] = g + sigma * z.reshape(g.shape)
        for idx, hp in self.groups:
            lr = self.lr_at(hp, t_prime)
            for j in idx:
                w, g = self.params[j], gs[j]
                # 4. weight decay: L2 g ← g + λ w, or decoupled w ← w (1 − η λ) (or the
                # rule's own, DECAY_IN_UPDATE)
                g = apply_weight_decay(self.rule, w, g, lr, hp)
                STEPS[self.rule](w, g, self.state[j], t, lr, hp)
        self.t = t


# --------------------------------------------------------------------------- BatchNorm
# Channel axis ``axis``; every other axis is reduced. ε defaults to the spec's 1e-6.

BN_EPS = 1e-6


def red_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """Every axis but the channel axis."""
    ch = axis % ndim
    return tuple(a for a in range(ndim) if a != ch)


def bshape(ndim: int, axis: int, c: int) -> tuple[int, ...]:
    s = [1] * ndim
    s[axis % ndim] = c
    return tuple(s)


def ref_stats(x, axis):
    x64 = x.astype(np.float64)
    ax = red_axes(x.ndim, axis)
    mu = x64.mean(axis=ax)
    var = ((x64 - mu.reshape(bshape(x.ndim, axis, mu.size))) ** 2).mean(axis=ax)
    return mu, var


def ref_forward(x, gamma, beta, axis, eps=BN_EPS, mean=None, var=None):
    """y = γ (x − μ)/√(σ² + ε) + β, batch statistics unless mean/var are given."""
    if mean is None:
        mean, var = ref_stats(x, axis)
    b = bshape(x.ndim, axis, mean.size)
    xhat = (x.astype(np.float64) - mean.reshape(b)) / np.sqrt(var.reshape(b) + eps)
    return gamma.astype(np.float64).reshape(b) * xhat + beta.astype(np.float64).reshape(b)


def ref_backward(dy, x, gamma, axis, eps=BN_EPS):
    """Training: dβ = Σdy, dγ = Σdy·x̂, dx = (γ·inv/n)(n·dy − dβ − x̂·dγ)."""
    ax = red_axes(x.ndim, axis)
    mean, var = ref_stats(x, axis)
    b = bshape(x.ndim, axis, mean.size)
    n = x.size // mean.size
    inv = 1.0 / np.sqrt(var + eps)
    d = dy.astype(np.float64)
    xhat = (x.astype(np.float64) - mean.reshape(b)) * inv.reshape(b)
    dbeta = d.sum(axis=ax)
    dgamma = (d * xhat).sum(axis=ax)
    dx = (gamma.astype(np.float64) * inv / n).reshape(b) * (
        n * d - dbeta.reshape(b) - xhat * dgamma.reshape(b)
    )
    return dx, dgamma, dbeta


def ref_backward_eval(dy, x, gamma, axis, rmean, rvar, eps=BN_EPS):
    """Inference: dx = dy·γ·inv with the running statistics as constants."""
    ax = red_axes(x.ndim, axis)
    b = bshape(x.ndim, axis, rmean.size)
    inv = 1.0 / np.sqrt(rvar.astype(np.float64) + eps)
    d = dy.astype(np.float64)
    xhat = (x.astype(np.float64) - rmean.reshape(b)) * inv.reshape(b)
    return (d * (gamma * inv).reshape(b), (d * xhat).sum(axis=ax), d.sum(axis=ax))


def ref_running(rmean, rvar, x, axis, m):
    """torch's update: r ← (1 − m) r + m·stat, with the unbiased batch variance."""
    mu, var = ref_stats(x, axis)
    n = x.size // mu.size
    return (1 - m) * rmean + m * mu, (1 - m) * rvar + m * var * n / (n - 1)
