"""Averaged SGD (Polyak & Juditsky 1992), as torch.optim.ASGD.

At step t: ``η_t = η / (1 + λη(t − 1))^α;  μ_t = 1 / max(1, t − 1 − t₀);
w ← w(1 − λη_t) − η_t g;  a ← w if μ_t = 1, else a + μ_t (w − a)``. The average ``a``
(state ``ax``) is the point to evaluate with; averaging starts after ``t₀`` steps. η is
this step's learning rate (torch uses the previous step's: the same for a constant η).
"""


from .._checks import check_nonneg
from .._jit import device
from .registry import LR, Counterpart, Hyper, Rule, State


@device
def asgd(p, g, s, h):
    (ax,) = s
    decay, eta, mu, copy = h
    p = p * decay - eta * g
    if copy:
        ax = p
    else:
        ax = ax + (p - ax) * mu
    return p, (ax,)


def asgd_constants(step: int, lr: float, lambd: float, alpha: float,
                   t0: float) -> tuple[float, ...]:
    eta = lr / (1.0 + lambd * lr * (step - 1)) ** alpha
    mu = 1.0 / max(1.0, step - 1 - t0)
    return (1.0 - lambd * eta, eta, mu, 1.0 if mu == 1.0 else 0.0)


def numpy_asgd(p, g, st, t, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6):
    (ax,) = st
    decay, eta, mu, copy = asgd_constants(t, lr, lambd, alpha, t0)
    p *= decay
    p -= eta * g
    if copy:
        ax[...] = p
    else:
        ax += (p - ax) * mu


RULE = Rule(
    name="ASGD",
    summary="Averaged SGD (Polyak & Juditsky 1992): ``w ← w(1 − λη_t) − η_t g`` with "
            "``η_t = η/(1 + λη(t − 1))^α``, and the running average ``ax`` of the iterates "
            "after ``t₀`` steps, as torch.optim.ASGD.",
    element=asgd,
    constants=lambda t, lr, hp: asgd_constants(t, lr, hp["lambd"], hp["alpha"], hp["t0"]),
    constants_names=("decay", "eta", "mu", "copy"),
    hyperparameters=(
        LR(1e-2),
        Hyper("lambd", 1e-4, check_nonneg, "λ, the decay term and the step sizes' decay."),
        Hyper("alpha", 0.75, check_nonneg, "α, the power of the step sizes' decay."),
        Hyper("t0", 1e6, check_nonneg, "t₀, the steps before averaging starts."),
    ),
    state=(State("ax", "the average of the iterates (the iterate itself until t₀).",
                 sign="exact"),),
    torch=Counterpart("torch.optim.ASGD", {"lr": 1e-2}),
    demo_lr=0.1, rosenbrock_lr=1e-3, divides=False, numpy_step=numpy_asgd, rank=24,
)
