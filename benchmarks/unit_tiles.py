"""The first layers' forward products on the unit-stride tiles against the general ones, alone.

    python3 benchmarks/unit_tiles.py [ROUNDS]

For the zoo CNNs' one-channel 5x5 layers (fast-cnn 24 filters, simple-cnn 30, dropout-cnn 16 with a
2-pixel border), every image's output rows by every tile of filters, on both cores, as
numba_conv.conv_pool_forward_kernel runs them but without the pooling and the stores around
them: ``tile_rows``/``tile_rows_narrow`` with the pixel stride as a run-time value (TILE_PIXELS /
NARROW_PIXELS), against ``tile_rows_unit``/``tile_rows_narrow_unit`` (UNIT_PIXELS /
NARROW_UNIT_PIXELS). Each thread writes two rows of outputs, over and over, as the real kernel does
(they stay in L1). The two alternate call by call; medians of ROUNDS (default 21), useful GFLOP/s.
"""
import sys
import time

import numpy as np
from numba import njit, prange

from fastmnist.backends import numba_backend  # noqa: F401  (OpenMP first, as training runs)
from fastmnist.backends import numba_conv as conv
from fastmnist.backends import numba_tiles as T

SHAPES = {"fast-cnn conv1": (256, 24, 28, 0), "simple-cnn conv": (100, 30, 28, 0), "dropout-cnn conv": (200, 16, 28, 2)}


@njit(parallel=True, nogil=True)
def forward_rows(xh, roff, wpk, oh, ow, acc, unit):
    n_, hp, wp, c_ = xh.shape  # c_ = 1, a run-time value for the general tiles as in the real kernel
    fp, nk = wpk.shape[1], roff.shape[0]
    cols = T.tile_width(wpk)
    wide = fp - fp % cols
    xflat, wflat = xh.reshape(-1), wpk.reshape(-1)
    most = (T.UNIT_PIXELS if wide else T.NARROW_UNIT_PIXELS) if unit else (T.TILE_PIXELS if wide else T.NARROW_PIXELS)
    tiles = (ow + most - 1) // most
    for t in prange(2):  # one thread's two rows of outputs, as in the real kernel
        a = acc[t]
        for n in range(t, n_, 2):
            for i in range(oh):
                for part in range(tiles):
                    q0, npix = conv._cut(ow, tiles, part)
                    xb, ob = (n * hp + i) * wp + q0, ((i % 2) * ow + q0) * fp
                    for j0 in range(0, wide, cols):
                        if unit:
                            T.tile_rows_unit(xflat, xb, 1, roff, 0, nk, wflat, j0, fp, a, ob + j0, fp, npix)
                        else:
                            T.tile_rows(xflat, xb, c_, roff, 0, nk, wflat, j0, fp, a, ob + j0, fp, npix)
                    if wide < fp:
                        if unit:
                            T.tile_rows_narrow_unit(xflat, xb, 1, roff, 0, nk, wflat, wide, fp, a, ob + wide, fp, npix)
                        else:
                            T.tile_rows_narrow(xflat, xb, c_, roff, 0, nk, wflat, wide, fp, a, ob + wide, fp, npix)


def main(rounds):
    rng = np.random.default_rng(0)
    print(f"vector bytes {T.VECTOR_BYTES}; most pixels general {T.TILE_PIXELS} / narrow {T.NARROW_PIXELS}, "
          f"unit {T.UNIT_PIXELS} / narrow {T.NARROW_UNIT_PIXELS}; useful GFLOP/s, medians of {rounds}")
    for name, (n, f, h, pad) in SHAPES.items():
        k = 5
        x = rng.standard_normal((n, 1, h, h)).astype(np.float32)
        w = (0.1 * rng.standard_normal((f, 1, k, k))).astype(np.float32)
        oh, hp = h + 2 * pad - k + 1, h + 2 * pad
        xh = np.zeros((n, hp, hp, 1), np.float32)
        conv.to_channels_last_kernel(x, pad, xh)
        roff = conv.row_offsets(k, k, 1, hp, 1)
        fp = conv.padded_width(f, 4)
        wpk = conv.pack_rows(w, fp)
        accs = {unit: np.zeros((2, 2 * oh * fp), np.float32) for unit in (False, True)}
        times = {False: [], True: []}
        for unit, acc in accs.items():
            forward_rows(xh, roff, wpk, oh, oh, acc, unit)
        np.testing.assert_allclose(accs[True], accs[False], rtol=1e-5, atol=1e-5)
        for _ in range(rounds):
            for unit, acc in accs.items():
                t = time.perf_counter()
                forward_rows(xh, roff, wpk, oh, oh, acc, unit)
                times[unit].append(time.perf_counter() - t)
        flops = 2 * n * oh * oh * f * k * k
        general, unit = (flops / np.median(times[u]) / 1e9 for u in (False, True))
        print(f"{name:18s} general {general:6.1f}   unit stride {unit:6.1f}   ({unit / general - 1:+.0%})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 21)
