"""The backend-agnostic conformance suite: every public kernel of every available backend against
the loop-based oracle in ``naive.py``, in float32 and float64, on odd sizes too."""
import naive
import numpy as np
import pytest
from conftest import assert_close

from fastmnist import config
from fastmnist.backends import get_backend

DTYPES = ["float32", "float64"]
# (N, C, H, W, F, K, stride, pad): batch 1, 3 channels, stride 2, pad 1-2, 3x3 and 5x5, non-square
CONV_CASES = [
    (2, 1, 7, 7, 3, 3, 1, 0),
    (1, 3, 6, 5, 2, 3, 2, 1),
    (3, 2, 8, 8, 4, 5, 1, 2),
    (2, 3, 9, 7, 2, 5, 2, 2),
    (1, 1, 5, 5, 1, 5, 1, 0),
]
POOL_CASES = [(2, 3, 6, 6, 2, 2), (1, 2, 7, 5, 2, 2), (2, 1, 7, 7, 3, 2), (1, 2, 5, 9, 3, 3)]


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_im2col_col2im(be, rng, dtype, case):
    n, c, h, w, f, k, s, p = case
    x = rand(rng, (n, c, h, w), dtype)
    col = be.to_numpy(be.im2col(be.asarray(x), k, k, s, p))
    assert col.dtype == np.dtype(dtype)
    assert_close(col, naive.im2col(x, k, k, s, p), dtype, "im2col")
    c_in = rand(rng, col.shape, dtype)
    back = be.to_numpy(be.col2im(be.asarray(c_in), x.shape, k, k, s, p))
    assert_close(back, naive.col2im(c_in, x.shape, k, k, s, p), dtype, "col2im")
    # adjointness: <im2col(x), c> == <x, col2im(c)>
    lhs = float(np.sum(col.astype(np.float64) * c_in))
    rhs = float(np.sum(x.astype(np.float64) * back))
    assert abs(lhs - rhs) <= (1e-10 if dtype == "float64" else 1e-4) * max(1.0, abs(lhs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d(be, rng, dtype, case):
    n, c, h, w, f, k, s, p = case
    x, wt, b = rand(rng, (n, c, h, w), dtype), rand(rng, (f, c, k, k), dtype), rand(rng, (f,), dtype)
    y = be.conv2d_forward(be.asarray(x), be.asarray(wt), be.asarray(b), s, p)
    assert_close(be.to_numpy(y), naive.conv2d_forward(x, wt, b, s, p), dtype, "conv2d_forward")
    dy = rand(rng, y.shape, dtype)
    got = be.conv2d_backward(be.asarray(dy), be.asarray(x), be.asarray(wt), s, p)
    for g, want, name in zip(got, naive.conv2d_backward(dy, x, wt, s, p), ("dx", "dw", "db")):
        assert_close(be.to_numpy(g), want, dtype, f"conv2d_backward {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool2d(be, rng, dtype, case):
    n, c, h, w, size, stride = case
    x = rand(rng, (n, c, h, w), dtype)
    x[0, 0, 0, :2] = x[0, 0, 1, :2] = 5.0  # a tie inside the first window: the first index must win
    y, arg = be.maxpool2d_forward(be.asarray(x), size, stride)
    ref_y, ref_arg = naive.maxpool2d_forward(x, size, stride)
    assert_close(be.to_numpy(y), ref_y, dtype, "maxpool y")
    np.testing.assert_array_equal(be.to_numpy(arg), ref_arg)
    dy = rand(rng, ref_y.shape, dtype)
    dx = be.maxpool2d_backward(be.asarray(dy), arg, x.shape, size, stride)
    assert_close(be.to_numpy(dx), naive.maxpool2d_backward(dy, ref_arg, x.shape), dtype, "maxpool dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7, 3), (5, 13, 10), (4, 64, 33)], ids=str)
def test_affine(be, rng, dtype, shape):
    n, d, m = shape
    x, w, b = rand(rng, (n, d), dtype), rand(rng, (d, m), dtype), rand(rng, (m,), dtype)
    y = be.affine_forward(be.asarray(x), be.asarray(w), be.asarray(b))
    assert_close(be.to_numpy(y), naive.affine_forward(x, w, b), dtype, "affine_forward")
    dy = rand(rng, (n, m), dtype)
    got = be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(w))
    for g, want, name in zip(got, naive.affine_backward(dy, x, w), ("dx", "dw", "db")):
        assert_close(be.to_numpy(g), want, dtype, f"affine_backward {name}")


@pytest.mark.parametrize("shape", [(140, 30, 20), (20, 60, 30)], ids=["many rows", "few rows"])
def test_affine_inside_training_context(be, rng, shape, monkeypatch):
    """Where a backend holds a training context (numba: products cut over the cores, dx and dW at
    once), the same results, with the size threshold lowered so these small products take it."""
    if be.training_context is None:
        pytest.skip(f"{be.name} has no training_context")
    monkeypatch.setattr(config, "SPLIT_GEMM_MIN_FLOPS", 1000)
    n, d, m = shape
    x, w, b, dy = (rand(rng, s, "float64") for s in ((n, d), (d, m), (m,), (n, m)))
    with be.training_context():
        y = be.affine_forward(be.asarray(x), be.asarray(w), be.asarray(b))
        got = be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(w))
        without_dx = be.affine_backward(be.asarray(dy), be.asarray(x), be.asarray(w), need_dx=False)
    assert_close(be.to_numpy(y), naive.affine_forward(x, w, b), "float64", "affine_forward")
    for g, want, name in zip(got, naive.affine_backward(dy, x, w), ("dx", "dw", "db")):
        assert_close(be.to_numpy(g), want, "float64", f"affine_backward {name}")
    assert without_dx[0] is None
    assert_close(be.to_numpy(without_dx[1]), be.to_numpy(got[1]), "float64", "dw without dx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations(be, rng, dtype):
    x = rand(rng, (3, 4, 5, 2), dtype) * 5
    x[0, 0, 0, :2] = [800.0, -800.0]  # large magnitudes must not overflow the sigmoid
    dy = rand(rng, x.shape, dtype)
    y = be.to_numpy(be.relu_forward(be.asarray(x)))
    assert_close(y, naive.relu_forward(x), dtype, "relu_forward")
    assert_close(be.to_numpy(be.relu_backward(be.asarray(dy), be.asarray(x))), naive.relu_backward(dy, x), dtype, "relu_backward")
    s = be.to_numpy(be.sigmoid_forward(be.asarray(x)))
    assert_close(s, naive.sigmoid_forward(x), dtype, "sigmoid_forward")
    assert s[0, 0, 0, 0] == 1.0 and s[0, 0, 0, 1] == 0.0
    assert_close(be.to_numpy(be.sigmoid_backward(be.asarray(dy), be.asarray(s))), naive.sigmoid_backward(dy, s),
                 dtype, "sigmoid_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10), (7, 10), (33, 3)], ids=str)
def test_softmax_and_losses(be, rng, dtype, shape):
    logits = rand(rng, shape, dtype) * 4
    logits[0, 0] = 1000.0  # stable for huge finite logits
    labels = rng.integers(0, shape[1], shape[0])
    p = be.to_numpy(be.softmax(be.asarray(logits)))
    assert_close(p, naive.softmax(logits), dtype, "softmax")
    loss, d = be.softmax_cross_entropy(be.asarray(logits), be.asarray(labels))
    ref_loss, ref_d = naive.softmax_cross_entropy(logits, labels)
    assert_close(float(loss), ref_loss, dtype, "softmax_cross_entropy loss")
    assert_close(be.to_numpy(d), ref_d, dtype, "softmax_cross_entropy dlogits")
    t = rand(rng, shape, dtype)
    loss, d = be.mse_loss(be.asarray(logits), be.asarray(t))
    ref_loss, ref_d = naive.mse_loss(logits, t)
    assert_close(float(loss), ref_loss, dtype, "mse loss")
    assert_close(be.to_numpy(d), ref_d, dtype, "mse dy")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9])
def test_dropout_same_mask_everywhere(be, rng, dtype, p):
    x = rand(rng, (4, 3, 5), dtype)
    y, mask = be.dropout_forward(be.asarray(x), p, 987654321)
    ref_y, ref_mask = naive.dropout_forward(x, p, 987654321)
    np.testing.assert_array_equal(be.to_numpy(mask), ref_mask.astype(dtype))
    assert_close(be.to_numpy(y), ref_y, dtype, "dropout y")
    dy = rand(rng, x.shape, dtype)
    assert_close(be.to_numpy(be.dropout_backward(be.asarray(dy), mask)), dy * ref_mask, dtype, "dropout dx")


def random_theta(rng, n, identity_first=True):
    """Rotations to 30 degrees, scales 0.8-1.25, shears, shifts to 2.5 px; the first sample the identity."""
    a, s, h = rng.uniform(-0.5, 0.5, n), rng.uniform(0.8, 1.25, n), rng.uniform(-0.3, 0.3, n)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = s * np.cos(a), -s * np.sin(a + h)
    theta[:, 1, 0], theta[:, 1, 1] = s * np.sin(a), s * np.cos(a + h)
    theta[:, :, 2] = rng.uniform(-2.5, 2.5, (n, 2))
    if identity_first:
        theta[0] = [[1, 0, 0], [0, 1, 0]]
    return theta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 7, 9), (2, 2, 6, 5), (4, 1, 28, 28)], ids=str)
def test_affine_warp(be, rng, dtype, shape):
    x = rand(rng, shape, dtype)
    theta = random_theta(rng, shape[0])
    ref = naive.affine_warp(x, theta)
    got = be.to_numpy(be.affine_warp(be.asarray(x), theta))
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert_close(got, ref, dtype, "affine_warp")
    np.testing.assert_array_equal(got[0], x[0])  # the identity map copies exactly
    # the checks run before any kernel
    with pytest.raises(ValueError, match=r"theta must be \(\d+, 2, 3\)"):
        be.affine_warp(be.asarray(x), theta[:1])
    with pytest.raises(TypeError, match="float64"):
        be.affine_warp(be.asarray(x), theta.astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 7, 9), (2, 2, 6, 5), (3, 1, 28, 28), (2, 1, 1, 3)], ids=str)
def test_elastic_warp(be, rng, dtype, shape):
    x = rand(rng, shape, dtype)
    grid = rng.uniform(-2.5, 2.5, (shape[0], 2, 4, 3))
    grid[0] = 0.0  # no displacement: the image as it is
    ref = naive.elastic_warp(x, grid)
    got = be.to_numpy(be.elastic_warp(be.asarray(x), grid))
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert_close(got, ref, dtype, "elastic_warp")
    np.testing.assert_array_equal(got[0], x[0])
    with pytest.raises(ValueError, match=r"grid must be \(\d+, 2, GH, GW\) with GH, GW >= 2"):
        be.elastic_warp(be.asarray(x), grid[:, :, :1])
    with pytest.raises(TypeError, match="float64"):
        be.elastic_warp(be.asarray(x), grid.astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 1, 7, 9), (4, 2, 6, 5), (4, 1, 28, 28), (4, 1, 1, 3)], ids=str)
def test_stroke_width(be, rng, dtype, shape):
    x = rand(rng, shape, dtype)
    amount = np.array([0.0, 1.0, -1.0, rng.uniform(-1, 1)])
    ref = naive.stroke_width(x, amount)
    got = be.to_numpy(be.stroke_width(be.asarray(x), amount))
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert_close(got, ref, dtype, "stroke_width")
    np.testing.assert_array_equal(got[0], x[0])  # amount 0 leaves a (finite) sample as it is
    x[1:3, 0, 0, shape[3] // 2] = np.nan  # a NaN spreads over its 3x3 window, as numpy's max and min do
    got = be.to_numpy(be.stroke_width(be.asarray(x), amount))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(get_backend("numpy").stroke_width(x, amount)))
    assert np.isnan(got[1:3]).sum() >= 2 * min(3, shape[3]) * min(2, shape[2])
    with pytest.raises(ValueError, match=r"amount must be \(4,\)"):
        be.stroke_width(be.asarray(x), amount[:2])
    with pytest.raises(ValueError, match=r"every amount must be in \[-1.0, 1.0\]"):
        be.stroke_width(be.asarray(x), np.array([0.0, 1.5, 0.0, 0.0]))
    with pytest.raises(TypeError, match="float64"):
        be.stroke_width(be.asarray(x), amount.astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 1, 7, 9), (4, 2, 6, 5), (4, 1, 28, 28), (4, 1, 2, 3)], ids=str)
def test_gaussian_blur(be, rng, dtype, shape):
    x = rand(rng, shape, dtype)
    sigma = np.array([0.0, 0.5, 2.0, rng.uniform(0, 2)])
    ref = naive.gaussian_blur(x, sigma)
    got = be.to_numpy(be.gaussian_blur(be.asarray(x), sigma))
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    assert_close(got, ref, dtype, "gaussian_blur")
    np.testing.assert_array_equal(got[0], x[0])  # sigma 0 leaves a sample as it is
    with pytest.raises(ValueError, match=r"every sigma must be in \[0.0, 2.0\]"):
        be.gaussian_blur(be.asarray(x), np.array([0.0, -0.1, 0.0, 0.0]))
    with pytest.raises(ValueError, match="every sigma"):
        be.gaussian_blur(be.asarray(x), np.array([0.0, np.nan, 0.0, 0.0]))


def test_dropout_rate_and_seed(be):
    x = be.asarray(np.ones((200, 500), np.float32))
    _, m1 = be.dropout_forward(x, 0.3, 1)
    _, m2 = be.dropout_forward(x, 0.3, 2)
    m1, m2 = be.to_numpy(m1), be.to_numpy(m2)
    assert abs((m1 == 0).mean() - 0.3) < 0.01  # 100000 draws: 5 sigma is 0.007
    assert (m1 != m2).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_updates(be, rng, dtype):
    shape = (5, 7)
    param, grad = rand(rng, shape, dtype), rand(rng, shape, dtype)
    state = np.abs(rand(rng, shape, dtype))

    p = be.asarray(param.copy())
    be.sgd_update(p, be.asarray(grad), 0.1)
    assert_close(be.to_numpy(p), naive.sgd_update(param, grad, 0.1), dtype, "sgd")

    p, v = be.asarray(param.copy()), be.asarray(state.copy())
    be.momentum_update(p, be.asarray(grad), v, 0.1, 0.9)
    ref_p, ref_v = naive.momentum_update(param, grad, state, 0.1, 0.9)
    assert_close(be.to_numpy(p), ref_p, dtype, "momentum param")
    assert_close(be.to_numpy(v), ref_v, dtype, "momentum velocity")

    p, h = be.asarray(param.copy()), be.asarray(state.copy())
    be.adagrad_update(p, be.asarray(grad), h, 0.1, 1e-7)
    ref_p, ref_h = naive.adagrad_update(param, grad, state, 0.1, 1e-7)
    assert_close(be.to_numpy(p), ref_p, dtype, "adagrad param")
    assert_close(be.to_numpy(h), ref_h, dtype, "adagrad h")

    m0, v0 = rand(rng, shape, dtype), state * state
    p, m, v = be.asarray(param.copy()), be.asarray(m0.copy()), be.asarray(v0.copy())
    for t in (1, 2, 7):
        be.adam_update(p, be.asarray(grad), m, v, t, 0.01, 0.7, 0.9, 1e-8)
    ref = (param, m0, v0)
    for t in (1, 2, 7):
        ref = naive.adam_update(*ref[:1], grad, *ref[1:], t, 0.01, 0.7, 0.9, 1e-8)
    for got, want, name in zip((p, m, v), ref, ("param", "m", "v")):
        assert_close(be.to_numpy(got), want, dtype, f"adam {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[(3, 4), (5,)], [(40000,), (7,), (300, 110)]], ids=["tiny", "parallel"])
def test_adam_update_many_matches_one_at_a_time(be, rng, dtype, sizes, monkeypatch):
    """The optimizer's one-call Adam, where a backend has it, against the loop oracle parameter by
    parameter; "parallel" crosses config.ADAM_PARALLEL_MIN_ELEMENTS and splits arrays into blocks."""
    if be.adam_update_many is None:
        pytest.skip(f"{be.name} has no adam_update_many (the optimizer loops over adam_update)")
    monkeypatch.setattr(config, "ADAM_BLOCK", 4096)  # several blocks per array, one ending short
    monkeypatch.setattr(config, "ADAM_PARALLEL_MIN_ELEMENTS", 32768)
    params = [rand(rng, s, dtype) for s in sizes]
    grads = [rand(rng, s, dtype) for s in sizes]
    states = [{"m": rand(rng, s, dtype), "v": rand(rng, s, dtype) ** 2} for s in sizes]
    dev = [be.asarray(p.copy()) for p in params]
    dev_states = [{k: be.asarray(a.copy()) for k, a in st.items()} for st in states]
    dev_grads = [be.asarray(g.copy()) for g in grads]
    if isinstance(dev_grads[0], np.ndarray):
        dev_grads[0].flags.writeable = False  # a read-only gradient among writable ones: still one call
    for t in (1, 2, 7):
        be.adam_update_many(dev, dev_grads, dev_states, t, 0.01, 0.7, 0.9, 1e-8)
    for k, (param, grad, st) in enumerate(zip(params, grads, states)):
        ref = (param, st["m"], st["v"])
        for t in (1, 2, 7):
            ref = naive.adam_update(*ref[:1], grad, *ref[1:], t, 0.01, 0.7, 0.9, 1e-8)
        for got, want, name in zip((dev[k], dev_states[k]["m"], dev_states[k]["v"]), ref, ("param", "m", "v")):
            assert_close(be.to_numpy(got), want, dtype, f"adam_update_many parameter {k} {name}")


def test_count_correct(be):
    logits = np.array([[0.1, 2.0, 0.3], [5.0, 0.0, 1.0], [0.0, 0.0, 3.0]], np.float32)
    assert int(be.count_correct(be.asarray(logits), be.asarray(np.array([1, 0, 1])))) == 2


# (N, C, H, W, F, K, pad, pool size, pool stride, conv stride): small planes (blocked path), large
# planes (per-sample path), odd pools, padding; a strided convolution takes numba's im2col + BLAS
# fallback, and so does, untiled, one with C*K*K above config.DIRECT_CONV_MAX_K; 40 filters take
# two column tiles, and an odd 9 x 8 output leaves a row outside every 2x2 window; 9 channels into
# 3x3 filters with an even output take numba's Winograd forward pass (numba_winograd.py)
FUSED_CASES = [(3, 2, 8, 8, 4, 3, 0, 2, 2, 1), (2, 1, 28, 28, 3, 5, 0, 2, 2, 1), (2, 1, 24, 26, 2, 5, 2, 2, 2, 1),
               (3, 3, 9, 7, 2, 3, 1, 3, 2, 1), (1, 4, 12, 12, 5, 3, 0, 2, 2, 1), (2, 2, 11, 13, 3, 3, 1, 2, 2, 2),
               (2, 48, 8, 8, 3, 5, 2, 2, 2, 1), (2, 3, 11, 10, 40, 3, 0, 2, 2, 1), (2, 9, 12, 10, 20, 3, 1, 2, 2, 1)]


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "untiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("case", FUSED_CASES, ids=str)
def test_fused_conv_relu_pool_matches_reference(be, rng, case, need_dx, dtype, tiled, monkeypatch):
    """The layers' fused conv -> ReLU -> pool path against the composition of the reference kernels;
    on numba both with the register-tiled kernels (numba_conv.py) and with the older ones."""
    from fastmnist.backends import numpy_backend as ref
    if not tiled and be.name != "numba":
        pytest.skip("config.NUMBA_TILED_CONV only concerns the numba backend")
    monkeypatch.setattr(config, "NUMBA_TILED_CONV", tiled)
    n, c, h, w, f, k, pad, size, stride, conv_stride = case
    x, wt, b = rand(rng, (n, c, h, w), dtype), rand(rng, (f, c, k, k), dtype), rand(rng, (f,), dtype)
    want, cache = ref.conv2d_relu_maxpool_forward(x, wt, b, conv_stride, pad, size, stride)
    got, bcache = be.conv2d_relu_maxpool_forward(be.asarray(x), be.asarray(wt), be.asarray(b), conv_stride, pad, size,
                                                 stride)
    assert_close(be.to_numpy(got), want, dtype, "fused forward")
    dy = rand(rng, want.shape, dtype)
    ref_grads = ref.conv2d_relu_maxpool_backward(dy, cache, wt, need_dx)
    grads = be.conv2d_relu_maxpool_backward(be.asarray(dy), bcache, be.asarray(wt), need_dx)
    for g, r, name in zip(grads, ref_grads, ("dx", "dw", "db")):
        if r is None:
            assert g is None
        else:
            assert_close(be.to_numpy(g), r, dtype, f"fused backward {name}")


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "untiled"])
@pytest.mark.parametrize("window", [(2, 2), (3, 2)], ids=str)
def test_fused_conv_pool_ties_go_to_the_first_maximum(be, rng, tiled, window, monkeypatch):
    """Zero filters and a bias: every window is one tie, and only its first pixel (row-major) may
    receive the gradient, in dx, dw and db alike; a negative bias lets nothing through."""
    from fastmnist.backends import numpy_backend as ref
    if not tiled and be.name != "numba":
        pytest.skip("config.NUMBA_TILED_CONV only concerns the numba backend")
    monkeypatch.setattr(config, "NUMBA_TILED_CONV", tiled)
    size, stride = window
    x, wt = rand(rng, (2, 2, 9, 10), "float64"), np.zeros((3, 2, 3, 3))
    for bias in (0.5, -0.5):
        b = np.full(3, bias)
        want, cache = ref.conv2d_relu_maxpool_forward(x, wt, b, 1, 1, size, stride)
        got, bcache = be.conv2d_relu_maxpool_forward(be.asarray(x), be.asarray(wt), be.asarray(b), 1, 1, size, stride)
        assert_close(be.to_numpy(got), want, "float64", "tied forward")
        dy = rand(rng, want.shape, "float64")
        grads = be.conv2d_relu_maxpool_backward(be.asarray(dy), bcache, be.asarray(wt))
        for g, r, name in zip(grads, ref.conv2d_relu_maxpool_backward(dy, cache, wt), ("dx", "dw", "db")):
            assert_close(be.to_numpy(g), r, "float64", f"tied backward {name} (bias {bias})")
