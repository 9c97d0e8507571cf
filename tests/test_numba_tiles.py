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
    def _grad(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
        T.tile_grad(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo)


def rows_oracle(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix, cols):
    out = out.copy()
    for p in range(npix):
        for v in range(cols):
            out[obase + p * ldo + v] = sum(x[xbase + roff[k0 + k] + p * ps] * w[k * ldw + wcol + v] for k in range(nk))
    return out


def grad_oracle(x, xbase, roff, k0, nrow, g, gbase, rows, ncols, rsx, psx, rsg, psg, out, obase, ldo, cols):
    out = out.copy()
    for r in range(nrow):
        for v in range(cols):
            out[obase + r * ldo + v] += sum(x[xbase + i * rsx + q * psx + roff[k0 + r]] * g[gbase + i * rsg + q * psg + v]
                                            for i in range(rows) for q in range(ncols))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_rows_every_size(dtype):
    rng = np.random.default_rng(0)
    cols = T.tile_columns(np.dtype(dtype).itemsize)
    x = rng.standard_normal(4000).astype(dtype)
    roff = rng.integers(0, 300, 20).astype(np.int64)
    ldw, ldo = cols + 5, cols + 3
    w = rng.standard_normal(20 * ldw + 8).astype(dtype)
    for npix in range(T.TILE_PIXELS + 2):  # 0 and TILE_PIXELS + 1 are no-ops
        out = rng.standard_normal(2000).astype(dtype)
        args = (x, 11, 7, roff, 2, 17, w, 4, ldw, out.copy(), 5, ldo, npix)
        _rows(*args)
        want = rows_oracle(*args[:-4], out, 5, ldo, npix if npix <= T.TILE_PIXELS else 0, cols)
        np.testing.assert_allclose(args[9], want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_grad_every_size(dtype):
    rng = np.random.default_rng(1)
    cols = T.tile_columns(np.dtype(dtype).itemsize)
    x, g = rng.standard_normal(4000).astype(dtype), rng.standard_normal(4000).astype(dtype)
    roff = rng.integers(0, 200, 30).astype(np.int64)
    ldo = cols + 1
    for nrow in range(T.TILE_PIXELS + 2):
        out = rng.standard_normal(2000).astype(dtype)
        args = [x, 3, roff, 2, nrow, g, 9, 4, 5, 50, 3, 200, 40, out.copy(), 7, ldo]
        _grad(*args)
        want = grad_oracle(*args[:4], nrow if nrow <= T.TILE_PIXELS else 0, *args[5:13], out, 7, ldo, cols)
        np.testing.assert_allclose(args[13], want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_vector_width_follows_numbas_target(monkeypatch):
    import numba
    monkeypatch.setattr(numba.config, "CPU_NAME", "haswell")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert T.vector_bytes() == 32
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx512f,+avx512bw")
    assert T.vector_bytes() == 64


AVX2_SCRIPT = """
import numpy as np
from fastmnist.backends import get_backend, numba_tiles
assert (numba_tiles.VECTOR_BYTES, numba_tiles.TILE_PIXELS) == (32, 6), (numba_tiles.VECTOR_BYTES, numba_tiles.TILE_PIXELS)
nb, ref = get_backend("numba"), get_backend("numpy")
rng = np.random.default_rng(3)
for dt in (np.float32, np.float64):
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


def test_tiled_convolution_compiled_for_avx2(tmp_path):
    """NUMBA_CPU_NAME=haswell: 256-bit vectors, 6-pixel tiles (16 registers), as an AVX2-only CPU
    runs them; a fresh cache directory, since numba keys its cache by the target CPU."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", AVX2_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
