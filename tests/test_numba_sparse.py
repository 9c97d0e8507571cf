"""The sparse-input micro-kernels of numba_tiles.py that the compiled MLP steps use, against
loops: ``nonzeros`` (AVX-512 compresses, AVX2 table-driven permutes) and ``sparse_rows_scaled`` (plain SGD's row update)."""
import numpy as np
import pytest

from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from numba import njit

    from fastmnist.backends import numba_tiles as T

    @njit
    def _nonzeros(a, abase, n, idx, val):
        return T.nonzeros(a, abase, n, idx, val)

    @njit
    def _scaled(ix, v, lo, hi, b, bbase, ldb, out, obase, cols, scale):
        T.sparse_rows_scaled(ix, v, lo, hi, b, bbase, ldb, out, obase, cols, scale)


@pytest.mark.skipif(backend_status("numba")[0] and not T.HAS_PACK, reason="nonzeros needs AVX-512 or AVX2 (HAS_PACK)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonzeros_every_length_and_tail(dtype):
    """Every length from 0 to three vectors and MNIST's 784, at an offset; NaN counts as non-zero
    (as ``v != 0``); -0.0 does not. Positions and values in order, the count returned."""
    rng = np.random.default_rng(7)
    for n in list(range(0, 50)) + [784]:
        a = rng.standard_normal(n + 9).astype(dtype)
        a[rng.random(n + 9) < 0.7] = 0
        if n > 6:
            a[4], a[6] = np.nan, -0.0
        idx = np.full(n + 16, -5, np.int32)
        val = np.full(n + 16, -9, dtype)
        count = _nonzeros(a, 3, n, idx, val)
        seg = a[3:3 + n]
        want = np.flatnonzero(seg != 0)
        assert count == len(want), n
        np.testing.assert_array_equal(idx[:count], want, err_msg=f"n {n}")
        np.testing.assert_array_equal(val[:count], seg[want], err_msg=f"n {n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_rows_scaled_against_loops(dtype):
    """out[3 + c] += scale * sum_k v[k] * b[ix[k]*ldb + 2 + c] for every column count of a block;
    the output's other entries untouched."""
    rng = np.random.default_rng(8)
    block = T.sparse_block_columns(np.dtype(dtype).itemsize)
    ldb, nrows = block + 5, 9
    b = rng.standard_normal(nrows * ldb).astype(dtype)
    ix = rng.integers(0, nrows, 12).astype(np.int32)
    v = rng.standard_normal(12).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for cols in range(1, block + 1):
        for lo, hi in [(0, 12), (3, 7), (5, 5)]:
            out = rng.standard_normal(block + 8).astype(dtype)
            want = out.astype(np.float64)
            row = np.zeros(cols)
            for k in range(lo, hi):
                row += float(v[k]) * b[ix[k] * ldb + 2: ix[k] * ldb + 2 + cols].astype(np.float64)
            want[3:3 + cols] += -0.25 * row
            _scaled(ix, v, lo, hi, b, 2, ldb, out, 3, cols, dtype(-0.25))
            np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=f"cols {cols}, k {lo}:{hi}")
