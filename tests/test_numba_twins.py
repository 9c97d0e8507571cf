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


def test_adam_checks_what_changed_after_a_step():
    """adam_update_many checks the parameters and moments in full once, then, while the same arrays
    come back, the gradients and lr alone: a wrong gradient, a read-only parameter or a new
    parameter list still gets the full checks' error, naming the parameter."""
    from fastmnist.errors import InvalidArgument, WrongType
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4,))]
    gs = [np.ones_like(p) for p in ps]
    states = [{"m": np.zeros_like(p), "v": np.zeros_like(p)} for p in ps]
    before = [p.copy() for p in ps]
    NB.adam_update_many(ps, gs, states, 1, 0.1)
    NB.adam_update_many(ps, gs, states, 2, 0.1)
    assert all(np.all(p < b) for p, b in zip(ps, before))  # positive gradients: every weight went down
    with pytest.raises(WrongType, match="parameter 1: operands must share one dtype"):
        NB.adam_update_many(ps, [gs[0], gs[1].astype(np.float64)], states, 3, 0.1)
    with pytest.raises(InvalidArgument, match="parameter 0: param has shape"):
        NB.adam_update_many(ps, [np.ones((4, 3), np.float32), gs[1]], states, 3, 0.1)
    with pytest.raises(WrongType, match="lr must be a finite"):
        NB.adam_update_many(ps, gs, states, 3, float("nan"))
    ps[1].flags.writeable = False
    with pytest.raises(InvalidArgument, match="parameter 1: param is read-only"):
        NB.adam_update_many(ps, gs, states, 3, 0.1)
    with pytest.raises(InvalidArgument, match="states\\[0\\] lacks v"):
        NB.adam_update_many(ps[:1], gs[:1], [{"m": states[0]["m"]}], 3, 0.1)
