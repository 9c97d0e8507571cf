"""The numba backend's own float32 sigmoid (numba_kernels._sigmoid32: exp by a polynomial, so that
the loops around it vectorise) against float64 math, over the whole float32 range; its Adam's
flushing of subnormal moments."""
import numpy as np
import pytest

from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")


def test_float32_sigmoid_within_4_ulp_and_its_special_values():
    from numba import njit

    from fastmnist.backends.numba_kernels import sigmoid_value

    @njit(error_model="numpy")
    def sigmoid(a, out):
        for i in range(a.size):
            out[i] = sigmoid_value(a[i])

    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, -87.3, -87.4, -100.0, 100.0, 16.0, -16.0]
    x = np.concatenate([np.linspace(-90, 90, 400_001), special]).astype(np.float32)
    got = np.empty_like(x)
    sigmoid(x, got)
    x64 = x.astype(np.float64)
    e = np.exp(-np.abs(x64))
    want = np.where(x64 >= 0, 1 / (1 + e), e / (1 + e))
    normal = want > np.finfo(np.float32).tiny  # below it float32 itself keeps no relative precision
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= 4
    assert np.all(np.abs(got[~normal & np.isfinite(want)]) <= np.finfo(np.float32).tiny)
    assert np.isnan(got[-len(special)]) and got[-len(special) + 1] == 1 and got[-len(special) + 2] == 0
    assert got.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_flushes_subnormal_moments_and_matches_the_reference_elsewhere(dtype):
    """Adam's moments decay toward 0 where a gradient stays 0; numba's kernels (one parameter, many
    at once, the compiled steps') set a moment that falls below the dtype's smallest normal to 0 (an
    Intel core runs every operation on a subnormal through a slow microcode assist), keep NaN, and
    otherwise give the reference's values."""
    from fastmnist.backends import numba_backend as NB
    from fastmnist.backends import numpy_backend as ref

    tiny = np.finfo(dtype).tiny
    g = np.array([0, 0, 0, 0.5, -1e-3, np.nan, 0], dtype)
    m0 = np.array([tiny * 1.01, -tiny * 4, 1e-3, 0.2, 0, 0, tiny * 0.5], dtype)  # the last one already subnormal
    v0 = np.array([tiny * 1.05, tiny * 2, 1e-6, 0.3, 1e-4, 0, tiny * 0.25], dtype)
    p0 = np.linspace(-1, 1, g.size).astype(dtype)
    want = [a.copy() for a in (p0, m0, v0)]
    ref.adam_update(*want[:1], g, *want[1:], 3, 0.01, 0.7, 0.9)
    for update in ("adam_update", "adam_update_many"):
        p, m, v = p0.copy(), m0.copy(), v0.copy()
        if update == "adam_update":
            NB.adam_update(p, g, m, v, 3, 0.01, 0.7, 0.9)
        else:
            NB.adam_update_many([p], [g], [{"m": m, "v": v}], 3, 0.01, 0.7, 0.9)
        for got, expected, name in zip((p, m, v), want, "pmv"):
            subnormal = (expected != 0) & (np.abs(expected) < tiny)
            assert np.all(got[subnormal] == 0), (update, name)  # flushed where the reference went subnormal
            np.testing.assert_allclose(got[~subnormal], expected[~subnormal], rtol=1e-6, err_msg=f"{update} {name}")
        assert np.isnan(p[5]) and np.isnan(m[5]) and np.isnan(v[5])
        assert not np.any((m != 0) & (np.abs(m) < tiny)) and not np.any((v != 0) & (np.abs(v) < tiny))
