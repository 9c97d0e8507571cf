"""The pixels-in-lanes forward pass (numba_lanes.py): the same bits as numba_conv's tiles for y and
the argmax, and the same gradients from its channels-first argmax, on every path of the backward."""
import numpy as np
import pytest

from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

# (images, side, filters, border, kernel): dropout-cnn's layer, no border, rows of 17-32 pixels,
# 3x3 kernels, 4 and 48 filters (one tile; three vectors)
SHAPES = [(5, 28, 16, 2, 5), (3, 28, 16, 0, 5), (4, 24, 16, 2, 5), (3, 20, 16, 1, 3), (2, 30, 48, 0, 3),
          (3, 28, 4, 2, 5), (2, 21, 8, 0, 5)]


def _layer(rng, n, h, f, pad, k):
    x = rng.standard_normal((n, 1, h, h)).astype(np.float32)
    x[:, :, : h // 4] = 0  # a blank band: equal sums before the bias, where the tie rule decides
    w = rng.standard_normal((f, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    return x, w, b


def test_lane_kernel_gives_the_tiles_bits():
    """The kernel itself, on any CPU (where lanes_apply says no, numba_conv runs the layer; this
    calls the kernel directly): y and arg bit for bit against conv2d_relu_maxpool_forward."""
    from fastmnist import config
    from fastmnist.backends import numba_backend as nb
    from fastmnist.backends import numba_lanes as lanes

    rng = np.random.default_rng(0)
    for n, h, f, pad, k in SHAPES:
        x, w, b = _layer(rng, n, h, f, pad, k)
        old = config.CONV_PIXEL_LANES
        config.CONV_PIXEL_LANES = False
        try:
            y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
        finally:
            config.CONV_PIXEL_LANES = old
        oh = h + 2 * pad - k + 1
        y2, arg2 = np.full_like(y, np.nan), np.zeros(y.shape, lanes.arg_dtype(oh, oh))
        lanes.lane_pool_forward_kernel(cache.xh, lanes.pack_lanes(w), b, k, k, oh, oh, 3, y2, arg2, lanes.lane_filters(f))
        np.testing.assert_array_equal(y2, y, err_msg=str((n, h, f, pad, k)))
        np.testing.assert_array_equal(arg2.transpose(0, 2, 3, 1), cache.arg[..., :f], err_msg=str((n, h, f, pad, k)))


@pytest.mark.parametrize("window", [True, False])
def test_lanes_on_and_off_give_the_same_bits(window, monkeypatch):
    """config.CONV_PIXEL_LANES on and off: y, and dw, db and dx from the backward pass (the
    window gradient reading the argmax channels first, or anything else after it is made channels
    last), the same bits."""
    from fastmnist import config
    from fastmnist.backends import numba_backend as nb
    from fastmnist.backends import numba_lanes as lanes

    monkeypatch.setattr(config, "CONV_WINDOW_WEIGHT_GRADIENT", window)
    rng = np.random.default_rng(1)
    for n, h, f, pad, k in SHAPES:
        x, w, b = _layer(rng, n, h, f, pad, k)
        runs = []
        for on in (True, False):
            monkeypatch.setattr(config, "CONV_PIXEL_LANES", on)
            y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
            assert cache.arg_cf == (on and lanes.lanes_apply(np.float32, 1, f, k, k, h + 2 * pad - k + 1, 2, 2,
                                                             False))
            dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
            runs.append([y, *nb.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=False)[1:],
                         *nb.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=True)])
        for a, b_ in zip(*runs):
            np.testing.assert_array_equal(a, b_, err_msg=str((n, h, f, pad, k)))


def test_argmax_in_int32_where_int16_is_too_small():
    """A tall image (OH*OW past int16): the argmax as int32, the same bits as the tiles'."""
    from fastmnist import config
    from fastmnist.backends import numba_backend as nb
    from fastmnist.backends import numba_lanes as lanes

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 1200, 36)).astype(np.float32)
    w, b = rng.standard_normal((16, 1, 5, 5)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    assert lanes.arg_dtype(1196, 32) == np.int32 and lanes.arg_dtype(28, 28) == np.int16
    runs = []
    for on in (True, False):
        config_on = config.CONV_PIXEL_LANES
        config.CONV_PIXEL_LANES = on
        try:
            y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, 0)
            dy = np.ones(y.shape, np.float32)
            runs.append([y, *nb.conv2d_relu_maxpool_backward(dy, cache, w, need_dx=False)[1:]])
        finally:
            config.CONV_PIXEL_LANES = config_on
        assert not on or lanes.lanes_apply(np.float32, 1, 16, 5, 5, 32, 2, 2, False) == cache.arg_cf
        assert not cache.arg_cf or cache.arg.dtype == np.int32
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)


def test_which_layers_take_the_lanes():
    from fastmnist.backends import numba_lanes as lanes
    from fastmnist.backends.numba_tiles import VECTOR_BYTES

    on = VECTOR_BYTES == 64
    assert lanes.lanes_apply(np.float32, 1, 16, 5, 5, 28, 2, 2, False) == on  # dropout-cnn's layer
    assert lanes.lanes_apply(np.float32, 1, 30, 5, 5, 24, 2, 2, False) == on  # simple-cnn's, tiles of 6
    assert not lanes.lanes_apply(np.float32, 1, 7, 5, 5, 24, 2, 2, False)  # no tile of 4, 5 or 6 filters
    assert [lanes.lane_filters(f) for f in (16, 30, 25, 24, 7)] == [4, 6, 5, 6, 0]
    assert not lanes.lanes_apply(np.float64, 1, 16, 5, 5, 28, 2, 2, False)
    assert not lanes.lanes_apply(np.float32, 3, 16, 5, 5, 28, 2, 2, False)
    assert not lanes.lanes_apply(np.float32, 1, 16, 5, 5, 28, 3, 3, False)
    assert not lanes.lanes_apply(np.float32, 1, 16, 5, 5, 33, 2, 2, False)  # rows past two vectors
    assert not lanes.lanes_apply(np.float32, 1, 16, 5, 5, 16, 2, 2, False)  # one vector
    assert not lanes.lanes_apply(np.float32, 1, 16, 5, 5, 28, 2, 2, True)   # output channels last
