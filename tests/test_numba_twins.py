"""Serial twins of the numba backend's parallel kernels (numba_backend.serial_twin): small inputs
run them on the calling thread; they compute the same bits and keep cache files of their own."""
import numpy as np
import pytest

from fastmnist import config
from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

if backend_status("numba")[0]:
    from fastmnist.backends import numba_backend as NB
    from fastmnist.backends import numba_cache
    from fastmnist.backends import numba_kernels as K


def test_twin_is_serial_with_cache_files_of_its_own():
    twin = NB.serial_twin(K._relu_kernel)
    assert NB.serial_twin(K._relu_kernel) is twin  # made once
    assert K._relu_kernel.targetoptions.get("parallel") and not twin.targetoptions.get("parallel")
    # Numba names a kernel's cache index after its function: one shared name would let a process
    # load the parallel code for the twin, or the other way round
    assert twin._cache._cache_file._index_name != K._relu_kernel._cache._cache_file._index_name
    assert isinstance(twin._cache, numba_cache.LockedFunctionCache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_twins_give_the_parallel_kernels_bits(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 10)).astype(dtype)
    labels = rng.integers(0, 10, 37)
    outs = {}
    for name, kernel in (("parallel", K._softmax_ce_kernel), ("twin", NB.serial_twin(K._softmax_ce_kernel))):
        d, row_loss = np.empty_like(x), np.empty(37, dtype)
        ok = kernel(x, labels, d, row_loss)
        outs[name] = (ok, d, row_loss)
    assert outs["parallel"][0] == outs["twin"][0]
    np.testing.assert_array_equal(outs["parallel"][1], outs["twin"][1])
    np.testing.assert_array_equal(outs["parallel"][2], outs["twin"][2])


def test_small_inputs_take_the_twin(monkeypatch):
    calls = []
    real = NB.serial_twin

    def spy(kernel):
        calls.append(kernel)
        return real(kernel)

    monkeypatch.setattr(NB, "serial_twin", spy)
    x = np.linspace(-1, 1, 101).astype(np.float32)
    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS", 1000)
    np.testing.assert_array_equal(NB.relu_forward(x), np.maximum(x, 0))
    assert calls == [K._relu_kernel]
    monkeypatch.setattr(config, "PARALLEL_MIN_ELEMENTS", 10)  # now large: the parallel kernel itself
    np.testing.assert_array_equal(NB.relu_forward(x), np.maximum(x, 0))
    assert calls == [K._relu_kernel]
