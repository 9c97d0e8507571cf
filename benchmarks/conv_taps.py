"""The convolution's inner loops, one tap per pass against the fused passes fastmnist uses, single-threaded.

    python3 benchmarks/conv_taps.py

One wide output plane of fast-cnn's conv2 (28 samples of 12x12, span 4032) for the 3x3 cases and
of a 28x28 plane (span 668) for the 5x5 rows; prints median microseconds and GFLOP/s of each.
The 'one tap' variants are what numba_kernels ran before 2026-11-30 (kept here as the baseline).
"""
import time

import numpy as np
from numba import njit

from fastmnist.backends.numba_kernels import _accumulate_taps_1d, _taps_forward

FM = {"reassoc", "contract", "arcp", "nsz"}


@njit(nogil=True, fastmath=FM)
def one_tap_per_pass(acc, src, wfc, wp, span):
    kh, kw = wfc.shape
    for a in range(kh):
        for bb in range(kw):
            wv = wfc[a, bb]
            s = src[a * wp + bb: a * wp + bb + span]
            for q in range(span):
                acc[q] += wv * s[q]


@njit(nogil=True, fastmath=FM)
def dw_three_per_row(g, src, c, wp, span, kh, kw, acc):
    for a in range(kh):
        row = src[a * wp: a * wp + span + kw - 1]
        s0 = s1 = s2 = g.dtype.type(0)
        for q in range(span):
            gq = g[q]
            s0 += gq * row[q]
            s1 += gq * row[q + 1]
            s2 += gq * row[q + 2]
        acc[c, a, 0] += s0
        acc[c, a, 1] += s1
        acc[c, a, 2] += s2


def median_seconds(fn, *args, repeat=300):
    fn(*args)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    rng = np.random.default_rng(0)
    for k, wp, span in ((3, 12, 28 * 144), (5, 28, 23 * 28 + 24)):
        src = rng.random(span + (k - 1) * wp + k, dtype=np.float32)
        w = rng.random((k, k), dtype=np.float32)
        flops = 2 * k * k * span
        for name, fn in (("forward, one tap per pass", one_tap_per_pass), ("forward, fused (fastmnist)", _taps_forward)):
            acc = np.zeros(span, np.float32)
            sec = median_seconds(fn, acc, src, w, wp, span)
            print(f"{k}x{k} {name:30s} {sec * 1e6:7.2f} us {flops / sec / 1e9:6.1f} GFLOP/s")
        if k == 3:
            g = rng.random(span, dtype=np.float32)
            for name, fn in (("dW, three taps per row", dw_three_per_row), ("dW, nine taps (fastmnist)", _accumulate_taps_1d)):
                acc = np.zeros((1, 3, 3), np.float64)
                sec = median_seconds(fn, g, src, 0, wp, span, 3, 3, acc)
                print(f"3x3 {name:30s} {sec * 1e6:7.2f} us {flops / sec / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
