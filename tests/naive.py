"""Slow, loop-based oracles: the definition every backend's kernels are checked against.

Plain Python loops over every index, float64 accumulation, no vectorisation tricks, so that a
mistake in a fast kernel cannot be shared by its oracle.
"""
import math

import numpy as np


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def padded_get(x, n, c, h, w):
    if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
        return x[n, c, h, w]
    return 0.0


def im2col(x, kh, kw, stride=1, pad=0):
    n_, c_, h_, w_ = x.shape
    oh, ow = out_size(h_, kh, stride, pad), out_size(w_, kw, stride, pad)
    col = np.zeros((n_ * oh * ow, c_ * kh * kw), x.dtype)
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                for c in range(c_):
                    for a in range(kh):
                        for b in range(kw):
                            col[(n * oh + i) * ow + j, (c * kh + a) * kw + b] = padded_get(
                                x, n, c, i * stride + a - pad, j * stride + b - pad)
    return col


def col2im(col, x_shape, kh, kw, stride=1, pad=0):
    n_, c_, h_, w_ = x_shape
    oh, ow = out_size(h_, kh, stride, pad), out_size(w_, kw, stride, pad)
    x = np.zeros(x_shape, np.float64)
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                for c in range(c_):
                    for a in range(kh):
                        for b in range(kw):
                            h, w = i * stride + a - pad, j * stride + b - pad
                            if 0 <= h < h_ and 0 <= w < w_:
                                x[n, c, h, w] += col[(n * oh + i) * ow + j, (c * kh + a) * kw + b]
    return x


def conv2d_forward(x, w, b, stride=1, pad=0):
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh, ow = out_size(h_, kh, stride, pad), out_size(w_, kw, stride, pad)
    y = np.zeros((n_, f_, oh, ow))
    for n in range(n_):
        for f in range(f_):
            for i in range(oh):
                for j in range(ow):
                    s = float(b[f])
                    for c in range(c_):
                        for a in range(kh):
                            for d in range(kw):
                                s += float(w[f, c, a, d]) * float(padded_get(x, n, c, i * stride + a - pad,
                                                                             j * stride + d - pad))
                    y[n, f, i, j] = s
    return y


def conv2d_backward(dy, x, w, stride=1, pad=0):
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dx, dw, db = np.zeros(x.shape), np.zeros(w.shape), np.zeros(f_)
    for n in range(n_):
        for f in range(f_):
            for i in range(oh):
                for j in range(ow):
                    g = float(dy[n, f, i, j])
                    db[f] += g
                    for c in range(c_):
                        for a in range(kh):
                            for d in range(kw):
                                h, v = i * stride + a - pad, j * stride + d - pad
                                if 0 <= h < h_ and 0 <= v < w_:
                                    dw[f, c, a, d] += g * float(x[n, c, h, v])
                                    dx[n, c, h, v] += g * float(w[f, c, a, d])
    return dx, dw, db


def maxpool2d_forward(x, size=2, stride=2):
    n_, c_, h_, w_ = x.shape
    oh, ow = out_size(h_, size, stride, 0), out_size(w_, size, stride, 0)
    y = np.zeros((n_, c_, oh, ow), x.dtype)
    arg = np.zeros((n_, c_, oh, ow), np.int64)
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    best, where = -math.inf, -1
                    for a in range(size):
                        for b in range(size):
                            h, w = i * stride + a, j * stride + b
                            if x[n, c, h, w] > best:  # strict: the first maximum wins ties
                                best, where = x[n, c, h, w], h * w_ + w
                    y[n, c, i, j], arg[n, c, i, j] = best, where
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape):
    dx = np.zeros(x_shape)
    n_, c_, h_, w_ = x_shape
    for n in range(n_):
        for c in range(c_):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    k = int(argmax[n, c, i, j])
                    dx[n, c, k // w_, k % w_] += dy[n, c, i, j]
    return dx


def affine_forward(x, w, b):
    y = np.zeros((x.shape[0], w.shape[1]))
    for n in range(x.shape[0]):
        for m in range(w.shape[1]):
            y[n, m] = float(b[m]) + sum(float(x[n, d]) * float(w[d, m]) for d in range(x.shape[1]))
    return y


def affine_backward(dy, x, w):
    dx, dw, db = np.zeros(x.shape), np.zeros(w.shape), np.zeros(w.shape[1])
    for n in range(x.shape[0]):
        for m in range(w.shape[1]):
            g = float(dy[n, m])
            db[m] += g
            for d in range(x.shape[1]):
                dx[n, d] += g * float(w[d, m])
                dw[d, m] += g * float(x[n, d])
    return dx, dw, db


def _map(fn, *arrays):
    out = np.zeros(arrays[0].shape)
    for idx in np.ndindex(arrays[0].shape):
        out[idx] = fn(*(float(a[idx]) for a in arrays))
    return out


def relu_forward(x):
    return _map(lambda v: v if v > 0 else 0.0, x)


def relu_backward(dy, x):
    return _map(lambda g, v: g if v > 0 else 0.0, dy, x)


def sigmoid_forward(x):
    return _map(lambda v: 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v)), x)


def sigmoid_backward(dy, y):
    return _map(lambda g, s: g * s * (1 - s), dy, y)


def softmax(x):
    out = np.zeros(x.shape)
    for n in range(x.shape[0]):
        top = max(float(v) for v in x[n])
        exps = [math.exp(float(v) - top) for v in x[n]]
        total = sum(exps)
        out[n] = [e / total for e in exps]
    return out


def softmax_cross_entropy(logits, labels):
    p = softmax(logits)
    n_ = logits.shape[0]
    loss = 0.0
    d = p.copy()
    for n in range(n_):
        top = max(float(v) for v in logits[n])
        lse = top + math.log(sum(math.exp(float(v) - top) for v in logits[n]))
        loss += lse - float(logits[n, labels[n]])
        d[n, labels[n]] -= 1
    return loss / n_, d / n_


def mse_loss(y, t):
    n_ = y.shape[0]
    loss = sum((float(a) - float(b)) ** 2 for a, b in zip(y.ravel(), t.ravel())) / (2 * n_)
    return loss, _map(lambda a, b: (a - b) / n_, y, t)


def dropout_uniform(seed, i):
    """splitmix64 of seed*golden + i + 1, top 24 bits: the contract's counter-based uniform."""
    mask64 = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + i + 1) & mask64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
    z ^= z >> 31
    return (z >> 40) / float(1 << 24)


def dropout_forward(x, p, seed):
    mask = np.zeros(x.size)
    for i in range(x.size):
        mask[i] = 1.0 / (1.0 - p) if dropout_uniform(seed, i) >= p else 0.0
    mask = mask.reshape(x.shape)
    return x * mask, mask


def sgd_update(param, grad, lr):
    return _map(lambda p, g: p - lr * g, param, grad)


def momentum_update(param, grad, velocity, lr, momentum):
    v = _map(lambda vv, g: momentum * vv - lr * g, velocity, grad)
    return param + v, v


def adagrad_update(param, grad, h, lr, eps):
    h2 = _map(lambda hh, g: hh + g * g, h, grad)
    return _map(lambda p, g, hh: p - lr * g / (math.sqrt(hh) + eps), param, grad, h2), h2


def adam_update(param, grad, m, v, t, lr, beta1, beta2, eps):
    m2 = _map(lambda mm, g: beta1 * mm + (1 - beta1) * g, m, grad)
    v2 = _map(lambda vv, g: beta2 * vv + (1 - beta2) * g * g, v, grad)
    p2 = _map(lambda p, mm, vv: p - lr * (mm / (1 - beta1 ** t)) / (math.sqrt(vv / (1 - beta2 ** t)) + eps),
              param, m2, v2)
    return p2, m2, v2


def affine_warp(x, theta):
    """Per output pixel: the input at theta @ (c - cx, r - cy, 1) + (cx, cy), bilinear, zero outside."""
    n_, c_, h_, w_ = x.shape
    cy, cx = (h_ - 1) / 2.0, (w_ - 1) / 2.0
    out = np.zeros(x.shape, np.float64)
    for n in range(n_):
        t = theta[n]
        for r in range(h_):
            for col in range(w_):
                u, v = col - cx, r - cy
                sx = float(t[0, 0]) * u + float(t[0, 1]) * v + float(t[0, 2]) + cx
                sy = float(t[1, 0]) * u + float(t[1, 1]) * v + float(t[1, 2]) + cy
                x0, y0 = math.floor(sx), math.floor(sy)
                fx, fy = sx - x0, sy - y0
                for c in range(c_):
                    acc = 0.0
                    for dy, wy in ((0, 1 - fy), (1, fy)):
                        for dx, wx in ((0, 1 - fx), (1, fx)):
                            acc += wy * wx * float(padded_get(x, n, c, y0 + dy, x0 + dx))
                    out[n, c, r, col] = acc
    return out


def stroke_width(x, amount):
    """Per pixel: toward the max (amount > 0) or min (< 0) of its 3x3 neighbours inside the image."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros(x.shape, np.float64)
    for n in range(n_):
        a = float(amount[n])
        for c in range(c_):
            for r in range(h_):
                for col in range(w_):
                    near = [float(x[n, c, i, j]) for i in range(r - 1, r + 2) for j in range(col - 1, col + 2)
                            if 0 <= i < h_ and 0 <= j < w_]
                    target = max(near) if a > 0 else min(near)
                    out[n, c, r, col] = float(x[n, c, r, col]) + abs(a) * (target - float(x[n, c, r, col]))
    return out


def gaussian_blur(x, sigma, radius=3):
    """Per pixel: the sum over a (2R+1)^2 window of g(i) g(j) x, g the normalised Gaussian, zero outside."""
    n_, c_, h_, w_ = x.shape
    out = np.zeros(x.shape, np.float64)
    for n in range(n_):
        s = float(sigma[n])
        g = [math.exp(-k * k / (2 * s * s)) if s > 0 else float(k == 0) for k in range(-radius, radius + 1)]
        g = [v / sum(g) for v in g]
        for c in range(c_):
            for r in range(h_):
                for col in range(w_):
                    out[n, c, r, col] = sum(g[i + radius] * g[j + radius] * float(padded_get(x, n, c, r + i, col + j))
                                            for i in range(-radius, radius + 1) for j in range(-radius, radius + 1))
    return out


def elastic_warp(x, grid):
    """Per output pixel: the displacement bilinear on the grid (corners on the image's corners), then
    the input there, bilinear, zero outside."""
    n_, c_, h_, w_ = x.shape
    gh, gw = grid.shape[2], grid.shape[3]

    def bilinear(plane, sx, sy):
        x0, y0 = math.floor(sx), math.floor(sy)
        fx, fy = sx - x0, sy - y0
        total = 0.0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                yy, xx = y0 + dy, x0 + dx
                if 0 <= yy < plane.shape[0] and 0 <= xx < plane.shape[1]:
                    total += wy * wx * float(plane[yy, xx])
        return total

    out = np.zeros(x.shape, np.float64)
    for n in range(n_):
        for r in range(h_):
            for col in range(w_):
                gy, gx = r * (gh - 1) / max(h_ - 1, 1), col * (gw - 1) / max(w_ - 1, 1)
                dx, dy = bilinear(grid[n, 0], gx, gy), bilinear(grid[n, 1], gx, gy)
                for c in range(c_):
                    out[n, c, r, col] = bilinear(x[n, c], col + dx, r + dy)
    return out
