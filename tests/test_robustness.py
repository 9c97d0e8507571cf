"""Malformed inputs to every public kernel of every available backend: one clear ValueError or
TypeError naming the problem, never a crash, an out-of-bounds access or a silently wrong result."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

f32 = np.float32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


def r(*shape, dtype=f32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# (call, exception type, message fragment)
BAD_CALLS = [
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 2, 3, 3), z(3)), ValueError, "C=2"),
    (lambda be: be.conv2d_forward(z(2, 8, 8), z(3, 1, 3, 3), z(3)), ValueError, "x must be 4-D"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 1, 3, 3), z(4)), ValueError, "b has shape (4,)"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 1, 3, 3, dtype=np.float64), z(3)), TypeError, "share one dtype"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8, dtype=np.int32), z(3, 1, 3, 3), z(3)), TypeError, "dtype int32"),
    (lambda be: be.conv2d_forward(z(2, 1, 2, 2), z(3, 1, 3, 3), z(3)), ValueError, "larger than the padded input"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 1, 3, 3), z(3), stride=0), ValueError, "stride must be >= 1"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 1, 3, 3), z(3), pad=-1), ValueError, "pad must be >= 0"),
    (lambda be: be.conv2d_forward(z(2, 1, 8, 8), z(3, 1, 3, 3), z(3), pad=1.5), TypeError, "pad must be an integer"),
    (lambda be: be.conv2d_forward(z(0, 1, 8, 8), z(3, 1, 3, 3), z(3)), ValueError, "x is empty"),
    (lambda be: be.conv2d_backward(z(2, 3, 5, 5), z(2, 1, 8, 8), z(3, 1, 3, 3)), ValueError, "dy has shape (2, 3, 5, 5)"),
    (lambda be: be.im2col(z(1, 1, 4, 4), 0, 3), ValueError, "kh must be >= 1"),
    (lambda be: be.col2im(z(10, 9), (1, 1, 4, 4), 3, 3), ValueError, "col has shape (10, 9)"),
    (lambda be: be.col2im(z(4, 9), (1, 1, 4), 3, 3), ValueError, "x_shape must be 4"),
    (lambda be: be.maxpool2d_forward(z(1, 1, 1, 1), 2, 2), ValueError, "larger than the padded input"),
    (lambda be: be.maxpool2d_forward(z(1, 1, 4, 4), 2, 0), ValueError, "stride must be >= 1"),
    (lambda be: be.maxpool2d_backward(z(1, 1, 2, 2), np.full((1, 1, 2, 2), 99), (1, 1, 4, 4)), ValueError,
     "argmax values span"),
    (lambda be: be.maxpool2d_backward(z(1, 1, 2, 2), np.full((1, 1, 2, 2), -1), (1, 1, 4, 4)), ValueError,
     "argmax values span"),
    (lambda be: be.maxpool2d_backward(z(1, 1, 2, 2), z(1, 1, 2, 2), (1, 1, 4, 4)), TypeError, "integer dtype"),
    (lambda be: be.maxpool2d_backward(z(1, 1, 3, 2), np.zeros((1, 1, 3, 2), int), (1, 1, 4, 4)), ValueError,
     "must both be (1, 1, 2, 2)"),
    (lambda be: be.affine_forward(z(4, 5), z(6, 3), z(3)), ValueError, "do not fit"),
    (lambda be: be.affine_forward(z(4, 5), z(5, 3), z(3, 1)), ValueError, "b must be 1-D"),
    (lambda be: be.affine_backward(z(4, 2), z(4, 5), z(5, 3)), ValueError, "do not fit"),
    (lambda be: be.relu_backward(z(3, 4), z(4, 3)), ValueError, "dy has shape (3, 4) but x has shape (4, 3)"),
    (lambda be: be.sigmoid_forward([1.0, 2.0]), TypeError, "must be an array"),
    (lambda be: be.softmax(z(3)), ValueError, "x must be 2-D"),
    (lambda be: be.softmax_cross_entropy(z(3, 10), np.array([0, 1, 10])), ValueError, "labels span 0..10"),
    (lambda be: be.softmax_cross_entropy(z(3, 10), np.array([0, -1, 2])), ValueError, "labels span -1..2"),
    (lambda be: be.softmax_cross_entropy(z(3, 10), np.array([0.0, 1.0, 2.0])), TypeError, "integer class indices"),
    (lambda be: be.softmax_cross_entropy(z(3, 10), np.array([0, 1])), ValueError, "one label per row"),
    (lambda be: be.mse_loss(z(3, 10), z(3, 9)), ValueError, "must match"),
    (lambda be: be.dropout_forward(z(3, 4), 1.0, 0), ValueError, "p must be < 1"),
    (lambda be: be.dropout_forward(z(3, 4), -0.1, 0), ValueError, "p must be >= 0"),
    (lambda be: be.dropout_forward(z(3, 4), 0.5, -3), TypeError, "seed must be an integer"),
    (lambda be: be.sgd_update(z(3, 4), z(4, 3), 0.1), ValueError, "grad has shape (4, 3)"),
    (lambda be: be.sgd_update(z(3, 4), z(3, 4), float("nan")), TypeError, "lr must be a finite"),
    (lambda be: be.adam_update(z(3), z(3), z(3), z(2), 1, 0.1), ValueError, "v has shape (2,)"),
    (lambda be: be.adam_update(z(3), z(3), z(3), z(3), 0, 0.1), ValueError, "t must be >= 1"),
]


@pytest.mark.parametrize("index", range(len(BAD_CALLS)))
def test_bad_input_raises_clear_error(be, index):
    call, exc, fragment = BAD_CALLS[index]
    with pytest.raises(exc) as info:
        call(be)
    assert fragment in str(info.value)


def test_read_only_param_refused(be):
    p = z(3, 4)
    p.flags.writeable = False
    if be.name == "cupy":
        pytest.skip("device arrays have no read-only flag")
    with pytest.raises(ValueError, match="param is read-only"):
        be.sgd_update(p, z(3, 4), 0.1)


def test_non_contiguous_inputs_give_the_same_result(be, rng):
    """Strided views are accepted (made contiguous by design) and give the contiguous answer."""
    h = be.to_numpy
    x = be.asarray(r(2, 1, 16, 16))[:, :, ::2, ::2]
    w = be.asarray(r(3, 1, 3, 3, seed=1))
    b = be.asarray(r(3, seed=2))
    np.testing.assert_allclose(h(be.conv2d_forward(x, w, b)), h(be.conv2d_forward(x.copy(), w, b)), rtol=1e-6)
    big = be.asarray(r(8, 6))
    np.testing.assert_array_equal(h(be.relu_forward(big.T)), h(be.relu_forward(big.T.copy())))
    logits = be.asarray(r(10, 6)).T  # (6, 10) non-contiguous
    labels = be.asarray(np.arange(6))
    a, da = be.softmax_cross_entropy(logits, labels)
    b2, db = be.softmax_cross_entropy(logits.copy(), labels)
    assert float(a) == pytest.approx(float(b2), rel=1e-6)  # NumPy may reduce strided rows in another order
    np.testing.assert_allclose(h(da), h(db), rtol=1e-5)


def test_in_place_update_of_a_strided_param_is_not_lost(be):
    """An in-place update must reach the caller's array: a silently updated copy would lose it."""
    base = np.ones((4, 6), f32)
    p = base[:, ::2]
    if getattr(be, "is_device", False):  # a host array cannot be updated in place on the GPU: said so
        with pytest.raises(TypeError, match="sgd_update: param must be a device array"):
            be.sgd_update(p, np.ones_like(p), 0.5)
        dev = be.asarray(np.ones((4, 6), f32))
        with pytest.raises(ValueError, match="sgd_update: param must be C-contiguous"):
            be.sgd_update(dev[:, ::2], be.asarray(np.ones((4, 3), f32)), 0.5)
        return
    try:
        be.sgd_update(p, np.ones_like(p), 0.5)
    except ValueError as err:
        assert "C-contiguous" in str(err)
        return
    np.testing.assert_array_equal(base[:, ::2], 0.5)


def test_nan_and_inf_propagate_not_crash(be):
    x = r(2, 1, 6, 6)
    x[0, 0, 0, 0] = np.nan
    x[1, 0, 2, 2] = np.inf
    y = be.to_numpy(be.conv2d_forward(be.asarray(x), be.asarray(r(2, 1, 3, 3)), be.asarray(r(2))))
    assert np.isnan(y[0]).any() and not np.isfinite(y[1]).all()
    loss, _ = be.softmax_cross_entropy(be.asarray(np.array([[np.nan, 1.0]], f32)), be.asarray(np.array([0])))
    assert np.isnan(float(loss))


shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xs=shapes, f=st.integers(1, 4), k=st.integers(1, 6), stride=st.integers(1, 3), pad=st.integers(0, 3),
       dtype=st.sampled_from(["float32", "float64", "int32", "float16"]), wc=st.integers(1, 3))
def test_conv_fuzz_agrees_with_reference_or_refuses(be, xs, f, k, stride, pad, dtype, wc):
    """Random shapes, strides, pads and dtypes: a backend either agrees with NumPy or raises
    ValueError/TypeError, exactly when NumPy does."""
    from fastmnist.backends import numpy_backend as ref
    x = np.random.default_rng(0).standard_normal(xs).astype(dtype)
    w = np.random.default_rng(1).standard_normal((f, wc, k, k)).astype(dtype)
    b = np.zeros(f, dtype)
    try:
        want = ref.conv2d_forward(x, w, b, stride, pad)
    except (ValueError, TypeError) as err:
        with pytest.raises(type(err)):
            be.conv2d_forward(be.asarray(x), be.asarray(w), be.asarray(b), stride, pad)
        return
    got = be.to_numpy(be.conv2d_forward(be.asarray(x), be.asarray(w), be.asarray(b), stride, pad))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xs=shapes, size=st.integers(1, 4), stride=st.integers(1, 4))
def test_pool_fuzz_agrees_with_reference_or_refuses(be, xs, size, stride):
    from fastmnist.backends import numpy_backend as ref
    x = np.random.default_rng(2).standard_normal(xs).astype(f32)
    try:
        want_y, want_arg = ref.maxpool2d_forward(x, size, stride)
    except ValueError:
        with pytest.raises(ValueError):
            be.maxpool2d_forward(be.asarray(x), size, stride)
        return
    y, arg = be.maxpool2d_forward(be.asarray(x), size, stride)
    np.testing.assert_array_equal(be.to_numpy(y), want_y)
    np.testing.assert_array_equal(be.to_numpy(arg), want_arg)
    dy = np.ones_like(want_y)
    np.testing.assert_allclose(be.to_numpy(be.maxpool2d_backward(be.asarray(dy), arg, x.shape, size, stride)),
                               ref.maxpool2d_backward(dy, want_arg, x.shape, size, stride), rtol=1e-6)
