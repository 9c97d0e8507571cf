"""fast-cnn's two fused convolutions at batch 256, forward then backward, each pass timed (numba,
2 threads inside training_context), medians over alternated rounds; with a config flag named,
the rounds alternate it on and off.

    python3 benchmarks/conv_chain.py [FLAG]      # e.g. NUMBA_CHANNELS_LAST

Big outputs make glibc trim and re-fault its heap between calls; for stable numbers fix its
thresholds first (ctypes: mallopt(M_TRIM_THRESHOLD, 64 MB), mallopt(M_MMAP_THRESHOLD, 32 MB)).
"""
import sys
import time

import numpy as np

import fastmnist
from fastmnist import config
from fastmnist.backends import numba_backend as nb


def main(flag=None, rounds=100):
    rng = np.random.default_rng(0)
    x = rng.random((256, 1, 28, 28)).astype(np.float32)
    w1, b1 = (rng.standard_normal((24, 1, 5, 5)) * 0.2).astype(np.float32), np.zeros(24, np.float32)
    w2, b2 = (rng.standard_normal((32, 24, 3, 3)) * 0.1).astype(np.float32), np.zeros(32, np.float32)
    dy = rng.standard_normal((256, 32, 5, 5)).astype(np.float32)
    times = {}

    def timed(key, fn):
        t = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - t)
        return out

    def chain(on):
        if flag:
            setattr(config, flag, on)
        mid, c1 = timed((on, "1 conv1 fwd"), lambda: nb.conv2d_relu_maxpool_forward(x, w1, b1, channels_last=True))
        _, c2 = timed((on, "2 conv2 fwd"), lambda: nb.conv2d_relu_maxpool_forward(mid, w2, b2))
        dmid, _, _ = timed((on, "3 conv2 bwd"), lambda: nb.conv2d_relu_maxpool_backward(dy, c2, w2, True))
        timed((on, "4 conv1 bwd"), lambda: nb.conv2d_relu_maxpool_backward(dmid, c1, w1, False))

    settings = (True, False) if flag else (True,)
    with fastmnist.get_backend("numba").training_context():
        for on in settings:
            chain(on)  # JIT and caches warm
        times.clear()
        for r in range(rounds):
            for on in (settings if r % 2 else settings[::-1]):
                chain(on)
    for key in sorted(times, key=lambda k: (k[1], not k[0])):
        label = f"{flag}={key[0]} " if flag else ""
        print(f"{label}{key[1]}: {1e3 * np.median(times[key]):.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
