"""The numba backend's own float32 sigmoid (numba_kernels._sigmoid32: exp by a polynomial, so that
the loops around it vectorise) against float64 math, over the whole float32 range."""
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
