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
"""
from numba import njit, prange

from .numba_conv import _cut, _tiles
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
