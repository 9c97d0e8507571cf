"""Two fused convolutions in a row on numba keep their activations channels last: the first
layer's output is the (N, F, PH, PW) view of (N, PH, PW, F) memory, the second reads it where it
lies and hands its input gradient back the same way, and the first reads that gradient as it is.
Every value must be the one the channels-first path computes, bit for bit: only memory moves."""
import numpy as np
import pytest

from fastmnist import config, zoo
from fastmnist.backends import backend_status
from fastmnist.layers import ConvReLUPool
from tests import naive
from tests.conftest import assert_close

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")


def two_layers(x, layers, channels_last, dy):
    """Forward through two fused layers (the first's output channels last or not), then backward:
    (y, dx between the layers, dw1, db1, dw2, db2, the middle activation)."""
    from fastmnist.backends import numba_backend as nb
    (w1, b1, pad1), (w2, b2, pad2) = layers
    mid, cache1 = nb.conv2d_relu_maxpool_forward(x, w1, b1, 1, pad1, channels_last=channels_last)
    y, cache2 = nb.conv2d_relu_maxpool_forward(mid, w2, b2, 1, pad2)
    dmid, dw2, db2 = nb.conv2d_relu_maxpool_backward(dy, cache2, w2, need_dx=True)
    _, dw1, db1 = nb.conv2d_relu_maxpool_backward(dmid, cache1, w1, need_dx=False)
    return y, dmid, dw1, db1, dw2, db2, mid


@pytest.mark.parametrize("window", [True, False], ids=["pooled-side dw", "dense dw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [
    (3, 28, 24, 5, 0, 32, 3, 0),   # fast-cnn: conv2 by Winograd, its dx channels last
    (2, 14, 8, 5, 2, 12, 5, 2),    # book-cnn's kind: padded second layer, dx by the direct product
], ids=["fast-cnn", "padded 5x5"])
def test_channels_last_between_two_layers_changes_no_value(rng, monkeypatch, dtype, case, window):
    n, hw, f1, k1, pad1, f2, k2, pad2 = case
    monkeypatch.setattr(config, "CONV_WINDOW_WEIGHT_GRADIENT", window)
    x = rng.standard_normal((n, 1, hw, hw)).astype(dtype)
    layers = [((rng.standard_normal((f1, 1, k1, k1)) / k1).astype(dtype), (0.1 * rng.standard_normal(f1)).astype(dtype),
               pad1),
              ((rng.standard_normal((f2, f1, k2, k2)) / (k2 * np.sqrt(f1))).astype(dtype),
               (0.1 * rng.standard_normal(f2)).astype(dtype), pad2)]
    mid_shape = (n, f1, (hw + 2 * pad1 - k1 + 1) // 2, (hw + 2 * pad1 - k1 + 1) // 2)
    out = (mid_shape[2] + 2 * pad2 - k2 + 1) // 2
    dy = rng.standard_normal((n, f2, out, out)).astype(dtype)
    plain = two_layers(x, layers, False, dy)
    cl = two_layers(x, layers, True, dy)
    mid, dmid = cl[6], cl[1]
    assert mid.shape == mid_shape and mid.transpose(0, 2, 3, 1).flags.c_contiguous and not mid.flags.c_contiguous
    assert dmid.shape == mid_shape and dmid.transpose(0, 2, 3, 1).flags.c_contiguous  # the gradient comes back so
    assert plain[6].flags.c_contiguous and plain[1].flags.c_contiguous
    for name, a, b in zip(("y", "dx between", "dw1", "db1", "dw2", "db2", "middle"), plain, cl):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # and both against the loop oracle, the second layer's input gradient included
    w2, b2, p2 = layers[1]
    conv = naive.conv2d_forward(plain[6], w2, b2, 1, p2)
    pooled, arg = naive.maxpool2d_forward(conv)
    assert_close(cl[0], np.maximum(pooled, 0), dtype, "y")
    dconv = naive.maxpool2d_backward(dy * (pooled > 0), arg, conv.shape)
    want_dx, want_dw, want_db = naive.conv2d_backward(dconv, plain[6], w2, 1, p2)
    assert_close(dmid, want_dx, dtype, "dx between")
    assert_close(cl[4], want_dw, dtype, "dw2")


def test_a_plan_asks_for_channels_last_only_between_two_convolutions():
    for name, want in (("fast-cnn", [True, False]), ("book-cnn", [True, False]), ("simple-cnn", [False])):
        model = zoo.create(name, backend="numpy", seed=0)
        assert [node.channels_last for node in model.plan if isinstance(node, ConvReLUPool)] == want, name


def test_fast_cnn_trains_the_same_either_way(rng, monkeypatch):
    """Three Adam steps of fast-cnn on numba with the plan's layout and with every node channels
    first: the same weights, bit for bit."""
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    weights = []
    for keep in (True, False):
        model = zoo.create("fast-cnn", backend="numba", seed=0)
        if not keep:
            for node in model.plan:
                if isinstance(node, ConvReLUPool):
                    node.channels_last = False
        model.fit(x, y, epochs=1, batch_size=32, optimizer="adam", lr=1e-3, verbose=0, seed=0)
        weights.append([p.copy() for layer in model.layers for p in getattr(layer, "params", {}).values()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_copy_rows_against_a_loop(rng, dtype):
    """numba_tiles.copy_rows: whole vectors, a masked last part, nothing past ``count`` touched."""
    from numba import njit

    from fastmnist.backends.numba_tiles import copy_rows

    @njit
    def run(src, sbase, sstep, dst, dbase, dstep, rows, count):
        copy_rows(src, sbase, sstep, dst, dbase, dstep, rows, count)

    for count in (1, 5, 8, 16, 24, 33):
        src = rng.standard_normal(7 + 5 * (count + 9)).astype(dtype)
        dst = rng.standard_normal(3 + 5 * (count + 4)).astype(dtype)
        want = dst.copy()
        for r in range(5):
            want[3 + r * (count + 4):3 + r * (count + 4) + count] = src[7 + r * (count + 9):7 + r * (count + 9) + count]
        run(src, 7, count + 9, dst, 3, count + 4, 5, count)
        np.testing.assert_array_equal(dst, want, err_msg=str(count))


@pytest.mark.parametrize("shape", [(0, 24, 5, 5), (3, 24, 5, 5), (1,), (2, 7)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_aligned_empty_starts_on_a_cache_line(shape, dtype):
    from fastmnist.backends import numba_backend as nb
    for _ in range(5):  # several, so that one lucky allocation does not pass it
        a = nb.aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % 64 == 0  # an empty array points nowhere it reads
        a[...] = 7
        assert (a == 7).all()


def test_a_channels_last_activation_starts_on_a_cache_line(rng):
    """conv2 reads conv1's output as whole aligned vectors only if it starts on a cache line."""
    from fastmnist.backends import numba_backend as nb
    x = rng.standard_normal((3, 1, 12, 12)).astype(np.float32)
    w = rng.standard_normal((24, 1, 3, 3)).astype(np.float32)
    for cl in (True, False):
        y, _ = nb.conv2d_relu_maxpool_forward(x, w, np.zeros(24, np.float32), 1, 0, channels_last=cl)
        assert y.ctypes.data % 64 == 0 and nb.channels_last_memory(y) == cl
