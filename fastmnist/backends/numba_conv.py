"""Stride-1 convolution fused with ReLU and max-pooling on the register-tiled micro-kernels of
numba_tiles.py; the public wrappers that check arguments are in numba_backend.py.

Layout. The input is copied once per forward pass to channels-last, ``xh (N, Hp, Wp, C)`` zero
padded, and kept for the backward pass. The filters are packed as ``wpk (K, Fp)``: one row per
reduction index ``k = (a*KW + b)*C + c`` (tap (a, b), input channel c), the output channels
padded with zeros to ``Fp``, a whole number of tiles. ``roff[k] = (a*Wp + b)*C + c`` is where that
row's input sits relative to an output pixel's top-left input, so an output row of pixels is one
``tile_rows`` call per block of output channels, and a block of weight-gradient rows one
``tile_grad`` call per image.

Backward. The gradient at the convolution's output, ``g (OH, OW, Fp)`` per image, is rebuilt from
the pooled gradient (through the argmax and the ReLU). The input gradient is the product
``g (OH*OW, F) @ W (F, KH*KW*C)`` on the same micro-kernel, each pixel's row then added into
the KH x KW input pixels it came from (col2im). The other way, the forward pass of a zero-bordered
``g`` with rotated filters, multiplies the border's zeros too: 1.9x the work for fast-cnn's
conv2 (4.9 against 2.4 ms a batch, measured). Images go in chunks of ``config.CONV_TILE_CHUNK``;
each chunk writes its own weight- and bias-gradient partial, summed in chunk order afterwards:
the result does not depend on the number of threads.

The 2x2 pooling epilogue keeps the tie rule of numba_kernels._pool22_plane (the first maximum in
row-major window order wins), over a channels-last accumulator instead of a wide plane.
"""
import numpy as np
from numba import njit, prange

from .numba_cache import lock_caches
from .numba_tiles import TILE_PIXELS, tile_columns, tile_grad, tile_rows, tile_width

_pjit = dict(cache=True, nogil=True, parallel=True)


def padded_width(channels: int, itemsize: int) -> int:
    """Channels rounded up to whole tiles (32 float32 on AVX-512): the packed width of a layer."""
    cols = tile_columns(itemsize)
    return -(-channels // cols) * cols


def pack_rows(w: np.ndarray, width: int) -> np.ndarray:
    """Filters (F, C, KH, KW) -> (KH*KW*C, width): rows k = (a*KW + b)*C + c, columns f, zero padded."""
    f, c, kh, kw = w.shape
    out = np.zeros((kh * kw * c, width), w.dtype)
    out[:, :f] = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)
    return out


def pack_columns(w: np.ndarray, width: int) -> np.ndarray:
    """Filters (F, C, KH, KW) -> (F, width): row f, columns k = (a*KW + b)*C + c, zero padded;
    the input gradient's right-hand side (see conv_pool_backward_kernel)."""
    f, c, kh, kw = w.shape
    out = np.zeros((f, width), w.dtype)
    out[:, :kh * kw * c] = w.transpose(0, 2, 3, 1).reshape(f, -1)
    return out


def row_offsets(kh: int, kw: int, channels: int, row_pixels: int, pixel_stride: int) -> np.ndarray:
    """roff[(a*KW + b)*C + c] = (a*row_pixels + b)*pixel_stride + c: each reduction row's offset
    in a channels-last image whose rows hold ``row_pixels`` pixels of ``pixel_stride`` elements."""
    a, b, c = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(channels), indexing="ij")
    return ((a * row_pixels + b) * pixel_stride + c).reshape(-1).astype(np.int64)


@njit(**_pjit)
def to_channels_last_kernel(x, pad, out):  # x (N, C, H, W) -> out (N, H+2p, W+2p, C), border zeroed
    n_, c_, h_, w_ = x.shape
    for n in prange(n_):
        for i in range(h_):
            for j in range(w_):
                for c in range(c_):
                    out[n, i + pad, j + pad, c] = x[n, c, i, j]


@njit(**_pjit)
def conv_pool_forward_kernel(xh, roff, wpk, b, oh, ow, size, pstride, y, arg):
    """y (N, F, PH, PW) = max-pool(ReLU(conv(x) + b)), arg = each maximum's index i*OW + j."""
    n_, hp, wp, c_ = xh.shape
    fp, nk = wpk.shape[1], roff.shape[0]
    cols = tile_width(wpk)
    xflat, wflat = xh.reshape(-1), wpk.reshape(-1)
    for n in prange(n_):
        acc = np.empty(oh * ow * fp, y.dtype)  # (OH, OW, Fp) before the bias
        for i in range(oh):
            for q0 in range(0, ow, TILE_PIXELS):
                npix = min(TILE_PIXELS, ow - q0)
                for j0 in range(0, fp, cols):
                    tile_rows(xflat, ((n * hp + i) * wp + q0) * c_, c_, roff, 0, nk,
                              wflat, j0, fp, acc, (i * ow + q0) * fp + j0, fp, npix)
        if size == 2 and pstride == 2:
            _pool22_relu(acc, fp, ow, b, y[n], arg[n])
        else:
            _pool_relu(acc, fp, ow, b, size, pstride, y[n], arg[n])


@njit(cache=True, nogil=True)
def _pool_relu(acc, fp, ow, b, size, pstride, y, arg):
    """y (F, PH, PW) = ReLU(max over each window of acc (OH, OW, Fp) + b), arg its index i*OW + j;
    the first maximum wins ties. The channels run innermost, in acc's memory order (outermost,
    the strided reads cost 1.3 ms a fast-cnn batch; measured 10.5 against 1.5 us an image)."""
    f_, ph, pw = y.shape
    best = np.empty(fp, acc.dtype)
    where = np.empty(fp, np.int32)
    for pi in range(ph):
        for pj in range(pw):
            h0, w0 = pi * pstride, pj * pstride
            first = h0 * ow + w0
            for f in range(fp):
                best[f] = acc[first * fp + f]
                where[f] = first
            for a in range(size):
                for bb in range(size):
                    k = np.int32((h0 + a) * ow + w0 + bb)
                    base = k * fp
                    for f in range(fp):
                        v, bf = acc[base + f], best[f]
                        where[f] = k if v > bf else where[f]
                        best[f] = v if v > bf else bf
            for f in range(f_):
                v = best[f] + b[f]
                y[f, pi, pj] = v if v > 0 else 0
                arg[f, pi, pj] = where[f]


@njit(cache=True, nogil=True)
def _pool22_relu(acc, fp, ow, b, y, arg):  # _pool_relu for a 2x2 window, stride 2
    f_, ph, pw = y.shape
    for pi in range(ph):
        for pj in range(pw):
            k0 = 2 * pi * ow + 2 * pj
            r0, r1 = acc[k0 * fp: (k0 + 1) * fp], acc[(k0 + 1) * fp: (k0 + 2) * fp]
            r2, r3 = acc[(k0 + ow) * fp: (k0 + ow + 1) * fp], acc[(k0 + ow + 1) * fp: (k0 + ow + 2) * fp]
            for f in range(f_):
                v0, v1, v2, v3 = r0[f], r1[f], r2[f], r3[f]
                m01, m23 = max(v0, v1), max(v2, v3)
                k01 = k0 if v0 >= v1 else k0 + 1
                k23 = k0 + ow if v2 >= v3 else k0 + ow + 1
                best = max(m01, m23) + b[f]
                y[f, pi, pj] = best if best > 0 else 0
                arg[f, pi, pj] = k01 if m01 >= m23 else k23


@njit(**_pjit)
def conv_pool_backward_kernel(dy, y, arg, xh, roff, oh, ow, kh, kw, chunk, dwp, dbp,
                              wcol, roffc, pad, dx):
    """Per chunk of images: dwp[chunk] (K, Fp) and dbp[chunk] (Fp,) partials; dx (N, C, H, W)
    when it has any images (the input gradient), else skipped."""
    n_, f_, ph, pw = dy.shape
    _, hp, wp, c_ = xh.shape
    nk, fp = roff.shape[0], dwp.shape[2]
    gplane = oh * ow * fp
    xplane = hp * wp * c_
    cols = tile_width(dwp)
    xflat, dwflat = xh.reshape(-1), dwp.reshape(-1)
    chunks = (n_ + chunk - 1) // chunk
    for ci in prange(chunks):
        n0 = ci * chunk
        cnt = min(chunk, n_ - n0)
        g = np.zeros(cnt * gplane, dy.dtype)
        for k in range(cnt):  # un-pool: through the argmax, where the ReLU let it through
            for f in range(f_):
                for pi in range(ph):
                    for pj in range(pw):
                        if y[n0 + k, f, pi, pj] > 0:
                            where = arg[n0 + k, f, pi, pj]
                            d = dy[n0 + k, f, pi, pj]
                            g[k * gplane + where * fp + f] += d
                            dbp[ci, f] += d
        for r0 in range(0, nk, TILE_PIXELS):
            nrow = min(TILE_PIXELS, nk - r0)
            for j0 in range(0, fp, cols):
                for k in range(cnt):
                    tile_grad(xflat, (n0 + k) * xplane, roff, r0, nrow, g, k * gplane + j0,
                              oh, ow, wp * c_, c_, ow * fp, fp, dwflat, (ci * nk + r0) * fp + j0, fp)
        if dx.shape[0] > 0:
            _input_gradient(g, cnt, oh, ow, fp, kh, kw, wcol, roffc, pad, dx, n0, cols)


@njit(cache=True, nogil=True)
def _input_gradient(g, cnt, oh, ow, fp, kh, kw, wcol, roffc, pad, dx, n0, cols):
    """dx[n0 + k] (C, H, W) from g[k] (OH, OW, Fp): rows = g @ wcol (F, Kp), then each pixel's row
    added at its KH x KW input pixels; ``roffc`` = 0..F-1, the reduction's offsets in a pixel."""
    _, c_, h_, w_ = dx.shape
    hp, wp = h_ + 2 * pad, w_ + 2 * pad
    kp, nf = wcol.shape[1], roffc.shape[0]
    gplane = oh * ow * fp
    wflat = wcol.reshape(-1)
    rows = np.empty(oh * ow * kp, dx.dtype)  # (OH*OW, Kp)
    dxp = np.empty(hp * wp * c_, dx.dtype)  # (Hp, Wp, C), the padded input's gradient
    for k in range(cnt):
        for i in range(oh):
            for q0 in range(0, ow, TILE_PIXELS):
                npix = min(TILE_PIXELS, ow - q0)
                for j0 in range(0, kp, cols):
                    tile_rows(g, k * gplane + (i * ow + q0) * fp, fp, roffc, 0, nf,
                              wflat, j0, kp, rows, (i * ow + q0) * kp + j0, kp, npix)
        dxp[:] = 0
        for i in range(oh):
            for q in range(ow):
                src = (i * ow + q) * kp
                for a in range(kh):
                    for bb in range(kw):
                        dst = ((i + a) * wp + q + bb) * c_
                        s0 = src + (a * kw + bb) * c_
                        into, part = dxp[dst: dst + c_], rows[s0: s0 + c_]  # slices: vectorised
                        for c in range(c_):
                            into[c] += part[c]
        for c in range(c_):
            for i in range(h_):
                for j in range(w_):
                    dx[n0 + k, c, i, j] = dxp[((i + pad) * wp + j + pad) * c_ + c]


lock_caches(globals())
