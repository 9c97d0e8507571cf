"""A probe, not a kernel of the library: the first layers' forward product with the output pixels
in the vector lanes, against the unit-stride tiles (filters in the lanes). It measured the shapes
before ``numba_lanes.tile_lanes`` (two rows by 4-6 filters) went into the library, and now runs
on that intrinsic (``numba_lanes.make_tile_lanes``), built also for one-row, 8- and 10-filter tiles.

    python3 benchmarks/pixel_lanes.py [ROUNDS]

Why. ``tile_rows_narrow_unit`` (one vector of filters: dropout-cnn's 16) loads one broadcast input
for every multiply-add, where the two-vector tiles share each broadcast between two; alone in L1
on one core of the eighteenth session's Xeon it ran at 89 GFLOP/s against 118 for the two-vector
tiles. With the pixels in the lanes (a row of 28 outputs as two vectors) and a tile of filters as
broadcast weights, a tap loads ``PV`` input vectors (unaligned, one element apart) and ``FT``
weights for PV*FT multiply-adds: 2 x 8 = 16 for 10 loads, 4 x 4 (two output rows) 16 for 8.
Its outputs come channels first (F, OW), the layout of y, with pooling across lanes left to do.

Each tile below computes every output row of every image of a batch (the zoo shapes), outputs kept
in L1 as the real kernel keeps its accumulator rows; rounds alternate the kinds; medians; useful
GFLOP/s (a 28-pixel row's 32 lanes count as 28).
"""
import sys
import time

import numba
import numpy as np
from numba import njit, prange

from fastmnist.backends import numba_backend  # noqa: F401  (OpenMP first, as training runs)
from fastmnist.backends import numba_conv as conv
from fastmnist.backends import numba_lanes as lanes
from fastmnist.backends import numba_tiles as T

ROW_VECTORS = lanes.LANE_PIXELS * 4 // T.VECTOR_BYTES  # vectors a row of 24 or 28 outputs takes (32 lanes)
SHAPES = {"simple-cnn conv": (100, 30, 28, 0), "dropout-cnn conv": (200, 16, 28, 2)}


#: (output rows, filters) of the tiles tried. AVX-512: 2 x 8 and 2 x 10 vectors of accumulators for
#: one row, 4 x 4 and 4 x 5 for two rows (fewer loads per multiply-add: 8 for 16, 9 for 20); AVX2
#: (four ymm a row, 16 registers): 4 x 2 and 4 x 3
TILES = ((1, 8), (1, 10), (2, 4), (2, 5)) if T.VECTOR_BYTES == 64 else ((1, 2), (1, 3))
# the library's tile_lanes, built for these shapes (numba_lanes.make_tile_lanes)
one_row = lanes.make_tile_lanes(1, tuple(ft for r, ft in TILES if r == 1))
two_rows = lanes.make_tile_lanes(2, tuple(ft for r, ft in TILES if r == 2) or (4,))


@njit(parallel=True, nogil=True)
def by_lanes(xh, kh, kw, wl, oh, ow, f_, rows, ft, out, threads):
    n_, hp, wp, _ = xh.shape
    xflat, wflat = xh.reshape(-1), wl.reshape(-1)
    for t in prange(threads):
        o = out[t]
        for n in range(t, n_, threads):
            for i in range(0, oh, rows):
                for f0 in range(0, f_, ft):
                    base = (n * hp + i) * wp
                    if rows == 1:
                        one_row(xflat, base, wp, kh, kw, wflat, f0, f_, o, 0, 32, ft * 32, ow, ft)
                    else:
                        two_rows(xflat, base, wp, kh, kw, wflat, f0, f_, o, 0, 32, ft * 32, ow, ft)


@njit(parallel=True, nogil=True)
def by_filters(xh, roff, wpk, oh, ow, acc, threads):  # numba_conv's unit-stride product, its row loop
    n_, hp, wp, c_ = xh.shape
    fp = wpk.shape[1]
    xflat, wflat = xh.reshape(-1), wpk.reshape(-1)
    for t in prange(threads):
        a = acc[t]
        for n in range(t, n_, threads):
            for i in range(oh):
                conv._unit_row_product(xflat, ((n * hp + i) * wp), roff, wflat, fp, a, 0, fp, ow, fp)


def by_filters_call(xh, roff, wpk, wl, oh, ow, f, acc, out, threads, tile):
    by_filters(xh, roff, wpk, oh, ow, acc, threads)


def by_lanes_call(xh, roff, wpk, wl, oh, ow, f, acc, out, threads, tile):
    rows, ft = tile
    by_lanes(xh, 5, 5, wl, oh, ow, f, rows, ft, out, threads)


def main(rounds=21):
    rng = np.random.default_rng(0)
    print(f"# {numba.config.CPU_NAME or 'host'} target, vector bytes {T.VECTOR_BYTES}")
    for name, (n, f, h, pad) in SHAPES.items():
        hp = h + 2 * pad
        oh = ow = hp - 4
        xh = np.zeros((n, hp, hp + 8, 1), np.float32)  # 8 more columns: the last vector's unused lanes read inside
        xh[:, :, :hp, 0] = rng.random((n, hp, hp))
        w = (rng.standard_normal((f, 1, 5, 5)) * 0.2).astype(np.float32)
        fp = conv.padded_width(f, 4)
        roff = conv.row_offsets(5, 5, 1, hp + 8, 1)
        wpk = conv.pack_rows(w, fp)
        wl = np.ascontiguousarray(w.reshape(f, 25).T)  # (K, F): a tap's filters side by side
        flops = 2.0 * n * oh * ow * 25 * f
        for threads in (1, 2):
            acc = np.zeros((threads, ow * fp + 64), np.float32)
            out = np.zeros((threads, 2 * 10 * 32 + 64), np.float32)
            args = (xh, roff, wpk, wl, oh, ow, f, acc, out, threads)
            kinds = {"filters in lanes (unit tiles)": (by_filters_call, args, None)}
            for rows, ft in TILES:
                if f % ft == 0:
                    kinds[f"pixels in lanes, {rows * ROW_VECTORS} x {ft}"] = (by_lanes_call, args, (rows, ft))
            times = {k: [] for k in kinds}
            for fn, fargs, tile in kinds.values():
                fn(*fargs, tile)
            for _ in range(rounds):
                for k, (fn, fargs, tile) in kinds.items():
                    t = time.perf_counter()
                    fn(*fargs, tile)
                    times[k].append(time.perf_counter() - t)
            for k, ts in times.items():
                print(f"{name:18s} {threads} thread(s)  {k:32s} {np.median(ts) * 1e3:7.3f} ms  "
                      f"{flops / np.median(ts) / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
