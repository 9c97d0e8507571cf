"""Optimizers (SGD, Momentum, AdaGrad, Adam) and learning-rate schedules (constant, step, one-cycle).

An optimizer owns its per-parameter state on the model's backend and calls the backend's
in-place update kernels; it never names a backend.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InvalidArgument


class Optimizer:
    """Base class: ``step(lr)`` updates every parameter of ``model`` from its gradient."""

    slots: tuple = ()  # names of the per-parameter state arrays
    hyper: tuple = ()  # names of the hyper-parameters saved with the model

    def __init__(self, lr: float):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise InvalidArgument(f"{type(self).__name__}: lr must be a positive finite number, got {lr!r}")
        self.lr = float(lr)
        self.t = 0
        self.state: list[dict] = []
        self.model = None

    def attach(self, model) -> "Optimizer":
        """Allocate zeroed state for each parameter of ``model`` on its backend."""
        self.model = model
        be = model.backend
        self.state = [{s: be.asarray(np.zeros(p.shape), p.dtype) for s in self.slots}
                      for p in model.parameters()]
        return self

    def step(self, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        be = self.model.backend
        for param, grad, state in zip(self.model.parameters(), self.model.gradients(), self.state):
            self.update(be, param, grad, state, lr)

    def update(self, be, param, grad, state, lr):
        raise NotImplementedError

    def config(self) -> dict:
        return {"type": type(self).__name__, "lr": self.lr, "t": self.t, **{h: getattr(self, h) for h in self.hyper}}


class SGD(Optimizer):
    def update(self, be, param, grad, state, lr):
        be.sgd_update(param, grad, lr)


class Momentum(Optimizer):
    slots, hyper = ("velocity",), ("momentum",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = momentum

    def update(self, be, param, grad, state, lr):
        be.momentum_update(param, grad, state["velocity"], lr, self.momentum)


class AdaGrad(Optimizer):
    slots, hyper = ("h",), ("eps",)

    def __init__(self, lr: float = 0.01, eps: float = 1e-7):
        super().__init__(lr)
        self.eps = eps

    def update(self, be, param, grad, state, lr):
        be.adagrad_update(param, grad, state["h"], lr, self.eps)


class Adam(Optimizer):
    slots, hyper = ("m", "v"), ("beta1", "beta2", "eps")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        be = self.model.backend
        fused = be.adam_update_many  # an optional op: None where the backend has none
        if fused is not None:  # one pass (one launch on a GPU) over every parameter
            fused(self.model.parameters(), self.model.gradients(), self.state, self.t, lr,
                  self.beta1, self.beta2, self.eps)
            return
        for param, grad, state in zip(self.model.parameters(), self.model.gradients(), self.state):
            be.adam_update(param, grad, state["m"], state["v"], self.t, lr, self.beta1, self.beta2, self.eps)


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Momentum, AdaGrad, Adam)}


def make_optimizer(name: str, lr: float, **hyper) -> Optimizer:
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise InvalidArgument(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}") from None
    return cls(lr, **hyper)


# ---- learning-rate schedules: lr as a function of the global step ----

class Constant:
    def __call__(self, base_lr, step, steps_per_epoch, total_steps):
        return base_lr

    def config(self):
        return {"type": "constant"}


class StepDecay:
    """Multiply the rate by ``gamma`` every ``every_epochs`` epochs."""

    def __init__(self, every_epochs: int = 1, gamma: float = 0.1):
        self.every_epochs, self.gamma = every_epochs, gamma

    def __call__(self, base_lr, step, steps_per_epoch, total_steps):
        return base_lr * self.gamma ** (step // (steps_per_epoch * self.every_epochs))

    def config(self):
        return {"type": "step", "every_epochs": self.every_epochs, "gamma": self.gamma}


class OneCycle:
    """PyTorch's OneCycleLR (cosine): from base/div up to base over ``pct_start`` of the run, then
    down to base/(div*final_div)."""

    def __init__(self, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4):
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor

    def __call__(self, base_lr, step, steps_per_epoch, total_steps):
        start = base_lr / self.div_factor
        end = start / self.final_div_factor
        up = max(1.0, self.pct_start * total_steps - 1)
        if step <= up:
            return _cos(start, base_lr, step / up)
        return _cos(base_lr, end, min(1.0, (step - up) / max(1.0, total_steps - 1 - up)))

    def config(self):
        return {"type": "onecycle", "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


def _cos(a, b, frac):
    return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2


SCHEDULES = {"constant": Constant, "step": StepDecay, "onecycle": OneCycle}


def make_schedule(cfg: dict | str | None):
    if cfg is None:
        return Constant()
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    cfg = dict(cfg)
    try:
        cls = SCHEDULES[cfg.pop("type")]
    except KeyError:
        raise InvalidArgument(f"unknown schedule {cfg!r}; valid: {', '.join(SCHEDULES)}") from None
    return cls(**cfg)
