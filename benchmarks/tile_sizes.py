"""GFLOP/s of the register-tiled micro-kernels by tile size, on the CNN zoo's convolution shapes.

    python3 benchmarks/tile_sizes.py                      # this CPU's own target
    NUMBA_CPU_NAME=haswell python3 benchmarks/tile_sizes.py 3,4,5,6   # AVX2 code

For each shape and each largest tile size m, an image's output rows (tile_rows: the forward
product) and its weight-gradient rows (tile_grad) are cut into near-equal tiles of at most m, as
numba_conv.py cuts them, and timed over a batch (median of 25, after a warm-up); the sizes must
not exceed numba_tiles.TILE_PIXELS. Padded channels count as no work: GFLOP/s are useful ones.
Only wide (two-vector) tiles run here, so the filters are padded to whole tiles.
"""
import sys
import time

import numpy as np
from numba import njit, prange

from fastmnist.backends import numba_conv as conv
from fastmnist.backends.numba_tiles import TILE_PIXELS, VECTOR_BYTES, tile_grad, tile_rows, tile_width

SHAPES = {"fast-cnn conv1": (256, 1, 24, 28, 5, 0), "fast-cnn conv2": (256, 24, 32, 12, 3, 0),
          "simple-cnn conv": (100, 1, 30, 28, 5, 0), "dropout-cnn conv": (200, 1, 16, 28, 5, 2)}


@njit(parallel=True, nogil=True)
def forward_rows(xh, roff, wpk, oh, ow, acc, most):
    n_, hp, wp, c_ = xh.shape
    fp, nk = wpk.shape[1], roff.shape[0]
    cols = tile_width(wpk)
    xflat, wflat = xh.reshape(-1), wpk.reshape(-1)
    tiles = (ow + most - 1) // most
    for n in prange(n_):
        for i in range(oh):
            for part in range(tiles):
                q0, npix = conv._cut(ow, tiles, part)
                for j0 in range(0, fp, cols):
                    tile_rows(xflat, ((n * hp + i) * wp + q0) * c_, c_, roff, 0, nk, wflat, j0, fp,
                              acc[n], (i * ow + q0) * fp + j0, fp, npix)


@njit(parallel=True, nogil=True)
def weight_rows(xh, roff, g, oh, ow, fp, dwp, most):
    n_, hp, wp, c_ = xh.shape
    nk = roff.shape[0]
    cols = tile_width(dwp)
    xflat = xh.reshape(-1)
    tiles = (nk + most - 1) // most
    gplane = oh * ow * fp
    for t in prange(2):  # two partials, one per core
        dw = dwp[t].reshape(-1)
        for n in range(t, n_, 2):
            for part in range(tiles):
                r0, nrow = conv._cut(nk, tiles, part)
                for j0 in range(0, fp, cols):
                    tile_grad(xflat, n * hp * wp * c_, roff, r0, nrow, g, n * gplane + j0, oh, ow, wp * c_, c_,
                              ow * fp, fp, dw, r0 * fp + j0, fp)


def median_ms(fn, reps=25):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(sizes):
    rng = np.random.default_rng(0)
    print(f"vector bytes {VECTOR_BYTES}, TILE_PIXELS {TILE_PIXELS}; GFLOP/s forward / weight gradient by largest tile")
    for name, (n, c, f, h, k, pad) in SHAPES.items():
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = (0.1 * rng.standard_normal((f, c, k, k))).astype(np.float32)
        oh, hp = h + 2 * pad - k + 1, h + 2 * pad
        xh = np.zeros((n, hp, hp, c), np.float32)
        conv.to_channels_last_kernel(x, pad, xh)
        roff = conv.row_offsets(k, k, c, hp, c)
        cols = 2 * VECTOR_BYTES // 4
        fp = -(-f // cols) * cols
        wpk = conv.pack_rows(w, fp)
        acc = np.empty((n, oh * oh * fp), np.float32)
        g = rng.standard_normal(n * oh * oh * fp).astype(np.float32)
        dwp = np.zeros((2, k * k * c, fp), np.float32)
        flops = 2 * n * oh * oh * f * k * k * c
        cells = []
        for most in sizes:
            t_fwd = median_ms(lambda m=most: forward_rows(xh, roff, wpk, oh, oh, acc, m))  # noqa: B023
            t_grad = median_ms(lambda m=most: weight_rows(xh, roff, g, oh, oh, fp, dwp, m))  # noqa: B023
            cells.append(f"{most}: {flops / t_fwd / 1e6:.0f}/{flops / t_grad / 1e6:.0f}")
        print(f"{name:17s}", "  ".join(cells), flush=True)


if __name__ == "__main__":
    chosen = [int(s) for s in sys.argv[1].split(",")] if len(sys.argv) > 1 else list(range(4, TILE_PIXELS + 1))
    if max(chosen) > TILE_PIXELS:
        sys.exit(f"tile sizes above TILE_PIXELS={TILE_PIXELS} are not compiled on this target")
    main(chosen)
