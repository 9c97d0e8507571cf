"""Whole training steps of a dense network in one compiled call: the numba backend's
``dense_train_steps`` (the reference is :func:`fastmnist.backends.numpy_backend.dense_train_steps`).

One call runs a chunk of steps — batch gather, forward, loss, backward, optimizer update — with no
Python between them; the layer sequence is read from the program's op codes, so one compiled
function (per dtype) serves every dense network. Two ways to do the products, chosen per batch:

* small batches (``<= config.STEP_SMALL_BATCH`` rows; the per-sample tutorials): loops over the
  rows of the weight matrix. A zero input (most of an MNIST image) skips its weight row in the
  forward product and, under plain SGD (where a zero gradient changes nothing), in the update,
  which fuses the weight gradient into the update without ever storing it;
* larger batches: BLAS products (``np.dot``, multi-threaded: the chunk itself is one thread).

Only imported where numba is installed.
"""
import math

import numpy as np
from numba import njit

from .contract import LOSS_MSE, OP_DENSE, OP_DROPOUT, OP_RELU, OP_SIGMOID, OPT_ADAGRAD, OPT_MOMENTUM, OPT_SGD

_jit = dict(cache=True, nogil=True)
# Reassociation lets LLVM vectorise the dot products; no 'nnan'/'ninf', so NaN and Inf still propagate.
_FM = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FM)
def _update(kind, p, g, s1, s2, lr, step_size, sqrt_bc2, hyper):
    """One optimizer update of the flat parameter ``p`` from gradient ``g`` (state ``s1``, ``s2``),
    with the arithmetic of the backend's own update kernels; ``hyper`` (beta1, beta2, eps,
    momentum) and the rates come rounded to the parameters' dtype, as those kernels round them."""
    if kind == OPT_SGD:
        for i in range(p.size):
            p[i] -= lr * g[i]
    elif kind == OPT_MOMENTUM:
        mom = hyper[3]
        for i in range(p.size):
            s1[i] = mom * s1[i] - lr * g[i]
            p[i] += s1[i]
    elif kind == OPT_ADAGRAD:
        eps = hyper[2]
        for i in range(p.size):
            s1[i] += g[i] * g[i]
            p[i] -= lr * g[i] / (math.sqrt(s1[i]) + eps)
    else:
        b1, b2, eps = hyper[0], hyper[1], hyper[2]
        for i in range(p.size):
            gi = g[i]
            s1[i] = b1 * s1[i] + (1 - b1) * gi
            s2[i] = b2 * s2[i] + (1 - b2) * gi * gi
            p[i] -= step_size * s1[i] / (math.sqrt(s2[i]) / sqrt_bc2 + eps)


@njit(**_jit)
def _dropout_forward(a, y, mask, p, scale, seed):
    """The contract's splitmix64 dropout of a batch (nb, M): element (r, c) is flat element r*M + c."""
    base = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    nb, m = a.shape
    for r in range(nb):
        for c in range(m):
            z = base + np.uint64(r * m + c + 1)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            u = np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)
            mask[r, c] = scale if u >= p else 0.0
            y[r, c] = a[r, c] * mask[r, c]


@njit(cache=True, nogil=True, fastmath=_FM)
def _dense_forward_rows(a, w, b, out):
    """out (nb, M) = a (nb, D) @ w (D, M) + b, one weight row per non-zero input."""
    nb, d = a.shape
    m = w.shape[1]
    for r in range(nb):
        o = out[r]
        o[:] = 0
        for i in range(d):
            xi = a[r, i]
            if xi != 0:
                wi = w[i]
                for j in range(m):
                    o[j] += xi * wi[j]
        for j in range(m):
            o[j] += b[j]


@njit(cache=True, nogil=True, fastmath=_FM)
def _dense_input_grad_rows(g, w, din):
    """din (nb, D) = g (nb, M) @ w.T, a dot product per element."""
    nb, m = g.shape
    d = w.shape[0]
    for r in range(nb):
        for i in range(d):
            s = g.dtype.type(0)
            wi = w[i]
            for j in range(m):
                s += g[r, j] * wi[j]
            din[r, i] = s


@njit(cache=True, nogil=True, fastmath=_FM)
def _dense_update_rows(kind, a, g, w, s1, s2, lr, step_size, sqrt_bc2, hyper, grow):
    """The weight gradient a.T @ g row by row, each row handed to the optimizer as it is made;
    under SGD a row whose inputs are all zero has a zero gradient and is skipped."""
    nb, d = a.shape
    m = g.shape[1]
    for i in range(d):
        nonzero = False
        for r in range(nb):
            if a[r, i] != 0:
                nonzero = True
        if not nonzero and kind == OPT_SGD:
            continue
        grow[:] = 0
        for r in range(nb):
            xi = a[r, i]
            if xi != 0:
                for j in range(m):
                    grow[j] += xi * g[r, j]
        _update(kind, w[i], grow, s1[i], s2[i], lr, step_size, sqrt_bc2, hyper)


@njit(**_jit)
def dense_train_steps_kernel(ops, widths, slot, drop_p, loss_kind, opt_kind, hyper, weights, biases,
                             w_s1, w_s2, b_s1, b_s2, xs, targets, labels, perm, first, batch, lrs, step_size,
                             sqrt_bc2, seeds, small_batch):
    """Steps ``first .. first + len(lrs) - 1``; returns (loss_sum, correct, done, bad_loss, bad)."""
    n = xs.shape[0]
    n_ops = ops.shape[0]
    dt = xs.dtype
    acts = [np.empty((batch, widths[0]), dt)]  # acts[k]: the input of op k (acts[n_ops]: the output)
    grads = [np.empty((batch, widths[0]), dt)]
    masks = [np.empty((1, 1), dt)]
    for k in range(n_ops):
        acts.append(np.empty((batch, widths[k + 1]), dt))
        grads.append(np.empty((batch, widths[k + 1]), dt))
        masks.append(np.empty((batch, widths[k + 1]) if ops[k] == OP_DROPOUT else (1, 1), dt))
    grow = np.empty(widths.max(), dt)  # one row of a weight gradient
    gbias = np.empty(widths.max(), dt)
    cast = np.empty(1, dt)  # rounds a float64 to the dtype
    loss_sum, correct = 0.0, 0
    for k in range(lrs.shape[0]):
        lo = (first + k) * batch
        hi = min(n, lo + batch)
        nb = hi - lo
        small = nb <= small_batch
        lr, ss, bc2 = lrs[k], step_size[k], sqrt_bc2[k]
        x0 = acts[0][:nb]
        for r in range(nb):
            x0[r] = xs[perm[lo + r]]
        # ---- forward
        for j in range(n_ops):
            a, y = acts[j][:nb], acts[j + 1][:nb]
            kind = ops[j]
            if kind == OP_DENSE:
                w, b = weights[slot[j]], biases[slot[j]]
                if small:
                    _dense_forward_rows(a, w, b, y)
                else:
                    y[:] = np.dot(a, w)
                    for r in range(nb):
                        for c in range(y.shape[1]):
                            y[r, c] += b[c]
            elif kind == OP_SIGMOID:
                for r in range(nb):
                    for c in range(y.shape[1]):
                        v = a[r, c]
                        if v >= 0:
                            y[r, c] = 1 / (1 + math.exp(-v))
                        else:
                            e = math.exp(v)
                            y[r, c] = e / (1 + e)
            elif kind == OP_RELU:
                for r in range(nb):
                    for c in range(y.shape[1]):
                        v = a[r, c]
                        y[r, c] = v if v > 0 else 0
            else:
                p = drop_p[j]
                _dropout_forward(a, y, masks[j + 1][:nb], p, 1.0 / (1.0 - p), seeds[k, slot[j]])
        # ---- loss, its gradient, accuracy
        out, d = acts[n_ops][:nb], grads[n_ops][:nb]
        m = out.shape[1]
        s = 0.0
        for r in range(nb):
            row = perm[lo + r]
            best = 0
            for c in range(1, m):
                if out[r, c] > out[r, best]:
                    best = c
            correct += best == labels[row]
            if loss_kind == LOSS_MSE:
                for c in range(m):
                    diff = out[r, c] - targets[row, c]
                    s += diff * diff
                    d[r, c] = diff * (1.0 / nb)
            else:
                lab = labels[row]
                top = out[r, 0]
                for c in range(1, m):
                    top = max(top, out[r, c])
                z = 0.0
                for c in range(m):
                    e = math.exp(out[r, c] - top)
                    d[r, c] = e
                    z += e
                s += math.log(z) - (out[r, lab] - top)
                for c in range(m):
                    d[r, c] = d[r, c] / z / nb
                d[r, lab] -= 1.0 / nb
        cast[0] = 0.5 * s / nb if loss_kind == LOSS_MSE else s / nb
        loss = np.float64(cast[0])
        loss_sum += loss * nb
        # ---- backward, each dense layer updated as soon as its input gradient is made
        for j in range(n_ops - 1, -1, -1):
            a, y, g, dx = acts[j][:nb], acts[j + 1][:nb], grads[j + 1][:nb], grads[j][:nb]
            kind = ops[j]
            if kind == OP_DENSE:
                i = slot[j]
                w, b = weights[i], biases[i]
                if j > 0:
                    if small:
                        _dense_input_grad_rows(g, w, dx)
                    else:
                        dx[:] = np.dot(g, w.T)
                gb = gbias[:b.size]
                gb[:] = 0
                for r in range(nb):
                    for c in range(b.size):
                        gb[c] += g[r, c]
                if small:
                    _dense_update_rows(opt_kind, a, g, w, w_s1[i], w_s2[i], lr, ss, bc2, hyper, grow[:b.size])
                else:
                    gw = np.dot(a.T, g)
                    _update(opt_kind, w.ravel(), gw.ravel(), w_s1[i].ravel(), w_s2[i].ravel(), lr, ss, bc2, hyper)
                _update(opt_kind, b, gb, b_s1[i], b_s2[i], lr, ss, bc2, hyper)
            elif kind == OP_SIGMOID:
                for r in range(nb):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] * y[r, c] * (1 - y[r, c])
            elif kind == OP_RELU:
                for r in range(nb):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] if y[r, c] > 0 else 0
            else:
                mk = masks[j + 1][:nb]
                for r in range(nb):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] * mk[r, c]
        if not math.isfinite(loss):
            return loss_sum, correct, k + 1, loss, True
    return loss_sum, correct, lrs.shape[0], 0.0, False
