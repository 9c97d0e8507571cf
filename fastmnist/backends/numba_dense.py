"""A dense layer's forward product on the register-tiled micro-kernels of numba_tiles.py, for
training steps.

Inside ``training_context`` BLAS runs on one thread, so that its idle threads do not spin against
Numba's (numba_backend.training_context), and numba_backend._matmul cuts a product into one
single-threaded BLAS call per core. ``matmul_kernel`` runs the product as one parallel region of
``tile_rows`` tiles instead: up to TILE_PIXELS rows by two vectors of output columns held in
registers over a block of the reduction. fast-cnn's 800 -> 256 layer (batch 256) on a 2-core Xeon
with AVX-512 (rocketlake target): 0.52-0.59 ms a forward pass in a training step against 0.72 ms
split over BLAS calls (benchmarks/step_profile.py; docs/benchmarks.md). The same layer's backward
pass on tiles (x.T @ dy by ``tile_grad``, dy @ w.T on a transposed w) measured slower than the two
single-threaded BLAS calls side by side it has (1.02-1.16 against 0.81-0.89 ms), so it stays there.

Each output element is one tile's sum over the reduction in index order, block by block: the
result does not depend on the number of threads. The output columns must be a whole number of
tiles (``tile_columns``); numba_backend uses BLAS otherwise.

A layer with few outputs (the ten-class layers: at most ``config.NARROW_DENSE_COLUMNS``) runs
its whole forward pass (product and bias) in one call of ``narrow_forward_kernel`` and its whole
backward pass (dW, db, dX) in one of ``narrow_backward_kernel``, on one thread, inside
``training_context``. Its passes are small (0.02-0.1 ms) and mostly the cost of bringing their
operands back into cache after the convolutions, plus a few microseconds of Python per library call:
as single-threaded BLAS calls and a separate bias pass they read 54-97% of OpenBLAS and MKL run in
their place in the step, as one call each 67-143% (benchmarks/pass_goals.py, a 2-core Zen 4; whole
steps tie). The weight gradient is computed transposed, ``dW^T (M, D) = dy^T @ x``,
so that the M rows are one tile of "pixels" and x's columns run in vectors: the other way round
(x^T @ dy, one narrow vector of M columns) it took 18.9 us against BLAS's 14.3 for fast-cnn's
256 x 256 x 10 (a 2-core Zen 4, one thread).
"""
import numpy as np
from numba import njit, prange

from . import numba_conv, numba_tiles
from .numba_cache import lock_caches
from .numba_conv import _cut, _row_product, _tiles
from .numba_tiles import TILE_PIXELS, tile_rows, tile_rows_add, tile_width

_pjit = dict(cache=True, nogil=True, parallel=True, error_model="numpy")


@njit(cache=True, nogil=True, inline="always")
def _row_tiles(a, abase, lda, roff, b, ldb, out, obase, ldo, rows, cols, kdim, kblock):
    """out[obase + r*ldo + v] = sum over k < kdim of a[abase + r*lda + roff[k]] * b[k*ldb + v], for
    r < rows and v < cols (a whole number of tiles): the reduction in blocks of ``kblock`` (the
    first block stores, later ones add), so a block of b's columns stays in cache across the row
    tiles that read it."""
    width = tile_width(b)
    tiles = _tiles(rows, TILE_PIXELS)
    for k0 in range(0, kdim, kblock):
        nk = min(kblock, kdim - k0)
        for j0 in range(0, cols, width):
            for t in range(tiles):
                q0, n = _cut(rows, tiles, t)
                if k0 == 0:
                    tile_rows(a, abase + q0 * lda, lda, roff, k0, nk, b, k0 * ldb + j0, ldb,
                              out, obase + q0 * ldo + j0, ldo, n)
                else:
                    tile_rows_add(a, abase + q0 * lda, lda, roff, k0, nk, b, k0 * ldb + j0, ldb,
                                  out, obase + q0 * ldo + j0, ldo, n)


@njit(**_pjit)
def matmul_kernel(a, b, roff, kblock, parts, out):
    """out (M, N) = a (M, K) @ b (K, N); roff = arange(K); ``parts`` shares of the rows."""
    m, k = a.shape
    n = b.shape[1]
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    for part in prange(parts):
        r0, rows = _cut(m, parts, part)
        _row_tiles(af, r0 * k, k, roff, bf, n, of, r0 * n, n, rows, n, k, kblock)


@njit(cache=True, nogil=True, inline="always")
def _padded_copy(a, width):
    """a (R, C) copied into the first C columns of a zeroed (R, width), by explicit loops (Numba's
    2-D slice assignment made simple-cnn's ten-output backward kernel 20.2 us against 13.8 us)."""
    out = np.zeros((a.shape[0], width), a.dtype)
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[r, c] = a[r, c]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def narrow_forward_kernel(x, w, b, mp):
    """x (N, D) @ w (D, M) + b (M,) -> y (N, M): the rows of x as the tiles' pixels, w's M columns
    padded with zeros to ``mp`` = numba_conv.padded_width(M) (M small: one or two vectors)."""
    n, d = x.shape
    m = w.shape[1]
    wp = _padded_copy(w, mp)
    yp = np.empty((n, mp), x.dtype)
    _row_product(x.reshape(-1), 0, d, np.arange(d), wp.reshape(-1), mp, yp.reshape(-1), 0, mp, n, m)
    y = np.empty((n, m), x.dtype)
    for r in range(n):
        for j in range(m):
            y[r, j] = yp[r, j] + b[j]
    return y


@njit(cache=True, nogil=True, error_model="numpy")
def narrow_backward_kernel(dy, x, w, need_dx, dx, dp):
    """(dw, db) for dy (N, M), x (N, D), w (D, M): dw (D, M) = x.T @ dy, db (M,) = dy summed over
    the rows (in float64, rounded once); and where ``need_dx``, dx (N, D) = dy @ w.T written into
    ``dx`` (else never touched). dW^T = dy^T @ x with dy's M columns as one tile's pixels; dX with
    w^T's D columns padded to ``dp`` = numba_conv.padded_width(D), as x is for dW^T."""
    n, d = x.shape
    m = w.shape[1]
    dyt = np.empty((m, n), dy.dtype)
    total = np.zeros(m, np.float64)
    for r in range(n):
        for j in range(m):
            dyt[j, r] = dy[r, j]
            total[j] += dy[r, j]
    db = total.astype(dy.dtype)
    xs = x if dp == d else _padded_copy(x, dp)
    dwt = np.empty((m, dp), dy.dtype)
    _row_product(dyt.reshape(-1), 0, n, np.arange(n), xs.reshape(-1), dp, dwt.reshape(-1), 0, dp, m, d)
    dw = np.empty((d, m), dy.dtype)
    for k in range(d):
        for j in range(m):
            dw[k, j] = dwt[j, k]
    if not need_dx:
        return dw, db
    wt = np.zeros((m, dp), w.dtype)
    for k in range(d):
        for j in range(m):
            wt[j, k] = w[k, j]
    dxp = dx if dp == d else np.empty((n, dp), dy.dtype)
    _row_product(dy.reshape(-1), 0, m, np.arange(m), wt.reshape(-1), dp, dxp.reshape(-1), 0, dp, n, d)
    if dp != d:
        for r in range(n):
            for k in range(d):
                dx[r, k] = dxp[r, k]
    return dw, db


lock_caches(globals(), depends=(numba_conv.__file__, numba_tiles.__file__))  # they inline these modules' IR
