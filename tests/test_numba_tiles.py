"""The register-tiled micro-kernels (numba_tiles.py) against plain loops, at every tile size, and
the tiled convolution (numba_conv.py) compiled for an AVX2-only CPU as well as for this one."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from numba import njit

    from fastmnist.backends import numba_tiles as T

    @njit
    def _rows(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _rows_add(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows_add(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _rows_narrow(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows_narrow(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _rows_unit(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows_unit(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _rows_narrow_unit(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows_narrow_unit(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _rows3y(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
        T.tile_rows3y(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)

    @njit
    def _grad(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
        T.tile_grad(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo)

    @njit
    def _grad_narrow(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
        T.tile_grad_narrow(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo)

    @njit
    def _pool(acc, fp, ow, prow0, ph, pw, bp, pooled, arg, abase):
        T.pool22_relu(acc, fp, ow, prow0, ph, pw, bp, pooled, arg, abase)

    @njit
    def _unpool(dyl, arg, abase, fp, ow, ph, pw, g, gbase, db):
        T.unpool22(dyl, arg, abase, fp, ow, ph, pw, g, gbase, db)

    @njit
    def _t8(src, sbase, sstride, dst, dbase, dstride):
        T.transpose8(src, sbase, sstride, dst, dbase, dstride)

    @njit
    def _sparse(ix, v, lo, hi, b, bbase, ldb, out, obase, cols):
        T.sparse_rows(ix, v, lo, hi, b, bbase, ldb, out, obase, cols)

    @njit
    def _scatter(ix, v, lo, hi, b, bbase, out, ldo, obase, cols):
        T.sparse_scatter(ix, v, lo, hi, b, bbase, out, ldo, obase, cols)

    # (tile_rows kind, tile_grad kind, the fraction of a two-vector tile's columns covered, most pixels)
    KERNELS = {"wide": (_rows, _grad, (1, 1), T.TILE_PIXELS),
               "wide, adding": (_rows_add, None, (1, 1), T.TILE_PIXELS),
               "narrow": (_rows_narrow, _grad_narrow, (1, 2), T.NARROW_PIXELS),
               "wide, unit stride": (_rows_unit, None, (1, 1), T.UNIT_PIXELS),
               "narrow, unit stride": (_rows_narrow_unit, None, (1, 2), T.NARROW_UNIT_PIXELS),
               "three ymm": (_rows3y, None, (3, T.VECTOR_BYTES // 16), T.TILE3Y_PIXELS)}


def rows_oracle(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix, cols, add=False):
    out = out.copy()
    for p in range(npix):
        for v in range(cols):
            total = sum(x[xbase + roff[k0 + k] + p * ps] * w[k * ldw + wcol + v] for k in range(nk))
            out[obase + p * ldo + v] = (out[obase + p * ldo + v] if add else 0) + total
    return out


def grad_oracle(x, xbase, roff, k0, nrow, g, gbase, rows, ncols, rsx, psx, rsg, psg, out, obase, ldo, cols):
    out = out.copy()
    for r in range(nrow):
        for v in range(cols):
            out[obase + r * ldo + v] += sum(x[xbase + i * rsx + q * psx + roff[k0 + r]] * g[gbase + i * rsg + q * psg + v]
                                            for i in range(rows) for q in range(ncols))
    return out


@pytest.mark.parametrize("kind", ["wide", "wide, adding", "narrow", "three ymm", "wide, unit stride",
                                  "narrow, unit stride"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_rows_every_size(dtype, kind):
    rows, _, (num, den), most = KERNELS[kind]
    rng = np.random.default_rng(0)
    cols = T.tile_columns(np.dtype(dtype).itemsize) * num // den
    x = rng.standard_normal(4000).astype(dtype)
    roff = rng.integers(0, 300, 20).astype(np.int64)
    ldw, ldo = cols + 5, cols + 3
    w = rng.standard_normal(20 * ldw + 8).astype(dtype)
    for npix in range(most + 2):  # 0 and most + 1 are no-ops
        out = rng.standard_normal(2000).astype(dtype)
        ps = 1 if "unit" in kind else 7  # the unit-stride kernels read no ps
        args = (x, 11, ps, roff, 2, 17, w, 4, ldw, out.copy(), 5, ldo, npix)
        rows(*args)
        want = rows_oracle(*args[:-4], out, 5, ldo, npix if npix <= most else 0, cols, add=kind == "wide, adding")
        np.testing.assert_allclose(args[9], want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("kind", ["wide", "narrow"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_grad_every_size(dtype, kind):
    _, grad, (num, den), most = KERNELS[kind]
    rng = np.random.default_rng(1)
    cols = T.tile_columns(np.dtype(dtype).itemsize) * num // den
    x, g = rng.standard_normal(4000).astype(dtype), rng.standard_normal(4000).astype(dtype)
    roff = rng.integers(0, 200, 30).astype(np.int64)
    ldo = cols + 1
    for nrow in range(most + 2):
        out = rng.standard_normal(2000).astype(dtype)
        args = [x, 3, roff, 2, nrow, g, 9, 4, 5, 50, 3, 200, 40, out.copy(), 7, ldo]
        grad(*args)
        want = grad_oracle(*args[:4], nrow if nrow <= most else 0, *args[5:13], out, 7, ldo, cols)
        np.testing.assert_allclose(args[13], want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def pool_oracle(acc, fp, ow, ph, pw, bp):
    """pool22_relu by loops: the first maximum (row-major) of each 2x2 window, ReLU after the bias."""
    pooled, arg = np.zeros(ph * pw * fp, acc.dtype), np.zeros(ph * pw * fp, np.int32)
    for pi in range(ph):
        for pj in range(pw):
            for f in range(fp):
                pixels = [(2 * pi + a) * ow + 2 * pj + b for a in range(2) for b in range(2)]
                best = max(pixels, key=lambda k: (acc[k * fp + f], -k))  # ties: the smallest index
                v = acc[best * fp + f] + bp[f]
                pooled[(pi * pw + pj) * fp + f] = max(v, 0)
                arg[(pi * pw + pj) * fp + f] = best if v > 0 else -1
    return pooled, arg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool22_relu_and_unpool22_against_loops(dtype):
    rng = np.random.default_rng(2)
    lanes = T.VECTOR_BYTES // np.dtype(dtype).itemsize
    fp, oh, ow = 3 * lanes, 6, 5  # an odd width: its last column is in no window
    ph, pw = oh // 2, ow // 2
    acc = rng.integers(-3, 4, oh * ow * fp).astype(dtype)  # small integers: many ties
    bp = rng.integers(-1, 2, fp).astype(dtype)
    pooled, arg = np.empty(ph * pw * fp, dtype), np.zeros(7 + ph * pw * fp, np.int32)
    _pool(acc, fp, ow, 0, ph, pw, bp, pooled, arg, 7)
    want_pooled, want_arg = pool_oracle(acc, fp, ow, ph, pw, bp)
    np.testing.assert_array_equal(pooled, want_pooled)
    np.testing.assert_array_equal(arg[7:], want_arg)
    # a pooled row at a time from a buffer of its two convolution rows, as the forward pass pools
    by_rows, arg_rows = np.full(ph * pw * fp, np.nan, dtype), np.full(7 + ph * pw * fp, -9, np.int32)
    for pi in range(ph):
        pair = acc[2 * pi * ow * fp:(2 * pi + 2) * ow * fp].copy()
        _pool(pair, fp, ow, pi, 1, pw, bp, by_rows, arg_rows, 7)
    np.testing.assert_array_equal(by_rows, want_pooled)
    np.testing.assert_array_equal(arg_rows[7:], want_arg)
    assert (arg_rows[:7] == -9).all()
    assert (want_arg == -1).any() and (want_arg >= 0).any()
    dyl = rng.standard_normal(ph * pw * fp).astype(dtype)
    g, db = np.full(3 + oh * ow * fp, 9.0, dtype), np.ones(fp, dtype)
    _unpool(dyl, arg, 7, fp, ow, ph, pw, g, 3, db)
    want_g = np.full(oh * ow * fp, 9.0, dtype)  # pixels outside every window: untouched
    for p in range(ph * pw):
        pi, pj = divmod(p, pw)
        for a in range(2):
            for b in range(2):
                want_g[((2 * pi + a) * ow + 2 * pj + b) * fp: ((2 * pi + a) * ow + 2 * pj + b + 1) * fp] = 0
    want_db = np.ones(fp, dtype)
    for p in range(ph * pw):
        for f in range(fp):
            k = want_arg[p * fp + f]
            if k >= 0:
                want_g[k * fp + f] = dyl[p * fp + f]
                want_db[f] += dyl[p * fp + f]
    np.testing.assert_array_equal(g[3:], want_g)
    np.testing.assert_allclose(db, want_db, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose8_and_the_transpose_around_it(dtype):
    from fastmnist.backends.numba_conv import _transpose
    src = np.arange(400, dtype=dtype)
    dst = np.full(400, -1.0, dtype)
    _t8(src, 3, 11, dst, 5, 13)
    want = np.full(400, -1.0, dtype)
    for r in range(8):
        for c in range(8):
            want[5 + c * 13 + r] = src[3 + r * 11 + c]
    np.testing.assert_array_equal(dst, want)
    for rows, cols in [(19, 13), (8, 16), (1, 25), (7, 3)]:  # whole blocks, edges, no block at all
        dst = np.full(600, -1.0, dtype)
        _transpose(src, 2, 17, rows, cols, dst, 1, 23)
        want = np.full(600, -1.0, dtype)
        for r in range(rows):
            for c in range(cols):
                want[1 + c * 23 + r] = src[2 + r * 17 + c]
        np.testing.assert_array_equal(dst, want, err_msg=f"{rows} x {cols}")


def sparse_check(sparse_rows, block, dt, rng):
    """sparse_rows against loops for every column count of a block (each number of vectors, each
    masked tail), at an offset in both arrays; the output's other entries must stay untouched."""
    ldb, nrows = block + 5, 9
    b = rng.standard_normal(nrows * ldb).astype(dt)
    ix = rng.integers(0, nrows, 12).astype(np.int32)
    v = rng.standard_normal(12).astype(dt)
    for cols in range(1, block + 1):
        for lo, hi in [(0, 12), (3, 7), (5, 5)]:
            out = rng.standard_normal(block + 8).astype(dt)
            want = out.copy()
            for k in range(lo, hi):
                for c in range(cols):
                    want[3 + c] += v[k] * b[ix[k] * ldb + 2 + c]
            sparse_rows(ix, v, lo, hi, b, 2, ldb, out, 3, cols)
            np.testing.assert_allclose(out, want, rtol=1e-5 if dt == np.float32 else 1e-13,
                                       atol=1e-5 if dt == np.float32 else 1e-13, err_msg=f"cols {cols}, k {lo}:{hi}")


def scatter_check(sparse_scatter, block, dt, rng):
    """sparse_scatter against loops for every column count of a block (each number of vectors,
    each tail: whole, or half a vector where at most half is left), rows repeated among the
    non-zeros, at offsets: only the named columns change (the lanes it stores past them add 0)."""
    ldo, nrows = block + 11, 7
    b = rng.standard_normal(block + 9).astype(dt)
    ix = rng.integers(0, nrows, 12).astype(np.int32)
    v = rng.standard_normal(12).astype(dt)
    for cols in range(1, block + 1):
        for lo, hi in [(0, 12), (3, 7), (5, 5)]:
            out = rng.standard_normal(nrows * ldo + 4).astype(dt)
            want = out.copy()
            for k in range(lo, hi):
                for c in range(cols):
                    want[ix[k] * ldo + 4 + c] += v[k] * b[2 + c]
            sparse_scatter(ix, v, lo, hi, b, 2, out, ldo, 4, cols)
            np.testing.assert_allclose(out, want, rtol=1e-5 if dt == np.float32 else 1e-13,
                                       atol=1e-5 if dt == np.float32 else 1e-13, err_msg=f"cols {cols}, k {lo}:{hi}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_rows_every_column_count(dtype):
    sparse_check(_sparse, T.sparse_block_columns(np.dtype(dtype).itemsize), dtype, np.random.default_rng(5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_scatter_every_column_count(dtype):
    scatter_check(_scatter, T.sparse_block_columns(np.dtype(dtype).itemsize), dtype, np.random.default_rng(6))


def test_vector_width_follows_numbas_target(monkeypatch):
    import numba
    monkeypatch.setattr(numba.config, "CPU_NAME", "haswell")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert T.vector_bytes() == 32
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx512f,+avx512bw")
    assert T.vector_bytes() == 64


AVX2_SCRIPT = """
import sys
import numpy as np
from fastmnist.backends import get_backend, numba_tiles
DTYPES = [np.dtype(name).type for name in sys.argv[1:]]
assert DTYPES, "name float32 and/or float64"
assert (numba_tiles.VECTOR_BYTES, numba_tiles.TILE_PIXELS) == (32, 6), (numba_tiles.VECTOR_BYTES, numba_tiles.TILE_PIXELS)
nb, ref = get_backend("numba"), get_backend("numpy")
rng = np.random.default_rng(3)
from numba import njit
from tests.test_numba_tiles import sparse_check
@njit
def sparse(ix, v, lo, hi, b, bbase, ldb, out, obase, cols):
    numba_tiles.sparse_rows(ix, v, lo, hi, b, bbase, ldb, out, obase, cols)
@njit
def scatter(ix, v, lo, hi, b, bbase, out, ldo, obase, cols):
    numba_tiles.sparse_scatter(ix, v, lo, hi, b, bbase, out, ldo, obase, cols)
from tests.test_numba_tiles import scatter_check
for dt in DTYPES:  # AVX2's masked moves (vmaskmov) for a block's last vector, whole or half (xmm)
    sparse_check(sparse, numba_tiles.sparse_block_columns(np.dtype(dt).itemsize), dt, rng)
    scatter_check(scatter, numba_tiles.sparse_block_columns(np.dtype(dt).itemsize), dt, rng)
assert numba_tiles.HAS_PERMUTE_PACK and not numba_tiles.HAS_COMPRESS
from tests.test_numba_sparse import test_nonzeros_every_length_and_tail, test_sparse_rows_scaled_against_loops
for dt in DTYPES:  # nonzeros by table-driven permutes (vpermps), as AVX2 packs them
    test_nonzeros_every_length_and_tail(dt)
    test_sparse_rows_scaled_against_loops(dt)  # plain SGD's rows, their half-width (xmm) last vectors too
from tests.test_numba_window_grad import test_every_body_against_a_loop
for dt in DTYPES:  # the pooled-side windows in AVX2's vectors, the wide one's half-width last vectors too
    test_every_body_against_a_loop(rng, np.dtype(dt).name, "wide")
for dt in DTYPES:  # the ten-output layers' narrow kernels (numba_dense.py) in 8-lane vectors: two for ten outputs
    for n, d, m in [(13, 21, 10), (7, 16, 1)]:
        x, w = rng.standard_normal((n, d)).astype(dt), rng.standard_normal((d, m)).astype(dt)
        b, dy = rng.standard_normal(m).astype(dt), rng.standard_normal((n, m)).astype(dt)
        with nb.training_context():
            got = (nb.affine_forward(x, w, b),) + nb.affine_backward(dy, x, w)
        want = (ref.affine_forward(x, w, b),) + ref.affine_backward(dy, x, w)
        for name, g, r in zip(("y", "dx", "dw", "db"), got, want):
            err = np.linalg.norm(g - r) / np.linalg.norm(r)
            assert err < (3e-6 if dt == np.float32 else 1e-12), (dt.__name__, (n, d, m), name, err)
for dt in DTYPES:
    for n, c, h, f, k, pad in [(3, 24, 12, 32, 3, 0), (2, 1, 28, 24, 5, 0), (2, 3, 9, 5, 3, 1)]:
        x, w = rng.standard_normal((n, c, h, h)).astype(dt), rng.standard_normal((f, c, k, k)).astype(dt)
        b = rng.standard_normal(f).astype(dt)
        y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
        yr, cr = ref.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
        dy = rng.standard_normal(y.shape).astype(dt)
        got = (y,) + nb.conv2d_relu_maxpool_backward(dy, cache, w)
        want = (yr,) + ref.conv2d_relu_maxpool_backward(dy, cr, w)
        for name, g, r in zip(("y", "dx", "dw", "db"), got, want):
            err = np.linalg.norm(g - r) / np.linalg.norm(r)
            assert err < (3e-5 if dt == np.float32 else 1e-10), (dt.__name__, (n, c, h, f, k, pad), name, err)
print("ok")
"""


def _host_compiles_avx2() -> bool:
    import numba
    return T.VECTOR_BYTES == 32 and numba.config.CPU_NAME in (None, "", "host")


@pytest.mark.skipif(_host_compiles_avx2(), reason="this host has no AVX-512: numba compiles every kernel of the suite "
                    "for 256-bit vectors already, so the whole suite runs the AVX2 code this test would compile again")
def test_tiled_convolution_compiled_for_avx2(tmp_path):
    """NUMBA_CPU_NAME=haswell: 256-bit vectors, 6-pixel tiles (16 registers), as an AVX2-only CPU
    runs them; a fresh cache directory, since numba keys its cache by the target CPU. Nearly all
    of it is compiling (single-threaded), so float32 and float64 compile at once in two processes.
    Skipped where the host itself compiles for AVX2 (about 50 s of compiling saved there)."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    runs = {dtype: subprocess.Popen([sys.executable, "-c", AVX2_SCRIPT, dtype], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    env=dict(env, NUMBA_CACHE_DIR=str(tmp_path / f"cache-{dtype}")))
            for dtype in ("float32", "float64")}
    try:
        for dtype, proc in runs.items():
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0 and out.strip() == "ok", (dtype, err[-3000:])
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unit_tiles_and_prefetch_leave_every_bit(dtype, monkeypatch):
    """The one-channel layers' unit-stride tiles sum each output in the same order as the general
    tiles, and the output prefetch is only a hint: the forward pass's y and arg, bit for bit, with
    config.CONV_UNIT_TILES and config.CONV_PREFETCH_OUTPUT on and off (rows of 24, 28 and 13
    pixels: two unit tiles, two narrow ones, one)."""
    from fastmnist import config
    from fastmnist.backends import numba_backend as nb

    rng = np.random.default_rng(3)
    for n, h, f, pad in [(5, 28, 24, 0), (3, 28, 16, 2), (4, 28, 30, 0), (3, 17, 40, 0)]:
        x = rng.standard_normal((n, 1, h, h)).astype(dtype)
        w, b = rng.standard_normal((f, 1, 5, 5)).astype(dtype), rng.standard_normal(f).astype(dtype)
        runs = []
        for on in (True, False):
            monkeypatch.setattr(config, "CONV_UNIT_TILES", on)
            monkeypatch.setattr(config, "CONV_PREFETCH_OUTPUT", on)
            y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
            runs.append((y, cache.arg))
        np.testing.assert_array_equal(runs[0][0], runs[1][0])
        np.testing.assert_array_equal(runs[0][1], runs[1][1])
