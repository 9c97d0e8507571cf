"""Time of the numba backend's fused conv -> ReLU -> pool passes on the CNN zoo's shapes, float32.

    python3 benchmarks/conv_passes.py

Forward, and backward (weight gradient; with the input gradient for fast-cnn's conv2, whose
layer needs it), each the median of 60 calls after a warm-up, outside the training context.
GFLOP/s count the useful multiply-adds only (2 per tap, channel and output pixel).
"""
import time

import numpy as np

from fastmnist.backends import numba_backend as NB

SHAPES = {  # name: (N, C, F, H, K, pad, input gradient wanted)
    "fast-cnn conv1": (256, 1, 24, 28, 5, 0, False), "fast-cnn conv2": (256, 24, 32, 12, 3, 0, True),
    "simple-cnn conv": (100, 1, 30, 28, 5, 0, False), "dropout-cnn conv": (200, 1, 16, 28, 5, 2, False)}


def median_ms(fn, reps=60):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main():
    rng = np.random.default_rng(0)
    for name, (n, c, f, h, k, pad, need_dx) in SHAPES.items():
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = (0.1 * rng.standard_normal((f, c, k, k))).astype(np.float32)
        b = np.zeros(f, np.float32)
        oh = h + 2 * pad - k + 1
        flops = 2 * n * oh * oh * f * k * k * c
        t_fwd = median_ms(lambda: NB.conv2d_relu_maxpool_forward(x, w, b, 1, pad))  # noqa: B023
        y, cache = NB.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        t_bwd = median_ms(lambda: NB.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=need_dx))  # noqa: B023
        what = "dW + dX" if need_dx else "dW"
        print(f"{name:17s} forward {t_fwd:6.3f} ms ({flops / t_fwd / 1e6:4.0f} GFLOP/s)   "
              f"backward ({what}) {t_bwd:6.3f} ms ({flops * (2 if need_dx else 1) / t_bwd / 1e6:4.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
