"""The forward pass of a one-channel convolution + ReLU + 2x2 max-pooling layer with the output
pixels in the vector lanes (the numba backend's first layers of dropout-cnn and simple-cnn).

Why. numba_conv's tiles put the filters in the lanes: each multiply-add is a broadcast input pixel
times a vector of filters. With 16 filters (one AVX-512 vector) every multiply-add then loads its
own broadcast, where two vectors of filters share one; alone in L1 the 16-filter tiles ran at
105-111 GFLOP/s on a 2-core Xeon against 135-155 with the pixels in the lanes
(``benchmarks/pixel_lanes.py``). Here a tile holds two output rows of up to 32 pixels (two vectors
each) by 4-6 filters (``LANE_FILTER_TILES``): a tap loads four input vectors, one element apart,
and a broadcast weight per filter, for 4 multiply-adds each. The output comes channels first, the
layout of y (N, F, PH, PW): each pooled row is stored as it is, where the filters-in-lanes kernel
transposes every image's (PH, PW, F) into y. That is why simple-cnn's 30 filters gain too, though
their product alone ran faster on the tiles (143-153 against 127-136 GFLOP/s): its stores cost
numba_conv's forward pass as much as its products (benchmarks/conv_forward_pieces.py).

Each output is the same sum in the same order as numba_conv's (taps a*KW + b in turn, one
multiply-add each, from zero), and the pooling takes the first maximum in row-major order, so y
is the same bits; the argmax comes channels first too, ``arg (N, F, PH, PW)``, which the backward
pass reads as such (numba_conv.conv_pool_backward_kernel's ``arg_cf``), as int16 where every index
of the output fits (arg_dtype): half the bytes written and read back.

- ``tile_lanes(x, xbase, xrow, kh, kw, w, f0, ldw, out, obase, ldo, rstride, ow, ft)``::

      out[obase + r*rstride + f*ldo + j] = sum over a < kh, b < kw of
          x[xbase + (r + a)*xrow + b + j] * w[(a*kw + b)*ldw + f0 + f]

  for r < 2, f < ft (one of LANE_FILTER_TILES; others are no-ops), j < ow (<= LANE_PIXELS); the
  lanes past ow are loaded masked (no read past a row's last input) and written as zeros.
- ``pool_lanes``: a pooled row of every filter from two such rows, vector compares on the rows'
  even and odd lanes.
"""
import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import numba_tiles
from .numba_cache import lock_caches
from .numba_tiles import VECTOR_BYTES, _check_arrays, _data, _masked, _vector_ops, lane_mask

#: output pixels of one row a tile covers: two AVX-512 vectors of float32
LANE_PIXELS = 32
#: output rows of one tile: the two of a 2x2 pooling window
LANE_ROWS = 2
#: filters of one tile, the first of these that divides the layer's: 2 rows x 2 vectors x 6 filters
#: = 24 accumulators of AVX-512's 32 registers, with the 4 input vectors and a broadcast weight
#: beside them (measured, dropout-cnn's layer in 2 x 2 x 4: 135-155 GFLOP/s, 2 x 8 for one row 139-147)
LANE_FILTER_TILES = (6, 5, 4)


def lane_filters(filters: int) -> int:
    """Filters of one tile_lanes tile for a layer of ``filters``: 0 where none divides them."""
    for ft in LANE_FILTER_TILES:
        if filters % ft == 0:
            return ft
    return 0


def lanes_apply(dtype, channels: int, filters: int, kh: int, kw: int, ow: int, size: int, stride: int,
                channels_last_out: bool) -> bool:
    """Whether a fused layer's forward pass runs here: float32 on AVX-512, one input channel, 2x2
    pooling of stride 2, output rows of more than one vector and at most LANE_PIXELS, filters a
    whole number of tiles (lane_filters), output channels first (the next layer reads y as it is:
    a channels-last output, fast-cnn's first layer, stays on numba_conv's tiles). On AVX2 the
    pixels-in-lanes product ran slower than the tiles (benchmarks/pixel_lanes.py): four ymm a row
    leave room for 3 filters a tile. config.CONV_PIXEL_LANES decides beside it."""
    lanes = VECTOR_BYTES // 4
    return (VECTOR_BYTES == 64 and np.dtype(dtype) == np.float32 and channels == 1 and (size, stride) == (2, 2)
            and LANE_PIXELS - lanes < ow <= LANE_PIXELS and lane_filters(filters) > 0
            and not channels_last_out and kh >= 1 and kw >= 1)


_INT16_MAX = int(np.iinfo(np.int16).max)  # read once: np.iinfo is a few us a call


def arg_dtype(oh: int, ow: int):
    """The argmax's integer type for an OH x OW output: int16 where every index i*OW + j fits."""
    return np.int16 if oh * ow <= _INT16_MAX else np.int32


def pack_lanes(w: np.ndarray) -> np.ndarray:
    """w (F, 1, KH, KW) -> (KH*KW, F): each tap's filters side by side, the tiles' broadcasts."""
    f = w.shape[0]
    return np.ascontiguousarray(w.reshape(f, -1).T)


def make_tile_lanes(rows: int, filter_tiles: tuple):
    """A tile_lanes intrinsic for tiles of ``rows`` output rows by each of ``filter_tiles`` filters
    (tile_lanes itself: LANE_ROWS by LANE_FILTER_TILES; benchmarks/pixel_lanes.py builds others)."""
    def tile_lanes(typingctx, x, xbase, xrow, kh, kw, w, f0, ldw, out, obase, ldo, rstride, ow, ft):
        return _tile_lanes_typer(rows, filter_tiles, x, xbase, xrow, kh, kw, w, f0, ldw, out, obase, ldo, rstride,
                                 ow, ft)

    return intrinsic(tile_lanes)


def _tile_lanes_typer(rows, filter_tiles, x, xbase, xrow, kh, kw, w, f0, ldw, out, obase, ldo, rstride, ow, ft):
    dtype = _check_arrays("tile_lanes", x, w, out)
    i64 = types.int64
    sig = types.void(x, i64, i64, i64, i64, w, i64, i64, out, i64, i64, i64, i64, i64)

    def codegen(context, builder, signature, args):
        xa, xbase_, xrow_, kh_, kw_, wa, f0_, ldw_, oa, obase_, ldo_, rstride_, ow_, ft_ = args
        xp, wp, op = (_data(context, builder, signature.args[i], a) for i, a in ((0, xa), (5, wa), (8, oa)))
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        i64t = ir.IntType(64)
        rv = LANE_PIXELS // lanes  # vectors a row
        masked_load, masked_store = _masked(builder, vty)
        align = ir.Constant(ir.IntType(32), dtype.bitwidth // 8)
        # the last vector of a row holds ow - (rv - 1)*lanes pixels; the others are whole
        last = lane_mask(builder, builder.sub(ow_, ir.Constant(i64t, (rv - 1) * lanes)), lanes)
        zero = ir.Constant(vty, None)

        def xload(idx, v):
            ptr = builder.bitcast(at(xp, idx), vty.as_pointer())
            if v % rv == rv - 1:
                return builder.call(masked_load, [ptr, align, last, zero])
            return builder.load(ptr, align=dtype.bitwidth // 8)

        def emit(nf):
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(rows * rv)] for _ in range(nf)]
            with cgutils.for_range(builder, kh_) as arow:
                xr = builder.add(xbase_, builder.mul(arow.index, xrow_))
                wr = builder.mul(arow.index, kw_)
                with cgutils.for_range(builder, kw_) as bcol:
                    xo = builder.add(xr, bcol.index)
                    wo = builder.add(builder.mul(builder.add(wr, bcol.index), ldw_), f0_)
                    xv = [xload(builder.add(builder.add(xo, builder.mul(xrow_, ir.Constant(i64t, v // rv))),
                                            ir.Constant(i64t, v % rv * lanes)), v) for v in range(rows * rv)]
                    for f in range(nf):
                        ws = splat(builder.load(at(wp, builder.add(wo, ir.Constant(i64t, f)))))
                        for v in range(rows * rv):
                            builder.store(fma(ws, xv[v], builder.load(acc[f][v])), acc[f][v])
            for f in range(nf):
                for v in range(rows * rv):
                    row = builder.add(builder.mul(rstride_, ir.Constant(i64t, v // rv)), builder.mul(ldo_, ir.Constant(i64t, f)))
                    idx = builder.add(builder.add(obase_, row), ir.Constant(i64t, v % rv * lanes))
                    value = builder.load(acc[f][v])
                    if v % rv == rv - 1:  # the lanes past ow: zeros, not what the masked loads left
                        value = builder.select(last, value, zero)
                    vstore(value, op, idx)

        end = builder.append_basic_block("lanes.end")
        switch = builder.switch(ft_, end)
        for nf in filter_tiles:
            block = builder.append_basic_block(f"lanes.{nf}")
            switch.add_case(ir.Constant(i64t, nf), block)
            builder.position_at_end(block)
            emit(nf)
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


#: the forward pass's tiles: the two rows of a pooling window by 6, 5 or 4 filters
tile_lanes = make_tile_lanes(LANE_ROWS, LANE_FILTER_TILES)


def _masked_store_int(builder, ity):
    """llvm.masked.store for a vector of integers (numba_tiles._masked declares the float ones)."""
    name = f"v{ity.count}i{ity.element.width}"
    ptr = "p0" if llvm.llvm_version_info[0] >= 17 else f"p0{name}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [ity, ity.as_pointer(), ir.IntType(32), ir.VectorType(ir.IntType(1), ity.count)]),
        f"llvm.masked.store.{name}.{ptr}")


@intrinsic
def pool_lanes(typingctx, acc, f_, pi, pw, ow, plane, bp, y, arg, base):
    """One pooled row of every filter from acc (2, F, LANE_PIXELS): y[base + f*plane + pj] =
    ReLU(max of window (pi, pj) + b[f]) and arg at the same place its pixel's index i*OW + j, or -1
    where the ReLU stopped it, for pj < pw (<= LANE_PIXELS / 2). The first maximum in row-major
    order wins ties, as in pool22_relu: each row's left pixel unless the right one is larger, then
    the first row's unless the second's is larger. A row's two vectors are split into their even and
    odd lanes (two shuffles), so every comparison is a vector one."""
    dtype = _check_arrays("pool_lanes", acc, bp, y)
    if not isinstance(arg.dtype, types.Integer) or arg.dtype.bitwidth not in (16, 32):
        raise numba.core.errors.TypingError(f"pool_lanes: int16 or int32 arg expected, got {arg}")
    i64 = types.int64
    sig = types.void(acc, i64, i64, i64, i64, i64, bp, y, arg, i64)

    def codegen(context, builder, signature, args):
        aa, f_, pi, pw, ow, plane, ba, ya, ga, base = args
        ap, bpp, yp, gp = (_data(context, builder, signature.args[i], a) for i, a in ((0, aa), (6, ba), (7, ya), (8, ga)))
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        i64t, i32t = ir.IntType(64), ir.IntType(32)
        half = LANE_PIXELS // 2  # pooled values a row: one vector of float32
        hty = ir.VectorType(vty.element, half)
        ity = ir.VectorType(i32t, half)
        _, masked_store = _masked(builder, hty)
        aty = ir.VectorType(ir.IntType(signature.args[8].dtype.bitwidth), half)  # arg's vectors
        store_arg = _masked_store_int(builder, aty)
        align = ir.Constant(i32t, dtype.bitwidth // 8)
        keep = lane_mask(builder, pw, half)
        even = ir.Constant(ir.VectorType(i32t, half), [2 * k for k in range(half)])
        odd = ir.Constant(ir.VectorType(i32t, half), [2 * k + 1 for k in range(half)])
        columns = ir.Constant(ity, [2 * k for k in range(half)])
        rows_at = builder.mul(builder.mul(pi, ir.Constant(i64t, 2)), ow)

        def isplat(v):
            one = builder.insert_element(ir.Constant(ity, ir.Undefined), builder.trunc(v, i32t), ir.Constant(i32t, 0))
            return builder.shuffle_vector(one, ir.Constant(ity, ir.Undefined), ir.Constant(ity, [0] * half))

        first = [builder.add(isplat(builder.add(rows_at, builder.mul(ow, ir.Constant(i64t, r)))), columns)
                 for r in range(LANE_ROWS)]  # each row's left pixels' indices
        wty = ir.VectorType(vty.element, LANE_PIXELS)
        with cgutils.for_range(builder, f_) as loop:
            f = loop.index
            best = where = None
            for r in range(LANE_ROWS):
                idx = builder.mul(builder.add(builder.mul(f_, ir.Constant(i64t, r)), f), ir.Constant(i64t, LANE_PIXELS))
                row = builder.load(builder.bitcast(at(ap, idx), wty.as_pointer()), align=dtype.bitwidth // 8)
                left = builder.shuffle_vector(row, ir.Constant(wty, ir.Undefined), even)
                right = builder.shuffle_vector(row, ir.Constant(wty, ir.Undefined), odd)
                more = builder.fcmp_ordered(">", right, left)
                value = builder.select(more, right, left)
                index = builder.add(first[r], builder.zext(more, ity))
                if best is None:
                    best, where = value, index
                else:
                    more = builder.fcmp_ordered(">", value, best)
                    best, where = builder.select(more, value, best), builder.select(more, index, where)
            b = builder.load(at(bpp, f))
            one = builder.insert_element(ir.Constant(hty, ir.Undefined), b, ir.Constant(i32t, 0))
            v = builder.fadd(best, builder.shuffle_vector(one, ir.Constant(hty, ir.Undefined), ir.Constant(ity, [0] * half)))
            live = builder.fcmp_ordered(">", v, ir.Constant(hty, None))
            out = builder.add(base, builder.mul(f, plane))
            builder.call(masked_store, [builder.select(live, v, ir.Constant(hty, None)),
                                        builder.bitcast(at(yp, out), hty.as_pointer()), align, keep])
            where = builder.select(live, where, ir.Constant(ity, [-1] * half))
            if aty.element.width < 32:
                where = builder.trunc(where, aty)
            builder.call(store_arg, [where, builder.bitcast(at(gp, out), aty.as_pointer()),
                                     ir.Constant(i32t, aty.element.width // 8), keep])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def lane_pool_forward_kernel(xh, wl, bp, kh, kw, oh, ow, chunk, y, arg, ft):
    """y (N, F, PH, PW) = max-pool 2x2(ReLU(conv(x) + b)) and arg (N, F, PH, PW) (int16 or int32)
    each maximum's index i*OW + j, or -1 where the ReLU let nothing through, for a one-channel input xh (N, Hp,
    Wp, 1) and filters wl (KH*KW, F) (pack_lanes); images in chunks of ``chunk``."""
    n_, hp, wp, _ = xh.shape
    f_, ph, pw = y.shape[1], y.shape[2], y.shape[3]
    xflat, wflat, yflat, aflat = xh.reshape(-1), wl.reshape(-1), y.reshape(-1), arg.reshape(-1)
    per = f_ * ph * pw
    for ci in prange((n_ + chunk - 1) // chunk):
        acc = np.empty(LANE_ROWS * f_ * LANE_PIXELS, y.dtype)  # (2 rows, F, LANE_PIXELS)
        for n in range(ci * chunk, min(n_, (ci + 1) * chunk)):
            for pi in range(ph):
                base = (n * hp + 2 * pi) * wp
                for f0 in range(0, f_, ft):
                    tile_lanes(xflat, base, wp, kh, kw, wflat, f0, f_, acc, f0 * LANE_PIXELS, LANE_PIXELS,
                               f_ * LANE_PIXELS, ow, ft)
                pool_lanes(acc, f_, pi, pw, ow, ph * pw, bp, yflat, aflat, n * per + pi * pw)


lock_caches(globals(), depends=(numba_tiles.__file__,))
