"""numba_dense.py's tiled product against plain loops, and the dense layer that runs on it inside
training_context against the BLAS path outside it."""
import naive
import numpy as np
import pytest

from fastmnist import config
from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from fastmnist.backends import numba_backend as NB
    from fastmnist.backends import numba_dense as D
    from fastmnist.backends.numba_tiles import TILE_PIXELS, tile_columns

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def product_oracle(a, b):
    return naive.affine_forward(a, b, np.zeros(b.shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, TILE_PIXELS + 3, 2 * TILE_PIXELS * 3 + 1])
def test_matmul_kernel_against_loops(dtype, rows):
    """Row counts that leave one-row and odd tiles, a reduction of 3 blocks with a short last one,
    two tiles of columns; every thread count gives the same bits."""
    rng = np.random.default_rng(rows)
    k, n = 37, 2 * tile_columns(np.dtype(dtype).itemsize)
    a, b = rng.standard_normal((rows, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    want = product_oracle(a, b)
    outs = []
    for parts in (1, 2, 3):
        out = np.full((rows, n), np.nan, dtype)
        D.matmul_kernel(a, b, np.arange(k, dtype=np.int64), 16, parts, out)
        np.testing.assert_allclose(out, want, **TOL[dtype])
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_layer_on_tiles_inside_training_context(dtype, monkeypatch):
    """affine_forward takes the tiles inside training_context where the output is whole tiles
    (the thread count set to 2 where the machine has one core), BLAS where it is not."""
    numba = pytest.importorskip("numba")
    monkeypatch.setattr(config, "SPLIT_GEMM_MIN_FLOPS", 0)
    monkeypatch.setattr(config, "DENSE_K_BLOCK", 24)
    rng = np.random.default_rng(5)
    width = tile_columns(np.dtype(dtype).itemsize)
    x = rng.standard_normal((13, 50)).astype(dtype)
    calls = []
    real = D.matmul_kernel
    monkeypatch.setattr(D, "matmul_kernel", lambda *args: calls.append(args[4]) or real(*args))
    threads = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        for m in (width, width + 3):
            w, b = rng.standard_normal((50, m)).astype(dtype), rng.standard_normal(m).astype(dtype)
            with NB.training_context():
                y = NB.affine_forward(x, w, b)
            np.testing.assert_allclose(y, naive.affine_forward(x, w, b), **TOL[dtype])
    finally:
        numba.set_num_threads(threads)
    assert len(calls) == (1 if numba.config.NUMBA_NUM_THREADS > 1 else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_dense_passes_against_loops(dtype, monkeypatch):
    """A layer with at most NARROW_DENSE_COLUMNS outputs runs both passes on the narrow kernels
    inside training_context: outputs of one, of a part vector and of exactly the limit; inputs a
    whole number of vectors and not (dX and dW^T padded); one row and an odd number; dX skipped
    where not needed. One output more goes to BLAS."""
    rng = np.random.default_rng(11)
    lanes = tile_columns(np.dtype(dtype).itemsize) // 2
    calls = []
    for name in ("narrow_forward_kernel", "narrow_backward_kernel"):
        real = getattr(D, name)
        monkeypatch.setattr(D, name, lambda *args, real=real, name=name: calls.append(name) or real(*args))
    limit = config.NARROW_DENSE_COLUMNS
    for n, d, m in [(1, lanes, 1), (13, 2 * lanes + 3, 10), (TILE_PIXELS + 1, 3 * lanes, limit), (5, 7, limit + 1)]:
        x, w = rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((d, m)).astype(dtype)
        b, dy = rng.standard_normal(m).astype(dtype), rng.standard_normal((n, m)).astype(dtype)
        calls.clear()
        with NB.training_context():
            y = NB.affine_forward(x, w, b)
            dx, dw, db = NB.affine_backward(dy, x, w)
            no_dx, dw2, _ = NB.affine_backward(dy, x, w, need_dx=False)
        assert calls == (["narrow_forward_kernel"] + 2 * ["narrow_backward_kernel"] if m <= limit else []), (n, d, m)
        want_dx, want_dw, want_db = naive.affine_backward(dy, x, w)
        for got, want in ((y, naive.affine_forward(x, w, b)), (dx, want_dx), (dw, want_dw), (db, want_db), (dw2, want_dw)):
            assert got.dtype == dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, **TOL[dtype])
        assert no_dx is None
