"""Whole training steps of a dense network in one compiled call: the numba backend's
``dense_train_steps`` (the reference is :func:`fastmnist.backends.numpy_backend.dense_train_steps`).

One call runs a chunk of steps — batch gather, forward, loss, backward, optimizer update — with no
Python between them; the layer sequence is read from the program's op codes, so one compiled
function (per dtype) serves every dense network. Two ways to do a dense layer's products, chosen per
layer and step from its input:

* loops over the non-zero inputs, when the batch has at most ``config.STEP_SMALL_BATCH`` rows, or
  when at most ``config.STEP_SPARSE_DENSITY`` of the inputs are non-zero (an MNIST image is ~19%
  ink) and the layer has at least ``config.STEP_SPARSE_MIN_OUTPUTS`` outputs. A zero input skips
  its weight row in the forward product (``sparse_rows``, numba_tiles.py: a block of output
  columns in registers); each weight-gradient row is made from the samples that feature feeds and
  goes straight into the optimizer's update of that row, so no (D, M) gradient is ever stored;
  under plain SGD (where a zero gradient changes nothing) only the rows with a non-zero input move;
* BLAS products otherwise.

Batches of ``config.STEP_SPLIT_BATCH`` rows or more split every step of a chunk over two threads
in one parallel region (``_steps_part``; the threads meet at numba_sync.barrier). Where that cannot
run, batches of ``config.STEP_PARALLEL_BATCH`` rows or more spread the products, dropout and the
optimizer over Numba's threads a phase at a time (BLAS stays on one thread inside
``training_context``).

Only imported where numba is installed.
"""
import math

import numpy as np
from numba import njit, prange

from .contract import LOSS_MSE, OP_DENSE, OP_DROPOUT, OP_RELU, OP_SIGMOID, OPT_ADAGRAD, OPT_MOMENTUM, OPT_SGD
from .numba_cache import lock_caches
from .numba_kernels import __file__ as _kernels_file
from .numba_kernels import _softmax_ce_row, flush_subnormal, sigmoid_value
from .numba_sync import __file__ as _sync_file
from .numba_sync import barrier
from .numba_tiles import (
    HAS_PACK,
    VECTOR_BYTES,
    nonzeros,
    sparse_rows,
    sparse_rows_scaled,
    sparse_scatter,
    sparse_width,
    transpose8_rows,
)
from .numba_tiles import __file__ as _tiles_file

# error_model="numpy": a division by zero gives inf/nan as in NumPy instead of a Python exception,
# whose check in every iteration keeps LLVM from vectorising the optimizer loops.
_jit = dict(cache=True, nogil=True, error_model="numpy")
_pjit = dict(_jit, parallel=True)  # the large-batch variants, on every core
# Reassociation lets LLVM vectorise the dot products; no 'nnan'/'ninf', so NaN and Inf still propagate.
_FM = {"reassoc", "contract"}
_jitfm = dict(_jit, fastmath=_FM)
# A parallel region wakes a sleeping thread (tens of microseconds): an optimizer update goes to the
# threads only from this many parameters (relu-mlp's 784x256: yes; its 256x10: no).
_PARALLEL_MIN_UPDATE = 1 << 16
# The features' gradient rows and updates go to the threads in this many ranges (a constant: a
# thread count read inside a kernel would keep it out of numba's cache); several per thread even
# out the ranges whose pixels carry more ink.
_FEATURE_PARTS = 16
# room past a row's entries for numba_tiles.nonzeros, which stores whole vectors (float32 lanes:
# the most of any dtype)
_ROW_SLACK = VECTOR_BYTES // 4


@njit(**_jitfm)
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
        b1, b2, eps, c1, c2 = hyper[0], hyper[1], hyper[2], hyper[4], hyper[5]  # c = 1 - beta, in the dtype
        tiny = np.finfo(p.dtype).tiny
        for i in range(p.size):
            gi = g[i]
            s1[i] = flush_subnormal(b1 * s1[i] + c1 * gi, tiny)
            s2[i] = flush_subnormal(b2 * s2[i] + c2 * gi * gi, tiny)
            p[i] -= step_size * s1[i] / (math.sqrt(s2[i]) / sqrt_bc2 + eps)


@njit(**_jit)
def _dropout_row(a, y, mask, p, scale, seed, r):
    """Row r of the contract's splitmix64 dropout of a batch (nb, M): element (r, c) is flat r*M + c."""
    base = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    m = a.shape[1]
    for c in range(m):
        z = base + np.uint64(r * m + c + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        u = np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)
        mask[r, c] = scale if u >= p else 0.0
        y[r, c] = a[r, c] * mask[r, c]


@njit(**_jit)
def _dropout_rows(a, y, mask, p, scale, seed, r0, r1):
    for r in range(r0, r1):
        _dropout_row(a, y, mask, p, scale, seed, r)


@njit(**_pjit)
def _dropout_forward_par(a, y, mask, p, scale, seed):
    for r in prange(a.shape[0]):
        _dropout_row(a, y, mask, p, scale, seed, r)


@njit(**_jit)
def _nonzeros_row(a, a0, n, idx, val):
    """The non-zero entries of a[a0:a0 + n]: their positions from a0 in idx[:count], values in
    val[:count]; returns count. idx and val have _ROW_SLACK entries more than n. A vector at a time on AVX-512 and AVX2
    (numba_tiles.nonzeros: by compresses, 11.5 against 46 us for a batch of 100 MNIST images on a
    Zen 4; by table-driven permutes on AVX2); else branch-free: every entry is written, the count
    moves on non-zeros only (measured 2.7x faster than skipping all-zero runs of 16 with a test,
    whose loop does not vectorise)."""
    if HAS_PACK:
        return nonzeros(a, a0, n, idx, val)
    c = 0
    for i in range(n):
        v = a[a0 + i]
        idx[c] = i
        val[c] = v
        c += v != 0
    return c


@njit(**_jit)
def _nonzeros_gathered(xs, perm, lo, idx, val, cnt, par):
    """Row r of the batch, xs[perm[lo + r]] read in place (no gathered copy), as its non-zeros
    idx[r, :cnt[r]], val[r, :cnt[r]]; returns their total. On the threads when ``par``."""
    if par:
        _nonzeros_par(xs, perm, lo, idx, val, cnt)
    else:
        for r in range(cnt.shape[0]):
            cnt[r] = _nonzeros_row(xs[perm[lo + r]], 0, xs.shape[1], idx[r], val[r])
    return cnt.sum()


@njit(**_pjit)
def _nonzeros_par(xs, perm, lo, idx, val, cnt):
    for r in prange(cnt.shape[0]):
        cnt[r] = _nonzeros_row(xs[perm[lo + r]], 0, xs.shape[1], idx[r], val[r])


@njit(**_jit)
def _sparse_forward_row(idx, val, cnt, wflat, b, oflat, r):
    """out[r] = a[r] @ w + b from row r's non-zeros, a register block of columns at a time;
    w (D, M) and out (nb, M) flat."""
    m = b.shape[0]
    for j in range(m):
        oflat[r * m + j] = b[j]
    _sparse_times_dense(idx[r], val[r], 0, cnt[r], wflat, m, oflat, r * m)


@njit(**_jit)
def _sparse_times_dense(ix, v, lo, hi, bflat, m, out, obase, scale=None):
    """out[obase + c] += sum over k in [lo, hi) of v[k] * b[ix[k], c] for every column c of
    b (., M), flat, in blocks of the columns sparse_rows holds in registers; with ``scale``,
    out[obase + c] += scale * that sum (sparse_rows_scaled: plain SGD's w -= lr * row). (Flat
    arrays: a reshape per call cost a library call per row or feature, ~1 us a step.)"""
    block = sparse_width(bflat)
    for c0 in range(0, m, block):
        if scale is None:
            sparse_rows(ix, v, lo, hi, bflat, c0, m, out, obase + c0, min(block, m - c0))
        else:
            sparse_rows_scaled(ix, v, lo, hi, bflat, c0, m, out, obase + c0, min(block, m - c0), scale)


@njit(**_jit)
def _feature_lists(xs, perm, lo, nb, f0, f1, block, starts, start, csc_r, csc_v):
    """Features f0 <= f < f1 of the batch's rows xs[perm[lo + r]] (r < nb), read in place, as a
    list of non-zeros per feature (the rows of a.T @ g they feed): feature f's samples are
    csc_r[start[f - f0]:start[f - f0 + 1]], in ascending order, values csc_v; returns their count.
    Eight rows at a time go through ``block`` (the features by rows, (f1 - f0) x nb rounded up to
    8) by vector transposes, then each feature's row of it through the vector non-zeros: about half
    the time of finding each row's non-zeros and regrouping them by feature (a counting sort), 34-44
    against 62-82 us for half of a batch of 100 MNIST images on a Zen 3, in cache
    (benchmarks/feature_lists.py).
    csc_r and csc_v have _ROW_SLACK entries more than the count (whole-vector stores)."""
    d = xs.shape[1]
    nf = f1 - f0
    nb8 = (nb + 7) // 8 * 8
    xflat, whole = xs.reshape(-1), nf - nf % 8
    for r0 in range(0, nb8, 8):
        if r0 + 8 <= nb:
            for i in range(8):
                starts[i] = perm[lo + r0 + i] * d + f0
            for c in range(0, whole, 8):
                transpose8_rows(xflat, starts, c, block, c * nb8 + r0, nb8)
            first = whole
        else:  # the last rows of a batch that is not a multiple of 8, and zeros past them
            first = 0
        for c in range(first, nf):
            for i in range(8):
                block[c * nb8 + r0 + i] = xs[perm[lo + r0 + i], f0 + c] if r0 + i < nb else 0
    at = 0
    for c in range(nf):
        start[c] = at
        at += _nonzeros_row(block, c * nb8, nb, csc_r[at:], csc_v[at:])
    start[nf] = at
    return at


@njit(**_jit)
def _sparse_partial(start, csc_r, csc_v, w, f0, f1, out):
    """out (nb, >= M) = a[:, f0:f1] @ w[f0:f1] from the lists of _feature_lists: one part's share
    of a product split by input features. Each weight row is read once and added to the rows of
    the samples its feature feeds, in ascending feature order: the sums of sparse_rows, rounding
    for rounding. out's rows need room for M rounded up to a vector (sparse_scatter)."""
    m, ld = w.shape[1], out.shape[1]
    out[:] = 0
    wflat, oflat = w.reshape(-1), out.reshape(-1)
    block = sparse_width(wflat)
    for f in range(f0, f1):
        lo, hi = start[f - f0], start[f - f0 + 1]
        for c0 in range(0, m, block):
            sparse_scatter(csc_r, csc_v, lo, hi, wflat, f * m + c0, oflat, ld, c0, min(block, m - c0))


@njit(**_jit)
def _sparse_forward(idx, val, cnt, w, b, out):
    wflat, oflat = w.reshape(-1), out.reshape(-1)
    for r in range(out.shape[0]):
        _sparse_forward_row(idx, val, cnt, wflat, b, oflat, r)


@njit(**_pjit)
def _sparse_forward_par(idx, val, cnt, w, b, out):
    wflat, oflat = w.reshape(-1), out.reshape(-1)
    for r in prange(out.shape[0]):
        _sparse_forward_row(idx, val, cnt, wflat, b, oflat, r)


@njit(**_jitfm)
def _input_grad_rows(g, w, din):
    """din (nb, D) = g (nb, M) @ w.T, a dot product per element (small batches)."""
    nb, m = g.shape
    d = w.shape[0]
    for r in range(nb):
        for i in range(d):
            s = g.dtype.type(0)
            wi = w[i]
            for j in range(m):
                s += g[r, j] * wi[j]
            din[r, i] = s


@njit(**_jitfm)
def _sgd_one_sample(idx, val, cnt, g, w, lr):
    """Plain SGD on a batch of one: w[i] -= lr * (a[i] * g) for the non-zero inputs only (a zero
    input's gradient row is zero): the gradient is never stored."""
    g0 = g[0]
    for k in range(cnt[0]):
        v, wi = val[0, k], w[idx[0, k]]
        for j in range(wi.size):
            wi[j] -= lr * (v * g0[j])


@njit(**_jit)
def _by_feature(idx, val, cnt, start, fill, csc_r, csc_v, runs, f0, f1):
    """a's non-zeros in features f0 <= f < f1 regrouped by feature (the rows of a.T @ g they
    write): feature f has samples csc_r[start[f - f0]:start[f - f0 + 1]] in ascending order, with
    values csc_v. A counting sort (an earlier version kept first-seen order
    through a slot map: 1.5x slower, benchmarks/sparse_loops.py). A row's non-zeros are in
    ascending feature order, so those of a range of features are one run of them: row r's is
    idx[r, runs[r, 0]:runs[r, 1]]."""
    d = f1 - f0
    for f in range(d + 1):
        start[f] = 0
    for r in range(cnt.shape[0]):
        ir = idx[r]
        k0, k1 = 0, cnt[r]
        if f0 > 0 or (k1 > 0 and ir[k1 - 1] >= f1):  # not every one of the row's features
            k0, k1 = np.searchsorted(ir[:k1], f0), np.searchsorted(ir[:k1], f1)
        runs[r, 0], runs[r, 1] = k0, k1
        for k in range(k0, k1):
            start[ir[k] - f0 + 1] += 1
    for f in range(d):
        start[f + 1] += start[f]
        fill[f] = start[f]
    for r in range(cnt.shape[0]):
        ir, vr = idx[r], val[r]
        for k in range(runs[r, 0], runs[r, 1]):
            f = ir[k] - f0
            at = fill[f]
            csc_r[at] = r
            csc_v[at] = vr[k]
            fill[f] = at + 1


@njit(**_jit)
def _grad_update_rows(f0, f1, kind, start, csc_r, csc_v, g, w, s1, s2, lr, ss, bc2, hyper, row, base=0):
    """For features f0 <= f < f1: row (M,) = row f of a.T @ g (the samples that feature feeds:
    csc_r[start[f - base]:start[f - base + 1]], as _by_feature from feature ``base`` left them),
    then the optimizer's update of w[f] from it while it is in cache (the whole (D, M) gradient
    was written, read and zeroed again every step). Under plain SGD the row stays in registers
    and goes into w[f] at once (no row buffer, no update pass). A feature no sample feeds has a
    zero gradient: plain SGD skips it, momentum, AdaGrad and Adam still move it."""
    gflat, wflat, m = g.reshape(-1), w.reshape(-1), g.shape[1]
    for f in range(f0, f1):
        lo, hi = start[f - base], start[f - base + 1]
        if kind == OPT_SGD:  # w[f] -= lr * (its row of a.T @ g), the row in registers
            if hi > lo:
                _sparse_times_dense(csc_r, csc_v, lo, hi, gflat, m, wflat, f * m, -lr)
            continue
        row[:] = 0
        _sparse_times_dense(csc_r, csc_v, lo, hi, gflat, m, row, 0)
        _update(kind, w[f], row, s1[f], s2[f], lr, ss, bc2, hyper)


@njit(**_pjit)
def _grad_update_rows_par(parts, kind, start, csc_r, csc_v, g, w, s1, s2, lr, ss, bc2, hyper):
    """_grad_update_rows over ``parts`` near-equal ranges of features, one per thread."""
    d = w.shape[0]
    for part in prange(parts):
        row = np.empty(w.shape[1], w.dtype)
        _grad_update_rows(part * d // parts, (part + 1) * d // parts, kind, start, csc_r, csc_v, g, w,
                          s1, s2, lr, ss, bc2, hyper, row)


@njit(**_pjit)
def _update_par(kind, p, g, s1, s2, lr, step_size, sqrt_bc2, hyper):
    """_update over the flat arrays, in blocks of 4096 on the threads (elementwise: same result)."""
    n = p.size
    for q in prange((n + 4095) // 4096):
        lo, hi = q * 4096, min(n, (q + 1) * 4096)
        _update(kind, p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi], lr, step_size, sqrt_bc2, hyper)


@njit(**_jit)
def dense_train_steps_kernel(ops, widths, slot, drop_p, loss_kind, opt_kind, hyper, weights, biases,
                             w_s1, w_s2, b_s1, b_s2, xs, targets, labels, perm, first, batch, lrs, step_size,
                             sqrt_bc2, seeds, small_batch, sparse_density, sparse_min_outputs, parallel_batch,
                             parts):
    """Steps ``first .. first + len(lrs) - 1``; returns (step_loss, step_correct, done, bad_loss, bad):
    each step done's mean loss times its rows and its correct predictions.

    ``parts`` > 1: every step is split over that many threads (see ``_steps_part``), which the
    caller guarantees run at once; 1: one thread, with parallel regions inside the steps from
    ``parallel_batch`` rows."""
    n_ops = ops.shape[0]
    dt = xs.dtype
    acts = [np.empty((batch, widths[0]), dt)]  # acts[k]: the input of op k (acts[n_ops]: the output)
    grads = [np.empty((batch, widths[0]), dt)]
    # typed empty lists (a comprehension over nothing still types its element)
    masks = [np.empty((1, 1), dt) for _ in range(0)]
    idxs = [np.empty((1, 1), np.int32) for _ in range(0)]
    vals = [np.empty((1, 1), dt) for _ in range(0)]
    cnts = [np.empty(1, np.int64) for _ in range(0)]
    grad_rows = [np.empty((1, 1), dt) for _ in range(0)]
    for k in range(n_ops):
        dense, d, m = ops[k] == OP_DENSE, widths[k], widths[k + 1]
        acts.append(np.empty((batch, m), dt))
        grads.append(np.empty((batch, m), dt))
        masks.append(np.empty((batch, m) if ops[k] == OP_DROPOUT else (1, 1), dt))
        # a dense layer's input, as non-zeros; a vector more per row for nonzeros' whole-vector stores
        idxs.append(np.empty((batch, d + _ROW_SLACK) if dense else (1, 1), np.int32))
        vals.append(np.empty((batch, d + _ROW_SLACK) if dense else (1, 1), dt))
        cnts.append(np.empty(batch if dense else 1, np.int64))
        grad_rows.append(np.empty((parts, m) if dense else (1, 1), dt))  # a weight-gradient row per part
    # per part: a dense layer's non-zero inputs in its features, grouped by feature (the layers'
    # updates take turns with them), and the counting sort's cursor per feature
    wide = widths.max()
    start, fill = np.empty((parts, wide + 1), np.int64), np.empty((parts, wide), np.int64)
    csc_r, csc_v = np.empty((parts, batch * wide), np.int32), np.empty((parts, batch * wide), dt)
    runs = np.empty((parts, batch, 2), np.int64)  # each row's run of non-zeros in the part's features
    # split steps, per part: its share of the input features by rows (_feature_lists), their
    # non-zeros by feature, the eight rows' starts it transposes, and its share of the input
    # layer's product (rows padded to whole vectors for sparse_scatter)
    own = (widths[0] // parts + 1) if parts > 1 else 1
    block = np.empty((parts, own * ((batch + 7) // 8 * 8) if parts > 1 else 1), dt)
    in_start = np.empty((parts, own + 1), np.int64)
    in_r = np.empty((parts, own * batch + _ROW_SLACK if parts > 1 else 1), np.int32)
    in_v = np.empty((parts, own * batch + _ROW_SLACK if parts > 1 else 1), dt)
    row_starts = np.empty((parts, 8), np.int64)
    padded = (widths[1] + _ROW_SLACK - 1) // _ROW_SLACK * _ROW_SLACK
    partial = np.empty((parts, batch if parts > 1 else 1, padded), dt)
    # shared by the parts besides the layers' buffers: numba_sync.barrier's counter; per layer, each
    # part's count of its non-zero inputs; each sample's loss (summed in order once all parts are
    # done: the same sum as on one thread); per part: its share of a layer's bias gradient (its
    # columns), and steps done, the non-finite loss, whether one
    sync, nonzero, row_loss = np.zeros(16, np.int64), np.empty((n_ops, parts), np.int64), np.empty(batch)
    gbias, res = np.empty((parts, wide), dt), np.zeros((parts, 3))
    # each step's mean loss times its rows (the same on every part; part 0 writes it) and each
    # part's count of correct predictions: the trainer adds them up step by step, so that its sums
    # and its curve's points do not depend on where the chunks end
    step_loss, step_correct = np.zeros(lrs.shape[0]), np.zeros((parts, lrs.shape[0]), np.int64)
    # each step's labels (and squared error's targets), gathered as the step starts (_steps_part)
    step_lab = np.empty(batch, np.int64)
    step_tgt = np.empty((batch, widths[n_ops]) if loss_kind == LOSS_MSE else (1, 1), targets.dtype)
    args = (ops, widths, slot, drop_p, loss_kind, opt_kind, hyper, weights, biases, w_s1, w_s2, b_s1, b_s2,
            xs, targets, labels, perm, first, batch, lrs, step_size, sqrt_bc2, seeds, small_batch,
            sparse_density, sparse_min_outputs, parallel_batch, acts, grads, masks, idxs, vals, cnts,
            grad_rows, start, fill, csc_r, csc_v, runs, block, in_start, in_r, in_v, row_starts, partial, sync, nonzero,
            row_loss, gbias, res, step_lab, step_tgt, step_loss, step_correct)
    if parts > 1:
        _steps_split(parts, args)
    else:
        _steps_part(0, 1, args)
    done = int(res[0, 0])
    return step_loss[:done], step_correct.sum(axis=0)[:done], done, res[0, 1], res[0, 2] != 0


@njit(**_pjit)
def _steps_split(parts, args):
    """One parallel region for the whole chunk: part t of every step on thread t (numba_sync.py:
    a region per phase would wake the sleeping threads each time)."""
    for t in prange(parts):
        _steps_part(t, parts, args)


@njit(**_jit)
def _steps_part(t, parts, args):
    """Part t of ``parts`` of every step of the chunk. The input layer's non-zeros and product over
    the part's share of the input features, for every row (its weight rows stay with this thread);
    a barrier; the rest of the forward pass, the loss and every input gradient over the part's
    share of the batch's rows; a barrier; each dense layer's update over the part's share of its
    weight rows (input features) and bias columns, which only that part writes; a barrier before
    the next step reads the weights. With ``parts`` 1, the whole step on this thread."""
    (ops, widths, slot, drop_p, loss_kind, opt_kind, hyper, weights, biases, w_s1, w_s2, b_s1, b_s2,
     xs, targets, labels, perm, first, batch, lrs, step_size, sqrt_bc2, seeds, small_batch,
     sparse_density, sparse_min_outputs, parallel_batch, acts, grads, masks, idxs, vals, cnts,
     grad_rows, start, fill, csc_r, csc_v, runs, block, in_start, in_r, in_v, row_starts, partial, sync, nonzero,
     row_loss, gbias, res, step_lab, step_tgt, step_loss, step_correct) = args
    n = xs.shape[0]
    n_ops = ops.shape[0]
    dt = xs.dtype
    sparse = np.zeros(n_ops, np.bool_)
    guess = True  # whether the input layer's product runs on the row loops (it did the last step)
    d_in = widths[0]
    cast = np.empty(1, dt)  # rounds a float64 to the dtype
    identity = np.arange(batch)  # a hidden layer's input is already the batch, row by row
    own_row = np.empty((1, widths[n_ops]), dt)  # a loss gradient row, allocated by this thread
    passed = 0  # barriers crossed
    for k in range(lrs.shape[0]):
        lo = (first + k) * batch
        hi = min(n, lo + batch)
        nb = hi - lo
        r0, r1 = t * nb // parts, (t + 1) * nb // parts  # this part's rows
        par = parts == 1 and nb >= parallel_batch
        lr, ss, bc2 = lrs[k], step_size[k], sqrt_bc2[k]
        # This part's labels (and targets) first: read in a random order from the whole training set,
        # they wait on memory, and the forward pass hides the wait (read by the loss, they cost 3-4%
        # of a two-layer step, measured).
        for r in range(r0, r1):
            row = perm[lo + r]
            step_lab[r] = labels[row]
            if loss_kind == LOSS_MSE:
                for c in range(step_tgt.shape[1]):
                    step_tgt[r, c] = targets[row, c]
        x0 = acts[0]
        if ops[0] != OP_DENSE:  # a first dense layer reads its non-zeros in place; gathered if BLAS needs it
            for r in range(r0, r1):
                x0[r] = xs[perm[lo + r]]
        # ---- forward, rows r0 .. r1 - 1
        for j in range(n_ops):
            a, y = acts[j], acts[j + 1]
            kind = ops[j]
            if kind == OP_DENSE:
                w, b = weights[slot[j]], biases[slot[j]]
                idx, val, cnt = idxs[j][r0:r1], vals[j][r0:r1], cnts[j][r0:r1]
                # Loops over the non-zeros for small batches, or for sparse inputs feeding many outputs
                # (a 50-wide layer ran about as fast either way: docs/benchmarks.md, "Sparse rows").
                loops = nb <= small_batch or w.shape[1] >= sparse_min_outputs
                if loops and j == 0 and parts > 1:
                    # The input layer split by features instead: this part's share of every row's
                    # non-zeros, by feature, and of the product, so that each weight row is read and
                    # written by one thread only (a row split read all of w on both cores, and the
                    # weight rows one had updated went to the other's cache every step).
                    f0, f1 = t * d_in // parts, (t + 1) * d_in // parts
                    st, cr, cv, pt = in_start[t], in_r[t], in_v[t], partial[t][:nb]
                    nonzero[j, t] = _feature_lists(xs, perm, lo, nb, f0, f1, block[t], row_starts[t], st, cr, cv)
                    if guess:  # the product before the choice, as the last step chose it: a barrier less
                        _sparse_partial(st, cr, cv, w, f0, f1, pt)
                    passed += 1
                    barrier(sync, parts, passed)
                    sparse[j] = nb <= small_batch or nonzero[j].sum() <= sparse_density * nb * d_in
                    if sparse[j] and not guess:
                        _sparse_partial(st, cr, cv, w, f0, f1, pt)
                        passed += 1
                        barrier(sync, parts, passed)
                    guess = sparse[j]
                    if sparse[j]:
                        for r in range(r0, r1):
                            for c in range(y.shape[1]):
                                v = b[c]
                                for q in range(parts):
                                    v += partial[q, r, c]
                                y[r, c] = v
                        continue
                elif loops:
                    if j == 0:
                        nonzero[j, t] = _nonzeros_gathered(xs, perm, lo + r0, idx, val, cnt, par)
                    else:
                        nonzero[j, t] = _nonzeros_gathered(a, identity, r0, idx, val, cnt, par)
                    passed += 1
                    barrier(sync, parts, passed)
                    sparse[j] = nb <= small_batch or nonzero[j].sum() <= sparse_density * nb * a.shape[1]
                else:
                    sparse[j] = False
                if j == 0 and not sparse[j]:
                    for r in range(r0, r1):
                        x0[r] = xs[perm[lo + r]]
                if sparse[j] and par:
                    _sparse_forward_par(idx, val, cnt, w, b, y[r0:r1])
                elif sparse[j]:
                    _sparse_forward(idx, val, cnt, w, b, y[r0:r1])
                elif r1 > r0:
                    y[r0:r1] = np.dot(a[r0:r1], w)
                    for r in range(r0, r1):
                        for c in range(y.shape[1]):
                            y[r, c] += b[c]
            elif kind == OP_SIGMOID:
                for r in range(r0, r1):
                    for c in range(y.shape[1]):
                        y[r, c] = sigmoid_value(a[r, c])
            elif kind == OP_RELU:
                for r in range(r0, r1):
                    for c in range(y.shape[1]):
                        v = a[r, c]
                        y[r, c] = v if v > 0 else 0
            else:
                p = drop_p[j]
                if par:
                    _dropout_forward_par(a[:nb], y[:nb], masks[j][:nb], p, 1.0 / (1.0 - p), seeds[k, slot[j]])
                else:
                    _dropout_rows(a, y, masks[j], p, 1.0 / (1.0 - p), seeds[k, slot[j]], r0, r1)
        # ---- loss, its gradient, accuracy
        out, d = acts[n_ops], grads[n_ops]
        m = out.shape[1]
        right = 0
        for r in range(r0, r1):
            best = 0
            for c in range(1, m):
                if out[r, c] > out[r, best]:
                    best = c
            right += best == step_lab[r]
            if loss_kind == LOSS_MSE:
                s = 0.0
                for c in range(m):
                    diff = out[r, c] - step_tgt[r, c]
                    s += diff * diff
                    d[r, c] = diff * (1.0 / nb)
                row_loss[r] = s
            else:
                # into a row this thread allocated, then copied: in place, in d's rows (which both
                # parts read in the last step's update), the loss took 46k cycles a part and step of
                # two-layer on a 2-core Xeon, 37k this way (time stamps in a scratch copy)
                row_loss[r] = _softmax_ce_row(out[r:r + 1], own_row, 0, step_lab[r], nb)
                for c in range(m):
                    d[r, c] = own_row[0, c]
        # ---- backward: every input gradient, with the weights before this step's updates
        for j in range(n_ops - 1, 0, -1):
            y, g, dx = acts[j + 1], grads[j + 1], grads[j]
            kind = ops[j]
            if kind == OP_DENSE:
                w = weights[slot[j]]
                if nb <= small_batch:
                    _input_grad_rows(g[r0:r1], w, dx[r0:r1])
                elif r1 > r0:
                    dx[r0:r1] = np.dot(g[r0:r1], w.T)
            elif kind == OP_SIGMOID:
                for r in range(r0, r1):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] * y[r, c] * (1 - y[r, c])
            elif kind == OP_RELU:
                for r in range(r0, r1):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] if y[r, c] > 0 else 0
            else:
                mk = masks[j]
                for r in range(r0, r1):
                    for c in range(y.shape[1]):
                        dx[r, c] = g[r, c] * mk[r, c]
        passed += 1
        barrier(sync, parts, passed)
        s = 0.0
        for r in range(nb):
            s += row_loss[r]
        cast[0] = 0.5 * s / nb if loss_kind == LOSS_MSE else s / nb
        loss = np.float64(cast[0])
        if t == 0:
            step_loss[k] = loss * nb
        step_correct[t, k] = right
        # ---- updates: this part's weight rows and bias columns of every dense layer
        for j in range(n_ops - 1, -1, -1):
            if ops[j] != OP_DENSE:
                continue
            a, g = acts[j][:nb], grads[j + 1][:nb]
            i = slot[j]
            w, b = weights[i], biases[i]
            c0, c1 = t * b.size // parts, (t + 1) * b.size // parts
            gb = gbias[t][:c1 - c0]
            gb[:] = 0
            for r in range(nb):
                for c in range(c0, c1):
                    gb[c - c0] += g[r, c]
            _update(opt_kind, b[c0:c1], gb, b_s1[i][c0:c1], b_s2[i][c0:c1], lr, ss, bc2, hyper)
            f0, f1 = t * w.shape[0] // parts, (t + 1) * w.shape[0] // parts
            if j == 0 and parts > 1 and sparse[j]:  # from this part's lists by feature (_feature_lists)
                _grad_update_rows(f0, f1, opt_kind, in_start[t], in_r[t], in_v[t], g, w, w_s1[i], w_s2[i],
                                  lr, ss, bc2, hyper, grad_rows[j][t], f0)
                continue
            _weight_update(opt_kind, sparse[j], par, a, idxs[j][:nb], vals[j][:nb], cnts[j][:nb], g, w,
                           grad_rows[j][t], start[t], fill[t], csc_r[t], csc_v[t], runs[t], w_s1[i], w_s2[i],
                           lr, ss, bc2, hyper, f0, f1)
        passed += 1
        barrier(sync, parts, passed)
        if not math.isfinite(loss):
            _part_results(res, t, k + 1, loss, True)
            return
    _part_results(res, t, lrs.shape[0], 0.0, False)


@njit(**_jit)
def _part_results(res, t, done, bad_loss, bad):
    res[t, 0], res[t, 1], res[t, 2] = done, bad_loss, bad


@njit(**_jit)
def _weight_update(opt_kind, sparse, par, a, idx, val, cnt, g, w, row, start, fill, csc_r, csc_v, runs,
                   s1, s2, lr, ss, bc2, hyper, f0, f1):
    """Rows f0 <= f < f1 of the weight gradient a.T @ g and the optimizer's update of those rows of
    w (D, M): BLAS, or row by row from the non-zeros of a (``row`` holds one gradient row)."""
    whole = f0 == 0 and f1 == w.shape[0]
    par = par and whole and w.size >= _PARALLEL_MIN_UPDATE
    m = w.shape[1]
    if not sparse:  # BLAS
        gw = np.dot(a.T, g) if whole else np.dot(np.ascontiguousarray(a[:, f0:f1]).T, g)
        wr, gr = w.reshape(-1)[f0 * m:f1 * m], gw.reshape(-1)
        s1r, s2r = s1.reshape(-1)[f0 * m:f1 * m], s2.reshape(-1)[f0 * m:f1 * m]
        if par:
            _update_par(opt_kind, wr, gr, s1r, s2r, lr, ss, bc2, hyper)
        else:
            _update(opt_kind, wr, gr, s1r, s2r, lr, ss, bc2, hyper)
        return
    if opt_kind == OPT_SGD and a.shape[0] == 1 and whole:
        _sgd_one_sample(idx, val, cnt, g, w, lr)
        return
    if par:
        _by_feature(idx, val, cnt, start, fill, csc_r, csc_v, runs, 0, w.shape[0])
        _grad_update_rows_par(_FEATURE_PARTS, opt_kind, start, csc_r, csc_v, g, w, s1, s2, lr, ss, bc2, hyper)
    else:
        _by_feature(idx, val, cnt, start, fill, csc_r, csc_v, runs, f0, f1)
        _grad_update_rows(f0, f1, opt_kind, start, csc_r, csc_v, g, w, s1, s2, lr, ss, bc2, hyper, row, f0)


lock_caches(globals(), depends=(_kernels_file, _tiles_file, _sync_file))  # one cache for several processes; numba_cache.py
