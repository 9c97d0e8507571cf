"""Register-tiled micro-kernels for the numba backend, written in LLVM IR through llvmlite.

Numba's auto-vectoriser keeps a loop's accumulator in memory: the direct convolutions in
numba_kernels.py load and store their output once per few multiply-adds, and reach about a
quarter of the machine's matmul rate. These two micro-kernels hold a tile of outputs in vector
registers across a whole reduction, the way LIBXSMM and oneDNN's brgemm do (Georganas et al.,
SC18): the vector runs over output channels, each input value is broadcast once and multiplied
into every vector of the tile.

- ``tile_rows(x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix)``::

      out[obase + p*ldo + v] = sum over k < nk of x[xbase + roff[k0 + k] + p*ps] * w[k*ldw + wcol + v]

  for p < npix (at most :data:`TILE_PIXELS`) and v < ``tile_columns(itemsize)``: a row of output
  pixels by one block of output channels; ``roff`` lists where each (tap, input channel) of the
  reduction sits relative to the pixel. A convolution's forward pass, and the product behind its
  input gradient, are loops of this call.
- ``tile_grad(x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo)``::

      out[obase + r*ldo + v] += sum over pixels (i, q) of x[xbase + i*rsx + q*psx + roff[k0 + r]]
                                                         * g[gbase + i*rsg + q*psg + v]

  for r < nrow (at most :data:`TILE_PIXELS`), v < ``tile_columns(itemsize)``: a block of weight-gradient
  rows, reduced over a rows x cols grid of pixels.

``tile_rows_narrow`` and ``tile_grad_narrow`` do the same over one vector of columns (half of
``tile_columns``), up to :data:`NARROW_PIXELS` pixels or rows: a layer whose channels are an odd
number of vectors computes no padded vector. ``tile_rows_unit`` and ``tile_rows_narrow_unit`` are
tile_rows and tile_rows_narrow for a pixel stride of 1 (a one-channel input, as every zoo CNN's
first layer has), up to :data:`UNIT_PIXELS` and :data:`NARROW_UNIT_PIXELS` pixels.
``pool22_relu`` and ``unpool22`` (at the end) pool a tile's output channels last, in the same
vectors, and ``transpose8`` moves an 8 x 8 block between the channels-last layout of the tiles and
the layers' (N, C, H, W).

The tile kernels take a run-time tile size and switch to a fully unrolled body for it, so one
compiled kernel serves every layer shape. Offsets are in elements; the caller guarantees every index is
in bounds (the kernels in numba_conv.py derive them from checked shapes).
"""
import numba
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def vector_bytes() -> int:
    """The width of one SIMD register numba compiles for: 64 (AVX-512) or 32 (AVX2 and others).

    The host's features decide, unless NUMBA_CPU_NAME names another CPU, when AVX-512 counts only
    if NUMBA_CPU_FEATURES enables it. Derived from numba's target alone, never from a setting of
    ours: numba keys its on-disk cache by target, so a cached kernel and the Python code that sizes
    its buffers always agree on the tile width."""
    return 64 if target_has("avx512f") else 32


def target_has(feature: str, cpus=frozenset()) -> bool:
    """Whether numba's target has ``feature`` (an LLVM feature name such as "avx2"): the host's
    features, unless NUMBA_CPU_NAME names another CPU; then NUMBA_CPU_FEATURES must enable it, or
    that CPU must be one of ``cpus`` (names known to have it)."""
    cpu_name = numba.config.CPU_NAME
    if cpu_name and cpu_name != "host":
        return cpu_name in cpus or f"+{feature}" in (numba.config.CPU_FEATURES or "")
    return bool(llvm.get_host_cpu_features().get(feature, False))


def target_cpu() -> str:
    """The CPU numba compiles for: NUMBA_CPU_NAME where set, else LLVM's name for the host."""
    cpu_name = numba.config.CPU_NAME
    return cpu_name if cpu_name and cpu_name != "host" else llvm.get_host_cpu_name()


VECTOR_BYTES = vector_bytes()
#: whether the target runs a 512-bit multiply-add as two 256-bit halves (AMD Zen 4): there one
#: broadcast into three 32-byte multiply-adds (tile_rows3y) costs what 1.5 zmm ones cost, so 24
#: channels run as 24 rather than as a two-zmm tile's 32. Where zmm multiply-adds run at full rate
#: (Intel's AVX-512 cores), two zmm are faster: fast-cnn's first layer forward on a 2-core Xeon
#: (rocketlake target, AVX-512 + AMX) took 1.30-1.31 ms a batch against 1.47 ms with tile_rows3y.
HALF_RATE_ZMM = VECTOR_BYTES == 64 and target_cpu().startswith("znver4")
#: vector registers per tile row: two, so each broadcast input feeds two FMAs
TILE_VECTORS = 2
#: the most pixels (tile_rows) or weight rows (tile_grad) in one tile: 10 x 2 accumulators of the
#: 32 AVX-512 registers, 6 x 2 of AVX2's 16, leaving room for the weights and the broadcast.
#: Measured on a Zen 4 (benchmarks/tile_sizes.py, results/tile-sizes.txt): fast-cnn's first layer
#: forward ran at 148-157 GFLOP/s with tiles of 5 to 10 pixels; with TILE_PIXELS = 12, before this
#: setting, the same script gave 71 at 12 (24 pixels as 12 + 12; why the 12-pixel
#: body is slow was not investigated); AVX2 code (NUMBA_CPU_NAME=haswell) was fastest at 6.
TILE_PIXELS = 10 if VECTOR_BYTES == 64 else 6
#: the same for the one-vector ``_narrow`` kernels, which finish a layer whose channels are an odd
#: number of vectors (16 filters on AVX-512, 24 on AVX2) without computing a padded vector; 8 to
#: 20 measured alike on dropout-cnn's 16-filter convolution (Zen 4), 12 + 2 fit AVX2's 16 registers
NARROW_PIXELS = 12
#: the same for the unit-stride kernels, whose pixels need no pointer of their own (a constant
#: displacement from the tap's): a 24-pixel row as 12 + 12 and a 28-pixel one as 14 + 14 rather than
#: three tiles. On AVX2's 16 registers the tiles stay as they are. Measured on a 2-core Xeon
#: (rocketlake target), the tiles alone of the zoo's first layers, both threads: 9-21% more GFLOP/s
#: (benchmarks/unit_tiles.py, results/unit-tiles-xeon-amx5.txt); whole training steps 0-3% faster.
UNIT_PIXELS = 12 if VECTOR_BYTES == 64 else TILE_PIXELS
NARROW_UNIT_PIXELS = 14 if VECTOR_BYTES == 64 else NARROW_PIXELS


def tile_columns(itemsize: int) -> int:
    """Output channels one tile covers for elements of ``itemsize`` bytes (32 float32 on AVX-512)."""
    return TILE_VECTORS * VECTOR_BYTES // itemsize


def _data(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _vector_ops(context, builder, dtype):
    fty = context.get_value_type(dtype)
    lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
    vty = ir.VectorType(fty, lanes)
    align = dtype.bitwidth // 8

    def at(ptr, idx):
        return builder.gep(ptr, [idx], inbounds=True)

    def vload(ptr, idx):
        return builder.load(builder.bitcast(at(ptr, idx), vty.as_pointer()), align=align)

    def vstore(val, ptr, idx):
        builder.store(val, builder.bitcast(at(ptr, idx), vty.as_pointer()), align=align)

    def splat(s):
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), mask)

    def fma(a, b, c):  # a*b + c; 'contract' lets LLVM fuse it (llvmlite's fma takes no vectors)
        return builder.fadd(builder.fmul(a, b, flags=("contract",)), c, flags=("contract",))

    return vty, lanes, at, vload, vstore, splat, fma


def _switch_on(builder, count, most, emit):
    """Branch on the run-time tile size to a body unrolled for it (1..most; others: no-op)."""
    end = builder.append_basic_block("tile.end")
    switch = builder.switch(count, end)
    for size in range(1, most + 1):
        block = builder.append_basic_block(f"tile.{size}")
        switch.add_case(ir.Constant(count.type, size), block)
        builder.position_at_end(block)
        emit(size)
        builder.branch(end)
    builder.position_at_end(end)


def _check_arrays(name, *arys):
    dtypes = {a.dtype for a in arys}
    if len(dtypes) != 1 or not isinstance(next(iter(dtypes)), types.Float):
        raise numba.core.errors.TypingError(f"{name}: float arrays of one dtype expected, got {arys}")
    return next(iter(dtypes))


def _rows_intrinsic(name, vectors, most, x, roff, w, out, vector_bytes=None, accumulate=False, unit=False):
    """tile_rows's signature and code for tiles of up to ``most`` pixels x ``vectors`` vectors
    (of ``vector_bytes``, by default the target's width); with ``accumulate`` the tile is added
    to what ``out`` holds instead of replacing it; with ``unit`` the pixel stride is 1 whatever
    ``ps`` says (a one-channel input), so each pixel's input is a constant displacement from
    the tap's: LLVM otherwise keeps one pointer per pixel, more than the 16 general registers
    hold, and reloads the rest from the stack every tap."""
    dtype = _check_arrays(name, x, w, out)
    i64 = types.int64
    sig = types.void(x, i64, i64, roff, i64, i64, w, i64, i64, out, i64, i64, i64)

    def codegen(context, builder, signature, args):
        xa, xbase, ps, ra, k0, nk, wa, wcol, ldw, oa, obase, ldo, npix = args
        xp, rp = _data(context, builder, x, xa), _data(context, builder, roff, ra)
        wp, op = _data(context, builder, w, wa), _data(context, builder, out, oa)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        if vector_bytes is not None and vector_bytes != VECTOR_BYTES:
            lanes = vector_bytes // (dtype.bitwidth // 8)
            vty = ir.VectorType(vty.element, lanes)
        groups = [(ir.Constant(ir.IntType(64), j * lanes), vty) for j in range(vectors)]
        align = dtype.bitwidth // 8

        def load(ptr, idx, ty):
            return builder.load(builder.bitcast(at(ptr, idx), ty.as_pointer()), align=align)

        def vsplat(s):
            one = builder.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

        def emit(npx):
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(ty, None)) for _, ty in groups]
                   for _ in range(npx)]
            with cgutils.for_range(builder, nk) as loop:
                k = loop.index
                r = builder.add(xbase, builder.load(at(rp, builder.add(k0, k))))
                wrow = builder.add(builder.mul(k, ldw), wcol)
                wv = [load(wp, builder.add(wrow, lj), ty) for lj, ty in groups]
                for p in range(npx):
                    step = ir.Constant(ps.type, p) if unit else builder.mul(ps, ir.Constant(ps.type, p))
                    xs = vsplat(builder.load(at(xp, builder.add(r, step))))
                    for j, wj in enumerate(wv):
                        builder.store(fma(xs, wj, builder.load(acc[p][j])), acc[p][j])
            for p in range(npx):
                row = builder.add(obase, builder.mul(ldo, ir.Constant(ldo.type, p)))
                for j, (lj, ty) in enumerate(groups):
                    where = builder.bitcast(at(op, builder.add(row, lj)), ty.as_pointer())
                    total = builder.load(acc[p][j])
                    if accumulate:
                        total = builder.fadd(builder.load(where, align=align), total)
                    builder.store(total, where, align=align)

        _switch_on(builder, npix, most, emit)
        return context.get_dummy_value()

    return sig, codegen


def _grad_intrinsic(name, vectors, most, x, roff, g, out):
    """tile_grad's signature and code for tiles of up to ``most`` rows x ``vectors`` vectors."""
    dtype = _check_arrays(name, x, g, out)
    i64 = types.int64
    sig = types.void(x, i64, roff, i64, i64, g, i64, i64, i64, i64, i64, i64, i64, out, i64, i64)

    def codegen(context, builder, signature, args):
        (xa, xbase, ra, k0, nrow, ga, gbase, rows, cols, rsx, psx, rsg, psg, oa, obase, ldo) = args
        xp, rp = _data(context, builder, x, xa), _data(context, builder, roff, ra)
        gp, op = _data(context, builder, g, ga), _data(context, builder, out, oa)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        lane = [ir.Constant(ir.IntType(64), j * lanes) for j in range(vectors)]

        def emit(nr):
            offs = [builder.load(at(rp, builder.add(k0, ir.Constant(k0.type, r)))) for r in range(nr)]
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in lane]
                   for _ in range(nr)]
            with cgutils.for_range(builder, rows) as outer:
                xrow = builder.add(xbase, builder.mul(outer.index, rsx))
                grow = builder.add(gbase, builder.mul(outer.index, rsg))
                with cgutils.for_range(builder, cols) as inner:
                    xo = builder.add(xrow, builder.mul(inner.index, psx))
                    go = builder.add(grow, builder.mul(inner.index, psg))
                    gv = [vload(gp, builder.add(go, lj)) for lj in lane]
                    for r in range(nr):
                        xs = splat(builder.load(at(xp, builder.add(xo, offs[r]))))
                        for j, gj in enumerate(gv):
                            builder.store(fma(xs, gj, builder.load(acc[r][j])), acc[r][j])
            for r in range(nr):
                row = builder.add(obase, builder.mul(ldo, ir.Constant(ldo.type, r)))
                for j, lj in enumerate(lane):
                    idx = builder.add(row, lj)
                    vstore(builder.fadd(vload(op, idx), builder.load(acc[r][j])), op, idx)

        _switch_on(builder, nrow, most, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tile_rows(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    return _rows_intrinsic("tile_rows", TILE_VECTORS, TILE_PIXELS, x, roff, w, out)


@intrinsic
def tile_rows_unit(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    """tile_rows for a pixel stride of 1 (``ps`` is ignored)."""
    return _rows_intrinsic("tile_rows_unit", TILE_VECTORS, UNIT_PIXELS, x, roff, w, out, unit=True)


@intrinsic
def tile_rows_narrow_unit(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    """tile_rows_narrow for a pixel stride of 1 (``ps`` is ignored)."""
    return _rows_intrinsic("tile_rows_narrow_unit", 1, NARROW_UNIT_PIXELS, x, roff, w, out, unit=True)


@intrinsic
def tile_rows_add(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    """tile_rows adding its products to out instead of replacing it: a product's later blocks of
    the reduction (numba_dense.py)."""
    return _rows_intrinsic("tile_rows_add", TILE_VECTORS, TILE_PIXELS, x, roff, w, out, accumulate=True)


@intrinsic
def tile_rows_narrow(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    return _rows_intrinsic("tile_rows_narrow", 1, NARROW_PIXELS, x, roff, w, out)


#: pixels of a tile_rows3y tile: 8 x 3 accumulators and the three weight vectors in AVX-512's 32
#: vector registers (ymm0-31), with room for the broadcast; 4 x 3 + 3 + 1 fill AVX2's 16. Measured
#: on an AVX2-only Zen 3 (fast-cnn's first layer, one thread): 62 GFLOP/s at 4 pixels, 50 at 3,
#: 42 at 5 and 49 at 6 (spilled), against 46 for a two-vector tile and a one-vector tile after it
TILE3Y_PIXELS = 8 if VECTOR_BYTES == 64 else 4


@intrinsic
def tile_rows3y(typingctx, x, xbase, ps, roff, k0, nk, w, wcol, ldw, out, obase, ldo, npix):
    """tile_rows over three 32-byte vectors of columns (24 float32). On AVX-512, for products whose
    columns end three quarters into a two-vector tile (fast-cnn's 24 channels, where a two-zmm tile
    computes 8 columns of padding). One broadcast feeds three 8-lane multiply-adds, which Zen 4
    runs two a cycle: a zmm and a ymm tile instead loaded a second broadcast for the ymm (measured,
    no faster than two zmm). On AVX2, for the last two-vector tile and the odd vector after it:
    one pass with a broadcast per three multiply-adds, where the one-vector tile took one for each."""
    return _rows_intrinsic("tile_rows3y", 3, TILE3Y_PIXELS, x, roff, w, out, vector_bytes=32)


@intrinsic
def tile_grad(typingctx, x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
    return _grad_intrinsic("tile_grad", TILE_VECTORS, TILE_PIXELS, x, roff, g, out)


@intrinsic
def tile_grad_narrow(typingctx, x, xbase, roff, k0, nrow, g, gbase, rows, cols, rsx, psx, rsg, psg, out, obase, ldo):
    return _grad_intrinsic("tile_grad_narrow", 1, NARROW_PIXELS, x, roff, g, out)


@intrinsic
def tile_width(typingctx, a):
    """The output channels one (two-vector) tile covers for a's dtype, as the micro-kernels were
    compiled; the narrow kernels cover half of it."""
    width = tile_columns(a.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(64), width)

    return types.int64(a), codegen


# ---- a sparse row times a dense matrix, its block of output columns in registers ----

#: vectors of output columns one ``sparse_rows`` call holds in registers: 8 accumulators leave
#: room for the loaded vectors in AVX2's 16 registers as in AVX-512's 32
SPARSE_VECTORS = 8


def sparse_block_columns(itemsize: int) -> int:
    """Output columns one ``sparse_rows`` call covers for elements of ``itemsize`` bytes."""
    return SPARSE_VECTORS * VECTOR_BYTES // itemsize


def _masked(builder, vty):
    """llvm.masked.load / llvm.masked.store for vectors of type vty (AVX-512 mask registers,
    AVX2 vmaskmov): a block's last vector reads and writes only its columns."""
    mty = ir.VectorType(ir.IntType(1), vty.count)
    # the pointer's part of the name: "p0" since LLVM 17 (opaque pointers only, llvmlite 0.50's
    # LLVM 22 here); a typed pointer's "p0v16f32" before (LLVM 14-16: not run here)
    ptr = "p0" if llvm.llvm_version_info[0] >= 17 else f"p0{_vname(vty)}"
    load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        vty, [vty.as_pointer(), ir.IntType(32), mty, vty]), f"llvm.masked.load.{_vname(vty)}.{ptr}")
    store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [vty, vty.as_pointer(), ir.IntType(32), mty]), f"llvm.masked.store.{_vname(vty)}.{ptr}")
    return load, store


def _vname(vty):
    return f"v{vty.count}f{32 if isinstance(vty.element, ir.FloatType) else 64}"


def tail_vectors(builder, cols, lanes, halves=True):
    """(nvec, left, half) for ``cols`` columns (an i64, >= 1) in vectors of ``lanes``: how many
    vectors cover them, how many columns the last one holds (1..lanes), and (an i1) whether at
    most half of it is used, so that a half-width vector serves (never without ``halves``)."""
    i64t = ir.IntType(64)
    lanes_c = ir.Constant(i64t, lanes)
    nvec = builder.udiv(builder.add(cols, ir.Constant(i64t, lanes - 1)), lanes_c)
    left = builder.sub(cols, builder.mul(builder.sub(nvec, ir.Constant(i64t, 1)), lanes_c))
    half = builder.icmp_signed("<=", left, ir.Constant(i64t, lanes // 2)) if halves and lanes >= 2 else \
        ir.Constant(ir.IntType(1), 0)
    return nvec, left, half


def _tail_switch(builder, cols, lanes, most, emit):
    """Branch on the vectors that cover ``cols`` columns (an i64, >= 1) to ``emit(nv, half, mask)``
    for nv in 1..most (others: no-op): nv - 1 whole vectors of ``lanes``, then a last one that is
    a half-width vector where at most lanes/2 columns are left (``half``; 50 float32 columns on
    AVX-512 as 3 zmm and a ymm rather than 4 zmm: an eighth less work in every row of a 50-wide
    layer), ``mask`` its lanes' mask (of its own width)."""
    i64t = ir.IntType(64)
    nvec, left, half = tail_vectors(builder, cols, lanes)
    halves = lanes >= 2
    key = builder.add(builder.mul(nvec, ir.Constant(i64t, 2)), builder.zext(half, i64t))
    end = builder.append_basic_block("tail.end")
    switch = builder.switch(key, end)
    for nv in range(1, most + 1):
        for h in ((False, True) if halves else (False,)):
            block = builder.append_basic_block(f"tail.{nv}.{int(h)}")
            switch.add_case(ir.Constant(i64t, 2 * nv + h), block)
            builder.position_at_end(block)
            emit(nv, h, lane_mask(builder, left, lanes // 2 if h else lanes))
            builder.branch(end)
    builder.position_at_end(end)


def _typed_ops(builder, vty, align):
    """(load, store, splat) for vectors of type ``vty`` at element pointers; load and store take
    an optional lane mask (of vty's width): then only those lanes are read (the others 0) or written."""
    masked_load, masked_store = _masked(builder, vty)
    a32 = ir.Constant(ir.IntType(32), align)

    def ptr(p, idx):
        return builder.bitcast(builder.gep(p, [idx], inbounds=True), vty.as_pointer())

    def load(p, idx, mask=None):
        if mask is None:
            return builder.load(ptr(p, idx), align=align)
        return builder.call(masked_load, [ptr(p, idx), a32, mask, ir.Constant(vty, None)])

    def store(val, p, idx, mask=None):
        if mask is None:
            builder.store(val, ptr(p, idx), align=align)
        else:
            builder.call(masked_store, [val, ptr(p, idx), a32, mask])

    def splat(s):
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count))

    return load, store, splat


def _index(builder, ptr):
    """The integer at ``ptr`` as an i64 (sign-extended)."""
    value = builder.load(ptr)
    return builder.sext(value, ir.IntType(64)) if value.type.width < 64 else value


@intrinsic
def sparse_rows(typingctx, ix, v, lo, hi, b, bbase, ldb, out, obase, cols):
    """out[obase + c] += sum over k in [lo, hi) of v[k] * b[ix[k]*ldb + bbase + c], for c < cols
    (1 to ``sparse_block_columns``): a sparse row (columns ix, values v) times the dense b, with
    out's block of columns held in vector registers across every non-zero; each non-zero costs one
    vector load and one FMA per vector, the last one half as wide where at most half of it is left
    (the auto-vectorised loop loaded and stored the output row every few non-zeros, and ran a
    50-wide row in scalar code). The caller keeps every index in bounds."""
    return _sparse_rows(ix, v, b, out, scaled=False)


@intrinsic
def sparse_rows_scaled(typingctx, ix, v, lo, hi, b, bbase, ldb, out, obase, cols, scale):
    """sparse_rows's sum, started from zero, then out[obase + c] += scale * sum: plain SGD's
    ``w[f] -= lr * row`` with the row in registers, the product and the sum rounded apart as in
    the reference (no FMA contraction there)."""
    return _sparse_rows(ix, v, b, out, scaled=True)


def _sparse_rows(ix, v, b, out, scaled):
    dtype = _check_arrays("sparse_rows", v, b, out)
    if not isinstance(ix.dtype, types.Integer):
        raise numba.core.errors.TypingError(f"sparse_rows: integer column indices expected, got {ix}")
    i64 = types.int64
    sig = types.void(ix, v, i64, i64, b, i64, i64, out, i64, i64, *((dtype,) if scaled else ()))

    def codegen(context, builder, signature, args):
        xa, va, lo, hi, ba, bbase, ldb, oa, obase, cols = args[:10]
        xp, vp = _data(context, builder, ix, xa), _data(context, builder, v, va)
        bp, op = _data(context, builder, b, ba), _data(context, builder, out, oa)
        vty, lanes, at, _, _, _, fma = _vector_ops(context, builder, dtype)
        align = dtype.bitwidth // 8
        whole = _typed_ops(builder, vty, align)
        part = _typed_ops(builder, ir.VectorType(vty.element, max(1, lanes // 2)), align)
        i64t = ir.IntType(64)

        def emit(nv, half, mask):
            offs = [ir.Constant(i64t, j * lanes) for j in range(nv)]
            ops = [part if half and j == nv - 1 else whole for j in range(nv)]  # (load, store, splat) per vector
            masks = [mask if j == nv - 1 else None for j in range(nv)]
            acc = [cgutils.alloca_once_value(builder, ops[j][2](ir.Constant(vty.element, 0)) if scaled else
                                             ops[j][0](op, builder.add(obase, o), masks[j]))
                   for j, o in enumerate(offs)]
            with cgutils.for_range(builder, builder.sub(hi, lo)) as loop:
                k = builder.add(lo, loop.index)
                row = builder.add(builder.mul(_index(builder, at(xp, k)), ldb), bbase)
                s = builder.load(at(vp, k))
                splats = {id(o): o[2](s) for o in (whole, part) if any(x is o for x in ops)}
                for j, o in enumerate(offs):
                    load, _, _ = ops[j]
                    builder.store(fma(splats[id(ops[j])], load(bp, builder.add(row, o), masks[j]),
                                      builder.load(acc[j])), acc[j])
            if scaled:  # out += scale * sum, two roundings (no 'contract'), as the reference's w -= lr * row
                for j, o in enumerate(offs):
                    load, _, splat = ops[j]
                    builder.store(builder.fadd(load(op, builder.add(obase, o), masks[j]),
                                               builder.fmul(splat(args[10]), builder.load(acc[j]))), acc[j])
            for j, o in enumerate(offs):
                ops[j][1](builder.load(acc[j]), op, builder.add(obase, o), masks[j])

        _tail_switch(builder, cols, lanes, SPARSE_VECTORS, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def sparse_scatter(typingctx, ix, v, lo, hi, b, bbase, out, ldo, obase, cols):
    """out[ix[k]*ldo + obase + c] += v[k] * b[bbase + c] for k in [lo, hi), c < cols (1 to
    ``sparse_block_columns``): a column of a sparse matrix (rows ix, values v) times a row of b,
    added to those rows of out. b's block of columns stays in registers across every non-zero;
    each non-zero costs a load, an FMA and a store of out per vector, the last one half a vector
    wide where at most half of it is left (_tail_switch: two-layer's 50 columns, 13% faster as
    3 zmm and a ymm on a Zen 4, in one process alternated with 4 zmm). out's rows are stored as
    whole vectors: they need room up to cols rounded up to a vector and are written up to cols
    rounded up to a vector or, with a half-width last one, half a vector, where b's missing lanes
    add v[k] * 0. The caller keeps every index in bounds."""
    dtype = _check_arrays("sparse_scatter", v, b, out)
    if not isinstance(ix.dtype, types.Integer):
        raise numba.core.errors.TypingError(f"sparse_scatter: integer row indices expected, got {ix}")
    i64 = types.int64
    sig = types.void(ix, v, i64, i64, b, i64, out, i64, i64, i64)

    def codegen(context, builder, signature, args):
        xa, va, lo, hi, ba, bbase, oa, ldo, obase, cols = args
        xp, vp = _data(context, builder, ix, xa), _data(context, builder, v, va)
        bp, op = _data(context, builder, b, ba), _data(context, builder, out, oa)
        vty, lanes, at, _, _, _, fma = _vector_ops(context, builder, dtype)
        align = dtype.bitwidth // 8
        whole = _typed_ops(builder, vty, align)
        part = _typed_ops(builder, ir.VectorType(vty.element, max(1, lanes // 2)), align)
        i64t = ir.IntType(64)

        def emit(nv, half, mask):
            offs = [ir.Constant(i64t, j * lanes) for j in range(nv)]
            ops = [part if half and j == nv - 1 else whole for j in range(nv)]
            brow = [ops[j][0](bp, builder.add(bbase, o), mask if j == nv - 1 else None) for j, o in enumerate(offs)]
            with cgutils.for_range(builder, builder.sub(hi, lo)) as loop:
                k = builder.add(lo, loop.index)
                base = builder.add(builder.mul(_index(builder, at(xp, k)), ldo), obase)
                s = builder.load(at(vp, k))
                splats = {id(o): o[2](s) for o in (whole, part) if any(x is o for x in ops)}
                for j, o in enumerate(offs):
                    load, store, _ = ops[j]
                    idx = builder.add(base, o)
                    store(fma(splats[id(ops[j])], brow[j], load(op, idx)), op, idx)

        _tail_switch(builder, cols, lanes, SPARSE_VECTORS, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def sparse_width(typingctx, a):
    """The output columns one sparse_rows call covers for a's dtype, as it was compiled."""
    width = sparse_block_columns(a.dtype.bitwidth // 8)

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(64), width)

    return types.int64(a), codegen


#: whether ``nonzeros`` packs with AVX-512's compress (vcompressps) in a register
#: (llvm.experimental.vector.compress came with LLVM 19: llvmlite 0.44)
HAS_COMPRESS = VECTOR_BYTES == 64 and llvm.llvm_version_info[0] >= 19

#: x86 CPUs by LLVM name that have AVX2 (for NUMBA_CPU_NAME; the host's own features otherwise)
_AVX2_CPUS = frozenset({"haswell", "broadwell", "skylake", "skylake-avx512", "cascadelake", "cooperlake",
                        "cannonlake", "icelake-client", "icelake-server", "tigerlake", "alderlake", "raptorlake",
                        "meteorlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver1", "znver2",
                        "znver3", "znver4", "znver5", "x86-64-v3", "x86-64-v4"})


#: whether ``nonzeros`` packs a vector's non-zeros on AVX2, which has no compress: a table of the
#: 2**lanes lane selections and a permute (vpermps / vpermd; LLVM's own expansion of a compress
#: there is a branch per lane, slower than the plain loop)
HAS_PERMUTE_PACK = VECTOR_BYTES == 32 and not HAS_COMPRESS and target_has("avx2", _AVX2_CPUS)
#: whether ``nonzeros`` is compiled here at all (else the callers keep their scalar loop)
HAS_PACK = HAS_COMPRESS or HAS_PERMUTE_PACK


def _pack_table(builder, lanes, words):
    """A module constant of 2**lanes rows of 8 i32 permute indices: row m moves the lanes whose bit
    is set in m to the front, in order, each lane ``words`` 32-bit words (1: float32 or the
    positions, 2: float64); the rest of a row points at lane 0 (stored, then overwritten)."""
    name = f"fastmnist_pack_table_{lanes}x{words}"
    module = builder.module
    if name in module.globals:
        return module.globals[name]
    row_ty = ir.VectorType(ir.IntType(32), 8)
    rows = []
    for m in range(2 ** lanes):
        kept = [k for k in range(lanes) if m >> k & 1]
        idx = [k * words + w for k in kept for w in range(words)]
        rows.append(ir.Constant(row_ty, idx + [0] * (8 - len(idx))))
    table_ty = ir.ArrayType(row_ty, 2 ** lanes)
    table = ir.GlobalVariable(module, table_ty, name)
    table.linkage, table.global_constant, table.align = "internal", True, 32
    table.initializer = ir.Constant(table_ty, rows)
    return table


@intrinsic
def nonzeros(typingctx, a, abase, n, idx, val):
    """The non-zero entries of a[abase:abase + n]: their positions into idx[0:count] (int32) and
    their values into val[0:count]; returns count. A vector at a time, each vector's non-zeros
    packed and stored whole (NaN counts as non-zero, as ``v != 0`` does): by AVX-512's compress
    (``HAS_COMPRESS``), or on AVX2 by a permute whose indices a table gives for the vector's
    non-zero lanes (``HAS_PERMUTE_PACK``); nowhere else (``HAS_PACK``). Writes up to a vector past
    the count: the caller gives idx and val room for n + lanes entries."""
    dtype = _check_arrays("nonzeros", a, val)
    if idx.dtype != types.int32:
        raise numba.core.errors.TypingError(f"nonzeros: int32 positions expected, got {idx}")
    i64 = types.int64
    sig = i64(a, i64, i64, idx, val)

    def codegen(context, builder, signature, args):
        aa, abase, n, ia, va = args
        ap, ip, vp = _data(context, builder, a, aa), _data(context, builder, idx, ia), _data(context, builder, val, va)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        masked_load, _ = _masked(builder, vty)
        i32, i64t = ir.IntType(32), ir.IntType(64)
        ity = ir.VectorType(i32, lanes)
        mty = ir.VectorType(ir.IntType(1), lanes)
        popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.IntType(lanes), [ir.IntType(lanes)]), f"llvm.ctpop.i{lanes}")
        lane_ids = ir.Constant(ity, list(range(lanes)))
        zero = ir.Constant(vty, None)
        count = cgutils.alloca_once_value(builder, ir.Constant(i64t, 0))
        lanes_c = ir.Constant(i64t, lanes)
        if HAS_COMPRESS:
            # compress in a register, then store the whole vector: Zen 4 runs a compress straight
            # to memory microcoded (4x slower than the scalar loop, measured)
            compress_v = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                vty, [vty, mty, vty]), f"llvm.experimental.vector.compress.{_vname(vty)}")
            compress_i = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ity, [ity, mty, ity]), f"llvm.experimental.vector.compress.v{lanes}i32")

            def packed(value, pos, keep):
                return (builder.call(compress_v, [value, keep, zero]),
                        builder.call(compress_i, [pos, keep, ir.Constant(ity, None)]))
        elif HAS_PERMUTE_PACK:
            i32x8, f32x8 = ir.VectorType(i32, 8), ir.VectorType(ir.FloatType(), 8)
            permps = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32x8, [f32x8, i32x8]),
                                                    "llvm.x86.avx2.permps")
            permd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32x8, [i32x8, i32x8]),
                                                   "llvm.x86.avx2.permd")
            words = dtype.bitwidth // 32
            value_rows, pos_rows = _pack_table(builder, lanes, words), _pack_table(builder, lanes, 1)
            widen = ir.Constant(i32x8, list(range(lanes)) + [0] * (8 - lanes))  # positions to 8 lanes and back
            narrow = ir.Constant(ir.VectorType(i32, lanes), list(range(lanes)))
            zero_i = ir.Constant(ity, None)

            def packed(value, pos, keep):
                selection = builder.zext(builder.bitcast(keep, ir.IntType(lanes)), i64t)
                row = lambda table: builder.load(builder.gep(table, [ir.Constant(i64t, 0), selection], inbounds=True),  # noqa: E731
                                                 align=32)
                v = builder.bitcast(builder.call(permps, [builder.bitcast(value, f32x8), row(value_rows)]), vty)
                wide = builder.shuffle_vector(pos, zero_i, widen) if lanes < 8 else pos
                p = builder.call(permd, [wide, row(pos_rows)])
                return v, (builder.shuffle_vector(p, p, narrow) if lanes < 8 else p)
        else:
            raise numba.core.errors.TypingError("nonzeros: needs AVX-512's compress or AVX2's permutes "
                                                "(numba_tiles.HAS_PACK is False on this target)")

        def pack(i0, value, mask):
            keep = builder.and_(mask, builder.fcmp_unordered("!=", value, zero))
            c = builder.load(count)
            pos = builder.add(lane_ids, _int_splat(builder, i0, lanes))
            v, p = packed(value, pos, keep)
            vstore(v, vp, c)
            builder.store(p, builder.bitcast(at(ip, c), ity.as_pointer()), align=4)
            bits = builder.zext(builder.call(popcount, [builder.bitcast(keep, ir.IntType(lanes))]), i64t)
            builder.store(builder.add(c, bits), count)

        whole = builder.udiv(n, lanes_c)
        every = ir.Constant(mty, [1] * lanes)
        with cgutils.for_range(builder, whole) as loop:
            i0 = builder.mul(loop.index, lanes_c)
            pack(i0, vload(ap, builder.add(abase, i0)), every)
        left = builder.urem(n, lanes_c)
        with builder.if_then(builder.icmp_unsigned(">", left, ir.Constant(i64t, 0))):
            i0 = builder.mul(whole, lanes_c)
            mask = lane_mask(builder, left, lanes)
            align = ir.Constant(i32, dtype.bitwidth // 8)
            value = builder.call(masked_load, [builder.bitcast(at(ap, builder.add(abase, i0)), vty.as_pointer()),
                                               align, mask, zero])
            pack(i0, value, mask)
        return builder.load(count)

    return sig, codegen


def lane_mask(builder, count, lanes):
    """The mask of a vector's first ``count`` (an i64, 1..lanes) lanes: a part vector's lanes."""
    vty = ir.VectorType(ir.IntType(64), lanes)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), count, ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    return builder.icmp_signed("<", ir.Constant(vty, list(range(lanes))), splat)


# ---- a prefetch of an output's next lines, for writing ----

@intrinsic
def prefetch_for_write(typingctx, a, start, count):
    """Ask for the cache lines of a[start : start + count] (one per 64 bytes) in the state for
    writing (``llvm.prefetch``, rw = 1): the next image's stores of a convolution's output then find
    their lines there instead of each waiting for its own. Only a hint: it reads and writes no
    value, and an address past an array's end does no harm, but the caller keeps it in bounds."""
    if not isinstance(a, types.Array):
        raise numba.core.errors.TypingError(f"prefetch_for_write: an array expected, got {a}")
    sig = types.void(a, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        arr, first, n = args
        ptr = _data(context, builder, signature.args[0], arr)
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.globals.get("llvm.prefetch.p0i8") or ir.Function(builder.module, fnty, "llvm.prefetch.p0i8")
        step = ir.Constant(i64, max(1, 64 // (signature.args[0].dtype.bitwidth // 8)))
        lines = builder.udiv(builder.add(n, builder.sub(step, ir.Constant(i64, 1))), step)
        with cgutils.for_range(builder, lines) as loop:
            at = builder.gep(ptr, [builder.add(first, builder.mul(loop.index, step))], inbounds=True)
            # rw = 1 (for writing), locality 2 (keep it in the caches near the core), data cache
            builder.call(fn, [builder.bitcast(at, i8p), ir.Constant(i32, 1), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


# ---- the 2x2 max-pooling around the tiles, channels last, in the same vectors ----
# Numba vectorises these loops too, but with runtime alias checks per 32-channel window that cost
# more than the work (2.8 us an image for fast-cnn's first layer, against 0.5 here, measured).

def _int_splat(builder, value, lanes):
    ity = ir.VectorType(ir.IntType(32), lanes)
    one = builder.insert_element(ir.Constant(ity, ir.Undefined), builder.trunc(value, ir.IntType(32))
                                 if value.type.width > 32 else value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(ity, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _window(builder, pi, pj, v, ow, pw, fp, lanes):
    """Window (pi, pj)'s four pixel indices i*OW + j (row-major), vector v's first lane, and the
    window's element offset (pi*PW + pj)*Fp + that lane in the pooled (PH, PW, Fp) layout."""
    two, one = ir.Constant(pi.type, 2), ir.Constant(pi.type, 1)
    k0 = builder.add(builder.mul(builder.mul(pi, two), ow), builder.mul(pj, two))
    below = builder.add(k0, ow)
    lane0 = builder.mul(v, lanes)
    pooled = builder.add(builder.mul(builder.add(builder.mul(pi, pw), pj), fp), lane0)
    return [k0, builder.add(k0, one), below, builder.add(below, one)], lane0, pooled


def _windows(builder, ph, pw, nvec, body):
    """Loops pi < ph, pj < pw, v < nvec around body(pi, pj, v)."""
    with cgutils.for_range(builder, ph) as li:
        with cgutils.for_range(builder, pw) as lj:
            with cgutils.for_range(builder, nvec) as lv:
                body(li.index, lj.index, lv.index)


def pool_window(builder, vals, kv, bias):
    """One 2x2 window's four vectors ``vals`` (row-major) and their pixel indices ``kv`` (int32
    vectors) -> (ReLU(max + bias), the maximum's index or -1 where the ReLU stopped it); the
    first maximum in row-major order wins ties (the numpy reference's rule)."""
    c01 = builder.fcmp_ordered(">=", vals[0], vals[1])
    c23 = builder.fcmp_ordered(">=", vals[2], vals[3])
    m01, m23 = builder.select(c01, vals[0], vals[1]), builder.select(c23, vals[2], vals[3])
    k01, k23 = builder.select(c01, kv[0], kv[1]), builder.select(c23, kv[2], kv[3])
    c = builder.fcmp_ordered(">=", m01, m23)
    m = builder.fadd(builder.select(c, m01, m23), bias)
    zero = ir.Constant(m.type, None)
    live = builder.fcmp_ordered(">", m, zero)
    stopped = ir.Constant(kv[0].type, [-1] * kv[0].type.count)
    return builder.select(live, m, zero), builder.select(live, builder.select(c, k01, k23), stopped)


@intrinsic
def pool22_relu(typingctx, acc, fp, ow, prow0, ph, pw, bp, pooled, arg, abase):
    """pooled[(pi*PW + pj)*Fp + f] = ReLU(max of the convolution's output (OH, OW, Fp) over the 2x2
    window (pi, pj), plus bp[f]); arg[abase + the same] = the maximum's pixel index i*OW + j (the
    first one row-major on ties), or -1 where the ReLU stopped it; for the pooled rows prow0 <= pi
    < prow0 + ph, whose convolution rows acc holds from row 2*prow0 on (all of them: prow0 = 0;
    two rows at a time: the forward pass pools each pair while it is in L1). fp: a whole number of
    vectors."""
    dtype = _check_arrays("pool22_relu", acc, bp, pooled)
    i64 = types.int64
    sig = types.void(acc, i64, i64, i64, i64, i64, bp, pooled, arg, i64)

    def codegen(context, builder, signature, args):
        aa, fp, ow, prow0, ph, pw, ba, pa, ga, abase = args
        accp, bpp = _data(context, builder, acc, aa), _data(context, builder, bp, ba)
        pp, gp = _data(context, builder, pooled, pa), _data(context, builder, arg, ga)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        ity = ir.VectorType(ir.IntType(32), lanes)
        lanes_c = ir.Constant(ir.IntType(64), lanes)
        first = builder.mul(builder.mul(prow0, ir.Constant(prow0.type, 2)), ow)  # 2*prow0*OW

        def body(pi, pj, v):
            ks, lane0, _ = _window(builder, pi, pj, v, ow, pw, fp, lanes_c)  # in acc
            out = builder.add(builder.mul(builder.add(builder.mul(builder.add(prow0, pi), pw), pj), fp), lane0)
            vals = [vload(accp, builder.add(builder.mul(k, fp), lane0)) for k in ks]
            kv = [_int_splat(builder, builder.add(first, k), lanes) for k in ks]
            best, where = pool_window(builder, vals, kv, vload(bpp, lane0))
            vstore(best, pp, out)
            builder.store(where, builder.bitcast(at(gp, builder.add(abase, out)), ity.as_pointer()), align=4)

        _windows(builder, ph, pw, builder.udiv(fp, lanes_c), body)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def unpool22(typingctx, dyl, arg, abase, fp, ow, ph, pw, g, gbase, db):
    """The gradient back through pool22_relu: g[gbase + (i*OW + j)*Fp + f] = dyl[(pi*PW + pj)*Fp + f]
    where arg names pixel (i, j) for window (pi, pj), else 0, for every pixel of every window;
    db[f] += the dyl that got through. Pixels outside every window are left as they are."""
    dtype = _check_arrays("unpool22", dyl, g, db)
    i64 = types.int64
    sig = types.void(dyl, arg, i64, i64, i64, i64, i64, g, i64, db)

    def codegen(context, builder, signature, args):
        da, ga, abase, fp, ow, ph, pw, gg, gbase, dba = args
        dp, ap = _data(context, builder, dyl, da), _data(context, builder, arg, ga)
        gp, dbp = _data(context, builder, g, gg), _data(context, builder, db, dba)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        ity = ir.VectorType(ir.IntType(32), lanes)
        lanes_c = ir.Constant(ir.IntType(64), lanes)
        zero = ir.Constant(vty, None)

        def body(pi, pj, v):
            ks, lane0, src = _window(builder, pi, pj, v, ow, pw, fp, lanes_c)
            d = vload(dp, src)
            where = builder.load(builder.bitcast(at(ap, builder.add(abase, src)), ity.as_pointer()), align=4)
            for k in ks:
                hit = builder.icmp_signed("==", where, _int_splat(builder, k, lanes))
                vstore(builder.select(hit, d, zero), gp, builder.add(gbase, builder.add(builder.mul(k, fp), lane0)))
            live = builder.icmp_signed(">=", where, ir.Constant(ity, None))
            vstore(builder.fadd(vload(dbp, lane0), builder.select(live, d, zero)), dbp, lane0)

        _windows(builder, ph, pw, builder.udiv(fp, lanes_c), body)
        return context.get_dummy_value()

    return sig, codegen


# ---- an 8 x 8 block transpose in vector shuffles, for the layout changes around the tiles ----

_STAGES = (  # three rounds of two-vector shuffles; row i of the result holds column _COLUMN[i]
    ([(0, 1), (2, 3), (4, 5), (6, 7)], [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]),
    ([(0, 2), (1, 3), (4, 6), (5, 7)], [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]),
    ([(0, 4), (1, 5), (2, 6), (3, 7)], [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]),
)
_COLUMN = (0, 2, 1, 3, 4, 6, 5, 7)


@intrinsic
def transpose8(typingctx, src, sbase, sstride, dst, dbase, dstride):
    """dst[dbase + c*dstride + r] = src[sbase + r*sstride + c] for r, c < 8: one 8 x 8 block, as
    eight vector loads, 24 shuffles and eight vector stores (scalar code moves about one element a
    cycle). The caller keeps every index in bounds."""
    dtype = _check_arrays("transpose8", src, dst)
    i64 = types.int64
    sig = types.void(src, i64, i64, dst, i64, i64)

    def codegen(context, builder, signature, args):
        sa, sbase, sstride, da, dbase, dstride = args
        sp, dp = _data(context, builder, src, sa), _data(context, builder, dst, da)
        vty = ir.VectorType(context.get_value_type(dtype), 8)
        align = dtype.bitwidth // 8

        rows = [builder.load(_strided_vector(builder, sp, sbase, sstride, r, vty), align=align) for r in range(8)]
        _transpose_rows(builder, rows, dp, dbase, dstride, vty, align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose8_rows(typingctx, src, starts, offset, dst, dbase, dstride):
    """dst[dbase + c*dstride + r] = src[starts[r] + offset + c] for r, c < 8: transpose8 of eight
    rows that lie anywhere in src (a batch's rows of the training set, read in place). The caller
    keeps every index in bounds."""
    dtype = _check_arrays("transpose8_rows", src, dst)
    if not isinstance(starts.dtype, types.Integer):
        raise numba.core.errors.TypingError(f"transpose8_rows: integer row starts expected, got {starts}")
    i64 = types.int64
    sig = types.void(src, starts, i64, dst, i64, i64)

    def codegen(context, builder, signature, args):
        sa, st, offset, da, dbase, dstride = args
        sp, stp, dp = _data(context, builder, src, sa), _data(context, builder, starts, st), _data(context, builder, dst, da)
        vty = ir.VectorType(context.get_value_type(dtype), 8)
        align = dtype.bitwidth // 8

        rows = []
        for r in range(8):
            start = _index(builder, builder.gep(stp, [ir.Constant(ir.IntType(64), r)], inbounds=True))
            rows.append(builder.load(_vector_at(builder, sp, builder.add(start, offset), vty), align=align))
        _transpose_rows(builder, rows, dp, dbase, dstride, vty, align)
        return context.get_dummy_value()

    return sig, codegen


def _vector_at(builder, ptr, idx, vty):
    """A pointer to the vector of type vty at element ``idx`` of ptr."""
    return builder.bitcast(builder.gep(ptr, [idx], inbounds=True), vty.as_pointer())


def _strided_vector(builder, ptr, base, stride, r, vty):
    """A pointer to the vector of type vty at element base + r*stride of ptr."""
    return _vector_at(builder, ptr, builder.add(base, builder.mul(stride, ir.Constant(stride.type, r))), vty)


def _transpose_rows(builder, rows, dp, dbase, dstride, vty, align):
    """The 8 x 8 block whose rows are the vectors ``rows``, transposed by three rounds of
    two-vector shuffles, its column c stored at element dbase + c*dstride of dp."""
    for pairs, low, high in _STAGES:
        out = list(rows)
        for a, b in pairs:
            out[a] = builder.shuffle_vector(rows[a], rows[b], ir.Constant(ir.VectorType(ir.IntType(32), 8), low))
            out[b] = builder.shuffle_vector(rows[a], rows[b], ir.Constant(ir.VectorType(ir.IntType(32), 8), high))
        rows = out
    for c in range(8):
        builder.store(rows[_COLUMN[c]], _strided_vector(builder, dp, dbase, dstride, c, vty), align=align)


def vector_parts(builder, count, lanes, emit):
    """emit(c0, mask) for each vector of ``count`` values (an i64): whole vectors (mask None), then
    the last part vector under a mask (fast-cnn's 24 channels on AVX-512: 16, then 8 of 16 lanes)."""
    i64 = ir.IntType(64)
    lanes_c = ir.Constant(i64, lanes)
    whole = builder.udiv(count, lanes_c)
    with cgutils.for_range(builder, whole) as loop:
        emit(builder.mul(loop.index, lanes_c), None)
    left = builder.urem(count, lanes_c)
    with builder.if_then(builder.icmp_unsigned(">", left, ir.Constant(i64, 0))):
        emit(builder.mul(whole, lanes_c), lane_mask(builder, left, lanes))


@intrinsic
def copy_rows(typingctx, src, sbase, sstep, dst, dbase, dstep, rows, count):
    """dst[dbase + r*dstep + c] = src[sbase + r*sstep + c] for r < rows, c < count: rows of a few
    vectors (a pixel's channels between a padded and an unpadded channels-last layout), whole
    vectors then the last part under a mask. Numba's loop for it kept its index checks and ran 4x
    slower than the transpose it replaces (measured). The caller keeps every index in bounds."""
    dtype = _check_arrays("copy_rows", src, dst)
    i64 = types.int64
    sig = types.void(src, i64, i64, dst, i64, i64, i64, i64)

    def codegen(context, builder, signature, args):
        sa, sbase_, sstep_, da, dbase_, dstep_, rows_, count_ = args
        sp, dp = _data(context, builder, src, sa), _data(context, builder, dst, da)
        vty, lanes, at, vload, vstore, splat, fma = _vector_ops(context, builder, dtype)
        masked_load, masked_store = _masked(builder, vty)
        align = ir.Constant(ir.IntType(32), dtype.bitwidth // 8)
        with cgutils.for_range(builder, rows_) as row:
            s0 = builder.add(sbase_, builder.mul(row.index, sstep_))
            d0 = builder.add(dbase_, builder.mul(row.index, dstep_))

            def move(c0, mask):
                if mask is None:
                    vstore(vload(sp, builder.add(s0, c0)), dp, builder.add(d0, c0))
                    return
                val = builder.call(masked_load, [builder.bitcast(at(sp, builder.add(s0, c0)), vty.as_pointer()),
                                                 align, mask, ir.Constant(vty, None)])
                builder.call(masked_store, [val, builder.bitcast(at(dp, builder.add(d0, c0)), vty.as_pointer()),
                                            align, mask])

            vector_parts(builder, count_, lanes, move)
        return context.get_dummy_value()

    return sig, codegen
