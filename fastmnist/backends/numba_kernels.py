"""The compiled kernels of the numba backend (``@njit``), one per loop nest; the public functions
that validate arguments and call them are in :mod:`fastmnist.backends.numba_backend`.

Only imported where numba is installed. Parallel loops run over the batch (or the filters, where
each task must own its output); ``cache=True`` keeps compiled code on disk between processes.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .numba_cache import lock_caches

# error_model="numpy": a division by zero gives inf/nan as in NumPy instead of a Python exception,
# whose check in every iteration keeps LLVM from vectorising any loop that divides (Adam: 653
# against 81 us for fast-cnn's 204800 weights on one core, measured; numba_steps.py does the same).
_jit = dict(cache=True, nogil=True, error_model="numpy")
_pjit = dict(_jit, parallel=True)
# Reassociation lets LLVM vectorise reductions; no 'nnan'/'ninf', so NaN and Inf still propagate.
_FM = {"reassoc", "contract"}

# ---------------- layout: im2col / col2im, padding, NCHW <-> rows ----------------

@njit(**_pjit)
def _im2col_kernel(x, kh, kw, stride, pad, oh, ow, out):  # x (N,C,H,W) -> out (N*OH*OW, C*KH*KW)
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        for i in range(oh):
            for j in range(ow):
                row = (n * oh + i) * ow + j
                col = 0
                for c in range(c_):
                    for a in range(kh):
                        hh = i * stride + a - pad
                        for b in range(kw):
                            ww = j * stride + b - pad
                            if 0 <= hh < h_ and 0 <= ww < w_:
                                out[row, col] = x[n, c, hh, ww]
                            else:
                                out[row, col] = 0
                            col += 1


@njit(**_pjit)
def _col2im_kernel(col, kh, kw, stride, pad, oh, ow, out):  # out (N,C,H,W) zeroed; overlaps summed
    n_, c_, h_, w_ = out.shape
    for n in prange(n_):
        for i in range(oh):
            for j in range(ow):
                row = (n * oh + i) * ow + j
                k = 0
                for c in range(c_):
                    for a in range(kh):
                        hh = i * stride + a - pad
                        for b in range(kw):
                            ww = j * stride + b - pad
                            if 0 <= hh < h_ and 0 <= ww < w_:
                                out[n, c, hh, ww] += col[row, k]
                            k += 1


@njit(**_pjit)
def _rows_to_nchw_kernel(rows, b, out):  # rows (N*P, F) + b -> out (N, F, P)
    n_, f_, p_ = out.shape
    for n in prange(n_):
        for p in range(p_):
            r = n * p_ + p
            for f in range(f_):
                out[n, f, p] = rows[r, f] + b[f]


@njit(**_pjit)
def _nchw_to_rows_kernel(dy, out):  # dy (N, F, P) -> out (N*P, F)
    n_, f_, p_ = dy.shape
    for n in prange(n_):
        for f in range(f_):
            for p in range(p_):
                out[n * p_ + p, f] = dy[n, f, p]


@njit(**_pjit)
def _pad_kernel(x, pad, out):  # out (N, C, H+2p, W+2p) zeroed
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        for c in range(c_):
            for i in range(h_):
                for j in range(w_):
                    out[n, c, i + pad, j + pad] = x[n, c, i, j]


@njit(**_pjit)
def _to_channels_first_kernel(x, pad, out):  # x (N, C, H, W) -> out (C, N, Hp, Wp) zero-padded
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        for c in range(c_):
            for i in range(h_):
                for j in range(w_):
                    out[c, n, i + pad, j + pad] = x[n, c, i, j]


# ---------------- convolution, and conv + ReLU + max-pool fused ----------------
# Direct convolution, for layers whose C*KH*KW is small (the first layer: 1x5x5): im2col would
# write 25 copies of the input and hand BLAS a K=25 product it runs far under its peak. Here
# each (n, f) output plane is accumulated in a "wide" buffer whose row stride is the padded
# input width Wp, so that for each kernel tap (c, a, b) the update is one long contiguous
# saxpy, acc[0:L] += w[f, c, a, b] * x[n, c].ravel()[a*Wp + b : a*Wp + b + L]; the Wp - OW
# junk columns per row are dropped on the way out. The slices matter: indexing with a
# run-time offset inside the loop defeats LLVM's vectoriser (measured 8x slower).

@njit(**_jit, fastmath=_FM)
def _taps_forward(acc, src, wfc, wp, span):
    """acc[:span] += sum over taps (a, b) of wfc[a, b] * src[a*wp + b :][:span]: one channel's
    contribution to a wide output plane. Slices, not run-time offsets inside the loop: the latter
    defeat LLVM's vectoriser (measured 8x slower). A 3x3 kernel's nine taps, or one row of a
    3- or 5-wide kernel, go in one pass: one load and store of acc per 9 (3, 5) multiply-adds
    instead of per one (1.9x and 1.55x faster, measured single-threaded on Zen 4)."""
    kh, kw = wfc.shape
    if kh == 3 and kw == 3:
        w00, w01, w02 = wfc[0, 0], wfc[0, 1], wfc[0, 2]
        w10, w11, w12 = wfc[1, 0], wfc[1, 1], wfc[1, 2]
        w20, w21, w22 = wfc[2, 0], wfc[2, 1], wfc[2, 2]
        s0 = src[0: span + 2]
        s1 = src[wp: wp + span + 2]
        s2 = src[2 * wp: 2 * wp + span + 2]
        for q in range(span):
            acc[q] += (w00 * s0[q] + w01 * s0[q + 1] + w02 * s0[q + 2] + w10 * s1[q] + w11 * s1[q + 1]
                       + w12 * s1[q + 2] + w20 * s2[q] + w21 * s2[q + 1] + w22 * s2[q + 2])
        return
    for a in range(kh):
        if kw == 5:
            w0, w1, w2, w3, w4 = wfc[a, 0], wfc[a, 1], wfc[a, 2], wfc[a, 3], wfc[a, 4]
            s = src[a * wp: a * wp + span + 4]
            for q in range(span):
                acc[q] += w0 * s[q] + w1 * s[q + 1] + w2 * s[q + 2] + w3 * s[q + 3] + w4 * s[q + 4]
        elif kw == 3:
            w0, w1, w2 = wfc[a, 0], wfc[a, 1], wfc[a, 2]
            s = src[a * wp: a * wp + span + 2]
            for q in range(span):
                acc[q] += w0 * s[q] + w1 * s[q + 1] + w2 * s[q + 2]
        else:
            for bb in range(kw):
                wv = wfc[a, bb]
                s = src[a * wp + bb: a * wp + bb + span]
                for q in range(span):
                    acc[q] += wv * s[q]


@njit(**_jit, fastmath=_FM)
def _taps_backward(out, g, wfc, wp, span):
    """The adjoint of _taps_forward: out[a*wp + b :][:span] += wfc[a, b] * g[:span]."""
    kh, kw = wfc.shape
    for a in range(kh):
        for bb in range(kw):
            wv = wfc[a, bb]
            dst = out[a * wp + bb: a * wp + bb + span]
            for q in range(span):
                dst[q] += wv * g[q]


@njit(**_jit, fastmath=_FM)
def _accumulate_taps(g, xn, wp, span, kh, kw, acc):
    """acc[c, a, b] += <g, xn[c][a*wp + b : a*wp + b + span]> for every channel and tap (stride 1)."""
    for c in range(xn.shape[0]):
        _accumulate_taps_1d(g, xn[c], c, wp, span, kh, kw, acc)


@njit(**_jit, fastmath=_FM)
def _accumulate_taps_1d(g, src, c, wp, span, kh, kw, acc):
    """acc[c, a, b] += <g[:span], src[a*wp + b : a*wp + b + span]>; a row's taps share g's loads,
    and a 3x3 kernel's nine share them all (1.35x faster than three rows, single-threaded, Zen 4)."""
    if kh == 3 and kw == 3:
        r0, r1, r2 = src[0: span + 2], src[wp: wp + span + 2], src[2 * wp: 2 * wp + span + 2]
        z = g.dtype.type(0)
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = z
        for q in range(span):
            gq = g[q]
            s00 += gq * r0[q]
            s01 += gq * r0[q + 1]
            s02 += gq * r0[q + 2]
            s10 += gq * r1[q]
            s11 += gq * r1[q + 1]
            s12 += gq * r1[q + 2]
            s20 += gq * r2[q]
            s21 += gq * r2[q + 1]
            s22 += gq * r2[q + 2]
        acc[c, 0, 0] += s00
        acc[c, 0, 1] += s01
        acc[c, 0, 2] += s02
        acc[c, 1, 0] += s10
        acc[c, 1, 1] += s11
        acc[c, 1, 2] += s12
        acc[c, 2, 0] += s20
        acc[c, 2, 1] += s21
        acc[c, 2, 2] += s22
        return
    for a in range(kh):
        row = src[a * wp: a * wp + span + kw - 1]
        if kw == 3:
            s0 = s1 = s2 = g.dtype.type(0)
            for q in range(span):
                gq = g[q]
                s0 += gq * row[q]
                s1 += gq * row[q + 1]
                s2 += gq * row[q + 2]
            acc[c, a, 0] += s0
            acc[c, a, 1] += s1
            acc[c, a, 2] += s2
        elif kw == 5:
            s0 = s1 = s2 = s3 = s4 = g.dtype.type(0)
            for q in range(span):
                gq = g[q]
                s0 += gq * row[q]
                s1 += gq * row[q + 1]
                s2 += gq * row[q + 2]
                s3 += gq * row[q + 3]
                s4 += gq * row[q + 4]
            acc[c, a, 0] += s0
            acc[c, a, 1] += s1
            acc[c, a, 2] += s2
            acc[c, a, 3] += s3
            acc[c, a, 4] += s4
        else:
            for bb in range(kw):
                part = g.dtype.type(0)
                for q in range(span):
                    part += g[q] * row[q + bb]
                acc[c, a, bb] += part


@njit(**_pjit, fastmath=_FM)
def _conv_direct_kernel(xf, wp, w, b, y):  # xf padded (N, C, Hp*Wp) -> y (N, F, OH, OW), stride 1
    n_, c_, _ = xf.shape
    f_, _, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    span = (oh - 1) * wp + ow
    for n in prange(n_):
        acc = np.empty(span, y.dtype)
        for f in range(f_):
            acc[:] = b[f]
            for c in range(c_):
                _taps_forward(acc, xf[n, c], w[f, c], wp, span)
            for i in range(oh):
                row = acc[i * wp: i * wp + ow]
                out = y[n, f, i]
                for j in range(ow):
                    out[j] = row[j]


@njit(**_pjit, fastmath=_FM)
def _conv_direct_dw_kernel(dy, xf, wp, dw, db):  # stride 1; dw (F,C,KH,KW), db (F,) from dy (N,F,OH,OW)
    n_, f_, oh, ow = dy.shape
    _, c_, kh, kw = dw.shape
    span = (oh - 1) * wp + ow
    for f in prange(f_):  # one filter per task: no two threads write the same dw entry
        g = np.zeros(span, dy.dtype)  # dy[n, f] laid out wide, zeros in the junk columns
        acc = np.zeros((c_, kh, kw), np.float64)
        bsum = 0.0
        for n in range(n_):
            for i in range(oh):
                grow = g[i * wp: i * wp + ow]
                src_row = dy[n, f, i]
                for j in range(ow):
                    grow[j] = src_row[j]
                    bsum += src_row[j]
            _accumulate_taps(g, xf[n], wp, span, kh, kw, acc)
        for c in range(c_):
            for a in range(kh):
                for bb in range(kw):
                    dw[f, c, a, bb] = acc[c, a, bb]
        db[f] = bsum


# Conv + ReLU + max-pool fused: the pre-activation plane never leaves L1; only the pooled
# output and an int32 argmax (index into the OH*OW conv plane) are written. ReLU commutes with
# max, so relu(max(window)) serves both layer orders (conv-relu-pool and conv-pool-relu).

@njit(**_pjit, fastmath=_FM)
def _conv_direct_pool_kernel(xf, wp, w, b, oh, ow, size, pstride, y, arg):
    n_, c_, _ = xf.shape
    f_, _, kh, kw = w.shape
    span = (oh - 1) * wp + ow
    for n in prange(n_):
        acc = np.empty(span, y.dtype)
        for f in range(f_):
            acc[:] = b[f]
            for c in range(c_):
                _taps_forward(acc, xf[n, c], w[f, c], wp, span)
            if size == 2 and pstride == 2:
                _pool22_plane(acc, wp, ow, y[n, f], arg[n, f])
            else:
                _pool_plane(acc, wp, ow, size, pstride, y[n, f], arg[n, f])


@njit(**_pjit, fastmath=_FM)
def _conv_direct_pool_dw_kernel(dy, y, arg, xf, wp, oh, ow, dw, db):
    n_, f_, ph, pw = dy.shape
    _, c_, kh, kw = dw.shape
    span = (oh - 1) * wp + ow
    for f in prange(f_):
        g = np.zeros(span, dy.dtype)
        acc = np.zeros((c_, kh, kw), np.float64)
        bsum = 0.0
        for n in range(n_):
            g[:] = 0
            bsum += _scatter_pooled(dy, y, arg, n, f, ow, wp, g, 0)  # the ReLU mask and the argmax
            _accumulate_taps(g, xf[n], wp, span, kh, kw, acc)
        for c in range(c_):
            for a in range(kh):
                for bb in range(kw):
                    dw[f, c, a, bb] = acc[c, a, bb]
        db[f] = bsum


@njit(**_pjit, fastmath=_FM)
def _conv_direct_pool_dx_kernel(dy, y, arg, w, wp, oh, ow, pad, dx):
    """dx (N, C, H, W) of the fused path: the pooled gradients are scattered into wide planes
    g[f], then each input plane is the sum over filters and taps of shifted saxpys."""
    n_, f_, ph, pw = dy.shape
    _, c_, kh, kw = w.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    span = (oh - 1) * wp + ow
    hp = oh + kh - 1
    for n in prange(n_):
        g = np.zeros((f_, span), dy.dtype)
        for f in range(f_):
            for i in range(ph):
                for j in range(pw):
                    if y[n, f, i, j] > 0:
                        k = arg[n, f, i, j]
                        g[f, (k // ow) * wp + k % ow] += dy[n, f, i, j]
        plane = np.empty(hp * wp, dy.dtype)
        for c in range(c_):
            plane[:] = 0
            for f in range(f_):
                _taps_backward(plane, g[f], w[f, c], wp, span)
            for i in range(h_):
                for j in range(w_):
                    dx[n, c, i, j] = plane[(i + pad) * wp + j + pad]


@njit(**_jit)
def _scatter_pooled(dy, y, arg, n, f, ow, wp, g, base):
    """g[base + wide position of each pool's argmax] += dy where the pooled output was > 0."""
    ph, pw = dy.shape[2], dy.shape[3]
    s = 0.0
    for i in range(ph):
        for j in range(pw):
            if y[n, f, i, j] > 0:
                k = arg[n, f, i, j]
                d = dy[n, f, i, j]
                g[base + (k // ow) * wp + k % ow] += d
                s += d
    return s


@njit(**_pjit)
def _rows_pool_kernel(rows, b, oh, ow, size, pstride, y, arg):  # rows (N*OH*OW, F) -> pooled y, arg
    n_, f_, ph, pw = y.shape
    for n in prange(n_):
        base = n * oh * ow
        for f in range(f_):
            column = rows[:, f]
            for i in range(ph):
                for j in range(pw):
                    best, where = _window_argmax(column, base, ow, ow, i * pstride, j * pstride, size)
                    best += b[f]
                    y[n, f, i, j] = best if best > 0 else 0
                    arg[n, f, i, j] = where


@njit(**_pjit)
def _pool_to_rows_kernel(dy, y, arg, oh, ow, rows):  # rows (N*OH*OW, F) zeroed <- pooled gradients
    n_, f_, ph, pw = dy.shape
    for n in prange(n_):
        for f in range(f_):
            for i in range(ph):
                for j in range(pw):
                    if y[n, f, i, j] > 0:
                        rows[n * oh * ow + arg[n, f, i, j], f] += dy[n, f, i, j]


# Blocked direct convolution (channels-first input), fused with ReLU and max-pool.
# The per-sample kernels above run one saxpy per (sample, filter, tap) over one output plane;
# for a small plane (fast-cnn's conv2: 10x10 outputs, 118-element loops) loop overhead dominates.
# Here the input is laid out channels first, (C, N, Hp*Wp), so the planes of nb consecutive
# samples of one channel are one contiguous run: each tap becomes a single saxpy over the whole
# block (rows that straddle two samples are junk and are never read back).

@njit(**_pjit, fastmath=_FM)
def _conv_block_pool_kernel(xflat, n_, c_, plane, wp, w, b, oh, ow, size, pstride, nb, y, arg):
    f_, _, kh, kw = w.shape
    blocks = (n_ + nb - 1) // nb
    for blk in prange(blocks):
        n0 = blk * nb
        cnt = min(nb, n_ - n0)
        span = (cnt - 1) * plane + (oh - 1) * wp + ow
        acc = np.empty(cnt * plane, y.dtype)
        for f in range(f_):
            acc[:] = b[f]
            for c in range(c_):
                _taps_forward(acc, xflat[(c * n_ + n0) * plane: (c * n_ + n0 + cnt) * plane], w[f, c], wp, span)
            for k in range(cnt):
                one = acc[k * plane: (k + 1) * plane]
                if size == 2 and pstride == 2:
                    _pool22_plane(one, wp, ow, y[n0 + k, f], arg[n0 + k, f])
                else:
                    _pool_plane(one, wp, ow, size, pstride, y[n0 + k, f], arg[n0 + k, f])


@njit(**_pjit, fastmath=_FM)
def _conv_block_pool_dw_kernel(dy, y, arg, xflat, c_, plane, wp, oh, ow, nb, dw, db):
    n_, f_, _, _ = dy.shape
    _, _, kh, kw = dw.shape
    blocks = (n_ + nb - 1) // nb
    for f in prange(f_):  # one filter per task: no two threads write the same dw entry
        g = np.empty(nb * plane, dy.dtype)
        acc = np.zeros((c_, kh, kw), np.float64)
        bsum = 0.0
        for blk in range(blocks):
            n0 = blk * nb
            cnt = min(nb, n_ - n0)
            span = (cnt - 1) * plane + (oh - 1) * wp + ow
            g[:] = 0
            for k in range(cnt):
                bsum += _scatter_pooled(dy, y, arg, n0 + k, f, ow, wp, g, k * plane)
            for c in range(c_):
                src = xflat[(c * n_ + n0) * plane: (c * n_ + n0 + cnt) * plane]
                _accumulate_taps_1d(g, src, c, wp, span, kh, kw, acc)
        for c in range(c_):
            for a in range(kh):
                for bb in range(kw):
                    dw[f, c, a, bb] = acc[c, a, bb]
        db[f] = bsum


@njit(**_pjit, fastmath=_FM)
def _conv_block_pool_dx_kernel(dy, y, arg, wflip, plane, wp, oh, ow, pad, nb, dx):
    """dx (N, C, H, W): per block, the pooled gradients of every filter laid out wide behind
    `front` zeros; each input channel is then the forward correlation of those planes with the
    filters rotated 180 degrees (``wflip`` = w[:, :, ::-1, ::-1]): dx[r] = sum over taps of
    wflip[a, b] * g[r + a*wp + b], one gather pass per (filter, channel) through _taps_forward,
    where scattering into dx tap by tap would load and store it once per tap."""
    n_, f_, _, _ = dy.shape
    _, c_, kh, kw = wflip.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    front = (kh - 1) * wp + kw - 1
    blocks = (n_ + nb - 1) // nb
    for blk in prange(blocks):
        n0 = blk * nb
        cnt = min(nb, n_ - n0)
        g = np.zeros((f_, front + cnt * plane), dy.dtype)
        for f in range(f_):
            for k in range(cnt):
                _scatter_pooled(dy, y, arg, n0 + k, f, ow, wp, g[f], front + k * plane)
        out = np.empty(cnt * plane, dy.dtype)
        for c in range(c_):
            out[:] = 0
            for f in range(f_):
                _taps_forward(out, g[f], wflip[f, c], wp, cnt * plane)
            for k in range(cnt):
                for i in range(h_):
                    for j in range(w_):
                        dx[n0 + k, c, i, j] = out[k * plane + (i + pad) * wp + j + pad]


# ---------------- pooling: max-pool, and the pooling of the fused conv's planes ----------------

@njit(inline="always")  # inlined in Numba's IR: each caller compiles to its own loop nest, as if written out
def _window_argmax(src, at, stride, width, h0, w0, size):
    """The maximum of the size x size window at (h0, w0) of a plane stored in src from index
    ``at``, rows ``stride`` apart, and its index h * width + w in a plane ``width`` wide. Strict >:
    the first maximum (row-major) wins ties, as in the numpy reference; selects, not branches, which
    random data would mispredict half the time."""
    best = src[at + h0 * stride + w0]
    where = h0 * width + w0
    for a in range(size):
        for b in range(size):
            v = src[at + (h0 + a) * stride + w0 + b]
            k = (h0 + a) * width + w0 + b
            where = k if v > best else where
            best = v if v > best else best
    return best, where


@njit(**_pjit)
def _maxpool_kernel(x, size, stride, oh, ow, y, arg):  # x C-contiguous: its planes ravel to views
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        for c in range(c_):
            plane = x[n, c].ravel()
            for i in range(oh):
                for j in range(ow):
                    best, where = _window_argmax(plane, 0, w_, w_, i * stride, j * stride, size)
                    y[n, c, i, j] = best
                    arg[n, c, i, j] = where


@njit(**_pjit)
def _maxpool_backward_kernel(dy, arg, dx):  # dx (N, C, H*W) zeroed; returns the count of bad indices
    n_, c_, oh, ow = dy.shape
    hw = dx.shape[2]
    bad = 0
    for n in prange(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    k = arg[n, c, i, j]
                    if 0 <= k < hw:  # checked here, for free, instead of a pass over argmax first
                        dx[n, c, k] += dy[n, c, i, j]
                    else:
                        bad += 1
    return bad


@njit(**_jit)
def _pool22_plane(acc, wp, ow, y, arg):  # 2x2/2 window over a wide plane, ReLU on the max
    for i in range(y.shape[0]):
        r0 = acc[2 * i * wp: 2 * i * wp + ow]
        r1 = acc[(2 * i + 1) * wp: (2 * i + 1) * wp + ow]
        for j in range(y.shape[1]):
            v0, v1, v2, v3 = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
            m01, m23 = max(v0, v1), max(v2, v3)
            k01 = 2 * j if v0 >= v1 else 2 * j + 1  # >=: the first maximum wins ties
            k23 = ow + 2 * j if v2 >= v3 else ow + 2 * j + 1
            best = max(m01, m23)
            y[i, j] = best if best > 0 else 0
            arg[i, j] = 2 * i * ow + (k01 if m01 >= m23 else k23)


@njit(**_jit)
def _pool_plane(acc, wp, ow, size, pstride, y, arg):  # any window over a wide plane
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            best, where = _window_argmax(acc, 0, wp, ow, i * pstride, j * pstride, size)
            y[i, j] = best if best > 0 else 0
            arg[i, j] = where


# ---------------- affine and activations ----------------

@njit(**_pjit)
def _bias_add_kernel(y, b):  # y (N, M) += b, in place
    n_, m_ = y.shape
    for n in prange(n_):
        for m in range(m_):
            y[n, m] += b[m]


@njit(**_pjit)
def _relu_kernel(x, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = v if v > 0 else 0


@njit(**_pjit)
def _relu_backward_kernel(dy, x, out):
    for i in prange(x.size):
        out[i] = dy[i] if x[i] > 0 else 0


def sigmoid_value(v):
    """1 / (1 + exp(-v)) in the form that neither overflows nor loses small results: for v < 0,
    exp(v) / (1 + exp(v)). Compiled, float32 takes _sigmoid32 (no library call: the loops around
    it vectorise)."""
    if v >= 0:
        return 1 / (1 + math.exp(-v))
    e = math.exp(v)
    return e / (1 + e)


@overload(sigmoid_value, inline="always")
def _sigmoid_value_overload(v):
    if v == types.float32:
        return lambda v: _sigmoid32(v)
    return sigmoid_value


@intrinsic
def _float32_bits(typingctx, value):
    """The bit pattern of the float32 ``value`` as an int32 (a bitcast the vectoriser keeps)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


# exp(x) for float32 x <= 0 as 2^k * p(r), x = k ln 2 + r, |r| <= ln(2)/2: Cephes' expf polynomial
# (within 3 ulp of exp, measured; ln 2 split in two for an exact reduction). k by adding 1.5 * 2^23,
# which rounds to an integer in the low bits (no conversion instruction: NaN stays harmless).
# Below _EXP_LO, exp is under float32's smallest normal: 0 there (the sigmoid's result to within it).
_F = np.float32
_EXP_LO, _LOG2E, _LN2_HI, _LN2_LO = _F(-87.33654), _F(1.44269504088896341), _F(0.693359375), _F(-2.12194440e-4)
_EXP_P = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3), _F(4.1665795894e-2),
          _F(1.6666665459e-1), _F(5.0000001201e-1))
_ROUND = _F(12582912.0)  # 1.5 * 2^23
_ONE, _ZERO = _F(1), _F(0)


@njit(cache=True, nogil=True, inline="always")
def _sigmoid32(v):
    """sigmoid_value for float32, branch-free and without a call: exp(-|v|) by _EXP_P (NaN stays NaN)."""
    x = -abs(v)
    big = x * _LOG2E + _ROUND  # round(x / ln 2) in its low bits
    k = big - _ROUND
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p0, p1, p2, p3, p4, p5 = _EXP_P
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + _ONE
    e = p * _float32_from_bits((_float32_bits(big) - _float32_bits(_ROUND) + 127) << 23)
    e = _ZERO if x < _EXP_LO else e
    return _ONE / (_ONE + e) if v >= _ZERO else e / (_ONE + e)


@njit(**_pjit)
def _sigmoid_kernel(x, out):
    for i in prange(x.size):
        out[i] = sigmoid_value(x[i])


@njit(**_pjit)
def _sigmoid_backward_kernel(dy, y, out):
    for i in prange(y.size):
        out[i] = dy[i] * y[i] * (1 - y[i])


# ---------------- losses and accuracy ----------------

@njit(**_jit)
def _exp_shifted_row(x, out, n):
    """out[n] = exp(x[n] - max(x[n])) (never overflows); returns (the row's sum, its max)."""
    m_ = x.shape[1]
    top = x[n, 0]
    for m in range(1, m_):
        top = max(top, x[n, m])
    s = 0.0
    for m in range(m_):
        e = math.exp(x[n, m] - top)
        out[n, m] = e
        s += e
    return s, top


@njit(**_pjit)
def _softmax_kernel(x, out):
    for n in prange(x.shape[0]):
        s, _ = _exp_shifted_row(x, out, n)
        for m in range(x.shape[1]):
            out[n, m] /= s


@njit(**_jit)
def _softmax_ce_row(x, d, n, lab, n_):
    """Row n of the fused softmax + cross-entropy: d[n] = (softmax(x[n]) - onehot(lab)) / n_;
    returns the row's loss (also the compiled training steps' loss, numba_steps)."""
    s, top = _exp_shifted_row(x, d, n)
    for m in range(x.shape[1]):
        d[n, m] = d[n, m] / s / n_
    d[n, lab] -= 1.0 / n_
    return math.log(s) - (x[n, lab] - top)


@njit(**_pjit)
def _softmax_ce_kernel(x, labels, d, row_loss):  # returns the count of labels out of range
    n_, m_ = x.shape
    bad = 0
    for n in prange(n_):
        lab = labels[n]
        if lab < 0 or lab >= m_:
            bad += 1
            continue
        row_loss[n] = _softmax_ce_row(x, d, n, lab, n_)
    return bad


@njit(**_jit)
def _mse_kernel(y, t, d):  # y, t, d flat; returns sum of squares (sequential: deterministic)
    n_ = y.shape[0]
    s = 0.0
    inv = 1.0 / n_
    yf, tf, df = y.ravel(), t.ravel(), d.ravel()
    for i in range(yf.size):
        diff = yf[i] - tf[i]
        s += diff * diff
        df[i] = diff * inv
    return s


@njit(**_jit)
def _count_correct_kernel(x, labels):
    n_, m_ = x.shape
    hits = 0
    for n in range(n_):
        best = 0
        for m in range(1, m_):
            if x[n, m] > x[n, best]:
                best = m
        hits += best == labels[n]
    return hits


# ---------------- augmentation: per-sample affine warp (bilinear), stroke width, blur ----------------

@njit(cache=True, nogil=True, inline="always")
def _bilinear(x, n, c, sx, sy):
    """x[n, c] sampled bilinearly at (sx, sy), zero outside, float64 weights: the elastic warp, and
    the affine warp's pixels whose window straddles the image's edge."""
    h_, w_ = x.shape[2], x.shape[3]
    fx0, fy0 = math.floor(sx), math.floor(sy)
    fx, fy = sx - fx0, sy - fy0
    x0, y0 = int(fx0), int(fy0)
    acc = 0.0
    for dy in range(2):
        yy = y0 + dy
        if 0 <= yy < h_:
            wy = fy if dy else 1.0 - fy
            for dx in range(2):
                xx = x0 + dx
                if 0 <= xx < w_:
                    acc += wy * (fx if dx else 1.0 - fx) * x[n, c, yy, xx]
    return acc


@njit(**_pjit)
def _affine_warp_kernel(x, theta, out):  # x, out (N, C, H, W); theta float64 (N, 2, 3)
    """Bilinear, zero outside, float64 weights as the contract says. Indexing x[n, c, y, x] inline:
    a helper taking the plane x[n, c] measured 1.7x slower (a view built per pixel)."""
    n_, c_, h_, w_ = x.shape
    cy, cx = (h_ - 1) / 2.0, (w_ - 1) / 2.0
    for n in prange(n_):
        t00, t01, t02 = theta[n, 0, 0], theta[n, 0, 1], theta[n, 0, 2]
        t10, t11, t12 = theta[n, 1, 0], theta[n, 1, 1], theta[n, 1, 2]
        for c in range(c_):
            for r in range(h_):
                v = r - cy
                for col in range(w_):
                    u = col - cx
                    sx = t00 * u + t01 * v + t02 + cx
                    sy = t10 * u + t11 * v + t12 + cy
                    fx0, fy0 = math.floor(sx), math.floor(sy)
                    fx, fy = sx - fx0, sy - fy0
                    x0, y0 = int(fx0), int(fy0)
                    acc = 0.0
                    if 0 <= x0 and x0 + 1 < w_ and 0 <= y0 and y0 + 1 < h_:  # inside: no bounds tests
                        top = (1.0 - fx) * x[n, c, y0, x0] + fx * x[n, c, y0, x0 + 1]
                        bottom = (1.0 - fx) * x[n, c, y0 + 1, x0] + fx * x[n, c, y0 + 1, x0 + 1]
                        acc = (1.0 - fy) * top + fy * bottom
                    elif not (x0 + 1 < 0 or x0 >= w_ or y0 + 1 < 0 or y0 >= h_):  # straddling the edge
                        acc = _bilinear(x, n, c, sx, sy)
                    out[n, c, r, col] = acc


@njit(**_pjit)
def _elastic_warp_kernel(x, grid, out):  # x, out (N, C, H, W); grid float64 (N, 2, GH, GW)
    """Per output pixel: the displacement bilinear on the sample's grid (corners on the image's),
    then the input there, bilinear, zero outside."""
    n_, c_, h_, w_ = x.shape
    sy_, sx_ = (grid.shape[2] - 1) / max(h_ - 1, 1), (grid.shape[3] - 1) / max(w_ - 1, 1)
    for n in prange(n_):
        for r in range(h_):
            for col in range(w_):
                gy, gx = r * sy_, col * sx_
                sx = col + _bilinear(grid, n, 0, gx, gy)
                sy = r + _bilinear(grid, n, 1, gx, gy)
                for c in range(c_):
                    out[n, c, r, col] = _bilinear(x, n, c, sx, sy)


@njit(**_pjit)
def _stroke_width_kernel(x, amount, out):
    """Per plane: out = x + |a| * (s * max3x3(s * x) - x), s the sign of a (s = -1 makes the max a
    min: erosion), the 3x3 max over pixels inside the image taken as a row pass then a column pass."""
    n_, c_, h_, w_ = x.shape
    for p in prange(n_ * c_):
        n, c = p // c_, p % c_
        a = amount[n]
        s = x.dtype.type(1 if a > 0 else -1)
        t = x.dtype.type(abs(a))
        src, dst = x[n, c], out[n, c]
        across = np.empty((h_, w_), x.dtype)  # s * the max of s*x over each pixel's row neighbours
        for r in range(h_):
            row, acr = src[r], across[r]
            for col in range(w_):
                acr[col] = s * row[col]
            for col in range(w_ - 1):  # a NaN wins, as in np.max: it spreads over its window
                v = s * row[col + 1]
                acr[col] = v if (v > acr[col] or v != v) else acr[col]
            for col in range(w_ - 1, 0, -1):
                v = s * row[col - 1]
                acr[col] = v if (v > acr[col] or v != v) else acr[col]
        for r in range(h_):
            r0, r1 = max(r - 1, 0), min(r + 2, h_)
            row, drow = src[r], dst[r]
            for col in range(w_):
                best = across[r0, col]
                for i in range(r0 + 1, r1):
                    v = across[i, col]
                    best = v if (v > best or v != v) else best
                drow[col] = row[col] + t * (s * best - row[col])


@njit(**_pjit)
def _gaussian_blur_kernel(x, taps, out):
    """Per plane: out = x blurred by its sample's taps (N, 2R+1), rows then columns, zero outside;
    each sum adds k = 0..2R in order, as the numpy reference does."""
    n_, c_, h_, w_ = x.shape
    r_ = (taps.shape[1] - 1) // 2
    for p in prange(n_ * c_):
        n, c = p // c_, p % c_
        g = taps[n]
        src, dst = x[n, c], out[n, c]
        rows = np.zeros((h_, w_), x.dtype)
        for r in range(h_):
            row, acc = src[r], rows[r]
            for k in range(2 * r_ + 1):
                lo, hi = max(0, r_ - k), min(w_, w_ + r_ - k)  # columns whose tap k falls inside
                gk = g[k]
                for col in range(lo, hi):
                    acc[col] += gk * row[col + k - r_]
        for r in range(h_):
            acc = dst[r]
            acc[:] = 0
            for k in range(2 * r_ + 1):
                i = r + k - r_
                if 0 <= i < h_:
                    gk, src_row = g[k], rows[i]
                    for col in range(w_):
                        acc[col] += gk * src_row[col]


# ---------------- dropout: the contract's splitmix64 counter-based uniform ----------------

@njit(**_pjit)
def _dropout_kernel(x, p, scale, seed, y, mask):
    base = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    for i in prange(x.size):
        z = base + np.uint64(i + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        u = np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)
        keep = scale if u >= p else 0.0
        mask[i] = keep
        y[i] = x[i] * mask[i]


@njit(**_pjit)
def _mul_kernel(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] * b[i]


# ---------------- optimizers (flat views, in place) ----------------

@njit(**_pjit)
def _sgd_kernel(p, g, lr):
    for i in prange(p.size):
        p[i] -= lr * g[i]


@njit(**_pjit)
def _momentum_kernel(p, g, v, lr, mom):
    for i in prange(p.size):
        v[i] = mom * v[i] - lr * g[i]
        p[i] += v[i]


@njit(**_pjit)
def _adagrad_kernel(p, g, h, lr, eps):
    for i in prange(p.size):
        h[i] += g[i] * g[i]
        p[i] -= lr * g[i] / (math.sqrt(h[i]) + eps)


@njit(cache=True, nogil=True, inline="always")
def flush_subnormal(x, tiny):
    """x, or 0 where x is subnormal (0 < abs(x) < tiny, the dtype's smallest normal); NaN passes.

    Adam's moments decay geometrically where a gradient stays 0 and reach the subnormals, and an
    Intel core takes a microcode assist for every operation on one: fast-cnn's Adam went from 0.57
    to 1.9 ms a step once they appeared, after about 200 steps at a fixed learning rate on a 2-core
    Xeon (docs/benchmarks.md). Flushed, a moment below 1.2e-38 (float32) moves no weight anyway:
    the update it made would be under 1e-30."""
    return tiny - tiny if abs(x) < tiny else x


@njit(**_jit)
def _adam_range(p, g, m, v, lo, hi, b1, c1, b2, c2, step, sqrt_bc2, eps):  # _adam_kernel on [lo, hi)
    # slices and an index from 0: over range(lo, hi) LLVM did not vectorise (713 against 87 us)
    p, g, m, v = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
    tiny = np.finfo(p.dtype).tiny
    for i in range(p.size):
        gi = g[i]
        mi = flush_subnormal(b1 * m[i] + c1 * gi, tiny)
        vi = flush_subnormal(b2 * v[i] + c2 * gi * gi, tiny)
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi) / sqrt_bc2 + eps)


@njit(**_pjit)
def _adam_many_kernel(ps, gs, ms, vs, starts, block, b1, c1, b2, c2, step, sqrt_bc2, eps):
    """Adam over every parameter in one parallel region: a tuple of flat arrays each, cut into
    blocks of ``block`` elements; array j's blocks are starts[j] .. starts[j + 1] - 1. (One region
    instead of one per parameter: each costs a wake-up of the sleeping OpenMP threads, ~45 us.)"""
    for blk in prange(starts[-1]):
        j = 0
        while starts[j + 1] <= blk:
            j += 1
        p = ps[j]
        lo = (blk - starts[j]) * block
        _adam_range(p, gs[j], ms[j], vs[j], lo, min(lo + block, p.size), b1, c1, b2, c2, step, sqrt_bc2, eps)


@njit(**_pjit)
def _adam_kernel(p, g, m, v, b1, c1, b2, c2, step, sqrt_bc2, eps):
    # c = 1 - beta in the parameters' dtype: a bare ``1 - b1`` is float64 in numba, and the
    # float64 division and square root then ran unvectorised (fast-cnn: 0.59 against 0.08 ms)
    tiny = np.finfo(p.dtype).tiny
    for i in prange(p.size):
        gi = g[i]
        m[i] = flush_subnormal(b1 * m[i] + c1 * gi, tiny)
        v[i] = flush_subnormal(b2 * v[i] + c2 * gi * gi, tiny)
        p[i] -= step * m[i] / (math.sqrt(v[i]) / sqrt_bc2 + eps)


@njit(**_pjit)
def warm_threads():
    """An empty parallel region: starts Numba's threads, which fixes its threading layer."""
    for _ in prange(1):
        pass


lock_caches(globals())  # several processes compiling into one cache at once: numba_cache.py
