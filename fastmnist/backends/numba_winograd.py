"""Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016) for the numba backend's 3x3 stride-1 convolutions, such as fast-cnn's
conv2 (24 -> 32 channels, 12x12 -> 10x10): the transforms, as LLVM vector intrinsics over the
channels; the kernels that use them are in numba_conv.py.

Each 2x2 block of output pixels is one 4x4 block of input transformed, 16 products with
transformed filters, and a transform back: 16 multiplications per channel pair where the direct
convolution needs 36, 2.25x fewer.

Forward (``numba_conv.winograd_forward_kernel``), per image (Hp, Wp, C) channels last:

1. ``V (16, T, C)``: each tile t (of T = OH/2 * OW/2) of input, ``B^T d B`` per channel (``input_tiles``);
2. ``M (16, T, Fp) = V[xi] (T, C) @ U[xi] (C, Fp)`` for each of the 16 points xi, on the same
   register-tiled micro-kernel as the direct convolution (``numba_conv._row_product``);
3. ``A^T M A``: the tile's 2x2 outputs are exactly one 2x2 pooling window, so + bias, their
   maximum and ReLU run on them in registers (``output_pool_tiles``) and the convolution's output
   is never stored; ``arg`` records the winner as the direct kernels do (pixel i*OW + j, -1 where
   the ReLU let nothing through; the first maximum in row-major window order wins ties).

Input gradient (``numba_conv._winograd_input_gradient``): the same three steps over the gradient
before pooling, bordered by two zeros, with the filters rotated (``output_tile`` writes each 2x2
block of the padded input's gradient). The weight gradient stays direct, reading ``arg``.

The filters' transform ``U = G g G^T`` is made once per call by :func:`transform_filters`.
Rounding differs from the direct convolution's by a few units in the last place (the transforms
add and subtract up to 9 inputs).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import numba_tiles
from .numba_cache import lock_caches
from .numba_tiles import _check_arrays, _data, _int_splat, _masked, _vector_ops, lane_mask, pool_window

# F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A, with
#   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
#   G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]


def applies(kh: int, kw: int, stride: int, oh: int, ow: int) -> bool:
    """Whether a convolution's output can be cut into this module's 2x2 tiles: 3x3 filters at
    stride 1 and an even output. (The forward pass also needs 2x2 pooling at stride 2, each window
    one tile; the input gradient, whose output is the padded input, only this.)"""
    return (kh, kw, stride) == (3, 3, 1) and oh % 2 == 0 and ow % 2 == 0


def transform_filters(w: np.ndarray, width: int) -> np.ndarray:
    """Filters (F, C, 3, 3) -> U (16, C, width): point (a*4 + b) of G g G^T for each channel pair,
    output channels padded with zeros to ``width``; computed in float64, rounded once."""
    out = np.zeros((16, w.shape[1], width), w.dtype)
    _transform_filters_kernel(w, out)
    return out


@njit(cache=True, nogil=True)
def _transform_filters_kernel(w, u):
    """u[a*4 + b, c, f] = (G g G^T)[a, b] for g = w[f, c] (numpy's matmuls over the 768 small
    matrices of fast-cnn's conv2 took 97 us a call, this 1/20 of it)."""
    f_, c_ = w.shape[0], w.shape[1]
    gg = np.empty((4, 3))
    for f in range(f_):
        for c in range(c_):
            for b in range(3):  # G g, column b
                g0, g1, g2 = np.float64(w[f, c, 0, b]), np.float64(w[f, c, 1, b]), np.float64(w[f, c, 2, b])
                gg[0, b] = g0
                gg[1, b] = 0.5 * (g0 + g1 + g2)
                gg[2, b] = 0.5 * (g0 - g1 + g2)
                gg[3, b] = g2
            for a in range(4):  # (G g) G^T, row a
                u[4 * a, c, f] = gg[a, 0]
                u[4 * a + 1, c, f] = 0.5 * (gg[a, 0] + gg[a, 1] + gg[a, 2])
                u[4 * a + 2, c, f] = 0.5 * (gg[a, 0] - gg[a, 1] + gg[a, 2])
                u[4 * a + 3, c, f] = gg[a, 2]


def _bt(b, a0, a1, a2, a3):  # B^T times a column of 4 vectors
    return b.fsub(a0, a2), b.fadd(a1, a2), b.fsub(a2, a1), b.fsub(a1, a3)


def _at(b, a0, a1, a2, a3):  # A^T times a column of 4 vectors
    return b.fadd(b.fadd(a0, a1), a2), b.fsub(b.fsub(a1, a2), a3)


def _channel_vectors(builder, count, lanes, emit):
    """emit(c0, masked) for each vector of ``count`` channels: whole vectors, then the last part
    vector under a mask (fast-cnn's 24 channels on AVX-512: 16, then 8 of 16 lanes)."""
    i64 = ir.IntType(64)
    lanes_c = ir.Constant(i64, lanes)
    whole = builder.udiv(count, lanes_c)
    with cgutils.for_range(builder, whole) as loop:
        emit(builder.mul(loop.index, lanes_c), None)
    left = builder.urem(count, lanes_c)
    with builder.if_then(builder.icmp_unsigned(">", left, ir.Constant(i64, 0))):
        emit(builder.mul(whole, lanes_c), lane_mask(builder, left, lanes))


@intrinsic
def input_tile(typingctx, x, xbase, row, cs, channels, v, vbase, vstep):
    """v[vbase + (4*i + j)*vstep + c] = (B^T d B)[i, j] for c < channels, where d[a, b] =
    x[xbase + a*row + b*cs + c]: one 4x4 block of a channels-last image, transformed, the
    channels in vectors. (Numba's own loop over the channels needed a run-time alias check per
    pair of its 16 loads and 16 stores and stayed scalar: 4.6x slower, measured.)"""
    dtype = _check_arrays("input_tile", x, v)
    i64 = types.int64
    sig = types.void(x, i64, i64, i64, i64, v, i64, i64)

    def codegen(context, builder, signature, args):
        xa, xbase, row, cs, channels, va, vbase, vstep = args
        xp, vp = _data(context, builder, x, xa), _data(context, builder, v, va)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        masked_load, masked_store = _masked(builder, vty)
        align = ir.Constant(ir.IntType(32), dtype.bitwidth // 8)

        def emit(c0, mask):
            def load(idx):
                if mask is None:
                    return vload(xp, idx)
                return builder.call(masked_load, [builder.bitcast(at(xp, idx), vty.as_pointer()), align, mask,
                                                  ir.Constant(vty, None)])

            def store(val, idx):
                if mask is None:
                    vstore(val, vp, idx)
                else:
                    builder.call(masked_store, [val, builder.bitcast(at(vp, idx), vty.as_pointer()), align, mask])

            base = builder.add(xbase, c0)
            d = [[load(builder.add(base, builder.add(builder.mul(row, ir.Constant(row.type, a)),
                                                     builder.mul(cs, ir.Constant(cs.type, b)))))
                  for b in range(4)] for a in range(4)]
            cols = [_bt(builder, d[0][b], d[1][b], d[2][b], d[3][b]) for b in range(4)]  # B^T d, by column
            out = builder.add(vbase, c0)
            for i in range(4):
                q = _bt(builder, cols[0][i], cols[1][i], cols[2][i], cols[3][i])  # row i of (B^T d) B
                for j in range(4):
                    store(q[j], builder.add(out, builder.mul(vstep, ir.Constant(vstep.type, 4 * i + j))))

        _channel_vectors(builder, channels, lanes, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def output_pool_tile(typingctx, m, mbase, mstep, fp, bp, first, ow, pooled, pbase, arg, abase):
    """One tile back: Y = A^T M A with M[i, j] = m[mbase + (4*i + j)*mstep + f], its 2x2 outputs
    (pixels first, first + 1, first + ow, first + ow + 1) pooled as pool22_relu pools a window
    (numba_tiles.pool_window): pooled[pbase + f] = ReLU(max + bp[f]), arg[abase + f] the winner
    or -1, for f < fp (a whole number of vectors)."""
    dtype = _check_arrays("output_pool_tile", m, bp, pooled)
    i64 = types.int64
    sig = types.void(m, i64, i64, i64, bp, i64, i64, pooled, i64, arg, i64)

    def codegen(context, builder, signature, args):
        ma, mbase, mstep, fp, ba, first, ow, pa, pbase, ga, abase = args
        mp, bpp = _data(context, builder, m, ma), _data(context, builder, bp, ba)
        pp, gp = _data(context, builder, pooled, pa), _data(context, builder, arg, ga)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        ity = ir.VectorType(ir.IntType(32), lanes)
        kv = [_int_splat(builder, k, lanes) for k in
              (first, builder.add(first, ir.Constant(first.type, 1)), builder.add(first, ow),
               builder.add(builder.add(first, ow), ir.Constant(first.type, 1)))]
        lanes_c = ir.Constant(ir.IntType(64), lanes)

        with cgutils.for_range(builder, builder.udiv(fp, lanes_c)) as loop:
            f0 = builder.mul(loop.index, lanes_c)
            y0, y1 = _tile_back(builder, vload, mp, builder.add(mbase, f0), mstep)
            best, where = pool_window(builder, [y0[0], y0[1], y1[0], y1[1]], kv, vload(bpp, f0))
            vstore(best, pp, builder.add(pbase, f0))
            builder.store(where, builder.bitcast(at(gp, builder.add(abase, f0)), ity.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def output_tile(typingctx, m, mbase, mstep, cp, out, obase, orow, ocs):
    """One tile back: out[obase + i*orow + j*ocs + c] = (A^T M A)[i, j] for i, j < 2 and c < cp (a
    whole number of vectors), M[a, b] = m[mbase + (4*a + b)*mstep + c]."""
    dtype = _check_arrays("output_tile", m, out)
    i64 = types.int64
    sig = types.void(m, i64, i64, i64, out, i64, i64, i64)

    def codegen(context, builder, signature, args):
        ma, mbase, mstep, cp, oa, obase, orow, ocs = args
        mp, op = _data(context, builder, m, ma), _data(context, builder, out, oa)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        lanes_c = ir.Constant(ir.IntType(64), lanes)
        with cgutils.for_range(builder, builder.udiv(cp, lanes_c)) as loop:
            c0 = builder.mul(loop.index, lanes_c)
            y = _tile_back(builder, vload, mp, builder.add(mbase, c0), mstep)
            base = builder.add(obase, c0)
            for i, j, val in ((0, 0, y[0][0]), (0, 1, y[0][1]), (1, 0, y[1][0]), (1, 1, y[1][1])):
                at_ij = builder.add(base, builder.add(builder.mul(orow, ir.Constant(orow.type, i)),
                                                      builder.mul(ocs, ir.Constant(ocs.type, j))))
                vstore(val, op, at_ij)
        return context.get_dummy_value()

    return sig, codegen


def _tile_back(builder, vload, mp, base, mstep):
    """A^T M A of the 16 vectors m[base + k*mstep]: ((y00, y01), (y10, y11))."""
    q = [vload(mp, builder.add(base, builder.mul(mstep, ir.Constant(mstep.type, k)))) for k in range(16)]
    rows = [_at(builder, q[j], q[4 + j], q[8 + j], q[12 + j]) for j in range(4)]  # A^T M, by column
    return (_at(builder, rows[0][0], rows[1][0], rows[2][0], rows[3][0]),
            _at(builder, rows[0][1], rows[1][1], rows[2][1], rows[3][1]))


@njit(cache=True, nogil=True, inline="always")
def tile_origin(t, tw, width):
    """Tile t's top-left pixel, (2*ti)*width + 2*tj, in a plane ``width`` pixels wide, the tiles
    numbered row by row, ``tw`` to a row."""
    return 2 * (t // tw) * width + 2 * (t % tw)


@njit(cache=True, nogil=True)
def input_tiles(xflat, xbase, wp, c_, tw, tiles, v):
    """v (16, T, C) = B^T d B for each 4x4 block d of the (., Wp, C) image at xflat[xbase:] whose
    top-left pixel is tile t's origin."""
    for t in range(tiles):
        input_tile(xflat, xbase + tile_origin(t, tw, wp) * c_, wp * c_, c_, c_, v, t * c_, tiles * c_)


@njit(cache=True, nogil=True)
def output_pool_tiles(m, tiles, tw, ow, fp, bp, pooled, argflat, abase):
    """A^T M A for each tile of m (16, T, Fp), pooled: pooled (T, Fp), argflat[abase + t*Fp + f]."""
    for t in range(tiles):
        output_pool_tile(m, t * fp, tiles * fp, fp, bp, tile_origin(t, tw, ow), ow, pooled, t * fp, argflat,
                         abase + t * fp)


lock_caches(globals(), depends=(numba_tiles.__file__,))
