"""Nesterov accelerated gradient (spec; Nesterov 1983).

The spec: ``v_t = γ v_{t−1} + η ∇L(w_t − γ v_{t−1});  w_{t+1} = w_t − v_t``. A caller hands
the gradient at the point the optimizer holds, so the optimizer holds the look-ahead point
``φ = w − γ v`` (Sutskever et al. 2013; Bengio et al. 2013):

    v' = γ v + η g(φ);   φ ← φ − v' − γ (v' − v);   v ← v'

which reproduces the spec's sequence exactly (``φ_t = w_t − γ v_t``) and equals
``torch.optim.SGD(momentum=γ, nesterov=True)`` for a constant η.
"""

from .._jit import device


@device
def nesterov(p, g, s, h):
    (v,) = s
    lr, gamma = h
    v_new = gamma * v + lr * g
    return p - v_new - gamma * (v_new - v), (v_new,)


def nesterov_constants(lr: float, momentum: float) -> tuple[float, ...]:
    return (lr, momentum)
