"""Where fast-cnn's conv2 input gradient (Winograd F(4x4, 3x3)) goes: 256 images, each stage
added in turn, cumulative medians. Run on one thread for stable numbers:

    NUMBA_NUM_THREADS=1 python3 benchmarks/conv2_dx_stages.py [USED]

USED: the channels the 36 products compute (24, the layer's, by default: three 32-byte vectors on
AVX-512; 32 computes the padded two-vector tile, as before numba_tiles.tile_rows3y). On AVX2 the
24 channels are three whole vectors and USED changes nothing.
"""
import sys
import time

import numpy as np
from numba import njit

from fastmnist.backends import numba_backend as nb
from fastmnist.backends import numba_conv as T
from fastmnist.backends import numba_winograd as wino
from fastmnist.backends.numba_tiles import copy_rows, unpool22

NAMES = ["unpool", "+gpad copy", "+input_tile4", "+36 products", "+output_tile4", "+copy_rows"]


@njit
def run(stage, dy, arg, udx, dx, used):
    n_, f_, ph, pw = dy.shape
    fp, oh, ow, c_ = 32, 10, 10, 24
    cp = udx.shape[2]  # the layer's 24 channels padded to whole vectors: 32 on AVX-512, 24 on AVX2
    tw, tiles, gw, wq = 3, 9, 14, 12
    g, dyl, dbs = np.zeros(oh * ow * fp, np.float32), np.zeros(ph * pw * fp, np.float32), np.zeros(fp, np.float32)
    gpad, v, m, dxq = T._winograd_buffers(udx, oh, ow, fp, np.float32)
    argflat, dyflat, uflat, nf = arg.reshape(-1), dy.reshape(-1), udx.reshape(-1), udx.shape[1]
    roffc = np.arange(f_)
    for n in range(n_):
        T._transpose(dyflat, n * f_ * ph * pw, ph * pw, f_, ph * pw, dyl, 0, fp)
        unpool22(dyl, argflat, n * ph * pw * fp, fp, ow, ph, pw, g, 0, dbs)
        if stage < 2:
            continue
        copy_rows(g, 0, ow * fp, gpad, (2 * gw + 2) * fp, gw * fp, oh, ow * fp)
        if stage < 3:
            continue
        for t in range(tiles):
            wino.input_tile4(gpad, wino.tile_origin(t, tw, gw, 4) * fp, gw * fp, fp, fp, v, t * fp, tiles * fp)
        if stage < 4:
            continue
        for xi in range(36):
            T._row_product(v, xi * tiles * fp, fp, roffc, uflat[xi * nf * cp:(xi + 1) * nf * cp], cp, m,
                           xi * tiles * cp, cp, tiles, used)
        if stage < 5:
            continue
        for t in range(tiles):
            wino.output_tile4(m, t * cp, tiles * cp, cp, dxq, wino.tile_origin(t, tw, wq, 4) * cp, wq * cp, cp)
        if stage < 6:
            continue
        T._store_rows(dxq, wq, cp, 0, 12, 12, c_, dx[n].reshape(-1), True)


def main(used=24):
    rng = np.random.default_rng(0)
    x = rng.random((256, 24, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((32, 24, 3, 3)) * 0.1).astype(np.float32)
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, np.zeros(32, np.float32))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    udx = wino.transform_filters(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]),
                                 T.padded_width(24, 4), wino.G4)
    dx = np.zeros((256, 12, 12, 24), np.float32)
    for stage in range(1, 7):
        run(stage, dy, cache.arg, udx, dx, used)
    for _ in range(2):
        out = []
        for stage in range(1, 7):
            ts = []
            for _ in range(20):
                t = time.perf_counter()
                run(stage, dy, cache.arg, udx, dx, used)
                ts.append(time.perf_counter() - t)
            out.append(f"{NAMES[stage - 1]} {1e3 * np.median(ts):.3f}")
        print(" | ".join(out))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
