"""Per plan node time of a training step (forward, backward) on numba, after 5 warm-up steps.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/step_profile.py fast-cnn 256 40

Each node's forward and backward are timed where they are called, inside the training context
(single-threaded BLAS), on random batches of MNIST; the batch's gather, the loss and the optimizer
are timed apart.
"""
import collections
import sys
import time

import numpy as np

import fastmnist
from fastmnist import zoo


def timed(fn, times, key):
    def run(*args):
        t = time.perf_counter()
        out = fn(*args)
        times[key] += time.perf_counter() - t
        return out
    return run


def main(name, batch, steps):
    be = fastmnist.get_backend("numba")
    model = zoo.create(name, backend=be, seed=0)
    opt = zoo.fit_args(name)["optimizer"].attach(model)
    (x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)
    times = collections.defaultdict(float)
    for i, node in enumerate(model.plan):
        layer = getattr(node, "conv", node)
        shape = tuple(layer.params["w"].shape) if "w" in getattr(layer, "params", {}) else ""
        for kind in ("forward", "backward"):
            setattr(node, kind, timed(getattr(node, kind), times, (f"{i}:{type(node).__name__}{shape}", kind)))
    rng = np.random.default_rng(0)
    with be.training_context():
        for s in range(steps + 5):
            if s == 5:  # warmed up: JIT done, caches filled
                times.clear()
                t0 = time.perf_counter()
            idx = rng.integers(0, len(x), batch)
            t = time.perf_counter()
            xb, yb = x[idx], y[idx].astype(np.int64)  # the batch from the training set, as the trainer gathers it
            times[("gather", "")] += time.perf_counter() - t
            out = model.forward(xb, train=True)
            t = time.perf_counter()
            _, d = model.loss_and_grad(out, yb)
            times[("loss", "")] += time.perf_counter() - t
            model.backward(d)
            t = time.perf_counter()
            opt.step()
            times[("optimizer", "")] += time.perf_counter() - t
    total = time.perf_counter() - t0
    print(f"{name} b{batch}: {1e3 * total / steps:.2f} ms/step (epoch ~{total / steps * 60000 / batch:.2f} s)")
    for (node, kind), sec in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {node:40s} {kind:9s} {1e3 * sec / steps:7.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 40)
