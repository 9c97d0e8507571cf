"""PyTorch as a bench target: the same network, batch size, optimizer and dtype, in one of the
setups a user could pick (eager, channels_last, compile); CUDA where a GPU works, else the CPU."""
from __future__ import annotations

import contextlib
import os

from .. import zoo
from ..torch_ref import TorchTrainer, torch_available
from .targets import Target


class TorchTarget(Target):
    """PyTorch in one ``setup`` of :data:`fastmnist.torch_ref.SETUPS`.

    Kernels are timed on eager PyTorch only (a setup changes how a network runs, not one call);
    ``channels_last`` applies to image inputs, so not to the MLPs.
    """

    is_reference = True

    def __init__(self, name: str, setup: str):
        self.name, self.setup = name, setup

    @property
    def torch(self):
        import torch
        return torch

    def _torch_device(self) -> str:
        return "cuda" if self.torch.cuda.is_available() else "cpu"

    def status(self):
        ok, why = torch_available()
        return ok, f"{why}, {self.setup}" if ok else why

    def supports(self, case):
        if case.group == "kernel":
            return self.setup == "eager"
        return not (self.setup == "channels_last" and zoo.recipe(case.model).flat_input)

    @contextlib.contextmanager
    def context(self):
        self.torch.set_num_threads(os.cpu_count() or 1)  # every core, as fastmnist's CPU backends use
        yield

    def device(self):
        return "gpu" if self._torch_device() == "cuda" else "cpu"

    def sync(self):
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()

    def kernel(self, spec):
        torch, device = self.torch, self._torch_device()
        return spec.torch(torch, **{k: torch.from_numpy(v).to(device) for k, v in spec.inputs.items()})

    def _trainer(self, model_name: str) -> TorchTrainer:
        r = zoo.recipe(model_name)
        model = zoo.create(model_name, backend="numpy")  # the initial weights every backend starts from
        return TorchTrainer(model, r.optimizer, r.lr, self._torch_device(), r.optimizer_args, setup=self.setup)

    def train_step(self, model_name, x, y):
        trainer = self._trainer(model_name)
        xb, yb = trainer.tensors(x, y)
        return lambda: trainer.step(xb, yb)

    def train_epoch(self, model_name, batch_size, x, y):
        from ..optim import make_schedule
        trainer = self._trainer(model_name)
        xt, yt = trainer.tensors(x, y)
        schedule = make_schedule(zoo.recipe(model_name).schedule)
        return lambda: trainer.epoch(xt, yt, batch_size, schedule=schedule)
