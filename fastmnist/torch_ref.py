"""PyTorch as an outside reference: the same network, batch size, optimizer and dtype.

Only imported when torch is installed; used by ``fastmnist bench`` and the benchmarks to put
every backend's time next to PyTorch's (CPU, or CUDA where a GPU works).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .errors import InvalidArgument, WrongType


def torch_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:
        return False, f"torch is not installed ({exc}); pip install torch"
    return True, f"torch {torch.__version__}"


def to_torch_module(model):
    """A ``torch.nn.Sequential`` equal to a fastmnist Sequential, weights copied."""
    import torch
    from torch import nn

    from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid

    mods, shape = [], model.input_shape  # shape: the per-sample input of each layer
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            m = nn.Conv2d(shape[0], layer.filters, layer.kernel_size, layer.stride, layer.padding)
            m.weight.data = torch.from_numpy(model.backend.to_numpy(layer.params["w"]).copy())
            m.bias.data = torch.from_numpy(model.backend.to_numpy(layer.params["b"]).copy())
        elif isinstance(layer, Dense):
            m = nn.Linear(shape[0], layer.units)
            m.weight.data = torch.from_numpy(model.backend.to_numpy(layer.params["w"]).T.copy())
            m.bias.data = torch.from_numpy(model.backend.to_numpy(layer.params["b"]).copy())
        elif isinstance(layer, MaxPool2D):
            m = nn.MaxPool2d(layer.size, layer.stride)
        elif isinstance(layer, ReLU):
            m = nn.ReLU()
        elif isinstance(layer, Sigmoid):
            m = nn.Sigmoid()
        elif isinstance(layer, Dropout):
            m = nn.Dropout(layer.rate)
        elif isinstance(layer, Flatten):
            m = nn.Flatten()
        else:
            raise WrongType(f"no PyTorch equivalent for {type(layer).__name__}")
        mods.append(m)
        shape = layer.out_shape
    return nn.Sequential(*mods)


SETUPS = ("eager", "channels_last", "compile")


class TorchTrainer:
    """Train a zoo network in PyTorch with the zoo recipe (Adam/SGD, schedule), data preloaded.

    ``setup``: ``eager`` (NCHW), ``channels_last`` (model and every batch in NHWC memory; CNNs
    only) or ``compile`` (``torch.compile`` of the network; the first steps compile it) — a user
    picks whichever is fastest for the network, so `fastmnist bench` times each.
    """

    def __init__(self, model, optimizer: str, lr: float, device: str = "cpu", optimizer_args: dict | None = None,
                 threads: int | None = None, setup: str = "eager"):
        import torch
        if setup not in SETUPS:
            raise InvalidArgument(f"unknown PyTorch setup {setup!r}; valid: {', '.join(SETUPS)}")
        if setup == "channels_last" and len(model.input_shape) != 3:
            raise InvalidArgument("channels_last applies to image inputs (N, C, H, W), not to flat ones")
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.device, self.setup = torch, device, setup
        self.net = to_torch_module(model).to(device)
        if setup == "channels_last":
            self.net = self.net.to(memory_format=torch.channels_last)
        args = dict(optimizer_args or {})
        if optimizer == "adam":
            betas = (args.pop("beta1", 0.9), args.pop("beta2", 0.999))
            self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=betas, **args)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        elif optimizer == "momentum":
            self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=args.get("momentum", 0.9))
        else:
            self.opt = torch.optim.Adagrad(self.net.parameters(), lr=lr)
        self.mse = model.loss == "mse"
        if setup == "compile":  # after the optimizer took the parameters: compiling wraps, never copies them
            self.net = torch.compile(self.net)

    def sync(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def step(self, xb, yb):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        if self.setup == "channels_last":  # a gathered batch comes back NCHW-contiguous
            xb = xb.contiguous(memory_format=torch.channels_last)
        out = self.net(xb)
        if self.mse:
            target = torch.nn.functional.one_hot(yb, out.shape[1]).to(out.dtype)
            loss = 0.5 * (out - target).pow(2).sum() / out.shape[0]
        else:
            loss = torch.nn.functional.cross_entropy(out, yb)
        loss.backward()
        self.opt.step()
        return loss

    def epoch(self, x, y, batch_size: int, seed: int = 0, schedule=None, total_epochs: int = 1) -> float:
        """One shuffled epoch; returns seconds (synchronised)."""
        torch = self.torch
        n = x.shape[0]
        steps = math.ceil(n / batch_size)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        perm = torch.randperm(n, generator=gen).to(self.device)
        base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.sync()
        t0 = time.perf_counter()
        for s in range(steps):
            if schedule is not None:
                for g, lr in zip(self.opt.param_groups, base_lrs):
                    g["lr"] = schedule(lr, s, steps, steps * total_epochs)
            idx = perm[s * batch_size:(s + 1) * batch_size]
            self.step(x[idx], y[idx])
        self.sync()
        seconds = time.perf_counter() - t0
        for g, lr in zip(self.opt.param_groups, base_lrs):
            g["lr"] = lr
        return seconds

    def accuracy(self, x, y, batch_size: int = 1000) -> float:
        torch = self.torch
        self.net.eval()
        hits = 0
        with torch.no_grad():
            for lo in range(0, x.shape[0], batch_size):
                hits += int((self.net(x[lo:lo + batch_size]).argmax(1) == y[lo:lo + batch_size]).sum())
        self.net.train()
        return hits / x.shape[0]

    def tensors(self, x, y):
        torch = self.torch
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return xt, torch.from_numpy(np.asarray(y, np.int64)).to(self.device)
