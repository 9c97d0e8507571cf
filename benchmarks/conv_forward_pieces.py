"""Where the first layers' fused conv -> ReLU -> pool forward pass spends its time, piece by piece.

    python3 benchmarks/conv_forward_pieces.py [ROUNDS]

For each zoo CNN's one-channel first layer, a copy of numba_conv.conv_pool_forward_kernel's loop
(the unit-stride tiles, as training runs them) that stops after a given piece, each variant in turn,
call by call, medians of ROUNDS (default 41), both cores, outputs kept between calls:

* ``tiles``: the products only, into each task's two rows of accumulators (L1);
* ``+pool``: and ``pool22_relu`` after each pair of rows (the argmax written to ``arg``);
* ``+store``: and each image's pooled values stored to ``y`` (N, F, PH, PW): the whole pass;
* ``+store cl``: the same with y channels last (fast-cnn's first layer, whose next layer reads so);
* ``+store, warm y``: the same stores into a buffer of two images per task, which stays in cache:
  what writing y's memory costs beyond the stores' own work;
* ``+store, prefetched y``: the pass with the next image's lines of y prefetched for writing
  before each image's products (``numba_tiles.prefetch_for_write``, as config.CONV_PREFETCH_OUTPUT
  has the real kernel do since these timings).
"""
import sys
import time

import numpy as np
from numba import njit, prange

from fastmnist.backends import numba_backend  # noqa: F401  (OpenMP first, as training runs)
from fastmnist.backends import numba_conv as conv
from fastmnist.backends.numba_tiles import pool22_relu, prefetch_for_write

SHAPES = {"fast-cnn conv1": (256, 24, 28, 0), "simple-cnn conv": (100, 30, 28, 0), "dropout-cnn conv": (200, 16, 28, 2)}
VARIANTS = {"tiles": 0, "+pool": 1, "+store": 2, "+store cl": 2, "+store, warm y": 3, "+store, prefetched y": 4}


@njit(parallel=True, nogil=True, error_model="numpy")
def forward_pieces(xh, roff, wpk, bp, oh, ow, chunk, y, arg, cl, upto):
    n_, hp, wp, c_ = xh.shape
    fp = wpk.shape[1]
    xflat, wflat, argflat = xh.reshape(-1), wpk.reshape(-1), arg.reshape(-1)
    ph, pw = arg.shape[1], arg.shape[2]
    f_ = y.shape[3] if cl else y.shape[1]
    per = y.size // n_
    for ci in prange((n_ + chunk - 1) // chunk):
        acc = np.zeros(2 * ow * fp, y.dtype)
        pooled = np.empty(ph * pw * fp, y.dtype)
        warm = np.empty_like(y[:2])
        for n in range(ci * chunk, min(n_, (ci + 1) * chunk)):
            if upto == 4 and n + 1 < n_:
                prefetch_for_write(y.reshape(-1), (n + 1) * per, per)
            for pi in range(ph):
                for i in range(2 * pi, 2 * pi + 2):
                    conv._image_row(xflat, ((n * hp + i) * wp) * c_, c_, roff, wflat, fp, acc, (i - 2 * pi) * ow * fp,
                                    ow, f_, True)
                if upto >= 1:
                    pool22_relu(acc, fp, ow, pi, 1, pw, bp, pooled, argflat, n * ph * pw * fp)
            if upto == 2 or upto == 4:
                conv._store_pooled(pooled, fp, y[n], cl)
            elif upto == 3:
                conv._store_pooled(pooled, fp, warm[n % 2], cl)


def _layer(rng, n, f, h, pad, k=5):
    """The forward kernel's arguments for one layer, both outputs: (common, y, y channels last, arg)."""
    x = rng.standard_normal((n, 1, h, h)).astype(np.float32)
    w = (0.1 * rng.standard_normal((f, 1, k, k))).astype(np.float32)
    oh, hp = h + 2 * pad - k + 1, h + 2 * pad
    ph = oh // 2
    xh = np.zeros((n, hp, hp, 1), np.float32)
    conv.to_channels_last_kernel(x, pad, xh)
    fp = conv.padded_width(f, 4)
    common = (xh, conv.row_offsets(k, k, 1, hp, 1), conv.pack_rows(w, fp), np.zeros(fp, np.float32), oh, oh, 8)
    return common, np.empty((n, f, ph, ph), np.float32), np.empty((n, ph, ph, f), np.float32), \
        np.empty((n, ph, ph, fp), np.int32)


def _run(layer, label):
    common, y, ycl, arg = layer
    cl = label == "+store cl"
    forward_pieces(*common, ycl if cl else y, arg, cl, VARIANTS[label])


def main(rounds):
    rng = np.random.default_rng(0)
    print(f"ms per batch, medians of {rounds}, variants alternated")
    for name, shape in SHAPES.items():
        layer = _layer(rng, *shape)
        times = {label: [] for label in VARIANTS}
        for label in VARIANTS:
            _run(layer, label)
        for _ in range(rounds):
            for label in VARIANTS:
                t = time.perf_counter()
                _run(layer, label)
                times[label].append(time.perf_counter() - t)
        print(f"{name:17s} " + "  ".join(f"{label} {np.median(ts) * 1e3:.3f}" for label, ts in times.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 41)
