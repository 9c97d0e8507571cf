"""The weight gradient of a fused convolution + ReLU + max-pooling layer taken from its pooled
gradient, one pooled value at a time (the numba backend's first layers).

Why. Behind a pooling window only its maximum gets a gradient, so the gradient before pooling,
``g (OH, OW, F)``, is zero at three pixels of every four (2x2 windows), and more where the ReLU
stopped the window. The dense weight gradient (``tile_grad``) multiplies all of it:
OH*OW*K*Fp multiply-adds an image, K = KH*KW*C. Read from the pooled side instead::

    dW[f, a, b, c] = sum over windows q of dy[q, f] * x[pixel(arg[q, f]) + (a, b), c]

is PH*PW*F windows of one scaled window of input each. In the channels-last input ``xh (N, Hp,
Wp, C)``, row ``a`` of a window, its KW*C values, is contiguous, so each window is KH rows of a
few vectors: an axpy whose accumulators stay in registers for a whole (image, filter). For
fast-cnn's first layer (1 -> 24 channels, 5x5, 24x24 -> 12x12) that is 144 windows x 5 vectors of
8 a filter, against 576 pixels x 25 rows x (32 / 16) vectors, about 3x fewer vector
multiply-adds, and no gradient before pooling to build.

- ``window_grad(x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out,
  obase, db, dbi)``::

      out[obase + (r*nvec + j)*L + v] += sum over q < count of d(q) * x[xbase + poff[arg(q)] + r*xrow + j*L + v]
      db[dbi] += sum over q < count of d(q)

  for r < kh and j*L + v < width, L = :data:`WINDOW_LANES` values (32 bytes), nvec = ceil(width /
  L); arg(q) = arg[abase + q*astride] and d(q) = dy[dbase + q*dstep] where arg(q) >= 0, else 0 (the
  ReLU stopped that window: nothing is read). Where ``xrow`` is at least L, every row of a window
  but its last is read whole (WINDOW_PLAIN_ROWS: a masked load costs the loop its mask register
  and more), reaching into the window's next row; the lanes of ``out`` past ``width`` then hold
  what those reads bring, and the caller drops them. The last row is read only up to ``width``.
  (``window_grad_wide``'s last vector of a row may be half as wide: the lanes of ``out`` past it
  are then left as they were.) The caller keeps every index in bounds.

Two sets of accumulators take alternate windows, so consecutive multiply-adds into one register do
not wait on each other; ``kh * nvec`` is at most :data:`WINDOW_MAX_VECTORS`.
"""
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_tiles import VECTOR_BYTES, _check_arrays, _data, _masked, lane_mask, tail_vectors

#: values in one vector of window_grad: 32 bytes (8 float32, 4 float64) on every x86 target; a
#: window row of fast-cnn's first layer is 5 values
WINDOW_BYTES = 32
#: the most accumulator vectors (kh x nvec) of one set; two sets, with the row loads, fit AVX-512's
#: 32 registers and spill a little on AVX2's 16 at the largest
WINDOW_MAX_VECTORS = 10
WINDOW_MAX_ROWS = 7
#: read every window row but the last whole, unmasked (the lanes past the row's width then hold
#: values the caller drops), where rows are at least a vector apart
WINDOW_PLAIN_ROWS = True
#: accumulators of window_grad_wide, one set: 16 of AVX-512's 32 registers, 12 of AVX2's 16
WIDE_MAX_VECTORS = 16 if VECTOR_BYTES == 64 else 12


def window_lanes(itemsize: int) -> int:
    """Values of ``itemsize`` bytes in one window_grad vector."""
    return WINDOW_BYTES // itemsize


def window_vectors(width: int, itemsize: int) -> int:
    """Vectors that cover a window row of ``width`` values."""
    lanes = window_lanes(itemsize)
    return -(-width // lanes)


def window_grad_applies(kh: int, width: int, itemsize: int) -> bool:
    """Whether window_grad has a body for windows of kh rows of ``width`` values."""
    return 1 <= kh <= WINDOW_MAX_ROWS and width >= 1 and kh * window_vectors(width, itemsize) <= WINDOW_MAX_VECTORS


def wide_lanes(itemsize: int) -> int:
    """Values of ``itemsize`` bytes in one window_grad_wide vector."""
    return VECTOR_BYTES // itemsize


def window_row_values(width: int, itemsize: int, wide: bool) -> int:
    """Values one window row of ``width`` takes in the intrinsics' ``out``: whole vectors of
    window_grad's (or with ``wide`` window_grad_wide's) lanes."""
    lanes = wide_lanes(itemsize) if wide else window_lanes(itemsize)
    return -(-width // lanes) * lanes


def wide_rows(width: int, itemsize: int) -> int:
    """Window rows of ``width`` values one window_grad_wide call takes (0: a row is too long)."""
    nvec = -(-width // wide_lanes(itemsize))
    return min(WINDOW_MAX_ROWS, WIDE_MAX_VECTORS // nvec) if width >= 1 else 0


def _bodies(max_vectors):  # every (kh, nvec) an intrinsic of at most max_vectors accumulators compiles a body for
    return [(kh, nv) for kh in range(1, WINDOW_MAX_ROWS + 1) for nv in range(1, max_vectors + 1)
            if kh * nv <= max_vectors]


def _window_grad_intrinsic(name, vector_bytes, max_vectors, sets, halves=False):
    """An intrinsic of window_grad's signature and meaning whose vectors are ``vector_bytes`` wide,
    with a body for every (kh, nvec) of kh <= WINDOW_MAX_ROWS and kh * nvec <= ``max_vectors``,
    the windows taken in turn by ``sets`` sets of accumulators; with ``halves``, a row's last vector
    is half as wide where at most half of it is left (a second body per pair)."""

    def typer(typingctx, x, xbase, xrow, kh, width, dy, dbase, dstep, count, arg, abase, astride, poff, out, obase,
              db, dbi):
        dtype = _check_arrays(name, x, dy, out, db)
        for what, a in (("arg", arg), ("poff", poff)):
            if not isinstance(a.dtype, types.Integer):
                raise numba.core.errors.TypingError(f"{name}: integer {what} expected, got {a}")
        i64 = types.int64
        sig = types.void(x, i64, i64, i64, i64, dy, i64, i64, i64, arg, i64, i64, poff, out, i64, db, i64)
        return sig, _codegen(dtype, vector_bytes // (dtype.bitwidth // 8), _bodies(max_vectors), sets, halves)

    typer.__name__ = name
    return intrinsic(typer)


def _sum(builder, values):  # the accumulator sets added up
    total = values[0]
    for v in values[1:]:
        total = builder.fadd(total, v)
    return total


def _codegen(dtype, lanes, bodies, nsets, halves=False):
    """window_grad's code: a switch on (kh, nvec) to a body per pair of ``bodies`` (and with
    ``halves``, on whether a row's last vector is a half-width one)."""
    def codegen(context, builder, signature, args):
        x, dy, arg, poff, out, db = (signature.args[i] for i in (0, 5, 9, 12, 13, 15))
        (xa, xbase_, xrow_, kh_, width_, da, dbase_, dstep_, count_, aa, abase_, astride_, pa, oa, obase_,
         dba, dbi_) = args
        xp, dp, ap = _data(context, builder, x, xa), _data(context, builder, dy, da), _data(context, builder, arg, aa)
        pp, op, dbp = _data(context, builder, poff, pa), _data(context, builder, out, oa), _data(context, builder, db, dba)
        fty = context.get_value_type(dtype)
        vty = ir.VectorType(fty, lanes)
        i64t = ir.IntType(64)
        halves_ = halves and lanes >= 2
        hty = ir.VectorType(fty, max(1, lanes // 2))
        masked_load, _ = _masked(builder, vty)
        masked_load_h, _ = _masked(builder, hty)
        align = ir.Constant(ir.IntType(32), dtype.bitwidth // 8)
        nvec, left, half = tail_vectors(builder, width_, lanes, halves_)
        last_mask = lane_mask(builder, left, lanes)
        half_mask = lane_mask(builder, left, hty.count)
        zero_s = ir.Constant(fty, None)

        def at(ptr, idx):
            return builder.gep(ptr, [idx], inbounds=True)

        def splat(s, ty):
            one = builder.insert_element(ir.Constant(ty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), ty.count), [0] * ty.count))

        ity = ir.IntType(dtype.bitwidth)

        def window(q):
            """(d, the window's first input offset) of pooled value q, d = 0 where the ReLU stopped it.
            Branch-free, by a mask of the arg's sign bit: LLVM made a select of d into a branch on
            the sign, which the ReLU's pattern mispredicts (fast-cnn's conv2 dW windows, 256 images, one
            thread of a Zen 3, three runs each way alternated: 2.72-3.29 -> 2.01-2.59 ms)."""
            a = builder.load(at(ap, builder.add(abase_, builder.mul(q, astride_))))
            keep = builder.not_(builder.ashr(a, ir.Constant(a.type, a.type.width - 1)))  # all ones where a >= 0
            pix = builder.and_(a, keep)
            pix = builder.sext(pix, i64t) if pix.type.width < 64 else pix
            off = builder.load(at(pp, pix))
            off = builder.sext(off, i64t) if off.type.width < 64 else off
            dval = builder.load(at(dp, builder.add(dbase_, builder.mul(q, dstep_))))
            keep = builder.sext(keep, ity) if ity.width > keep.type.width else builder.trunc(keep, ity) \
                if ity.width < keep.type.width else keep
            d = builder.bitcast(builder.and_(builder.bitcast(dval, ity), keep), fty)
            return d, builder.add(xbase_, off)

        def emit(rows, nv, hv):
            # vector j's type: the last one half as wide with ``hv``
            types_ = [hty if hv and j == nv - 1 else vty for j in range(nv)]
            sets = [[[cgutils.alloca_once_value(builder, ir.Constant(types_[j], None)) for j in range(nv)]
                     for _ in range(rows)] for _ in range(nsets)]
            bias = [cgutils.alloca_once_value(builder, zero_s) for _ in range(nsets)]

            def axpy(acc, bsum, q, plain):
                """One window into ``acc``; with ``plain``, a row that another row of the window
                follows is read whole (its last vector past the row's end, in the next row: the
                lanes past the width then hold what the caller drops), the last row masked."""
                d, base = window(q)
                ds = {ty.count: splat(d, ty) for ty in dict.fromkeys(types_)}  # each type once, in order
                for r in range(rows):
                    row = builder.add(base, builder.mul(xrow_, ir.Constant(i64t, r)))
                    for j in range(nv):
                        ty = types_[j]
                        ptr = builder.bitcast(at(xp, builder.add(row, ir.Constant(i64t, j * lanes))), ty.as_pointer())
                        if j < nv - 1 or (plain and r < rows - 1):
                            xv = builder.load(ptr, align=dtype.bitwidth // 8)
                        elif ty is hty:
                            xv = builder.call(masked_load_h, [ptr, align, half_mask, ir.Constant(hty, None)])
                        else:
                            xv = builder.call(masked_load, [ptr, align, last_mask, ir.Constant(vty, None)])
                        prod = builder.fmul(ds[ty.count], xv, flags=("contract",))
                        builder.store(builder.fadd(prod, builder.load(acc[r][j]), flags=("contract",)), acc[r][j])
                builder.store(builder.fadd(builder.load(bsum), d), bsum)

            groups = builder.udiv(count_, ir.Constant(i64t, nsets))
            # a row's last vector read whole stays inside the window's next row when rows are at
            # least a vector apart (every convolution's are: a row of the input is wider than one
            # of the window's)
            plain_ok = builder.icmp_signed(">=", xrow_, ir.Constant(i64t, lanes)) if WINDOW_PLAIN_ROWS else \
                ir.Constant(ir.IntType(1), 0)
            with builder.if_else(plain_ok) as (then, otherwise):
                for plain, branch in ((True, then), (False, otherwise)):
                    with branch:
                        with cgutils.for_range(builder, groups) as loop:
                            q = builder.mul(loop.index, ir.Constant(i64t, nsets))
                            for k in range(nsets):
                                axpy(sets[k], bias[k], builder.add(q, ir.Constant(i64t, k)), plain)
            with cgutils.for_range(builder, builder.urem(count_, ir.Constant(i64t, nsets))) as loop:
                axpy(sets[0], bias[0], builder.add(builder.mul(groups, ir.Constant(i64t, nsets)), loop.index), False)
            for r in range(rows):
                for j in range(nv):
                    idx = builder.add(obase_, ir.Constant(i64t, (r * nv + j) * lanes))
                    ptr = builder.bitcast(at(op, idx), types_[j].as_pointer())
                    total = _sum(builder, [builder.load(acc[r][j]) for acc in sets])
                    builder.store(builder.fadd(builder.load(ptr, align=dtype.bitwidth // 8), total), ptr,
                                  align=dtype.bitwidth // 8)
            dptr = at(dbp, dbi_)
            builder.store(builder.fadd(builder.load(dptr), _sum(builder, [builder.load(b) for b in bias])),
                          dptr)

        end = builder.append_basic_block("window.end")
        key = builder.add(builder.mul(builder.add(builder.mul(kh_, ir.Constant(i64t, 64)), nvec), ir.Constant(i64t, 2)),
                          builder.zext(half, i64t))
        switch = builder.switch(key, end)
        for rows, nv in bodies:
            for hv in ((False, True) if halves_ else (False,)):
                block = builder.append_basic_block(f"window.{rows}x{nv}{'h' if hv else ''}")
                switch.add_case(ir.Constant(i64t, (rows * 64 + nv) * 2 + hv), block)
                builder.position_at_end(block)
                emit(rows, nv, hv)
                builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return codegen


#: the first layers' short window rows (see the module's docstring)
window_grad = _window_grad_intrinsic("window_grad", WINDOW_BYTES, WINDOW_MAX_VECTORS, 2)
#: longer rows (fast-cnn's conv2, 3 x 72 values), a few rows a call: vectors of the target's
#: width, one set of accumulators (so many keep the multiply-adds independent anyway), a row's last
#: vector half as wide where at most half of it is left (72 float32 on AVX-512: 4 zmm and a ymm)
window_grad_wide = _window_grad_intrinsic("window_grad_wide", VECTOR_BYTES, WIDE_MAX_VECTORS, 1, halves=True)
