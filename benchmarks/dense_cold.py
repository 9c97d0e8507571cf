"""A dense layer's product hot and cold: fast-cnn's 256x800 @ 800x256 as numba's training context
runs it (``numba_backend._matmul``: single-threaded BLAS, split over the cores by the GEMM thread
pool), alone in a loop, and right after what a training step does before it.

    python3 benchmarks/dense_cold.py

Medians of 40 calls, ms. "after conv2": after fast-cnn's conv2 forward (a parallel Numba kernel);
"after a 32 MB copy": its caches streamed through; "after 2 ms asleep": the core idle (on a VM, an
idle vCPU may come back cold). Libraries are usually timed the first way; a training step runs
its products the other ways.
"""
import time

import numpy as np

import fastmnist
from fastmnist.backends import numba_backend as NB


def median_ms(fn, before=None, reps=40):
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main():
    be = fastmnist.get_backend("numba")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((256, 800)).astype(np.float32), rng.standard_normal((800, 256)).astype(np.float32)
    cx = rng.standard_normal((256, 24, 12, 12)).astype(np.float32)
    cw, cb = (0.1 * rng.standard_normal((32, 24, 3, 3))).astype(np.float32), np.zeros(32, np.float32)
    big = np.ones(32 << 20, np.uint8)
    sink = np.empty_like(big)
    conv2 = lambda: NB.conv2d_relu_maxpool_forward(cx, cw, cb, 1, 0)  # noqa: E731
    product = lambda: NB._matmul(x, w)  # noqa: E731
    befores = {"alone": None, "after conv2": conv2, "after a 32 MB copy": lambda: np.copyto(sink, big),
               "after 2 ms asleep": lambda: time.sleep(0.002)}
    print(f"NumPy alone, outside the context (BLAS on every core): {median_ms(lambda: x @ w):.3f} ms")
    with be.training_context():
        conv2()
        for run in range(2):
            print(f"run {run + 1}: " + ", ".join(f"{name} {median_ms(product, before):.3f} ms"
                                                 for name, before in befores.items()))


if __name__ == "__main__":
    main()
