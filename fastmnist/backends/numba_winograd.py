"""Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
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

Weight gradient (``numba_conv._winograd_weight_gradient``): the gradient of U is
``dU[xi] (C, Fp) = V[xi]^T (C, T) @ (A dY A^T)[xi] (T, Fp)`` summed over tiles and images, dY
the 2x2 gradient before pooling of each tile (``gradient_tiles``; V as in the forward pass), and
the filters' gradient ``G^T dU G`` (``weight_gradient``, once per call).

Input gradient (``numba_conv._winograd_input_gradient``): by F(4x4, 3x3), 36 products for each
4x4 block of the padded input's gradient (4x fewer multiplications than direct, where F(2x2, 3x3)
gives 2.25x), over the gradient before pooling bordered by two zeros, with the filters rotated
(``input_tile4``, ``output_tile4``). Its transforms hold constants up to 8 (and 1/24): float32
results within about 1e-5 of the largest, against a few ulps for F(2x2, 3x3).

The filters' transform ``U = G g G^T`` is made once per call by :func:`transform_filters`.
Every transform is one generic ``L X L^T`` of constant matrices (``_sandwich``), emitted as adds,
subtracts and multiply-adds by the non-zero constants, planned once per matrix (``_plan``) so that
rows and columns share their work: F(4x4, 3x3)'s input transform then takes 12 vector operations a
column instead of 30 (a multiplication and an add for each constant, as before): on a 2-core Xeon
that transform had taken a third of fast-cnn's input gradient, more than its 36 products
(benchmarks/conv2_dx_stages.py). Rounding of F(2x2, 3x3) differs from
the direct convolution's by a few units in the last place (the transforms add and subtract up to
9 inputs).
"""
import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import numba_tiles
from .numba_cache import lock_caches
from .numba_tiles import _check_arrays, _data, _int_splat, _masked, _vector_ops, pool_window, vector_parts

# Y = A^T [(G g G^T) * (B^T d B)] A. F(2x2, 3x3) (Lavin and Gray's):
BT2 = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G2 = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
AT2 = ((1, 1, 1, 0), (0, 1, -1, -1))
A2 = tuple(zip(*AT2))  # the weight gradient takes the output's gradient back through A: A dY A^T
# F(4x4, 3x3), points 0, +-1, +-2 and infinity: 36 products for 16 outputs where F(2x2, 3x3) needs
# 64, but coefficients up to 8 (and 1/24) round a few times more; only the input gradient takes it
BT4 = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
G4 = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
AT4 = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


def applies(kh: int, kw: int, stride: int, oh: int, ow: int) -> bool:
    """Whether a convolution's output can be cut into this module's 2x2 tiles: 3x3 filters at
    stride 1 and an even output. (The forward pass also needs 2x2 pooling at stride 2, each window
    one tile; the input gradient, whose output is the padded input, only this.)"""
    return (kh, kw, stride) == (3, 3, 1) and oh % 2 == 0 and ow % 2 == 0


def transform_filters(w: np.ndarray, width: int, g=G2) -> np.ndarray:
    """Filters (F, C, 3, 3) -> U (n*n, C, width): point (a*n + b) of G g G^T for each channel pair,
    for G = ``g`` (n x 3: G2, n = 4, or G4, n = 6), output channels padded with zeros to
    ``width``; computed in float64, rounded once."""
    coef = _coefficients(g)
    out = np.zeros((len(coef), w.shape[1], width), w.dtype)
    _transform_filters_kernel(np.ascontiguousarray(w.transpose(1, 2, 3, 0)).reshape(w.shape[1], 9, w.shape[0]),
                              coef, out)
    return out


@functools.lru_cache(maxsize=None)
def _coefficients(g) -> np.ndarray:
    """coef (n*n, 9): U[a*n + b] = sum over the taps t = 3i + j of coef[a*n + b, t] * g[i, j]."""
    gm = np.array(g, np.float64)
    return np.einsum("ai,bj->abij", gm, gm).reshape(len(gm) ** 2, 9)


@njit(cache=True, nogil=True)
def _transform_filters_kernel(wt, coef, u):
    """u[p, c, f] = sum over the 9 taps t of coef[p, t] * wt[c, t, f], in float64: the filters
    innermost, so each point is a few vector multiply-adds over them (a loop per channel pair
    and point over 3x3 matrices took 68 us a call in training, measured; numpy's matmuls 97)."""
    c_, f_ = wt.shape[0], wt.shape[2]
    acc = np.empty(f_)
    for c in range(c_):
        for p in range(coef.shape[0]):
            acc[:] = 0.0
            for t in range(9):
                k = coef[p, t]
                if k != 0.0:
                    for f in range(f_):
                        acc[f] += k * wt[c, t, f]
            for f in range(f_):
                u[p, c, f] = acc[f]


def weight_gradient(du: np.ndarray, filters: int) -> np.ndarray:
    """The weight gradient (F, C, 3, 3) from the transformed one dU (16, C, Fp) of F(2x2, 3x3):
    G^T dU G for each channel pair (the forward's U = G g G^T, taken back), F = ``filters`` of the
    Fp columns; float64 in, float64 out."""
    out = np.empty((filters, du.shape[1], 3, 3), np.float64)
    _weight_gradient_kernel(du, np.array(G2, np.float64), out)
    return out


@njit(cache=True, nogil=True)
def _weight_gradient_kernel(du, gm, dw):
    """dw[f, c] = G^T D G for D[a, b] = du[a*n + b, c, f]."""
    f_, c_, n = dw.shape[0], dw.shape[1], gm.shape[0]
    gd = np.empty((3, n))
    for f in range(f_):
        for c in range(c_):
            for a in range(3):  # G^T D
                for b in range(n):
                    acc = 0.0
                    for i in range(n):
                        acc += gm[i, a] * du[i * n + b, c, f]
                    gd[a, b] = acc
            for a in range(3):  # (G^T D) G
                for b in range(3):
                    acc = 0.0
                    for j in range(n):
                        acc += gd[a, j] * gm[j, b]
                    dw[f, c, a, b] = acc


def _cost(row) -> int:
    """Vector operations _combine spends on ``row``: one per term past the first, and one for the
    first where no coefficient is +1 to start from."""
    terms = [k for k in row if k != 0]
    return len(terms) - (1 if 1 in terms else 0) if terms else 0


def _split(a, b):
    """Rows a and b as E + k*O and E - k*O: (cost, E, k, O) with O scaled so that one of its
    coefficients is +1 (the cheapest such k), or None where E or O is all zeros."""
    e = tuple((x + y) / 2 for x, y in zip(a, b))
    o = tuple((x - y) / 2 for x, y in zip(a, b))
    if not any(e) or not any(o):
        return None
    best = None
    for k in {abs(x) for x in o if x}:
        for sign in (k, -k):
            scaled = tuple(x / sign for x in o)
            cost = _cost(e) + _cost(scaled) + 2
            if best is None or cost < best[0]:
                best = (cost, e, sign, scaled)
    return best


def _column_pairs(rows):
    """Rows over the columns x extended by x[p] + x[q] and x[p] - x[q] for column pairs (p, q)
    that every row weighs alike or opposite (A^T of F(4x4, 3x3): 1 and 2, 3 and 4), where that
    saves operations: (pairs, rows over x + [sum, difference per pair])."""
    n = len(rows[0])
    pairs, used = [], set()
    for p in range(n):
        for q in range(p + 1, n):
            if p in used or q in used or not all(abs(r[p]) == abs(r[q]) for r in rows):
                continue
            if sum(1 for r in rows if r[p]) > 2:  # a row using both saves one; the sum and difference cost 2
                pairs.append((p, q))
                used |= {p, q}
    ext = []
    for r in rows:
        e = [0.0 if i in used else x for i, x in enumerate(r)]
        for p, q in pairs:
            e += [r[p] if r[p] == r[q] else 0.0, r[p] if r[p] == -r[q] else 0.0]
        ext.append(tuple(e))
    return tuple(pairs), ext


@functools.lru_cache(maxsize=None)
def _plan(left) -> tuple:
    """How to compute L x for a constant matrix L (rows of coefficients): the column pairs whose
    sum and difference to make first (_column_pairs), then ("row", i, row) steps and ("pair", i, j,
    E, k, O) steps for two rows that share most of their work as E + k*O and E - k*O, over the
    extended columns. B^T of F(4x4, 3x3) takes 12 vector operations a column (16 with multiply-adds
    row by row, 30 with a multiplication and an add for each constant), A^T 10 (14, 20). Row
    pairs are taken greedily, the largest saving first."""
    pairs, rows = _column_pairs([tuple(float(x) for x in r) for r in left])
    options = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            split = _split(rows[i], rows[j])
            if split is not None and split[0] < _cost(rows[i]) + _cost(rows[j]):
                options.append((_cost(rows[i]) + _cost(rows[j]) - split[0], i, j, split))
    steps, done = [], set()
    for _, i, j, (_, e, k, o) in sorted(options, key=lambda opt: -opt[0]):
        if i not in done and j not in done:
            steps.append(("pair", i, j, e, k, o))
            done |= {i, j}
    steps += [("row", i, rows[i]) for i in range(len(rows)) if i not in done]
    return pairs, tuple(steps)


def _plan_cost(left) -> int:
    """Vector operations of one L x by _plan (its docstring's counts; tests read them)."""
    pairs, steps = _plan(left)
    return 2 * len(pairs) + sum(_cost(s[2]) if s[0] == "row" else _cost(s[3]) + _cost(s[5]) + 2 for s in steps)


def _scaled(builder, vec, k):
    return builder.fmul(vec, ir.Constant(vec.type, [float(k)] * vec.type.count), flags=("contract",))


def _combine(builder, row, vecs):
    """sum of row[k] * vecs[k] over the non-zero constants row[k]: +-1 as adds and subtracts, the
    others as multiply-adds ('contract' lets LLVM fuse them), from a +1 term where there is one."""
    terms = [(k, v) for k, v in zip(row, vecs) if k != 0]
    terms.sort(key=lambda t: t[0] != 1)  # a +1 term first: nothing to multiply
    k, out = terms[0]
    if k == -1:
        out = builder.fneg(out)
    elif k != 1:
        out = _scaled(builder, out, k)
    for k, vec in terms[1:]:
        if abs(k) == 1:
            out = builder.fadd(out, vec) if k > 0 else builder.fsub(out, vec)
        elif k > 0:
            out = builder.fadd(out, _scaled(builder, vec, k), flags=("contract",))
        else:
            out = builder.fsub(out, _scaled(builder, vec, -k), flags=("contract",))
    return out


def _apply(builder, left, vecs):
    """L x for the vectors x = ``vecs``, by _plan."""
    pairs, steps = _plan(left)
    vecs = list(vecs)
    for p, q in pairs:
        vecs += [builder.fadd(vecs[p], vecs[q]), builder.fsub(vecs[p], vecs[q])]
    out = [None] * len(left)
    for step in steps:
        if step[0] == "row":
            out[step[1]] = _combine(builder, step[2], vecs)
            continue
        _, i, j, e, k, o = step
        ev, ov = _combine(builder, e, vecs), _combine(builder, o, vecs)
        if abs(k) == 1:
            plus, minus = (builder.fadd(ev, ov), builder.fsub(ev, ov))
        else:
            scaled = _scaled(builder, ov, abs(k))
            plus = builder.fadd(ev, scaled, flags=("contract",))
            minus = builder.fsub(ev, scaled, flags=("contract",))
        out[i], out[j] = (plus, minus) if k > 0 else (minus, plus)
    return out


def _sandwich(builder, left, x):
    """L X L^T of a square block of vectors X (rows of vectors) and a constant matrix L."""
    cols = [_apply(builder, left, [x[a][b] for a in range(len(x))]) for b in range(len(x[0]))]  # cols[b][i] = (L X)[i, b]
    return [_apply(builder, left, list(cols_i)) for cols_i in zip(*cols)]


def _block_offset(builder, base, row, cs, a, b):  # base + a*row + b*cs, a and b Python ints
    return builder.add(base, builder.add(builder.mul(row, ir.Constant(row.type, a)),
                                         builder.mul(cs, ir.Constant(cs.type, b))))


def _tile_transform(name, left, masked):
    """An intrinsic f(src, sbase, row, cs, channels, dst, dbase, dstep): for c < channels,
    dst[dbase + (m*i + j)*dstep + c] = (L S L^T)[i, j], S[a, b] = src[sbase + a*row + b*cs + c],
    L = ``left`` (m x n), the channels in vectors: with ``masked`` the last part vector under a
    mask, else ``channels`` must be a whole number of vectors. (Numba's own loop over the
    channels needed a run-time alias check per pair of its loads and stores and stayed scalar:
    4.6x slower, measured.)"""
    size, outs = len(left[0]), len(left)

    def typer(typingctx, src, sbase, row, cs, channels, dst, dbase, dstep):
        dtype = _check_arrays(name, src, dst)
        i64 = types.int64
        sig = types.void(src, i64, i64, i64, i64, dst, i64, i64)

        def codegen(context, builder, signature, args):
            sa, sbase, row, cs, channels, da, dbase, dstep = args
            sp, dp = _data(context, builder, src, sa), _data(context, builder, dst, da)
            vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
            masked_load, masked_store = _masked(builder, vty)
            align = ir.Constant(ir.IntType(32), dtype.bitwidth // 8)

            def emit(c0, mask):
                def load(idx):
                    if mask is None:
                        return vload(sp, idx)
                    return builder.call(masked_load, [builder.bitcast(at(sp, idx), vty.as_pointer()), align, mask,
                                                      ir.Constant(vty, None)])

                def store(val, idx):
                    if mask is None:
                        vstore(val, dp, idx)
                    else:
                        builder.call(masked_store, [val, builder.bitcast(at(dp, idx), vty.as_pointer()), align, mask])

                base = builder.add(sbase, c0)
                block = [[load(_block_offset(builder, base, row, cs, a, b)) for b in range(size)] for a in range(size)]
                out = builder.add(dbase, c0)
                for i, vals in enumerate(_sandwich(builder, left, block)):
                    for j, val in enumerate(vals):
                        store(val, builder.add(out, builder.mul(dstep, ir.Constant(dstep.type, outs * i + j))))

            if masked:
                vector_parts(builder, channels, lanes, emit)
            else:
                lanes_c = ir.Constant(ir.IntType(64), lanes)
                with cgutils.for_range(builder, builder.udiv(channels, lanes_c)) as loop:
                    emit(builder.mul(loop.index, lanes_c), None)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = name
    return intrinsic(typer)


#: one 4x4 block of a channels-last image, B^T d B, for F(2x2, 3x3): (src, sbase, row, cs,
#: channels, v, vbase, vstep), any number of channels
input_tile = _tile_transform("input_tile", BT2, masked=True)
#: one 6x6 block, B^T d B of F(4x4, 3x3); channels a whole number of vectors
input_tile4 = _tile_transform("input_tile4", BT4, masked=False)
#: one 2x2 block of the gradient before pooling, A dY A^T, for the weight gradient by F(2x2, 3x3)
gradient_tile = _tile_transform("gradient_tile", A2, masked=False)


def _tile_untransform(name, left):
    """An intrinsic f(m, mbase, mstep, cp, out, obase, orow, ocs): out[obase + i*orow + j*ocs + c]
    = (L M L^T)[i, j], M[a, b] = m[mbase + (n*a + b)*mstep + c], L = ``left`` (k x n), for c < cp
    (a whole number of vectors): one tile back from the products."""
    size = len(left[0])

    def typer(typingctx, m, mbase, mstep, cp, out, obase, orow, ocs):
        dtype = _check_arrays(name, m, out)
        i64 = types.int64
        sig = types.void(m, i64, i64, i64, out, i64, i64, i64)

        def codegen(context, builder, signature, args):
            ma, mbase, mstep, cp, oa, obase, orow, ocs = args
            mp, op = _data(context, builder, m, ma), _data(context, builder, out, oa)
            vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
            lanes_c = ir.Constant(ir.IntType(64), lanes)
            with cgutils.for_range(builder, builder.udiv(cp, lanes_c)) as loop:
                c0 = builder.mul(loop.index, lanes_c)
                y = _sandwich(builder, left, _products(builder, vload, mp, builder.add(mbase, c0), mstep, size))
                base = builder.add(obase, c0)
                for i, vals in enumerate(y):
                    for j, val in enumerate(vals):
                        vstore(val, op, _block_offset(builder, base, orow, ocs, i, j))
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = name
    return intrinsic(typer)


#: one 4x4 block of output back from the 36 products of F(4x4, 3x3), A^T M A
output_tile4 = _tile_untransform("output_tile4", AT4)


def _products(builder, vload, mp, base, mstep, size):
    """The size x size block of vectors m[base + (size*a + b)*mstep]."""
    return [[vload(mp, builder.add(base, builder.mul(mstep, ir.Constant(mstep.type, size * a + b))))
             for b in range(size)] for a in range(size)]


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
            y = _sandwich(builder, AT2, _products(builder, vload, mp, builder.add(mbase, f0), mstep, 4))
            best, where = pool_window(builder, [y[0][0], y[0][1], y[1][0], y[1][1]], kv, vload(bpp, f0))
            vstore(best, pp, builder.add(pbase, f0))
            builder.store(where, builder.bitcast(at(gp, builder.add(abase, f0)), ity.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def tile_origin(t, tw, width, step=2):
    """Tile t's top-left pixel, (step*ti)*width + step*tj, in a plane ``width`` pixels wide, the
    tiles numbered row by row, ``tw`` to a row, each ``step`` pixels apart."""
    return step * (t // tw) * width + step * (t % tw)


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


@njit(cache=True, nogil=True)
def gradient_tiles(gflat, gbase, ow, fp, tw, tiles, m):
    """m (16, T, Fp) = A dY A^T for each 2x2 block dY of the (OH, OW, Fp) gradient at gflat[gbase:]
    whose top-left pixel is tile t's origin."""
    for t in range(tiles):
        gradient_tile(gflat, gbase + tile_origin(t, tw, ow) * fp, ow * fp, fp, fp, m, t * fp, tiles * fp)


lock_caches(globals(), depends=(numba_tiles.__file__,))
