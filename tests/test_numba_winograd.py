"""The numba backend's Winograd passes of a fused conv -> ReLU -> 2x2 pool (numba_winograd.py,
numba_conv.py): the forward pass and the weight gradient by F(2x2, 3x3), the input gradient by
F(4x4, 3x3), against the loop oracles of tests/naive.py, and the transforms against their matrices."""
import numpy as np
import pytest

from fastmnist import config
from fastmnist.backends import backend_status
from tests import naive
from tests.conftest import assert_close

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")


@pytest.fixture
def winograd_calls(monkeypatch):
    """Counts the Winograd kernel's calls, with the channel floor at 1 so small cases take it."""
    from fastmnist.backends import numba_conv
    calls = []
    kernel = numba_conv.winograd_forward_kernel

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(numba_conv, "winograd_forward_kernel", counted)
    monkeypatch.setattr(config, "CONV_WINOGRAD", True)
    monkeypatch.setattr(config, "CONV_WINOGRAD_MIN_CHANNELS", 1)
    return calls


def _oracle(x, w, b, pad):
    """ReLU(max-pool 2x2 of the convolution), the pooled pixel's index i*OW + j, -1 where ReLU stopped it."""
    conv = naive.conv2d_forward(x, w, b, 1, pad)
    pooled, arg = naive.maxpool2d_forward(conv)
    return np.maximum(pooled, 0), np.where(pooled > 0, arg, -1)


# (N, C, H, W, F, pad): one channel; an odd count of channels (a masked last vector); fast-cnn's
# conv2 (24 -> 32); padding and a non-square plane; one tile; filters over two vectors and a part
CASES = [(2, 1, 6, 8, 3, 0), (2, 9, 10, 12, 5, 1), (2, 24, 12, 12, 32, 0), (1, 17, 4, 4, 40, 0), (3, 3, 8, 6, 17, 1)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_winograd_forward_against_loops(winograd_calls, rng, case, dtype):
    from fastmnist.backends import numba_backend as nb
    n, c, h, wd, f, pad = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    b = (0.1 * rng.standard_normal(f)).astype(dtype)
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
    assert winograd_calls == [(n, h + 2 * pad, wd + 2 * pad, c)]
    want, want_arg = _oracle(x, w, b, pad)
    assert_close(y, want, dtype, "winograd forward")
    # the argmax, channels last: the same pixel (or -1) wherever rounding cannot decide it
    arg = cache.arg[..., :f].transpose(0, 3, 1, 2)
    conv = naive.conv2d_forward(x, w, b, 1, pad)
    windows = conv.reshape(n, f, conv.shape[2] // 2, 2, conv.shape[3] // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    top2 = np.sort(windows.reshape(*windows.shape[:4], 4), axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0] > 1e-4) & (np.abs(top2[..., 1]) > 1e-4)  # no tie, not at ReLU's edge
    assert clear.mean() > 0.7
    np.testing.assert_array_equal(arg[clear], want_arg[clear])
    assert (cache.arg[..., f:] == -1).all()  # padded channels: zero filters and bias, stopped


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", [(2, 9, 10, 8, 11, 1), (2, 24, 12, 12, 32, 0), (1, 3, 6, 6, 17, 0)], ids=str)
def test_backward_through_the_winograd_argmax_against_loops(winograd_calls, backward_calls, rng, dtype, case,
                                                            monkeypatch):
    """dx by Winograd too (the rotated filters' transform reaches the kernel), and dw where the fewer of
    channels and filters reaches the floor; db direct. (The pooled side's weight gradient, which
    fast-cnn's conv2 takes, is off: test_numba_window_grad.py checks it.)"""
    from fastmnist.backends import numba_backend as nb
    monkeypatch.setattr(config, "CONV_WINDOW_WEIGHT_GRADIENT", False)
    n, c, h, wd, f, pad = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    b = (0.1 * rng.standard_normal(f)).astype(dtype)
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, pad)
    assert len(winograd_calls) == 1
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = nb.conv2d_relu_maxpool_backward(dy, cache, w)
    assert backward_calls[0]["udx"].shape[:2] == (36, f)  # the input gradient's rotated filters, F(4x4, 3x3)
    assert backward_calls[0]["wino_dw"] == (min(c, f) >= config.CONV_WINOGRAD_MIN_CHANNELS)  # the weight gradient's
    conv = naive.conv2d_forward(x, w, b, 1, pad)
    pooled, arg = naive.maxpool2d_forward(conv)
    dconv = naive.maxpool2d_backward(dy * (pooled > 0), arg, conv.shape)
    for got, want, name in zip((dx, dw, db), naive.conv2d_backward(dconv, x, w, 1, pad), ("dx", "dw", "db")):
        assert_close(got, want, dtype, name)


@pytest.mark.parametrize("channels", [(9, 11), (3, 11)], ids=["input gradient by Winograd", "too few channels"])
def test_a_direct_forward_pass_then_the_input_gradient(winograd_calls, backward_calls, rng, channels, monkeypatch):
    """3x3 pooling at stride 2 keeps the forward pass direct; the input gradient still takes
    Winograd where the fewer of channels and filters reaches the floor, and matches the oracle
    (the pooled side's weight gradient off, as above)."""
    from fastmnist.backends import numba_backend as nb
    monkeypatch.setattr(config, "CONV_WINDOW_WEIGHT_GRADIENT", False)
    monkeypatch.setattr(config, "CONV_WINOGRAD_MIN_CHANNELS", 8)
    c, f = channels
    x = rng.standard_normal((2, c, 10, 12))
    w, b = rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c), 0.1 * rng.standard_normal(f)
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, b, 1, 1, 3, 2)
    assert winograd_calls == []
    dy = rng.standard_normal(y.shape)
    dx, dw, db = nb.conv2d_relu_maxpool_backward(dy, cache, w)
    assert (backward_calls[0]["udx"].shape[1] > 0) == (min(c, f) >= 8)
    assert backward_calls[0]["wino_dw"] == (min(c, f) >= 8)  # the weight gradient takes Winograd under the same floor
    conv = naive.conv2d_forward(x, w, b, 1, 1)
    pooled, arg = naive.maxpool2d_forward(conv, 3, 2)
    dconv = naive.maxpool2d_backward(dy * (pooled > 0), arg, conv.shape)
    for got, want, name in zip((dx, dw, db), naive.conv2d_backward(dconv, x, w, 1, 1), ("dx", "dw", "db")):
        assert_close(got, want, "float64", name)


def test_ties_go_to_the_first_pixel_and_a_stopped_window_reads_minus_one(winograd_calls):
    from fastmnist.backends import numba_backend as nb
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6))
    w = np.zeros((2, 4, 3, 3))
    y, cache = nb.conv2d_relu_maxpool_forward(x, w, np.array([0.5, -0.5]), 1, 1)
    assert len(winograd_calls) == 1
    np.testing.assert_array_equal(y[0, 0], 0.5)
    first = (2 * np.arange(3)[:, None]) * 6 + 2 * np.arange(3)[None, :]  # each window's top-left pixel
    np.testing.assert_array_equal(cache.arg[0, :, :, 0], first)
    np.testing.assert_array_equal(y[0, 1], 0)
    np.testing.assert_array_equal(cache.arg[0, :, :, 1], -1)


@pytest.mark.parametrize("shape", [(1, 8, 9, 9), (1, 8, 10, 10)], ids=["odd output", "5x5 filters"])
def test_other_shapes_take_the_direct_kernel(winograd_calls, rng, shape):
    from fastmnist.backends import numba_backend as nb
    from fastmnist.backends import numpy_backend as ref
    k = 3 if shape[2] == 9 else 5
    x, w, b = rng.standard_normal(shape), rng.standard_normal((4, 8, k, k)), rng.standard_normal(4)
    y, _ = nb.conv2d_relu_maxpool_forward(x, w, b, 1, 1)
    assert winograd_calls == []
    assert_close(y, ref.conv2d_relu_maxpool_forward(x, w, b, 1, 1)[0], "float64", "direct forward")


@pytest.mark.parametrize("points", [2, 4], ids=["F(2x2, 3x3)", "F(4x4, 3x3)"])
def test_filter_transform_against_the_matrices(points):
    from fastmnist.backends import numba_winograd as wino
    g = np.array(wino.G2 if points == 2 else wino.G4)
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    u = wino.transform_filters(w, 5, wino.G2 if points == 2 else wino.G4)
    n = len(g)
    assert u.shape == (n * n, 2, 5) and (u[:, :, 3:] == 0).all()
    for f in range(3):
        for c in range(2):
            np.testing.assert_allclose(u[:, c, f], (g @ w[f, c] @ g.T).reshape(n * n), rtol=1e-14, atol=1e-15)


def test_weight_gradient_takes_the_transform_back_by_the_matrices():
    """dW = G^T dU G: the transposed map of U = G g G^T, so <dU, G g G^T> = <G^T dU G, g>."""
    from fastmnist.backends import numba_winograd as wino
    rng = np.random.default_rng(2)
    du, g = rng.standard_normal((16, 3, 8)), np.array(wino.G2)
    dw = wino.weight_gradient(du, 5)
    assert dw.shape == (5, 3, 3, 3)
    for f in range(5):
        for c in range(3):
            np.testing.assert_allclose(dw[f, c], g.T @ du[:, c, f].reshape(4, 4) @ g, rtol=1e-14, atol=1e-15)
    w = rng.standard_normal((5, 3, 3, 3))
    u = wino.transform_filters(w, 8)
    np.testing.assert_allclose(np.sum(du[:, :, :5] * u[:, :, :5]), np.sum(dw * w), rtol=1e-12)


def test_the_transforms_share_work_and_still_compute_their_matrices():
    """_plan's column pairs and row pairs (E + k*O, E - k*O) cut B^T of F(4x4, 3x3) to 12 vector
    operations a column and A^T to 10, leave F(2x2, 3x3)'s alone, and input_tile4 / output_tile4
    still give B^T d B and A^T M A, float64 to rounding."""
    from numba import njit

    from fastmnist.backends import numba_winograd as wino
    assert [wino._plan_cost(m) for m in (wino.BT4, wino.AT4, wino.BT2, wino.AT2, wino.A2)] == [12, 10, 4, 4, 3]
    assert wino._plan(wino.BT2)[0] == () and all(s[0] == "row" for s in wino._plan(wino.AT2)[1])

    @njit
    def both(d, m, v, out, lanes):
        wino.input_tile4(d, 0, 6 * lanes, lanes, lanes, v, 0, lanes)
        wino.output_tile4(m, 0, lanes, lanes, out, 0, 4 * lanes, lanes)

    lanes = 8  # a whole vector of float64 on AVX-512, two on AVX2
    rng = np.random.default_rng(3)
    d, m = rng.standard_normal((6, 6, lanes)), rng.standard_normal((6, 6, lanes))
    v, out = np.full((36, lanes), np.nan), np.full((4, 4, lanes), np.nan)
    both(d.reshape(-1), m.reshape(-1), v.reshape(-1), out.reshape(-1), lanes)
    bt, at = np.array(wino.BT4, np.float64), np.array(wino.AT4, np.float64)
    for c in range(lanes):
        np.testing.assert_allclose(v[:, c].reshape(6, 6), bt @ d[:, :, c] @ bt.T, rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(out[:, :, c], at @ m[:, :, c] @ at.T, rtol=1e-13, atol=1e-12)
