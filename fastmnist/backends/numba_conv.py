"""Stride-1 convolution fused with ReLU and max-pooling on the register-tiled micro-kernels of
numba_tiles.py; the public wrappers that check arguments are in numba_backend.py.

Layout. The input is copied once per forward pass to channels-last, ``xh (N, Hp, Wp, C)`` zero
padded, and kept for the backward pass; an input that already is channels-last memory (the
previous fused layer's output, asked for with ``channels_last``) is read where it lies when
unpadded, and its gradient goes back channels last too (``dy_cl``, ``dx_cl``, ``cl``).
The filters are packed as ``wpk (K, Fp)``: one row per
reduction index ``k = (a*KW + b)*C + c`` (tap (a, b), input channel c), the output channels
padded with zeros to ``Fp``, a whole number of vectors. ``roff[k] = (a*Wp + b)*C + c`` is where
that row's input sits relative to an output pixel's top-left input, so an output row of pixels
is a few ``tile_rows`` calls (two vectors of channels each, a ``tile_rows_narrow`` one for an
odd vector; a ``tile_rows3y`` one of three 32-byte vectors on AVX-512 cores with half-rate zmm
multiply-adds (``HALF_RATE_ZMM``) where the used channels end 3/4 into a two-vector tile, as 24
do, and on AVX2 for the last two-vector tile and an odd vector together), and the weight
gradient a few ``tile_grad`` calls per image. Tiles split a row into near-equal parts
(``_cut``): 24 pixels as 8 + 8 + 8 rather than 10 + 10 + 4.

Pooling. The accumulator ``acc (OH, OW, Fp)`` is pooled channels last (``pool22_relu`` for the
usual 2x2 window, ``_pool_relu`` for others) into ``pooled (PH, PW, Fp)`` and ``arg (N, PH, PW,
Fp)``: each maximum's pixel index i*OW + j, or -1 where the ReLU let nothing through (so the
backward pass needs neither y nor a mask). The first maximum in row-major window order wins
ties, as in numba_kernels._pool22_plane and the numpy reference. ``y (N, F, PH, PW)`` is the
transpose of ``pooled`` (or its rows, channels last: ``copy_rows``); every other layout change
here goes through ``_transpose`` (8 x 8 blocks of
vector shuffles: the scalar loops moved under an element a cycle, 0.3 ms a pass for fast-cnn's
first layer).

Backward. Per image: dy goes channels last, through the argmax (``unpool22``) into ``g (OH, OW,
Fp)``, the gradient before pooling; g feeds the weight gradient and, when asked, the input
gradient: the product ``g (OH*OW, F) @ W (F, KH*KW*C)`` on the same micro-kernel, each pixel's
row then added into the KH x KW input pixels it came from (col2im). The other way, the forward
pass of a zero-bordered ``g`` with rotated filters, multiplies the border's zeros too: as a
direct convolution, 1.9x the work for fast-cnn's conv2 (4.9 against 2.4 ms a batch, measured);
by Winograd's F(2x2, 3x3) (numba_winograd.py), whose 2.25x fewer multiplications pay for the
border, it is how a 3x3 layer with an even output gets its input gradient
(``_winograd_input_gradient``), and how its forward pass runs when 2x2 pooling follows
(``winograd_forward_kernel``). A layer whose pooling leaves at most half the pixels and whose
window rows fit numba_window_grad.py's intrinsics (the first layers, and fast-cnn's conv2 a few
rows a call) takes its weight gradient from the pooled side instead, one window per pooled
value, and builds g only when the input gradient needs it. Images go in chunks of
``config.CONV_TILE_CHUNK``; each chunk writes its own weight- and bias-gradient partial, summed
in chunk order afterwards: the result does not depend on the number of threads.
"""
import functools

import numpy as np
from numba import njit, prange

from . import numba_tiles, numba_window_grad
from . import numba_winograd as wino
from .numba_cache import lock_caches
from .numba_tiles import (
    HALF_RATE_ZMM,
    NARROW_PIXELS,
    NARROW_UNIT_PIXELS,
    TILE3Y_PIXELS,
    TILE_PIXELS,
    UNIT_PIXELS,
    VECTOR_BYTES,
    copy_rows,
    pool22_relu,
    prefetch_for_write,
    tile_grad,
    tile_grad_narrow,
    tile_rows,
    tile_rows3y,
    tile_rows_narrow,
    tile_rows_narrow_unit,
    tile_rows_unit,
    tile_width,
    transpose8,
    unpool22,
)
from .numba_window_grad import window_grad, window_grad_wide

_pjit = dict(cache=True, nogil=True, parallel=True, error_model="numpy")  # see numba_kernels._jit


def padded_width(channels: int, itemsize: int) -> int:
    """Channels rounded up to whole vectors (16 float32 on AVX-512): the packed width of a layer;
    two-vector tiles cover it, and a one-vector (narrow) tile the odd vector left."""
    lanes = VECTOR_BYTES // itemsize
    return -(-channels // lanes) * lanes


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


@functools.lru_cache(maxsize=64)
def row_offsets(kh: int, kw: int, channels: int, row_pixels: int, pixel_stride: int) -> np.ndarray:
    """roff[(a*KW + b)*C + c] = (a*row_pixels + b)*pixel_stride + c: each reduction row's offset
    in a channels-last image whose rows hold ``row_pixels`` pixels of ``pixel_stride`` elements.
    Cached (a meshgrid each pass cost fast-cnn 0.15 ms a step): shared, never written."""
    a, b, c = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(channels), indexing="ij")
    return ((a * row_pixels + b) * pixel_stride + c).reshape(-1).astype(np.int64)


@njit(cache=True, inline="always")
def _tiles(total, most):  # the fewest tiles of at most ``most`` that cover ``total``
    return (total + most - 1) // most


@njit(cache=True, inline="always")
def _cut(total, tiles, part):
    """(start, size) of one of ``tiles`` near-equal tiles over ``total``: 25 rows as 9, 8, 8
    rather than 12, 12, 1, whose one-row tile runs at a tenth of a full tile's rate."""
    start = part * total // tiles
    return start, (part + 1) * total // tiles - start


@njit(cache=True, nogil=True, inline="always")
def _three_y(wide, cols, ldw, used):
    """Whether _row_product ends on a tile_rows3y tile (see there), given the columns ``wide`` of
    its whole two-vector tiles, a tile's ``cols``, the row length ``ldw`` and the ``used`` columns."""
    if wide == 0:
        return False
    if VECTOR_BYTES == 64:
        return HALF_RATE_ZMM and wide - cols // 2 < used <= wide - cols // 4
    return wide < ldw


@njit(cache=True, nogil=True, inline="always")
def _row_product(x, xbase, ps, roff, w, ldw, out, obase, ldo, npix, used):
    """out[obase + p*ldo + v] = sum over k of x[xbase + p*ps + roff[k]] * w[k*ldw + v], for p < npix
    and v < ldw (whole vectors) of which the first ``used`` matter: a row of pixels by every
    column, in two-vector tiles, then a one-vector tile where ldw leaves an odd vector, or a
    tile of three 32-byte vectors: on AVX-512 with HALF_RATE_ZMM where ``used`` ends 3/4 into the
    last two-vector tile (columns past it then stay as they were), on AVX2 for the last two-vector tile and the odd
    vector together."""
    nk, cols = roff.shape[0], tile_width(w)
    wide = ldw - ldw % cols
    three_y = _three_y(wide, cols, ldw, used)
    if three_y:
        wide -= cols
    if wide > 0:
        tiles = _tiles(npix, TILE_PIXELS)
        for part in range(tiles):
            q0, n = _cut(npix, tiles, part)
            for j0 in range(0, wide, cols):
                tile_rows(x, xbase + q0 * ps, ps, roff, 0, nk, w, j0, ldw, out, obase + q0 * ldo + j0, ldo, n)
    if three_y:
        tiles = _tiles(npix, TILE3Y_PIXELS)
        for part in range(tiles):
            q0, n = _cut(npix, tiles, part)
            tile_rows3y(x, xbase + q0 * ps, ps, roff, 0, nk, w, wide, ldw, out, obase + q0 * ldo + wide, ldo, n)
    elif wide < ldw:
        tiles = _tiles(npix, NARROW_PIXELS)
        for part in range(tiles):
            q0, n = _cut(npix, tiles, part)
            tile_rows_narrow(x, xbase + q0 * ps, ps, roff, 0, nk, w, wide, ldw, out, obase + q0 * ldo + wide, ldo, n)


@njit(cache=True, nogil=True, inline="always")
def _unit_row_product(x, xbase, roff, w, ldw, out, obase, ldo, npix, used):
    """_row_product for a pixel stride of 1 (a one-channel input), on the unit-stride tiles and
    their longer rows; where _row_product would end on a tile_rows3y tile, _row_product itself."""
    nk, cols = roff.shape[0], tile_width(w)
    wide = ldw - ldw % cols
    if _three_y(wide, cols, ldw, used):
        _row_product(x, xbase, 1, roff, w, ldw, out, obase, ldo, npix, used)
        return
    if wide > 0:
        tiles = _tiles(npix, UNIT_PIXELS)
        for part in range(tiles):
            q0, n = _cut(npix, tiles, part)
            for j0 in range(0, wide, cols):
                tile_rows_unit(x, xbase + q0, 1, roff, 0, nk, w, j0, ldw, out, obase + q0 * ldo + j0, ldo, n)
    if wide < ldw:
        tiles = _tiles(npix, NARROW_UNIT_PIXELS)
        for part in range(tiles):
            q0, n = _cut(npix, tiles, part)
            tile_rows_narrow_unit(x, xbase + q0, 1, roff, 0, nk, w, wide, ldw, out, obase + q0 * ldo + wide, ldo, n)


@njit(cache=True, nogil=True, inline="always")
def _grad_product(x, xbase, roff, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
    """out[obase + r*ldo + v] += sum over pixels (i, q) of x[xbase + i*rsx + q*psx + roff[r]]
    * g[gbase + i*rsg + q*psg + v], for every row r of roff and v < ldo: two-vector tiles, then a
    one-vector tile where ldo leaves an odd vector."""
    nk, width = roff.shape[0], tile_width(out)
    wide = ldo - ldo % width
    if wide > 0:
        tiles = _tiles(nk, TILE_PIXELS)
        for part in range(tiles):
            r0, nrow = _cut(nk, tiles, part)
            for j0 in range(0, wide, width):
                tile_grad(x, xbase, roff, r0, nrow, g, gbase + j0, rows, cols, rsx, psx, rsg, psg,
                          out, obase + r0 * ldo + j0, ldo)
    if wide < ldo:
        tiles = _tiles(nk, NARROW_PIXELS)
        for part in range(tiles):
            r0, nrow = _cut(nk, tiles, part)
            tile_grad_narrow(x, xbase, roff, r0, nrow, g, gbase + wide, rows, cols, rsx, psx, rsg, psg,
                             out, obase + r0 * ldo + wide, ldo)


@njit(cache=True, nogil=True)
def sum_partials(parts):
    """parts (P, L) -> float64 (L,): the P partial sums (one per chunk of images) added in order,
    as ``parts.sum(axis=0, dtype=np.float64)`` adds them, without NumPy's buffered casts (fast-cnn's
    conv2: 94 us there against 20-30 here; a parallel version over blocks of columns took 247
    against this loop's 69 us for fast-cnn's 32 x 7680 window partials: its loops stayed scalar)."""
    out = np.zeros(parts.shape[1], np.float64)
    for i in range(parts.shape[0]):
        for j in range(parts.shape[1]):
            out[j] += parts[i, j]
    return out


@njit(cache=True, nogil=True)
def _transpose(src, sbase, sstride, rows, cols, dst, dbase, dstride):
    """dst[dbase + c*dstride + r] = src[sbase + r*sstride + c] for r < rows, c < cols: 8 x 8 blocks
    by transpose8's shuffles, the edges element by element."""
    r8, c8 = rows - rows % 8, cols - cols % 8
    for r0 in range(0, r8, 8):
        for c0 in range(0, c8, 8):
            transpose8(src, sbase + r0 * sstride + c0, sstride, dst, dbase + c0 * dstride + r0, dstride)
    for r in range(rows):
        for c in range(c8 if r < r8 else 0, cols):
            dst[dbase + c * dstride + r] = src[sbase + r * sstride + c]


@njit(**_pjit)
def to_channels_last_kernel(x, pad, out):  # x (N, C, H, W) -> out (N, H+2p, W+2p, C), border zeroed
    n_, c_, h_, w_ = x.shape
    hp, wp = h_ + 2 * pad, w_ + 2 * pad
    xflat, oflat = x.reshape(-1), out.reshape(-1)
    for n in prange(n_):
        if pad == 0:  # one transpose of the whole image
            _transpose(xflat, n * c_ * h_ * w_, h_ * w_, c_, h_ * w_, oflat, n * hp * wp * c_, c_)
        else:
            for i in range(h_):
                _transpose(xflat, n * c_ * h_ * w_ + i * w_, h_ * w_, c_, w_, oflat,
                           ((n * hp + i + pad) * wp + pad) * c_, c_)


@njit(**_pjit)
def conv_pool_forward_kernel(xh, roff, wpk, bp, oh, ow, size, pstride, chunk, y, arg, cl, unit, prefetch):
    """y (N, F, PH, PW), or (N, PH, PW, F) with ``cl``, = max-pool(ReLU(conv(x) + b)); arg
    (N, PH, PW, Fp) each maximum's index i*OW + j in the convolution's output, or -1 where the
    ReLU let nothing through. ``bp`` is the bias padded with zeros to Fp (the padded channels
    then all read -1). Images go in chunks of ``chunk``, each chunk allocating its buffers once.
    ``unit``: a one-channel input runs on the unit-stride tiles (config.CONV_UNIT_TILES);
    ``prefetch``: the next image's lines of y are prefetched for writing before each image's
    products (config.CONV_PREFETCH_OUTPUT)."""
    n_, hp, wp, c_ = xh.shape
    fp = wpk.shape[1]
    xflat, wflat, argflat = xh.reshape(-1), wpk.reshape(-1), arg.reshape(-1)
    ph, pw = arg.shape[1], arg.shape[2]
    f_ = y.shape[3] if cl else y.shape[1]
    unit = unit and c_ == 1
    yflat, per = y.reshape(-1), y.size // max(n_, 1)  # image n's y: yflat[n*per : (n+1)*per]
    for ci in prange((n_ + chunk - 1) // chunk):
        # (OH, OW, Fp) before the bias; padded channels the product may skip stay 0, so stopped (-1)
        acc = np.zeros(oh * ow * fp, y.dtype)
        pooled = np.empty(ph * pw * fp, y.dtype)  # (PH, PW, Fp)
        for n in range(ci * chunk, min(n_, (ci + 1) * chunk)):
            if prefetch and n + 1 < n_:
                prefetch_for_write(yflat, (n + 1) * per, per)
            if size == 2 and pstride == 2:  # each pair of rows pooled while it is in L1
                for pi in range(ph):
                    for i in range(2 * pi, 2 * pi + 2):
                        _image_row(xflat, ((n * hp + i) * wp) * c_, c_, roff, wflat, fp, acc, (i - 2 * pi) * ow * fp, ow, f_,
                                   unit)
                    pool22_relu(acc, fp, ow, pi, 1, pw, bp, pooled, argflat, n * ph * pw * fp)
            else:
                for i in range(oh):
                    _image_row(xflat, ((n * hp + i) * wp) * c_, c_, roff, wflat, fp, acc, i * ow * fp, ow, f_, unit)
                _pool_relu(acc, fp, ow, bp, size, pstride, arg[n], pooled)
            _store_pooled(pooled, fp, y[n], cl)


@njit(cache=True, nogil=True, inline="always")
def _image_row(xflat, xbase, c_, roff, wflat, fp, acc, obase, ow, f_, unit):
    """One output row of the forward pass into acc: on the unit-stride tiles with ``unit`` (one channel)."""
    if unit:
        _unit_row_product(xflat, xbase, roff, wflat, fp, acc, obase, fp, ow, f_)
    else:
        _row_product(xflat, xbase, c_, roff, wflat, fp, acc, obase, fp, ow, f_)


@njit(**_pjit)
def winograd_forward_kernel(xh, u, bp, oh, ow, chunk, y, arg, cl):
    """y (N, F, OH/2, OW/2) (or channels last with ``cl``) = max-pool 2x2(ReLU(conv3x3(x) + b)) and
    arg (N, OH/2, OW/2, Fp), as
    conv_pool_forward_kernel computes them, by Winograd's F(2x2, 3x3) (numba_winograd.py) from
    xh (N, OH+2, OW+2, C) and the transformed filters U (16, C, Fp)."""
    n_, hp, wp, c_ = xh.shape
    fp = u.shape[2]
    th, tw = oh // 2, ow // 2
    tiles = th * tw
    xflat, uflat, argflat = xh.reshape(-1), u.reshape(-1), arg.reshape(-1)
    roff = np.arange(c_)
    for ci in prange((n_ + chunk - 1) // chunk):
        v = np.empty(16 * tiles * c_, y.dtype)
        m = np.empty(16 * tiles * fp, y.dtype)
        pooled = np.empty(tiles * fp, y.dtype)
        for n in range(ci * chunk, min(n_, (ci + 1) * chunk)):
            wino.input_tiles(xflat, n * hp * wp * c_, wp, c_, tw, tiles, v)
            # one image's tiles as the rows (several images' at once measured 2% faster: not worth the bookkeeping)
            for xi in range(16):
                _row_product(v, xi * tiles * c_, c_, roff, uflat[xi * c_ * fp:(xi + 1) * c_ * fp], fp,
                             m, xi * tiles * fp, fp, tiles, fp)
            wino.output_pool_tiles(m, tiles, tw, ow, fp, bp, pooled, argflat, n * tiles * fp)
            _store_pooled(pooled, fp, y[n], cl)


@njit(cache=True, nogil=True)
def _pool_relu(acc, fp, ow, bp, size, pstride, arg, pooled):
    """pool22_relu (numba_tiles.py) for any window: pooled (PH, PW, Fp) = ReLU(max over each window
    of acc (OH, OW, Fp) + b), arg (PH, PW, Fp) its index i*OW + j or -1; the first maximum wins
    ties. The channels run innermost, in acc's memory order. Bare 0s would mix float64 in."""
    ph, pw = arg.shape[0], arg.shape[1]
    zero = np.zeros(1, pooled.dtype)[0]
    stopped = np.int32(-1)
    for pi in range(ph):
        for pj in range(pw):
            h0, w0 = pi * pstride, pj * pstride
            p = pi * pw + pj
            best, where = pooled[p * fp: (p + 1) * fp], arg[pi, pj]
            first = np.int32(h0 * ow + w0)
            best[:] = acc[first * fp: (first + 1) * fp]
            where[:] = first
            for a in range(size):
                for bb in range(size):
                    k = np.int32((h0 + a) * ow + w0 + bb)
                    row = acc[k * fp: (k + 1) * fp]
                    for f in range(fp):
                        v, bf = row[f], best[f]
                        where[f] = k if v > bf else where[f]
                        best[f] = v if v > bf else bf
            for f in range(fp):
                v = best[f] + bp[f]
                best[f] = v if v > zero else zero
                where[f] = where[f] if v > zero else stopped


@njit(cache=True, nogil=True)
def _store_pooled(pooled, fp, y, cl):
    """pooled (PH, PW, Fp) -> y (F, PH, PW), or with ``cl`` y (PH, PW, F): each pixel's F values."""
    yflat = y.reshape(-1)
    if cl:
        ph, pw, f_ = y.shape
        copy_rows(pooled, 0, fp, yflat, 0, f_, ph * pw, f_)
    else:
        f_, ph, pw = y.shape
        _transpose(pooled, 0, fp, ph * pw, f_, yflat, 0, ph * pw)


@njit(**_pjit)
def conv_pool_backward_kernel(dy, arg, xh, roff, oh, ow, kh, kw, size, pstride, chunk, dwp, dbp,
                              wcol, roffc, pad, udx, dx, wino_dw, poff, dwin, wrows, dy_cl, dx_cl, arg_cf):
    """Per chunk of images: dwp[chunk] (K, Fp) and dbp[chunk] (Fp,) partials; dx (N, C, H, W)
    when it has any images (the input gradient), else skipped: by Winograd's F(2x2, 3x3) from the
    rotated filters' F(4x4, 3x3) transform ``udx`` (36, F, Cp) when it has any rows (_winograd_input_gradient),
    else row by row on the micro-kernel (_input_gradient). One image at a time, so that its
    gradient before pooling, g (OH, OW, Fp), is read by both products while it is in cache (and
    a chunk's buffers stay small enough for the allocator's heap: a 590 KB one came from mmap,
    zeroed page by page, 0.6 ms a fast-cnn batch).

    When ``poff`` has any entries, the weight gradient comes from the pooled side instead
    (numba_window_grad.py): dwin[chunk] (F, KH*nvec*L) partials, db into dbp, and no gradient
    before pooling unless dx needs it. ``arg_cf``: arg is (N, F, PH, PW), as numba_lanes.py writes
    it, which only window_grad reads (the caller makes it channels last for anything else)."""
    if dy_cl:  # dy (N, PH, PW, F): a channels-last layer's input gradient
        n_, ph, pw, f_ = dy.shape
    else:
        n_, f_, ph, pw = dy.shape
    _, hp, wp, c_ = xh.shape
    nk, fp = roff.shape[0], dwp.shape[2]
    xplane, pplane = hp * wp * c_, ph * pw * fp
    xflat, dwflat, argflat, dyflat = xh.reshape(-1), dwp.reshape(-1), arg.reshape(-1), dy.reshape(-1)
    chunks = (n_ + chunk - 1) // chunk
    for ci in prange(chunks):
        dwp[ci] = 0  # this chunk's partials, zeroed here, in this core's cache (np.zeros: a pass of its own)
        dbp[ci] = 0
        dwin[ci] = 0
        g = np.empty(oh * ow * fp, dy.dtype)  # (OH, OW, Fp): one image's gradient before pooling
        dyl = np.zeros(pplane, dy.dtype)  # (PH, PW, Fp): its dy, channels last
        rows = np.empty(ow * wcol.shape[1], dy.dtype)  # (OW, Kp): one output row's input-gradient product
        dxp = np.empty(hp * wp * c_ if udx.shape[1] == 0 else 0, dy.dtype)  # (Hp, Wp, C): the padded input's gradient
        wino_bufs = _winograd_buffers(udx, oh, ow, fp, dy.dtype)
        vw, mw = _winograd_dw_buffers(wino_dw, oh, ow, c_, fp, dy.dtype)
        by_window = poff.shape[0] > 0
        dbs = np.zeros(fp if by_window else 0, dy.dtype)  # unpool22's bias sum, unused beside window_grad's
        for n in range(ci * chunk, min(n_, (ci + 1) * chunk)):
            if by_window:
                wlen = dwin.shape[1] // f_
                dstep = f_ if dy_cl else 1
                for f in range(f_):
                    dbase = n * ph * pw * f_ + f if dy_cl else (n * f_ + f) * ph * pw
                    abase, astep = ((n * f_ + f) * ph * pw, 1) if arg_cf else (n * pplane + f, fp)
                    if wrows == 0:
                        window_grad(xflat, n * xplane, wp * c_, kh, kw * c_, dyflat, dbase, dstep, ph * pw,
                                    argflat, abase, astep, poff, dwin[ci], f * wlen, dbp[ci], f)
                    for r0 in range(0, kh if wrows > 0 else 0, max(wrows, 1)):  # wrows rows a call
                        window_grad_wide(xflat, n * xplane + r0 * wp * c_, wp * c_, min(wrows, kh - r0), kw * c_,
                                         dyflat, dbase, dstep, ph * pw, argflat, abase, astep, poff, dwin[ci],
                                         f * wlen + r0 * (wlen // kh), dbp[ci] if r0 == 0 else dbs, f)
                if dx.shape[0] == 0:
                    continue
            if dy_cl:
                copy_rows(dyflat, n * ph * pw * f_, f_, dyl, 0, fp, ph * pw, f_)
            else:
                _transpose(dyflat, n * f_ * ph * pw, ph * pw, f_, ph * pw, dyl, 0, fp)
            if size == 2 and pstride == 2:
                if oh % 2 or ow % 2:  # a last row or column outside every window
                    g[:] = 0
                unpool22(dyl, argflat, n * pplane, fp, ow, ph, pw, g, 0, dbs if by_window else dbp[ci])
            else:
                _unpool(dyl, arg[n], fp, g, dbs if by_window else dbp[ci])
            if wino_dw and not by_window:
                _winograd_weight_gradient(xflat, n * xplane, wp, c_, g, oh, ow, fp, vw, mw, dwflat, ci * 16 * c_ * fp)
            elif not by_window:
                _grad_product(xflat, n * xplane, roff, g, 0, oh, ow, wp * c_, c_, ow * fp, fp, dwflat, ci * nk * fp, fp)
            if dx.shape[0] > 0 and udx.shape[1] > 0:
                _winograd_input_gradient(g, oh, ow, fp, udx, roffc, pad, wino_bufs, dx[n], dx_cl)
            elif dx.shape[0] > 0:
                _input_gradient(g, oh, ow, fp, kh, kw, wcol, roffc, pad, rows, dxp, dx[n], dx_cl)


@njit(cache=True, nogil=True)
def _unpool(dyl, arg, fp, g, db):  # unpool22 for any window: overlapping windows add up
    ph, pw = arg.shape[0], arg.shape[1]
    g[:] = 0
    for pi in range(ph):
        for pj in range(pw):
            p = pi * pw + pj
            for f in range(fp):
                where = arg[pi, pj, f]
                if where >= 0:
                    g[where * fp + f] += dyl[p * fp + f]
                    db[f] += dyl[p * fp + f]


@njit(cache=True, nogil=True, inline="always")
def _quarters(size):  # 4x4 tiles of F(4x4, 3x3) along a side of ``size`` pixels
    return (size + 3) // 4


@njit(cache=True, nogil=True)
def _winograd_buffers(udx, oh, ow, fp, dtype):
    """Per chunk, for _winograd_input_gradient, over the padded input's gradient (OH+2, OW+2) cut
    in TH x TW tiles of 4x4: the zero-bordered gradient gpad (4*TH+2, 4*TW+2, Fp), the transformed
    tiles v (36, T, Fp), their products m (36, T, Cp) and the tiles back, dxq (4*TH, 4*TW, Cp);
    empty when unused."""
    if udx.shape[1] == 0:
        return np.zeros(0, dtype), np.empty(0, dtype), np.empty(0, dtype), np.empty(0, dtype)
    th, tw, cp = _quarters(oh + 2), _quarters(ow + 2), udx.shape[2]
    return np.zeros((4 * th + 2) * (4 * tw + 2) * fp, dtype), np.empty(36 * th * tw * fp, dtype), \
        np.zeros(36 * th * tw * cp, dtype), np.empty(16 * th * tw * cp, dtype)  # m's unused channels stay 0


@njit(cache=True, nogil=True)
def _winograd_dw_buffers(wanted, oh, ow, c_, fp, dtype):
    """Per chunk, for _winograd_weight_gradient: the input's tiles (16, T, C) and the gradient's
    (16, T, Fp); empty when unused."""
    tiles = (oh // 2) * (ow // 2) if wanted else 0
    return np.empty(16 * tiles * c_, dtype), np.empty(16 * tiles * fp, dtype)


@njit(cache=True, nogil=True)
def _winograd_weight_gradient(xflat, xbase, wp, c_, g, oh, ow, fp, v, m, dwflat, dbase):
    """dU (16, C, Fp) at dwflat[dbase:] += V[xi]^T (C, T) @ M[xi] (T, Fp) for each of the 16 points:
    V the image's input tiles B^T d B as the forward pass makes them, M = A dY A^T of g (OH, OW, Fp),
    the gradient before pooling, in the same 2x2 tiles. dU is the gradient of the transformed
    filters U = G g G^T; numba_winograd.weight_gradient takes it back to (F, C, 3, 3). 2.25x fewer
    multiplications than the direct _grad_product."""
    tw = ow // 2
    tiles = (oh // 2) * tw
    wino.input_tiles(xflat, xbase, wp, c_, tw, tiles, v)
    wino.gradient_tiles(g, 0, ow, fp, tw, tiles, m)
    roffw = np.arange(c_)
    for xi in range(16):
        _grad_product(v, xi * tiles * c_, roffw, m, xi * tiles * fp, 1, tiles, 0, c_, 0, fp,
                      dwflat, dbase + xi * c_ * fp, fp)


@njit(cache=True, nogil=True)
def _winograd_input_gradient(g, oh, ow, fp, udx, roffc, pad, bufs, dx, cl):
    """dx (C, H, W), or (H, W, C) with ``cl``, from g (OH, OW, Fp) for 3x3 filters: the padded input's gradient (OH+2, OW+2)
    is the valid 3x3 correlation of g bordered by 2 zeros with the filters rotated (F and C swapped,
    taps reversed), run by F(4x4, 3x3) over 4x4 tiles (the last ones partly past the edge, on
    zeros); roffc = 0..F-1, the reduction over g's real channels. 4x fewer multiplications than
    _input_gradient's product (F(2x2, 3x3): 2.25x; fast-cnn's conv2 dx 2.0 -> 1.3 ms a batch)."""
    gpad, v, m, dxq = bufs
    c_, h_, w_ = (dx.shape[2], dx.shape[0], dx.shape[1]) if cl else dx.shape
    th, tw, cp = _quarters(oh + 2), _quarters(ow + 2), udx.shape[2]
    gw, wq = 4 * tw + 2, 4 * tw
    # the interior, one row of OW*Fp values a row (a slice assignment copied through a temporary:
    # 0.27 ms for 256 images on one thread); the border stays zero from the allocation
    copy_rows(g, 0, ow * fp, gpad, (2 * gw + 2) * fp, gw * fp, oh, ow * fp)
    tiles = th * tw
    for t in range(tiles):
        wino.input_tile4(gpad, wino.tile_origin(t, tw, gw, 4) * fp, gw * fp, fp, fp, v, t * fp, tiles * fp)
    uflat, nf = udx.reshape(-1), udx.shape[1]
    for xi in range(36):
        _row_product(v, xi * tiles * fp, fp, roffc, uflat[xi * nf * cp:(xi + 1) * nf * cp], cp, m, xi * tiles * cp, cp,
                     tiles, c_)
    # where dx is channels last and exactly the tiles' grid (fast-cnn's conv2 on AVX2: 12 x 12 x 24,
    # no padded channel), the tiles go straight into it: no copy (0.35 ms a batch, one Zen 3 thread)
    direct = cl and pad == 0 and cp == c_ and wq == w_ and 4 * th == h_
    out = dx.reshape(-1) if direct else dxq
    for t in range(tiles):
        wino.output_tile4(m, t * cp, tiles * cp, cp, out, wino.tile_origin(t, tw, wq, 4) * cp, wq * cp, cp)
    if not direct:
        _store_rows(dxq, wq, cp, pad, h_, w_, c_, dx.reshape(-1), cl)


@njit(cache=True, nogil=True)
def _input_gradient(g, oh, ow, fp, kh, kw, wcol, roffc, pad, rows, dxp, dx, cl):
    """dx (C, H, W), or (H, W, C) with ``cl``, from g (OH, OW, Fp): per output row, rows (OW, Kp) = g's row @ wcol (F, Kp), then
    each pixel's row added at its KH x KW input pixels of dxp (Hp, Wp, C); ``roffc`` = 0..F-1, the
    reduction's offsets in a pixel. Row by row, the products stay in L1 for their scatter (the
    whole (OH*OW, Kp) at once, 90 KB for fast-cnn's conv2, its dx took 3.1 against 2.5 ms a batch)."""
    c_, h_, w_ = (dx.shape[2], dx.shape[0], dx.shape[1]) if cl else dx.shape
    wp = w_ + 2 * pad
    kp = wcol.shape[1]
    wflat = wcol.reshape(-1)
    dxp[:] = 0
    for i in range(oh):
        _row_product(g, i * ow * fp, fp, roffc, wflat, kp, rows, 0, kp, ow, kp)
        for q in range(ow):
            for a in range(kh):
                for bb in range(kw):
                    dst = ((i + a) * wp + q + bb) * c_
                    s0 = q * kp + (a * kw + bb) * c_
                    into, part = dxp[dst: dst + c_], rows[s0: s0 + c_]  # slices: vectorised
                    for c in range(c_):
                        into[c] += part[c]
    _store_rows(dxp, wp, c_, pad, h_, w_, c_, dx.reshape(-1), cl)


@njit(cache=True, nogil=True)
def _store_rows(src, sw, cs, pad, h_, w_, c_, dxflat, cl):
    """The (H, W) interior of src (., sw, cs), channels last, past a ``pad`` border, into dxflat as
    (C, H, W) (a transpose a row of pixels at a time), or as (H, W, C) with ``cl`` (row copies)."""
    for i in range(h_):
        base = ((i + pad) * sw + pad) * cs
        if cl:
            copy_rows(src, base, cs, dxflat, i * w_ * c_, c_, w_, c_)
        else:
            _transpose(src, base, cs, w_, c_, dxflat, i * w_, h_ * w_)


lock_caches(globals(), depends=(numba_tiles.__file__, wino.__file__, numba_window_grad.__file__))  # they inline these modules' IR
