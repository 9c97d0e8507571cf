"""Adam's moments going subnormal in a fast-cnn training run on numba, and Adam's time per step.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/adam_subnormals.py

Trains fast-cnn (its Adam betas 0.7 and 0.9) at a fixed learning rate 0.001 on random MNIST batches
of 256 for 301 steps inside the training context; every 50 steps prints that step's Adam time, the
count of subnormal values in Adam's moments and gradients, and the moments v still exactly 0. With
numba_kernels.flush_subnormal the subnormal count stays 0 (docs/benchmarks.md, fifteenth session).
"""
import time

import numpy as np

import fastmnist
from fastmnist import zoo

be = fastmnist.get_backend("numba")
model = zoo.create("fast-cnn", backend=be, seed=0)
opt = zoo.fit_args("fast-cnn")["optimizer"].attach(model)
(x, y), _ = fastmnist.load_mnist(flatten=False)
rng = np.random.default_rng(0)
tiny = np.finfo(np.float32).tiny
with be.training_context():
    for s in range(301):
        idx = rng.integers(0, len(x), 256)
        out = model.forward(x[idx], train=True)
        _, d = model.loss_and_grad(out, y[idx].astype(np.int64))
        model.backward(d)
        t0 = time.perf_counter()
        opt.step(0.001)
        t = time.perf_counter() - t0
        if s % 50 == 0:
            sub = sum(int(np.sum((np.abs(st[k]) < tiny) & (st[k] != 0))) for st in opt.state for k in ("m", "v"))
            gsub = sum(int(np.sum((np.abs(g) < tiny) & (g != 0))) for g in model.gradients())
            zero = sum(int(np.sum(st["v"] == 0)) for st in opt.state)
            print(s, f"adam {t*1e3:.3f} ms", "subnormal m/v", sub, "subnormal g", gsub, "v==0", zero)
