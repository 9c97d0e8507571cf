"""The Numba backend: JIT-compiled, parallel CPU kernels; matrix products through NumPy's BLAS.

Each public function validates its arguments with :mod:`.contract` (in Python, before any compiled
code runs) and makes its inputs C-contiguous, then calls an ``@njit`` kernel. Parallel loops run
over the batch (``prange``); matrix products are left to BLAS, which runs between the parallel
regions, never inside them, so Numba's threads and BLAS's threads take turns on the cores instead
of fighting over them. Kernels are compiled on first use and cached on disk (``cache=True``; set
``NUMBA_CACHE_DIR`` where the package directory is read-only).

Fused paths the layers use: conv bias + NCHW layout in one pass (and + ReLU), pool + argmax,
softmax + cross-entropy + gradient, one Adam pass per parameter.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError as exc:  # reported by available(); the registry never returns this backend then
    numba = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

from .. import config
from . import contract as C
from . import numpy_backend as _ref

name = "numba"
xp = np
is_device = False


def available():
    if numba is None:
        return False, f"numba is not installed ({_IMPORT_ERROR}); pip install numba"
    return True, f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads"


def info():
    if numba is None:
        return {}
    return {"numba": numba.__version__, "threads": numba.get_num_threads(),
            "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,
            "threading_layer": _threading_layer(), "cache_dir": os.environ.get("NUMBA_CACHE_DIR", "(next to the package)")}


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return numba.config.THREADING_LAYER


@contextlib.contextmanager
def training_context():
    """Held by the trainer around its epochs: BLAS runs single-threaded inside it.

    Numba's threads and BLAS's threads otherwise take turns badly on the two cores: after each
    matrix product BLAS's idle threads spin while the next parallel Numba kernel wants the cores
    (simple-cnn step measured 25.6 ms with 2 BLAS threads against 12.8 ms with 1; see
    docs/benchmarks.md). The parallel Numba kernels keep every core busy instead.
    """
    if not config.NUMBA_SINGLE_THREAD_BLAS:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl, training is correct, only slower
        yield
        return
    global _SPLIT_GEMMS
    with threadpool_limits(limits=1, user_api="blas"):
        previous, _SPLIT_GEMMS = _SPLIT_GEMMS, True
        try:
            yield
        finally:
            _SPLIT_GEMMS = previous


# ---- matrix products: BLAS, split over the cores by hand inside training_context ----

_SPLIT_GEMMS = False  # True inside training_context, where BLAS itself runs single-threaded
_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import concurrent.futures
        _POOL = concurrent.futures.ThreadPoolExecutor(max(1, numba.get_num_threads() - 1),
                                                      thread_name_prefix="fastmnist-gemm")
    return _POOL


def _matmul(a, b):
    """a @ b through BLAS. Inside training_context (single-threaded BLAS), a large product is cut
    into one piece per thread, along the rows of a or, when a has few rows, along the shared
    dimension (partial products summed); numpy releases the GIL, so the pieces run in parallel.
    simple-cnn's first dense layer and fast-cnn's second convolution gain most (see docs)."""
    m, k = a.shape
    n = b.shape[1]
    parts = numba.get_num_threads()
    if not _SPLIT_GEMMS or parts < 2 or 2 * m * k * n < config.SPLIT_GEMM_MIN_FLOPS:
        return a @ b
    pool = _pool()
    if m >= 64 * parts:
        out = np.empty((m, n), np.result_type(a, b))
        cuts = np.linspace(0, m, parts + 1).astype(int)
        futures = [pool.submit(np.matmul, a[lo:hi], b, out[lo:hi]) for lo, hi in zip(cuts[1:-1], cuts[2:])]
        np.matmul(a[:cuts[1]], b, out[:cuts[1]])
        for f in futures:
            f.result()
        return out
    cuts = np.linspace(0, k, parts + 1).astype(int)
    futures = [pool.submit(np.matmul, a[:, lo:hi], b[lo:hi]) for lo, hi in zip(cuts[1:-1], cuts[2:])]
    out = a[:, :cuts[1]] @ b[:cuts[1]]
    for f in futures:
        out += f.result()
    return out


asarray = _ref.asarray
to_numpy = _ref.to_numpy
synchronize = _ref.synchronize
one_hot = _ref.one_hot


if numba is not None:
    _jit = dict(cache=True, nogil=True)
    _pjit = dict(cache=True, nogil=True, parallel=True)
    # Reassociation lets LLVM vectorise reductions; no 'nnan'/'ninf', so NaN and Inf still propagate.
    _FM = {"reassoc", "contract"}

    # ---------------- convolution ----------------

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
    def _rows_to_nchw_kernel(rows, b, relu, out):  # rows (N*P, F) + b -> out (N, F, P), optionally ReLU
        n_, f_, p_ = out.shape
        for n in prange(n_):
            for p in range(p_):
                r = n * p_ + p
                for f in range(f_):
                    v = rows[r, f] + b[f]
                    out[n, f, p] = v if (not relu or v > 0) else 0

    @njit(**_pjit)
    def _nchw_to_rows_kernel(dy, out):  # dy (N, F, P) -> out (N*P, F)
        n_, f_, p_ = dy.shape
        for n in prange(n_):
            for f in range(f_):
                for p in range(p_):
                    out[n * p_ + p, f] = dy[n, f, p]

    # Direct convolution, for layers whose C*KH*KW is small (the first layer: 1x5x5): im2col would
    # write 25 copies of the input and hand BLAS a K=25 product it runs far under its peak. Here
    # each (n, f) output plane is accumulated in a "wide" buffer whose row stride is the padded
    # input width Wp, so that for each kernel tap (c, a, b) the update is one long contiguous
    # saxpy, acc[0:L] += w[f, c, a, b] * x[n, c].ravel()[a*Wp + b : a*Wp + b + L]; the Wp - OW
    # junk columns per row are dropped on the way out. The slices matter: indexing with a
    # run-time offset inside the loop defeats LLVM's vectoriser (measured 8x slower).

    @njit(**_pjit, fastmath=_FM)
    def _conv_direct_kernel(xf, wp, w, b, relu, y):  # xf padded (N, C, Hp*Wp) -> y (N, F, OH, OW), stride 1
        n_, c_, _ = xf.shape
        f_, _, kh, kw = w.shape
        oh, ow = y.shape[2], y.shape[3]
        span = (oh - 1) * wp + ow
        for n in prange(n_):
            acc = np.empty(span, y.dtype)
            for f in range(f_):
                acc[:] = b[f]
                for c in range(c_):
                    src = xf[n, c]
                    for a in range(kh):
                        for bb in range(kw):
                            wv = w[f, c, a, bb]
                            s = src[a * wp + bb: a * wp + bb + span]
                            for q in range(span):
                                acc[q] += wv * s[q]
                for i in range(oh):
                    row = acc[i * wp: i * wp + ow]
                    out = y[n, f, i]
                    for j in range(ow):
                        v = row[j]
                        out[j] = v if (not relu or v > 0) else 0

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

    @njit(**_jit, fastmath=_FM)
    def _accumulate_taps(g, xn, wp, span, kh, kw, acc):
        """acc[c, a, b] += <g, xn[c][a*wp + b : a*wp + b + span]> for every tap (stride 1).

        The taps of one kernel row advance together, so each g element is loaded once per row
        instead of once per tap (5 or 3 accumulators; other widths tap by tap).
        """
        for c in range(xn.shape[0]):
            src = xn[c]
            for a in range(kh):
                row = src[a * wp: a * wp + span + kw - 1]
                if kw == 5:
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
                elif kw == 3:
                    s0 = s1 = s2 = g.dtype.type(0)
                    for q in range(span):
                        gq = g[q]
                        s0 += gq * row[q]
                        s1 += gq * row[q + 1]
                        s2 += gq * row[q + 2]
                    acc[c, a, 0] += s0
                    acc[c, a, 1] += s1
                    acc[c, a, 2] += s2
                else:
                    for bb in range(kw):
                        part = g.dtype.type(0)
                        for q in range(span):
                            part += g[q] * row[q + bb]
                        acc[c, a, bb] += part

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
                    src = xf[n, c]
                    for a in range(kh):
                        for bb in range(kw):
                            wv = w[f, c, a, bb]
                            s = src[a * wp + bb: a * wp + bb + span]
                            for q in range(span):
                                acc[q] += wv * s[q]
                if size == 2 and pstride == 2:
                    _pool22_plane(acc, wp, ow, y[n, f], arg[n, f])
                else:
                    _pool_plane(acc, wp, ow, size, pstride, y[n, f], arg[n, f])

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
                h0, w0 = i * pstride, j * pstride
                best = acc[h0 * wp + w0]
                where = h0 * ow + w0
                for a in range(size):
                    for bb in range(size):
                        v = acc[(h0 + a) * wp + w0 + bb]
                        k = (h0 + a) * ow + w0 + bb
                        where = k if v > best else where  # selects, not branches: random data
                        best = v if v > best else best    # would mispredict half of them
                y[i, j] = best if best > 0 else 0
                arg[i, j] = where

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
                for i in range(ph):
                    for j in range(pw):
                        if y[n, f, i, j] > 0:  # the ReLU mask; pooled windows pass one gradient each
                            k = arg[n, f, i, j]
                            d = dy[n, f, i, j]
                            g[(k // ow) * wp + k % ow] += d
                            bsum += d
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
                    gf = g[f]
                    for a in range(kh):
                        for bb in range(kw):
                            wv = w[f, c, a, bb]
                            dst = plane[a * wp + bb: a * wp + bb + span]
                            for q in range(span):
                                dst[q] += wv * gf[q]
                for i in range(h_):
                    for j in range(w_):
                        dx[n, c, i, j] = plane[(i + pad) * wp + j + pad]

    @njit(**_pjit)
    def _rows_pool_kernel(rows, b, oh, ow, size, pstride, y, arg):  # rows (N*OH*OW, F) -> pooled y, arg
        n_, f_, ph, pw = y.shape
        for n in prange(n_):
            base = n * oh * ow
            for f in range(f_):
                for i in range(ph):
                    for j in range(pw):
                        h0, w0 = i * pstride, j * pstride
                        best = rows[base + h0 * ow + w0, f]
                        where = h0 * ow + w0
                        for a in range(size):
                            for bb in range(size):
                                v = rows[base + (h0 + a) * ow + w0 + bb, f]
                                k = (h0 + a) * ow + w0 + bb
                                where = k if v > best else where  # selects, not branches: random
                                best = v if v > best else best    # data would mispredict half of them
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

    @njit(**_pjit)
    def _pad_kernel(x, pad, out):  # out (N, C, H+2p, W+2p) zeroed
        n_, c_, h_, w_ = x.shape
        for n in prange(n_):
            for c in range(c_):
                for i in range(h_):
                    for j in range(w_):
                        out[n, c, i + pad, j + pad] = x[n, c, i, j]

    # ---------------- pooling ----------------

    @njit(**_pjit)
    def _maxpool_kernel(x, size, stride, oh, ow, y, arg):
        n_, c_, h_, w_ = x.shape
        for n in prange(n_):
            for c in range(c_):
                for i in range(oh):
                    for j in range(ow):
                        h0, w0 = i * stride, j * stride
                        best = x[n, c, h0, w0]
                        where = h0 * w_ + w0
                        for a in range(size):
                            for b in range(size):
                                v = x[n, c, h0 + a, w0 + b]
                                k = (h0 + a) * w_ + w0 + b  # strict >: the first maximum wins ties;
                                where = k if v > best else where  # selects, not branches
                                best = v if v > best else best
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

    # ---------------- elementwise ----------------

    @njit(**_pjit)
    def _bias_add_kernel(y, b, relu):  # y (N, M) += b, optionally ReLU, in place
        n_, m_ = y.shape
        for n in prange(n_):
            for m in range(m_):
                v = y[n, m] + b[m]
                y[n, m] = v if (not relu or v > 0) else 0

    @njit(**_pjit)
    def _relu_kernel(x, out):
        for i in prange(x.size):
            v = x[i]
            out[i] = v if v > 0 else 0

    @njit(**_pjit)
    def _relu_backward_kernel(dy, x, out):
        for i in prange(x.size):
            out[i] = dy[i] if x[i] > 0 else 0

    @njit(**_pjit)
    def _sigmoid_kernel(x, out):
        for i in prange(x.size):
            v = x[i]
            if v >= 0:
                out[i] = 1 / (1 + math.exp(-v))
            else:
                e = math.exp(v)
                out[i] = e / (1 + e)

    @njit(**_pjit)
    def _sigmoid_backward_kernel(dy, y, out):
        for i in prange(y.size):
            out[i] = dy[i] * y[i] * (1 - y[i])

    @njit(**_pjit)
    def _mul_kernel(a, b, out):
        for i in prange(a.size):
            out[i] = a[i] * b[i]

    # ---------------- losses ----------------

    @njit(**_pjit)
    def _softmax_kernel(x, out):
        n_, m_ = x.shape
        for n in prange(n_):
            top = x[n, 0]
            for m in range(1, m_):
                top = max(top, x[n, m])
            s = 0.0
            for m in range(m_):
                e = math.exp(x[n, m] - top)
                out[n, m] = e
                s += e
            for m in range(m_):
                out[n, m] /= s

    @njit(**_pjit)
    def _softmax_ce_kernel(x, labels, d, row_loss):  # returns the count of labels out of range
        n_, m_ = x.shape
        bad = 0
        for n in prange(n_):
            lab = labels[n]
            if lab < 0 or lab >= m_:
                bad += 1
                continue
            top = x[n, 0]
            for m in range(1, m_):
                top = max(top, x[n, m])
            s = 0.0
            for m in range(m_):
                e = math.exp(x[n, m] - top)
                d[n, m] = e
                s += e
            row_loss[n] = math.log(s) - (x[n, lab] - top)
            for m in range(m_):
                d[n, m] = d[n, m] / s / n_
            d[n, lab] -= 1.0 / n_
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

    @njit(**_pjit)
    def _adam_kernel(p, g, m, v, b1, b2, step, sqrt_bc2, eps):
        for i in prange(p.size):
            gi = g[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            p[i] -= step * m[i] / (math.sqrt(v[i]) / sqrt_bc2 + eps)


def _c(a):
    return np.ascontiguousarray(a)


def _flat(a, op, name):
    """A flat, writable view of an in-place operand; a copy would silently drop the update."""
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous for an in-place update, got strides {a.strides}")
    return a.reshape(-1)


# ---- convolution ----

def im2col(x, kh, kw, stride=1, pad=0):
    """(N, C, H, W) -> (N*OH*OW, C*KH*KW); rows (n, oh, ow), columns (c, kh, kw)."""
    n, c, h, w, oh, ow = C.check_im2col(x, kh, kw, stride, pad)
    out = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    _im2col_kernel(_c(x), kh, kw, stride, pad, oh, ow, out)
    return out


def col2im(col, x_shape, kh, kw, stride=1, pad=0):
    n, c, h, w, oh, ow = C.check_col2im(col, x_shape, kh, kw, stride, pad)
    out = np.zeros((n, c, h, w), col.dtype)
    _col2im_kernel(_c(col), kh, kw, stride, pad, oh, ow, out)
    return out


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)."""
    return conv2d_forward_cached(x, w, b, stride, pad)[0]


def conv2d_forward_cached(x, w, b, stride=1, pad=0, relu=False):
    """Forward returning what the backward needs; ``relu`` fuses a following ReLU.

    Direct convolution where stride is 1 and ``C*KH*KW <= config.DIRECT_CONV_MAX_K``, else im2col + BLAS.
    """
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    x, w, b = _c(x), _c(w), _c(b)
    if stride == 1 and c * kh * kw <= config.DIRECT_CONV_MAX_K:
        xp = _padded(x, pad)
        xf = xp.reshape(n, c, -1)
        y = np.empty((n, f, oh, ow), x.dtype)
        _conv_direct_kernel(xf, xp.shape[3], w, b, relu, y)
        return y, ("direct", xf, x.shape, xp.shape[3], pad)
    cols = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    _im2col_kernel(x, kh, kw, stride, pad, oh, ow, cols)
    rows = _matmul(cols, w.reshape(f, -1).T)  # BLAS: (N*OH*OW, CKK) @ (CKK, F)
    y = np.empty((n, f, oh, ow), x.dtype)
    _rows_to_nchw_kernel(rows, b, relu, y.reshape(n, f, oh * ow))
    return y, ("im2col", cols, x.shape, stride, pad)


def _padded(x, pad):
    if not pad:
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
    _pad_kernel(x, pad, out)
    return out


def conv2d_backward(dy, x, w, stride=1, pad=0):
    """dy (N, F, OH, OW) -> (dx (N, C, H, W), dw (F, C, KH, KW), db (F,))."""
    C.check_conv2d_backward(dy, x, w, stride, pad)
    cols = im2col(x, w.shape[2], w.shape[3], stride, pad)
    return conv2d_backward_cached(dy, ("im2col", cols, x.shape, stride, pad), w)


def conv2d_backward_cached(dy, cache, w, need_dx=True):
    kind, saved, x_shape, stride, pad = cache
    f, c, kh, kw = w.shape
    n, _, oh, ow = dy.shape
    dy, w = _c(dy), _c(w)
    if kind == "direct":  # stride 1; the cache holds the padded width where others hold the stride
        dw, db = np.empty(w.shape, dy.dtype), np.empty(f, dy.dtype)
        _conv_direct_dw_kernel(dy, saved, stride, dw, db)
        stride = 1
        rows = None
    else:
        rows = np.empty((n * oh * ow, f), dy.dtype)
        _nchw_to_rows_kernel(dy.reshape(n, f, oh * ow), rows)
        dw = _matmul(rows.T, saved).reshape(w.shape)  # BLAS
        db = rows.sum(axis=0)
    if not need_dx:
        return None, dw, db
    if rows is None:
        rows = np.empty((n * oh * ow, f), dy.dtype)
        _nchw_to_rows_kernel(dy.reshape(n, f, oh * ow), rows)
    dcols = _matmul(rows, w.reshape(f, -1))  # BLAS
    dx = np.zeros(x_shape, dy.dtype)
    _col2im_kernel(dcols, kh, kw, stride, pad, oh, ow, dx)
    return dx, dw, db


def conv2d_relu_maxpool_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=2):
    """Fused conv -> ReLU -> max-pool (layers' fast path) -> (y (N, F, PH, PW), cache)."""
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    size = C.require_int("conv2d_relu_maxpool_forward", "size", size, 1)
    pool_stride = C.require_int("conv2d_relu_maxpool_forward", "pool_stride", pool_stride, 1)
    ph = C.conv_out("conv2d_relu_maxpool_forward", oh, size, pool_stride, 0, "height")
    pw = C.conv_out("conv2d_relu_maxpool_forward", ow, size, pool_stride, 0, "width")
    x, w, b = _c(x), _c(w), _c(b)
    y = np.empty((n, f, ph, pw), x.dtype)
    arg = np.empty((n, f, ph, pw), np.int32)
    if stride == 1 and c * kh * kw <= config.DIRECT_CONV_MAX_K:
        xp = _padded(x, pad)
        xf = xp.reshape(n, c, -1)
        _conv_direct_pool_kernel(xf, xp.shape[3], w, b, oh, ow, size, pool_stride, y, arg)
        return y, ("direct", xf, xp.shape[3], x.shape, stride, pad, oh, ow, y, arg)
    cols = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    _im2col_kernel(x, kh, kw, stride, pad, oh, ow, cols)
    rows = _matmul(cols, w.reshape(f, -1).T)  # BLAS
    _rows_pool_kernel(rows, b, oh, ow, size, pool_stride, y, arg)
    return y, ("im2col", cols, 0, x.shape, stride, pad, oh, ow, y, arg)


def conv2d_relu_maxpool_backward(dy, cache, w, need_dx=True):
    """Backward of the fused path: pooled dy (N, F, PH, PW) -> (dx or None, dw, db)."""
    kind, saved, wp, x_shape, stride, pad, oh, ow, y, arg = cache
    f, c, kh, kw = w.shape
    n = dy.shape[0]
    dy, w = _c(dy), _c(w)
    if kind == "direct":
        dw, db = np.empty(w.shape, dy.dtype), np.empty(f, dy.dtype)
        _conv_direct_pool_dw_kernel(dy, y, arg, saved, wp, oh, ow, dw, db)
        if not need_dx:
            return None, dw, db
        dx = np.empty(x_shape, dy.dtype)
        _conv_direct_pool_dx_kernel(dy, y, arg, w, wp, oh, ow, pad, dx)
        return dx, dw, db
    rows = np.zeros((n * oh * ow, f), dy.dtype)
    _pool_to_rows_kernel(dy, y, arg, oh, ow, rows)
    dw = _matmul(rows.T, saved).reshape(w.shape)  # BLAS
    db = rows.sum(axis=0)
    if not need_dx:
        return None, dw, db
    dx = np.zeros(x_shape, dy.dtype)
    _col2im_kernel(_matmul(rows, w.reshape(f, -1)), kh, kw, stride, pad, oh, ow, dx)
    return dx, dw, db


# ---- pooling ----

def maxpool2d_forward(x, size=2, stride=2):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) flat h*W+w indices)."""
    n, c, h, w, oh, ow = C.check_maxpool2d_forward(x, size, stride)
    y = np.empty((n, c, oh, ow), x.dtype)
    arg = np.empty((n, c, oh, ow), np.int64)
    _maxpool_kernel(_c(x), size, stride, oh, ow, y, arg)
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape, size=2, stride=2):
    n, c, h, w = C.check_maxpool2d_backward(dy, argmax, x_shape, size, stride)
    dx = np.zeros((n, c, h * w), dy.dtype)
    bad = _maxpool_backward_kernel(_c(dy), _c(argmax).astype(np.int64, copy=False), dx)
    if bad:
        C.check_argmax_range(argmax, h, w, int(argmax.min()), int(argmax.max()))
    return dx.reshape(n, c, h, w)


# ---- affine ----

def affine_forward(x, w, b, relu=False):
    """x (N, D), w (D, M), b (M,) -> (N, M); ``relu`` fuses a following ReLU."""
    C.check_affine_forward(x, w, b)
    y = _matmul(_c(x), _c(w))  # BLAS
    _bias_add_kernel(y, _c(b), relu)
    return y


def affine_backward(dy, x, w, need_dx=True):
    C.check_affine_backward(dy, x, w)
    dy, x, w = _c(dy), _c(x), _c(w)
    return (_matmul(dy, w.T) if need_dx else None), _matmul(x.T, dy), dy.sum(axis=0)


# ---- activations ----

def _unary(kernel, x):
    x = _c(x)
    out = np.empty_like(x)
    kernel(x.reshape(-1), out.reshape(-1))
    return out


def _binary(kernel, a, b):
    a, b = _c(a), _c(b)
    out = np.empty_like(a)
    kernel(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def relu_forward(x):
    C.check_unary("relu_forward", x)
    return _unary(_relu_kernel, x)


def relu_backward(dy, x):
    C.check_unary_backward("relu_backward", dy, x)
    return _binary(_relu_backward_kernel, dy, x)


def sigmoid_forward(x):
    C.check_unary("sigmoid_forward", x)
    return _unary(_sigmoid_kernel, x)


def sigmoid_backward(dy, y):
    C.check_unary_backward("sigmoid_backward", dy, y, "y")
    return _binary(_sigmoid_backward_kernel, dy, y)


# ---- losses ----

def softmax(x):
    C.check_softmax(x)
    x = _c(x)
    out = np.empty_like(x)
    _softmax_kernel(x, out)
    return out


def softmax_cross_entropy(logits, labels, check=True):
    """Fused softmax + mean cross-entropy + gradient -> (loss 0-d, dlogits (N, M)).

    The kernel checks every label as it goes (for free), so ``check`` is accepted and unused."""
    C.check_softmax_cross_entropy(logits, labels)
    x = _c(logits)
    labels = _c(labels).astype(np.int64, copy=False)
    d = np.empty_like(x)
    row_loss = np.zeros(x.shape[0], np.float64)
    if _softmax_ce_kernel(x, labels, d, row_loss):
        C.check_label_range("softmax_cross_entropy", int(labels.min()), int(labels.max()), x.shape[1])
    return np.asarray(row_loss.sum() / x.shape[0], x.dtype), d


def mse_loss(y, t):
    C.check_mse(y, t)
    y = _c(y)
    d = np.empty_like(y)
    s = _mse_kernel(y, _c(t), d)
    return np.asarray(0.5 * s / y.shape[0], y.dtype), d


# ---- dropout ----

def dropout_forward(x, p, seed):
    C.check_dropout(x, p, seed)
    x = _c(x)
    y, mask = np.empty_like(x), np.empty_like(x)
    _dropout_kernel(x.reshape(-1), float(p), 1.0 / (1.0 - p), int(seed), y.reshape(-1), mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask):
    C.check_unary_backward("dropout_backward", dy, mask, "mask")
    return _binary(_mul_kernel, dy, mask)


# ---- optimizer updates, in place ----

def sgd_update(param, grad, lr):
    C.check_update("sgd_update", param, grad, lr)
    _sgd_kernel(_flat(param, "sgd_update", "param"), _c(grad).reshape(-1), param.dtype.type(lr))


def momentum_update(param, grad, velocity, lr, momentum=0.9):
    C.check_update("momentum_update", param, grad, lr, velocity=velocity)
    f = param.dtype.type
    _momentum_kernel(_flat(param, "momentum_update", "param"), _c(grad).reshape(-1),
                     _flat(velocity, "momentum_update", "velocity"), f(lr), f(momentum))


def adagrad_update(param, grad, h, lr, eps=1e-7):
    C.check_update("adagrad_update", param, grad, lr, h=h)
    f = param.dtype.type
    _adagrad_kernel(_flat(param, "adagrad_update", "param"), _c(grad).reshape(-1), _flat(h, "adagrad_update", "h"),
                    f(lr), f(eps))


def adam_update(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One fused pass: m, v and the parameter updated together (PyTorch's bias-corrected form)."""
    C.check_update("adam_update", param, grad, lr, m=m, v=v)
    t = C.require_int("adam_update", "t", t, 1)
    f = param.dtype.type
    op = "adam_update"
    _adam_kernel(_flat(param, op, "param"), _c(grad).reshape(-1), _flat(m, op, "m"), _flat(v, op, "v"),
                 f(beta1), f(beta2), f(lr / (1 - beta1 ** t)), f(math.sqrt(1 - beta2 ** t)), f(eps))


def count_correct(logits, labels):
    return np.asarray(_count_correct_kernel(_c(logits), _c(labels).astype(np.int64, copy=False)))
