"""The pooled-side weight gradient (numba_window_grad.py): the intrinsic against a plain loop at
every body it compiles, and the fused layer's backward pass through it against the loop oracles
(tests/naive.py), including stopped windows, overlapping pooling and an input gradient beside it."""
import numpy as np
import pytest

from fastmnist import config
from fastmnist.backends import backend_status
from tests import naive
from tests.conftest import assert_close

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from numba import njit

    from fastmnist.backends import numba_window_grad as W

    @njit
    def _window(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase, db, dbi):
        W.window_grad(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase, db,
                      dbi)

    @njit
    def _window_wide(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase, db,
                     dbi):
        W.window_grad_wide(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase,
                           db, dbi)

    INTRINSICS = {"narrow": (_window, W.window_lanes, W._bodies(W.WINDOW_MAX_VECTORS)),
                  "wide": (_window_wide, W.wide_lanes, W._bodies(W.WIDE_MAX_VECTORS))}


def window_oracle(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase, db,
                  dbi, lanes):
    out, db = out.copy(), db.copy()
    nvec = -(-width // lanes)
    for q in range(count):
        a = arg[abase + q * astride]
        if a < 0:
            continue
        d = dy[dbase + q * dstep]
        db[dbi] += d
        for r in range(kh):
            for v in range(width):
                out[obase + r * nvec * lanes + v] += d * x[xbase + poff[a] + r * xrow + v]
    return out, db


@pytest.mark.parametrize("which", ["narrow", "wide"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_body_against_a_loop(rng, dtype, which):
    """Each (rows, vectors) body of both intrinsics, with widths that leave the last vector part
    full (the wide one's half-width last vector where at most half is left: both sides of that
    edge), an odd and an even count of windows, stopped windows (arg -1) and offsets into the
    middle of the arrays."""
    call, lanes_of, bodies = INTRINSICS[which]
    lanes = lanes_of(np.dtype(dtype).itemsize)
    for kh, nvec in bodies:
        tails = {1, lanes // 2, lanes // 2 + 1, lanes} - {0}
        for width in sorted((nvec - 1) * lanes + t for t in tails):
            xrow = width + 3
            x = rng.standard_normal(40 * xrow + kh * xrow).astype(dtype)
            poff = rng.integers(0, 30 * xrow, 12).astype(np.int64)
            for count in (7, 8):
                astride = 3
                arg = rng.integers(-1, 12, 5 + count * astride).astype(np.int32)
                dy = rng.standard_normal(2 * count + 4).astype(dtype)  # every other value: a stride
                out = rng.standard_normal(3 + kh * nvec * lanes).astype(dtype)
                db = rng.standard_normal(4).astype(dtype)
                args = (x, 5, xrow, kh, width, dy, 2, 2, count, arg, 4, astride, poff, out, 3, db, 1)
                want_out, want_db = window_oracle(*args, lanes)
                got_out, got_db = out.copy(), db.copy()
                call(*args[:13], got_out, 3, got_db, 1)
                # the lanes past a row's width hold what a row read whole brought (W.WINDOW_PLAIN_ROWS),
                # dropped by the caller; the rest of out is the oracle's, and nothing outside is touched
                used = np.ones(out.size, bool)
                for r in range(kh):
                    used[3 + r * nvec * lanes + width:3 + (r + 1) * nvec * lanes] = False
                np.testing.assert_allclose(got_out[used], want_out[used], rtol=1e-5 if dtype == "float32" else 1e-12,
                                           atol=1e-5 if dtype == "float32" else 1e-12, err_msg=f"{kh}x{nvec} w{width}")
                assert np.isfinite(got_out).all()
                np.testing.assert_allclose(got_db, want_db, rtol=1e-5, atol=1e-5)


def test_which_layers_take_it():
    assert W.window_grad_applies(5, 5, 4) and W.window_grad_applies(7, 7, 4)  # first layers, 5x5 and 7x7
    assert not W.window_grad_applies(3, 72, 4)  # fast-cnn's conv2: 24 channels x 3 taps a row
    assert not W.window_grad_applies(8, 1, 4)
    assert W.window_grad_applies(5, 5, 8) and not W.window_grad_applies(5, 9, 8)  # float64: half the lanes
    for width, itemsize in ((72, 4), (72, 8), (5, 4), (400, 4)):  # the wide one: as many rows as fit a call
        nvec = -(-width // W.wide_lanes(itemsize))
        rows = W.wide_rows(width, itemsize)
        assert rows == min(W.WINDOW_MAX_ROWS, W.WIDE_MAX_VECTORS // nvec)
        assert rows * nvec <= W.WIDE_MAX_VECTORS and (rows + 1) * nvec > W.WIDE_MAX_VECTORS or rows == W.WINDOW_MAX_ROWS
    assert W.wide_rows(72, 4) >= 1  # fast-cnn's conv2 fits on AVX2 too, a row a call


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [
    (3, 1, 28, 28, 24, 5, 0, 2, 2, False),   # fast-cnn's first layer
    (2, 1, 13, 11, 5, 5, 2, 2, 2, False),    # padded, odd output (a last row and column outside every window)
    (2, 2, 10, 10, 3, 3, 1, 3, 2, True),     # overlapping 3x3 windows, two channels, dx beside it
    (2, 3, 9, 9, 4, 3, 0, 2, 2, True),       # three channels, dx by the dense path's gradient
    (2, 24, 12, 12, 32, 3, 0, 2, 2, True),   # fast-cnn's conv2: the wide intrinsic, Winograd's dx beside it
    (2, 16, 11, 11, 5, 7, 3, 2, 2, False),   # 7 rows of 112 values: the wide one, a few rows a call
], ids=str)
def test_the_layer_backward_against_the_oracle(rng, dtype, case, backward_calls, monkeypatch):
    """dw from the pooled side (and dx, where wanted, from the gradient before pooling), against the
    loop oracle, then against the dense weight gradient, the flag off."""
    from fastmnist.backends import numba_backend as nb
    n, c, h, wd, f, k, pad, size, stride, need_dx = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = (rng.standard_normal((f, c, k, k)) / k).astype(dtype)
    b = (0.1 * rng.standard_normal(f)).astype(dtype)
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad, size, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = nb.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=need_dx)
    call = backward_calls.pop()
    itemsize = np.dtype(dtype).itemsize
    fits = W.window_grad_applies(k, k * c, itemsize) or W.wide_rows(k * c, itemsize) > 0
    # the pooled side's dw wherever a window row fits an intrinsic: on AVX2 a float64 row of conv2
    # (72 values, 18 vectors of 4) does not, and the dense weight gradient takes it
    assert (call["poff"].shape[0] == cache.oh * cache.ow and call["dwin"].shape[1] > 0) == fits
    assert (call["wrows"] > 0) == (fits and not W.window_grad_applies(k, k * c, itemsize))
    conv = naive.conv2d_forward(x, w, b, 1, pad)
    pooled, arg = naive.maxpool2d_forward(conv, size, stride)
    dconv = naive.maxpool2d_backward(dy * (pooled > 0), arg, conv.shape)
    want_dx, want_dw, want_db = naive.conv2d_backward(dconv, x, w, 1, pad)
    assert_close(dw, want_dw, dtype, "dw")
    assert_close(db, want_db, dtype, "db")
    assert (dx is None) != need_dx
    if need_dx:
        assert_close(dx, want_dx, dtype, "dx")
    monkeypatch.setattr(config, "CONV_WINDOW_WEIGHT_GRADIENT", False)
    dx_dense, dw_dense, db_dense = nb.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=need_dx)
    call = backward_calls.pop()
    assert call["dwin"].shape[1] == 0
    assert_close(dw, dw_dense, dtype, "dw against the dense path")
    assert_close(db, db_dense, dtype, "db against the dense path")
    if need_dx:
        assert_close(dx, dx_dense, dtype, "dx, the same path either way")
