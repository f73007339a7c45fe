"""Optimizers with PyTorch's update rules, and gradient-norm clipping.

Each optimizer keeps its state per parameter (in the order given) and can save and restore
it, so that a resumed run continues exactly.
"""

from __future__ import annotations

import math

from convnet.core.backend import array_module
from convnet.nn.parameter import Parameter


def _parameters(params, owner: str) -> list[Parameter]:
    params = list(params)
    if params and isinstance(params[0], tuple):
        params = [p for _, p in params]  # named_parameters() works too
    if not params:
        raise ValueError(f"{owner}: received no parameters to optimize")
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{owner}: expected model.parameters(), received a "
                            f"{type(p).__name__} among them")
    return params


def _check_rate(owner: str, name: str, value: float, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
        upper is not None and value >= upper
    ):
        bound = f" and < {upper}" if upper is not None else ""
        raise ValueError(f"{owner}: {name} must be a number >= 0{bound}, received {value!r}")
    return float(value)


class Optimizer:
    """Base: `step()` updates parameters from their gradients; `zero_grad()` clears them."""

    def __init__(self, params, lr: float):
        owner = type(self).__name__
        self.params = _parameters(params, owner)
        self.lr = _check_rate(owner, "lr", lr)
        self.steps = 0
        self.state: list[dict] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        self.steps += 1
        for param, state in zip(self.params, self.state, strict=True):
            self._update(param, state)

    def _update(self, param: Parameter, state: dict) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """{'steps', 'lr', 'arrays': {'<index>.<name>': array}}; arrays are copies."""
        arrays = {f"{i}.{name}": value.copy()
                  for i, state in enumerate(self.state) for name, value in state.items()}
        return {"type": type(self).__name__, "steps": self.steps, "lr": self.lr,
                "arrays": arrays}

    def load_state_dict(self, saved: dict) -> None:
        if saved.get("type") not in (None, type(self).__name__):
            raise ValueError(f"{type(self).__name__}: cannot load the state of a "
                             f"{saved['type']} optimizer")
        self.steps = int(saved["steps"])
        self.lr = float(saved["lr"])
        self.state = [{} for _ in self.params]
        for key, value in saved["arrays"].items():
            index, name = key.split(".", 1)
            param = self.params[int(index)]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"optimizer state {key}: shape {tuple(value.shape)} does not "
                                 f"match parameter shape {tuple(param.shape)}")
            self.state[int(index)][name] = array_module(param.data).asarray(
                value, dtype=param.data.dtype).copy()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """v = momentum * v + g;  w -= lr * (g + momentum * v if nesterov else v)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_rate("SGD", "momentum", momentum, 1.0)
        self.weight_decay = _check_rate("SGD", "weight_decay", weight_decay)
        if nesterov and not self.momentum:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _update(self, param, state):
        grad = param.grad
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if self.momentum:
            velocity = state.get("momentum")
            if velocity is None:
                velocity = state["momentum"] = grad.copy()
            else:
                velocity *= self.momentum
                velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        param.data -= param.data.dtype.type(self.lr) * grad

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight_decay adds an L2 term to g."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        owner = type(self).__name__
        self.betas = (_check_rate(owner, "betas[0]", betas[0], 1.0),
                      _check_rate(owner, "betas[1]", betas[1], 1.0))
        self.eps = _check_rate(owner, "eps", eps)
        self.weight_decay = _check_rate(owner, "weight_decay", weight_decay)

    def _update(self, param, state):
        beta1, beta2 = self.betas
        grad = param.grad
        if self.weight_decay and self.decoupled:
            param.data *= param.data.dtype.type(1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            grad = grad + self.weight_decay * param.data
        xp = array_module(grad)
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1**self.steps)
        denom = xp.sqrt(v / (1 - beta2**self.steps)) + self.eps
        param.data -= (step_size * m / denom).astype(param.data.dtype, copy=False)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): w *= 1 - lr * weight_decay."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients so that their joint L2 norm is at most max_norm; returns the norm."""
    params = _parameters(params, "clip_grad_norm_")
    max_norm = _check_rate("clip_grad_norm_", "max_norm", max_norm)
    total = math.sqrt(sum(float((p.grad.astype("float64") ** 2).sum()) for p in params))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in params:
            p.grad *= p.grad.dtype.type(scale)
    return total


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
