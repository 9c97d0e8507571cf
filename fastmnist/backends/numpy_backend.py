"""The NumPy backend: the readable reference every other backend is tested against.

Vectorised NumPy, no Python loop over samples; matrix products go to NumPy's BLAS.
Shapes and semantics of every function are in :mod:`fastmnist.backends.contract`.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import contract as C

name = "numpy"
is_device = False
compiles_kernels = False


# ---- array plumbing (not kernels): how layers and the trainer move data ----

def available():
    return True, "NumPy is always available"


def asarray(a, dtype=None):
    return np.ascontiguousarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def synchronize():
    pass


def info():
    return {"numpy": np.__version__}


# ---- convolution via im2col ----

def im2col(x, kh, kw, stride=1, pad=0):
    """(N, C, H, W) -> (N*OH*OW, C*KH*KW); rows (n, oh, ow), columns (c, kh, kw)."""
    n, c, h, w, oh, ow = C.check_im2col(x, kh, kw, stride, pad)
    xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sliding_window_view(xp_, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    # win: (N, C, OH, OW, KH, KW) view -> one copy in (N, OH, OW, C, KH, KW) order
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def col2im(col, x_shape, kh, kw, stride=1, pad=0):
    """Adjoint of im2col: (N*OH*OW, C*KH*KW) -> (N, C, H, W), overlapping windows summed."""
    n, c, h, w, oh, ow = C.check_col2im(col, x_shape, kh, kw, stride, pad)
    return _col2im(col, n, c, h, w, oh, ow, kh, kw, stride, pad)


def _col2im(col, n, c, h, w, oh, ow, kh, kw, stride, pad):
    col6 = col.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C, KH, KW, OH, OW)
    out = np.zeros((n, c, h + 2 * pad + stride, w + 2 * pad + stride), col.dtype)
    for i in range(kh):  # KH*KW strided adds; each is a whole-batch vector op
        for j in range(kw):
            out[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += col6[:, :, i, j]
    return np.ascontiguousarray(out[:, :, pad:pad + h, pad:pad + w])


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)."""
    return conv2d_forward_cached(x, w, b, stride, pad)[0]


def conv2d_forward_cached(x, w, b, stride=1, pad=0):
    """Forward that also returns what the backward needs (the im2col matrix), for the layers."""
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, pad)
    y = cols @ w.reshape(f, -1).T + b  # (N*OH*OW, F)
    y = np.ascontiguousarray(y.reshape(n, oh, ow, f).transpose(0, 3, 1, 2))
    return y, (cols, x.shape, stride, pad)


def conv2d_backward(dy, x, w, stride=1, pad=0):
    """dy (N, F, OH, OW) -> (dx (N, C, H, W), dw (F, C, KH, KW), db (F,))."""
    C.check_conv2d_backward(dy, x, w, stride, pad)
    cols = im2col(x, w.shape[2], w.shape[3], stride, pad)
    return conv2d_backward_cached(dy, (cols, x.shape, stride, pad), w)


def conv2d_backward_cached(dy, cache, w, need_dx=True):
    cols, x_shape, stride, pad = cache
    f, c, kh, kw = w.shape
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, f)  # (N*OH*OW, F)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy.sum(axis=(0, 2, 3))
    if not need_dx:  # the first layer's input gradient is never used
        return None, dw, db
    n, _, h, wd = x_shape
    dcols = dy2 @ w.reshape(f, -1)
    return _col2im(dcols, n, c, h, wd, dy.shape[2], dy.shape[3], kh, kw, stride, pad), dw, db


def conv2d_relu_maxpool_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=2, channels_last=False):
    """Conv -> ReLU -> max-pool in one call (the layers' fused path); reference: the three kernels.
    ``channels_last`` says the next layer is one of these: a backend may then return y as the
    (N, F, PH, PW) view of (N, PH, PW, F) memory (numba does); the values are the same, and this
    reference ignores it."""
    y, conv_cache = conv2d_forward_cached(x, w, b, stride, pad)
    r = np.maximum(y, 0)
    p, arg = maxpool2d_forward(r, size, pool_stride)
    return p, (conv_cache, r, arg, size, pool_stride)


def conv2d_relu_maxpool_backward(dy, cache, w, need_dx=True):
    conv_cache, r, arg, size, pool_stride = cache
    d = maxpool2d_backward(dy, arg, r.shape, size, pool_stride)
    d[r <= 0] = 0
    return conv2d_backward_cached(d, conv_cache, w, need_dx)


# ---- max pooling ----

def maxpool2d_forward(x, size=2, stride=2):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) flat h*W+w indices)."""
    n, c, h, w, oh, ow = C.check_maxpool2d_forward(x, size, stride)
    win = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    win = win.reshape(n, c, oh, ow, size * size)
    local = win.argmax(axis=4)
    y = np.take_along_axis(win, local[..., None], axis=4)[..., 0]
    kh, kw = np.divmod(local, size)
    rows = np.arange(oh)[:, None] * stride + kh
    cols = np.arange(ow)[None, :] * stride + kw
    return np.ascontiguousarray(y), (rows * w + cols).astype(np.int64)


def maxpool2d_backward(dy, argmax, x_shape, size=2, stride=2, check=True):
    """dy (N, C, OH, OW) -> dx (N, C, H, W): each gradient routed to its window's max.

    ``check`` exists for the GPU backend (where the range check is a host read); on the CPU the
    argmax range is always checked: it costs nothing and a bad index must never be written."""
    n, c, h, w = C.check_maxpool2d_backward(dy, argmax, x_shape, size, stride)
    if argmax.size:
        C.check_argmax_range(argmax, h, w, int(argmax.min()), int(argmax.max()))
    dx = np.zeros((n, c, h * w), dy.dtype)
    idx = argmax.reshape(n, c, -1)
    if stride >= size:  # windows do not overlap: indices are unique per plane
        np.put_along_axis(dx, idx, dy.reshape(n, c, -1), axis=2)
    else:
        planes = np.arange(n * c)[:, None] * (h * w)
        np.add.at(dx.reshape(-1), (idx.reshape(n * c, -1) + planes).ravel(), dy.reshape(-1))
    return dx.reshape(n, c, h, w)


# ---- affine ----

def affine_forward(x, w, b):
    """x (N, D), w (D, M), b (M,) -> (N, M)."""
    C.check_affine_forward(x, w, b)
    return x @ w + b


def affine_backward(dy, x, w, need_dx=True):
    """dy (N, M) -> (dx (N, D), dw (D, M), db (M,)); dx is None when need_dx is False."""
    C.check_affine_backward(dy, x, w)
    return (dy @ w.T if need_dx else None), x.T @ dy, dy.sum(axis=0)


# ---- activations ----

def relu_forward(x):
    C.check_unary("relu_forward", x)
    return np.maximum(x, 0)


def relu_backward(dy, x):
    """x is the forward input (or output: the mask x > 0 is the same)."""
    C.check_unary_backward("relu_backward", dy, x)
    return np.where(x > 0, dy, 0).astype(dy.dtype, copy=False)


def sigmoid_forward(x):
    C.check_unary("sigmoid_forward", x)
    e = np.exp(-np.abs(x))  # never overflows: the argument is <= 0
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dy, y):
    """y is the forward *output*: d sigmoid = y (1 - y)."""
    C.check_unary_backward("sigmoid_backward", dy, y, "y")
    return dy * y * (1 - y)


# ---- losses ----

def softmax(x):
    """(N, M) -> (N, M), rows sum to 1; stable for any finite logits."""
    C.check_softmax(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels, check=True):
    """Mean cross-entropy of softmax(logits) -> (loss 0-d, dlogits (N, M)).

    ``check=False`` skips the label-range pass (callers that validated the labels once)."""
    C.check_softmax_cross_entropy(logits, labels)
    n, m = logits.shape
    if check:
        C.check_label_range("softmax_cross_entropy", int(labels.min()), int(labels.max()), m)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(np.log(s[:, 0]) - shifted[rows, labels])
    d = e / s
    d[rows, labels] -= 1
    d /= n
    return np.asarray(loss, logits.dtype), d


def mse_loss(y, t):
    """Quadratic cost sum((y - t)^2) / (2N) -> (loss 0-d, dy (N, M))."""
    C.check_mse(y, t)
    diff = y - t
    n = y.shape[0]
    return np.asarray(0.5 * np.sum(diff * diff) / n, y.dtype), diff / y.dtype.type(n)


# ---- dropout ----

def affine_warp(x, theta):
    """x (N, C, H, W), theta float64 (N, 2, 3) -> (N, C, H, W): each sample resampled through its
    affine map (contract: bilinear, zero outside, about the image centre)."""
    n, c, h, w = C.check_affine_warp(x, theta)
    theta = np.asarray(theta)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    v, u = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")  # (H, W) each
    sx = theta[:, 0, 0, None, None] * u + theta[:, 0, 1, None, None] * v + theta[:, 0, 2, None, None] + cx
    sy = theta[:, 1, 0, None, None] * u + theta[:, 1, 1, None, None] * v + theta[:, 1, 2, None, None] + cy
    return _sample(x, sx, sy).astype(x.dtype)


def elastic_warp(x, grid):
    """x (N, C, H, W), grid float64 (N, 2, GH, GW) -> (N, C, H, W): each output pixel (r, c) samples
    the input at (c, r) plus the displacement the grid gives there (its corners on the image's,
    bilinear between its points): a smooth random distortion from a few numbers a sample."""
    n, c, h, w = C.check_elastic_warp(x, grid)
    grid = np.asarray(grid)
    gh, gw = grid.shape[2], grid.shape[3]
    r, col = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    gy, gx = r * ((gh - 1) / max(h - 1, 1)), col * ((gw - 1) / max(w - 1, 1))  # (H, W) on the grid
    shift = _sample(grid, np.broadcast_to(gx, (n, h, w)), np.broadcast_to(gy, (n, h, w)))  # (N, 2, H, W)
    return _sample(x, col + shift[:, 0], r + shift[:, 1]).astype(x.dtype)


def _sample(x, sx, sy):
    """x (N, C, H, W) sampled bilinearly at (sx, sy) (N, OH, OW), zero outside -> float64 (N, C, OH, OW)."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros((n, x.shape[1]) + sx.shape[1:], np.float64)
    rows = np.arange(n)[:, None, None]
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            taken = x[rows, :, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # (N, OH, OW, C)
            out += np.moveaxis(taken, -1, 1) * (wy * wx * inside)[:, None]
    return out


def stroke_width(x, amount):
    """x (N, C, H, W), amount float64 (N,) in [-1, 1] -> (N, C, H, W): each sample moved toward its
    3x3 grey dilation (amount > 0, thicker strokes) or erosion (< 0, thinner) by |amount|."""
    C.check_per_sample("stroke_width", x, amount, "amount", -1.0, 1.0)
    h, w = x.shape[2], x.shape[3]
    edge = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")  # a window's max/min over pixels inside
    windows = [edge[:, :, a:a + h, b:b + w] for a in range(3) for b in range(3)]
    amount = np.asarray(amount)
    target = np.where((amount > 0)[:, None, None, None], np.max(windows, axis=0), np.min(windows, axis=0))
    t = np.abs(amount).astype(x.dtype)[:, None, None, None]
    return x + t * (target - x)


def gaussian_blur(x, sigma):
    """x (N, C, H, W), sigma float64 (N,) in [0, MAX_BLUR_SIGMA] px -> (N, C, H, W): each sample blurred
    by the contract's taps (blur_taps), rows then columns, zero outside."""
    C.check_per_sample("gaussian_blur", x, sigma, "sigma", 0.0, C.MAX_BLUR_SIGMA)
    r = C.BLUR_RADIUS
    taps = C.blur_taps(sigma).astype(x.dtype)[:, None, None, None, :]  # (N, 1, 1, 1, 2R+1)
    h, w = x.shape[2], x.shape[3]
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (r, r)))
    rows = sum(taps[..., k] * padded[:, :, :, k:k + w] for k in range(2 * r + 1))
    padded = np.pad(rows, ((0, 0), (0, 0), (r, r), (0, 0)))
    return sum(taps[..., k] * padded[:, :, k:k + h, :] for k in range(2 * r + 1)).astype(x.dtype)


def dropout_forward(x, p, seed):
    """Inverted dropout -> (y, mask); mask is 0 or 1/(1-p); same mask on every backend for a seed."""
    C.check_dropout(x, p, seed)
    u = C.dropout_uniform_reference(seed, x.size).reshape(x.shape)
    mask = np.where(u >= p, 1.0 / (1.0 - p), 0.0).astype(x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    C.check_unary_backward("dropout_backward", dy, mask, "mask")
    return dy * mask


# ---- optimizer updates, in place ----

def sgd_update(param, grad, lr):
    C.check_update("sgd_update", param, grad, lr)
    param -= param.dtype.type(lr) * grad


def momentum_update(param, grad, velocity, lr, momentum=0.9):
    """v = momentum * v - lr * g; param += v."""
    C.check_update("momentum_update", param, grad, lr, velocity=velocity)
    velocity *= param.dtype.type(momentum)
    velocity -= param.dtype.type(lr) * grad
    param += velocity


def adagrad_update(param, grad, h, lr, eps=1e-7):
    """h += g^2; param -= lr * g / (sqrt(h) + eps)."""
    C.check_update("adagrad_update", param, grad, lr, h=h)
    h += grad * grad
    param -= param.dtype.type(lr) * grad / (np.sqrt(h) + param.dtype.type(eps))


def adam_update(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam with bias correction (PyTorch's form); t is the 1-based step count."""
    C.check_update("adam_update", param, grad, lr, m=m, v=v)
    t = C.require_int("adam_update", "t", t, 1)
    _adam_apply(param, grad, m, v, *C.adam_corrections(lr, t, beta1, beta2), beta1, beta2, eps)


def _adam_apply(param, grad, m, v, step_size, sqrt_bc2, beta1, beta2, eps):
    """Adam's update with the bias corrections given: step_size = lr / (1 - beta1**t),
    sqrt_bc2 = sqrt(1 - beta2**t)."""
    f = param.dtype.type
    m *= f(beta1)
    m += f(1 - beta1) * grad
    v *= f(beta2)
    v += f(1 - beta2) * grad * grad
    denom = np.sqrt(v) / f(sqrt_bc2) + f(eps)
    param -= f(step_size) * m / denom


# ---- whole training steps of a dense network ----

def dense_train_steps(program, xs, targets, labels, perm, first, batch_size, lrs, step_size, sqrt_bc2, seeds):
    """Run ``len(lrs)`` training steps of ``program`` (a :class:`fastmnist.steps.StepProgram`).

    The reference: each step calls this backend's kernels in the order the layers and the optimizer
    call them, so its weights are bit for bit those of the per-layer path. Returns
    ``(step_loss, step_correct, done, bad_loss)``; see :func:`contract.check_dense_train_steps`.
    """
    n, batch_size, count = C.check_dense_train_steps(program, xs, targets, labels, perm, first, batch_size, lrs,
                                                     step_size, sqrt_bc2, seeds)
    step_loss, step_correct = np.zeros(count), np.zeros(count, np.int64)
    beta1, beta2, eps, momentum = (float(h) for h in program.hyper)
    for k in range(count):
        lo, hi = (first + k) * batch_size, min(n, (first + k + 1) * batch_size)
        idx = perm[lo:hi]
        acts, saved = [xs[idx]], []
        for kind, slot, p in zip(program.ops, program.slot, program.drop_p):  # forward
            a = acts[-1]
            if kind == C.OP_DENSE:
                acts.append(affine_forward(a, program.weights[slot], program.biases[slot]))
            elif kind == C.OP_SIGMOID:
                acts.append(sigmoid_forward(a))
            elif kind == C.OP_RELU:
                acts.append(relu_forward(a))
            else:
                y, mask = dropout_forward(a, float(p), int(seeds[k, slot]))
                saved.append(mask)
                acts.append(y)
        out = acts[-1]
        if program.loss == C.LOSS_MSE:
            loss, d = mse_loss(out, targets[idx])
        else:
            loss, d = softmax_cross_entropy(out, labels[idx], check=False)
        grads = {}
        for j in range(len(program.ops) - 1, -1, -1):  # backward
            kind, slot = program.ops[j], program.slot[j]
            if kind == C.OP_DENSE:
                d, grads[slot], db = affine_backward(d, acts[j], program.weights[slot], need_dx=j > 0)
                grads[slot] = (grads[slot], db)
            elif kind == C.OP_SIGMOID:
                d = sigmoid_backward(d, acts[j + 1])
            elif kind == C.OP_RELU:
                d = relu_backward(d, acts[j + 1])
            else:
                d = dropout_backward(d, saved.pop())
        for i, (w, b) in enumerate(zip(program.weights, program.biases)):  # the optimizer, parameter by parameter
            for param, grad, s in ((b, grads[i][1], 1), (w, grads[i][0], 0)):
                slots = [(program.weight_slots, program.bias_slots)[s][q][i] for q in range(len(program.weight_slots))]
                if program.optimizer == C.OPT_SGD:
                    sgd_update(param, grad, lrs[k])
                elif program.optimizer == C.OPT_MOMENTUM:
                    momentum_update(param, grad, slots[0], lrs[k], momentum)
                elif program.optimizer == C.OPT_ADAGRAD:
                    adagrad_update(param, grad, slots[0], lrs[k], eps)
                else:
                    _adam_apply(param, grad, slots[0], slots[1], step_size[k], sqrt_bc2[k], beta1, beta2, eps)
        step_correct[k] = int(count_correct(out, labels[idx]))
        step_loss[k] = float(loss) * (hi - lo)
        if not np.isfinite(loss):
            return step_loss[:k + 1], step_correct[:k + 1], k + 1, float(loss)
    return step_loss, step_correct, count, None


# ---- helpers the trainer uses ----

def one_hot(labels, m, dtype):
    return np.eye(m, dtype=dtype)[labels]


def count_correct(logits, labels):
    """Number of rows whose argmax equals the label, as a 0-d array (no host sync on GPUs)."""
    C.check_count_correct(logits, labels)
    return np.asarray(np.sum(np.argmax(logits, axis=1) == labels))
