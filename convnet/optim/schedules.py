"""Learning-rate schedules. Call `step()` once per epoch (or per iteration, consistently);
each schedule is a pure function of its step count, `lr_at(t)`, so resuming is exact."""

from __future__ import annotations

import math


class LRScheduler:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_step = 0

    def lr_at(self, t: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.last_step)


class ConstantLR(LRScheduler):
    def lr_at(self, t: int) -> float:
        return self.base_lr


class StepLR(LRScheduler):
    """lr = base * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, received {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2, flat after T_max."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 - PyTorch's name
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, received {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def lr_at(self, t: int) -> float:
        t = min(t, self.T_max)
        cosine = (1 + math.cos(math.pi * t / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine


class LinearWarmup(LRScheduler):
    """Ramp linearly from base*start_factor to base over `warmup` steps, then follow `after`."""

    def __init__(self, optimizer, warmup: int, after: LRScheduler | None = None,
                 start_factor: float = 0.1):
        super().__init__(optimizer)
        if warmup < 1:
            raise ValueError(f"LinearWarmup: warmup must be >= 1, received {warmup}")
        self.warmup, self.after, self.start_factor = int(warmup), after, float(start_factor)
        optimizer.lr = self.lr_at(0)

    def lr_at(self, t: int) -> float:
        if t < self.warmup:
            return self.base_lr * (self.start_factor + (1 - self.start_factor) * t / self.warmup)
        return self.after.lr_at(t - self.warmup) if self.after else self.base_lr

    def load_state_dict(self, state: dict) -> None:
        if self.after is not None:  # one base rate for both phases (see set_base_lr)
            self.after.base_lr = float(state["base_lr"])
        super().load_state_dict(state)


def set_base_lr(scheduler: LRScheduler, lr: float) -> float:
    """Change a schedule's base learning rate in the middle of a run (the schedule goes on from
    the new base, a warmup's next phase too); returns the rate now in the optimizer. The base
    is part of `state_dict`, so a resumed run keeps it."""
    scheduler.base_lr = float(lr)
    after = getattr(scheduler, "after", None)
    if after is not None:
        after.base_lr = float(lr)
    scheduler.optimizer.lr = scheduler.lr_at(scheduler.last_step)
    return scheduler.optimizer.lr
