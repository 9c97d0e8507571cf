"""The Numba backend: JIT-compiled, parallel CPU kernels; matrix products through BLAS (NumPy's, or
Intel MKL's where the mkl extra is installed: config.NUMBA_GEMM).

Each public function validates its arguments with :mod:`.contract` (in Python, before any compiled
code runs) and makes its inputs C-contiguous, then calls an ``@njit`` kernel. Parallel loops run
over the batch (``prange``); matrix products are left to BLAS, which runs between the parallel
regions, never inside them, so Numba's threads and BLAS's threads take turns on the cores instead
of fighting over them. Kernels are compiled on first use and cached on disk (``cache=True``; set
``NUMBA_CACHE_DIR`` where the package directory is read-only).

Fused paths the layers use: conv bias + NCHW layout in one pass, pool + argmax,
softmax + cross-entropy + gradient, one Adam pass per parameter.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import types
from typing import NamedTuple

import numpy as np

from .. import config

# How Numba's OpenMP threads wait between parallel regions. Spinning for good (libgomp's ACTIVE)
# took a core from whatever ran next on it: the next serial loop, BLAS, or the GEMM thread pool of
# earlier versions (simple-cnn 4.27 s against 5.70 s an epoch, docs/benchmarks.md). Sleeping at once
# (PASSIVE) made every region wake a thread: up to 350 us a region on a 2-core Zen 4 VM. So the threads
# wait PASSIVE-ly, but only after spinning config.NUMBA_GOMP_SPINCOUNT times (a few milliseconds,
# longer than the gaps inside a training step), and the step's parallel BLAS products run on these
# same threads (numba_blas.py). libgomp reads both variables when it loads, at the first parallel
# region: set here, before that, unless the user set them.
if config.NUMBA_OMP_WAIT_POLICY:
    os.environ.setdefault("OMP_WAIT_POLICY", config.NUMBA_OMP_WAIT_POLICY)
if "NUMBA_GOMP_SPINCOUNT" in vars(config):  # absent: FASTMNIST_GOMP_SPINCOUNT was refused (the CLI says so)
    os.environ.setdefault("GOMP_SPINCOUNT", str(config.NUMBA_GOMP_SPINCOUNT))

# OpenMP before TBB (config.NUMBA_THREADING_LAYER_PRIORITY says why), unless the user chose: through
# the environment before Numba reads it; once Numba is imported, through its config alone (a changed
# NUMBA_* variable would make its next compilation reload every setting from the environment,
# undoing the user's own numba.config assignments), and only where both are still Numba's defaults.
if "numba" not in sys.modules and not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
    os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = " ".join(config.NUMBA_THREADING_LAYER_PRIORITY)

try:
    import numba
except ImportError as exc:  # reported by available(); the registry never returns this backend then
    numba = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""
    if numba.config.THREADING_LAYER == "default" and list(numba.config.THREADING_LAYER_PRIORITY) == ["tbb", "omp", "workqueue"]:
        numba.config.THREADING_LAYER_PRIORITY = list(config.NUMBA_THREADING_LAYER_PRIORITY)

from ..errors import InvalidArgument, WrongType
from . import contract as C
from . import numpy_backend as _ref

name = "numba"
compiles_kernels = True  # JIT: `fastmnist train` times a warm-up step apart from the epochs
is_device = False


# Every compilation (or load from the on-disk cache) of a kernel fires Numba's "numba:compile"
# event; one process-wide timer adds them up, so that fit() can say how much of an epoch was JIT.
_COMPILE_TIMER = None
if numba is not None:
    from numba.core import event as _event
    _COMPILE_TIMER = _event.TimingListener()
    _event.register("numba:compile", _COMPILE_TIMER)


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels (or loading them from the cache) so far."""
    return _COMPILE_TIMER.duration if _COMPILE_TIMER is not None and _COMPILE_TIMER.done else 0.0


def available():
    if numba is None:
        return False, f"numba is not installed ({_IMPORT_ERROR}); pip install numba"
    return True, f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads"


def info():
    if numba is None:
        return {}
    return {"numba": numba.__version__, "threads": numba.get_num_threads(),
            "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS,
            "threading_layer": _started_threading_layer(),
            "cache_dir": os.environ.get("NUMBA_CACHE_DIR", "(next to the package)"), "gemm": _gemm_name()}


def _gemm_name() -> str:
    """The library the parallel products of a training step call (config.NUMBA_GEMM), for reports."""
    if not config.NUMBA_BLAS_IN_REGIONS:
        return "NumPy's BLAS on Python threads (config.NUMBA_BLAS_IN_REGIONS off)"
    try:
        lib = _blas.gemm_library()
    except InvalidArgument as exc:
        return f"error: {exc}"
    return lib.name if lib is not None else "NumPy's BLAS on Python threads (no gemm callable from Numba)"


@contextlib.contextmanager
def training_context():
    """Held by the trainer around its epochs: BLAS runs single-threaded inside it.

    Numba's threads and BLAS's threads otherwise take turns badly on the two cores: after each
    matrix product BLAS's idle threads spin while the next parallel Numba kernel wants the cores
    (simple-cnn step measured 25.6 ms with 2 BLAS threads against 12.8 ms with 1; see
    docs/benchmarks.md). The parallel Numba kernels keep every core busy instead.
    """
    if config.NUMBA_GEMM != "auto":
        _blas.gemm_library()  # a library asked for but not to be had says so before training, not mid-step
    if not config.NUMBA_SINGLE_THREAD_BLAS:
        yield
        return
    controller = _blas_controller()
    if controller is None:  # without threadpoolctl, training is correct, only slower
        yield
        return
    global _SPLIT_GEMMS
    with controller.limit(limits=1, user_api="blas"):
        previous, _SPLIT_GEMMS = _SPLIT_GEMMS, True
        try:
            yield
        finally:
            _SPLIT_GEMMS = previous


_CONTROLLER = [-1, None]  # len(sys.modules) at threadpoolctl's last scan, its ThreadpoolController


def _blas_controller():
    """threadpoolctl's controller of the loaded thread pools, scanned again only when a module was
    imported since the last scan (that is how a new BLAS arrives): a scan reads /proc/self/maps and
    makes a controller per library, 1.5-2 ms, once per fit() before (cProfile, a two-layer fit)."""
    if _CONTROLLER[0] != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        _CONTROLLER[1] = ThreadpoolController()
        _CONTROLLER[0] = len(sys.modules)
    return _CONTROLLER[1]


def _small(kernel, size, *args):
    """kernel(*args), on the calling thread alone when it touches fewer than
    config.PARALLEL_MIN_ELEMENTS elements: a parallel region wakes the sleeping OpenMP threads
    (OMP_WAIT_POLICY=PASSIVE, below), ~37 us measured on a 2-core VM, against ~4 us with one
    thread, more than an elementwise pass over 100k floats takes on one core. There it runs the
    kernel's serial twin (:func:`serial_twin`): setting Numba's thread count to one and back around
    the parallel kernel cost 12-17 us a call against 2.5-7 us for the twin (2-core Xeon)."""
    if size >= config.PARALLEL_MIN_ELEMENTS:
        return kernel(*args)
    return serial_twin(kernel)(*args)


_TWINS: dict = {}


def serial_twin(kernel):
    """``kernel`` (a parallel ``@njit`` dispatcher) compiled without ``parallel``: its ``prange``
    loops run as plain loops on the calling thread, the same operations in the same order as the
    parallel kernel on one thread. Made once per kernel, from a copy of its Python function under
    a name of its own (``<name>_serial``): Numba's on-disk cache files and index are named after
    the function, and do not tell a parallel compilation from a serial one of the same function."""
    twin = _TWINS.get(kernel)
    if twin is None:
        f = kernel.py_func
        copy = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__, f.__closure__)
        copy.__qualname__, copy.__module__, copy.__doc__ = f.__qualname__ + "_serial", f.__module__, f.__doc__
        options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
        twin = numba.njit(cache=True, **options)(copy)
        _numba_cache.lock_like(twin, kernel)  # several processes may compile it at once: numba_cache.py
        _TWINS[kernel] = twin
    return twin


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


def _products_at_once(products) -> None:
    """out = a @ b for every (a, b, out), one product per core, on single-threaded BLAS: as the
    iterations of one Numba parallel region (numba_blas.py), so Numba's own threads run them, or,
    where NumPy's BLAS cannot be called from Numba (config.NUMBA_BLAS_IN_REGIONS off), on a pool of
    Python threads (numpy releases the GIL)."""
    lib = _blas.gemm_library() if config.NUMBA_BLAS_IN_REGIONS else None
    if lib is not None and _blas.run_products(lib, products):
        return
    pool = _pool()
    futures = [pool.submit(np.matmul, a, b, out) for a, b, out in products[1:]]
    a, b, out = products[0]
    np.matmul(a, b, out)
    for f in futures:
        f.result()


def _even_cuts(total: int, parts: int) -> list[int]:
    """0 = cuts[0] <= ... <= cuts[parts] = total, near-equal pieces (np.linspace's, in integers:
    linspace took 12-25 us a call, a share of a small training step)."""
    return [total * i // parts for i in range(parts + 1)]


def _matmul(a, b):
    """a @ b through BLAS. Inside training_context (single-threaded BLAS), a large product is cut
    into one piece per thread, along the rows of a or, when a has few rows, along the shared
    dimension (partial products summed), the pieces run at once (_products_at_once).
    simple-cnn's first dense layer and fast-cnn's second convolution gain most (see docs)."""
    m, k = a.shape
    n = b.shape[1]
    if not _SPLIT_GEMMS or 2 * m * k * n < config.SPLIT_GEMM_MIN_FLOPS:
        return a @ b
    parts = numba.get_num_threads()  # asked only here: the call costs ~10 us
    if parts < 2:
        return a @ b
    dtype = np.result_type(a, b)
    if m >= 64 * parts:
        out = np.empty((m, n), dtype)
        cuts = _even_cuts(m, parts)
        _products_at_once([(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])])
        return out
    cuts = _even_cuts(k, parts)
    partial = np.empty((parts, m, n), dtype)
    _products_at_once([(a[:, lo:hi], b[lo:hi], partial[i]) for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]))])
    out = partial[0] + partial[1]  # a new array: the partials' buffer goes
    for piece in partial[2:]:
        out += piece
    return out


asarray = _ref.asarray
to_numpy = _ref.to_numpy
synchronize = _ref.synchronize
one_hot = _ref.one_hot


if numba is not None:
    from . import numba_blas as _blas
    from . import numba_cache as _numba_cache
    from . import numba_conv as _tiled
    from . import numba_dense as _dense
    from . import numba_kernels as K
    from . import numba_lanes as _lanes
    from . import numba_steps as _numba_steps
    from . import numba_tiles as _tiles_mod
    from . import numba_window_grad as _window
    from . import numba_winograd as _winograd


def _c(a):
    return np.ascontiguousarray(a)


def _flat(a, op, name):
    """A flat, writable view of an in-place operand; a copy would silently drop the update."""
    if not a.flags.c_contiguous:
        raise InvalidArgument(f"{op}: {name} must be C-contiguous for an in-place update, got strides {a.strides}")
    return a.reshape(-1)


# ---- convolution ----
# What a forward pass keeps for its backward pass: one type per path, which the backward
# dispatches on. Internal to this backend: the layers only hand them back.

class DirectConvCache(NamedTuple):  # conv2d_forward_cached, direct convolution (stride 1)
    xf: np.ndarray   # the padded input, (N, C, Hp*Wp)
    wp: int          # its padded width Wp: the row stride of xf's planes
    x_shape: tuple
    pad: int


class Im2colConvCache(NamedTuple):  # conv2d_forward_cached, im2col + BLAS
    cols: np.ndarray  # im2col(x), (N*OH*OW, C*KH*KW)
    x_shape: tuple
    stride: int
    pad: int


class TiledPoolCache(NamedTuple):  # conv2d_relu_maxpool_forward on numba_conv's register tiles
    xh: np.ndarray    # the padded input, channels last (N, Hp, Wp, C)
    roff: np.ndarray  # the taps' offsets into a row of xh
    size: int
    pool_stride: int
    x_shape: tuple
    pad: int
    oh: int
    ow: int
    arg: np.ndarray   # (N, PH, PW, padded F) int32, -1 where the ReLU stopped the gradient
    channels_last: bool  # x came channels last: so does its gradient
    arg_cf: bool = False  # arg is (N, F, PH, PW) (int16 where it fits) instead: the pixels-in-lanes forward (numba_lanes.py)


class DirectPoolCache(NamedTuple):  # conv2d_relu_maxpool_forward, one sample's plane per saxpy
    xf: np.ndarray   # the padded input, (N, C, Hp*Wp)
    wp: int
    x_shape: tuple
    pad: int
    oh: int
    ow: int
    y: np.ndarray    # the pooled output: > 0 where the ReLU passes the gradient
    arg: np.ndarray  # (N, F, PH, PW) int32 index into the OH*OW conv plane


class BlockPoolCache(NamedTuple):  # conv2d_relu_maxpool_forward, blocks of nb samples per saxpy
    xflat: np.ndarray  # the padded input, channels first (C, N, Hp, Wp), flat
    plane: int         # Hp*Wp
    nb: int            # samples per block
    wp: int
    x_shape: tuple
    pad: int
    oh: int
    ow: int
    y: np.ndarray
    arg: np.ndarray


class Im2colPoolCache(NamedTuple):  # conv2d_relu_maxpool_forward, im2col + BLAS (any stride)
    cols: np.ndarray
    x_shape: tuple
    stride: int
    pad: int
    oh: int
    ow: int
    y: np.ndarray
    arg: np.ndarray


def im2col(x, kh, kw, stride=1, pad=0):
    """(N, C, H, W) -> (N*OH*OW, C*KH*KW); rows (n, oh, ow), columns (c, kh, kw)."""
    n, c, h, w, oh, ow = C.check_im2col(x, kh, kw, stride, pad)
    out = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    K._im2col_kernel(_c(x), kh, kw, stride, pad, oh, ow, out)
    return out


def col2im(col, x_shape, kh, kw, stride=1, pad=0):
    n, c, h, w, oh, ow = C.check_col2im(col, x_shape, kh, kw, stride, pad)
    out = np.zeros((n, c, h, w), col.dtype)
    K._col2im_kernel(_c(col), kh, kw, stride, pad, oh, ow, out)
    return out


def conv2d_forward(x, w, b, stride=1, pad=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)."""
    return conv2d_forward_cached(x, w, b, stride, pad)[0]


def conv2d_forward_cached(x, w, b, stride=1, pad=0):
    """Forward returning what the backward needs.

    Direct convolution where stride is 1 and ``C*KH*KW <= config.DIRECT_CONV_MAX_K``, else im2col + BLAS.
    """
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    x, w, b = _c(x), _c(w), _c(b)
    if stride == 1 and c * kh * kw <= config.DIRECT_CONV_MAX_K:
        xp = _padded(x, pad)
        xf = xp.reshape(n, c, -1)
        y = np.empty((n, f, oh, ow), x.dtype)
        K._conv_direct_kernel(xf, xp.shape[3], w, b, y)
        return y, DirectConvCache(xf, xp.shape[3], x.shape, pad)
    cols = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    K._im2col_kernel(x, kh, kw, stride, pad, oh, ow, cols)
    rows = _matmul(cols, w.reshape(f, -1).T)  # BLAS: (N*OH*OW, CKK) @ (CKK, F)
    y = np.empty((n, f, oh, ow), x.dtype)
    K._rows_to_nchw_kernel(rows, b, y.reshape(n, f, oh * ow))
    return y, Im2colConvCache(cols, x.shape, stride, pad)


def _samples_per_block(n, plane):
    """Samples per block of the blocked convolution: the block's accumulator stays within
    config.CONV_BLOCK_FLOATS (L1), and there are at least two blocks per thread."""
    by_cache = max(1, config.CONV_BLOCK_FLOATS // plane)
    by_threads = max(1, -(-n // (2 * numba.get_num_threads())))
    return min(by_cache, by_threads)


def _padded(x, pad):
    if not pad:
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
    K._pad_kernel(x, pad, out)
    return out


def conv2d_backward(dy, x, w, stride=1, pad=0):
    """dy (N, F, OH, OW) -> (dx (N, C, H, W), dw (F, C, KH, KW), db (F,))."""
    C.check_conv2d_backward(dy, x, w, stride, pad)
    cols = im2col(x, w.shape[2], w.shape[3], stride, pad)
    return conv2d_backward_cached(dy, Im2colConvCache(cols, x.shape, stride, pad), w)


def conv2d_backward_cached(dy, cache, w, need_dx=True):
    f, _, kh, kw = w.shape
    n, _, oh, ow = dy.shape
    dy, w = _c(dy), _c(w)
    rows = None
    if isinstance(cache, DirectConvCache):
        dw, db = np.empty(w.shape, dy.dtype), np.empty(f, dy.dtype)
        K._conv_direct_dw_kernel(dy, cache.xf, cache.wp, dw, db)
        stride = 1
    elif isinstance(cache, Im2colConvCache):
        rows = _as_rows(dy)
        dw = _matmul(rows.T, cache.cols).reshape(w.shape)  # BLAS
        db = rows.sum(axis=0)
        stride = cache.stride
    else:
        raise WrongType(f"conv2d_backward_cached: a {type(cache).__name__} is not a cache of numba's conv2d_forward_cached")
    if not need_dx:
        return None, dw, db
    if rows is None:
        rows = _as_rows(dy)
    dcols = _matmul(rows, w.reshape(f, -1))  # BLAS
    dx = np.zeros(cache.x_shape, dy.dtype)
    K._col2im_kernel(dcols, kh, kw, stride, cache.pad, oh, ow, dx)
    return dx, dw, db


def _as_rows(dy):
    """dy (N, F, OH, OW) -> (N*OH*OW, F): the layout of the im2col product."""
    n, f, oh, ow = dy.shape
    rows = np.empty((n * oh * ow, f), dy.dtype)
    K._nchw_to_rows_kernel(dy.reshape(n, f, oh * ow), rows)
    return rows


def channels_last_memory(a: np.ndarray) -> bool:
    """Whether ``a`` (N, C, H, W), C > 1, is the view of (N, H, W, C) memory that a
    ``channels_last`` conv2d_relu_maxpool_forward returns."""
    return a.ndim == 4 and a.shape[1] > 1 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """np.empty whose data starts on an ``align``-byte boundary (a cache line). NumPy's allocator
    promises 16 bytes, and a large block from glibc starts 16 past a page: every second 32-byte
    load of a channels-last pixel then crosses a cache line. fast-cnn's conv2 reads 96-byte pixels
    (24 float32), which from a 64-byte start are whole aligned vectors (its dW windows, 256 images,
    one thread of a Zen 3: 16-27% faster than from 16 or 48 bytes past a line, 4 runs; 1-4% than
    from 32 past)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)  # np.prod of a tuple took 11-14 us (math.prod 0.2-0.5), four times a fast-cnn step
    raw = np.empty(count * dtype.itemsize + align, np.uint8)
    start = -_blas.data_address(raw) % align
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def conv2d_relu_maxpool_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=2, channels_last=False):
    """Fused conv -> ReLU -> max-pool (layers' fast path) -> (y (N, F, PH, PW), cache). With
    ``channels_last`` (the next layer is one of these) the register-tiled kernels write y's memory
    as (N, PH, PW, F) and return its (N, F, PH, PW) view; such an x is read where it lies, and its
    gradient comes back the same way (no transposes between two convolutions)."""
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    size = C.require_int("conv2d_relu_maxpool_forward", "size", size, 1)
    pool_stride = C.require_int("conv2d_relu_maxpool_forward", "pool_stride", pool_stride, 1)
    ph = C.conv_out("conv2d_relu_maxpool_forward", oh, size, pool_stride, 0, "height")
    pw = C.conv_out("conv2d_relu_maxpool_forward", ow, size, pool_stride, 0, "width")
    w, b = _c(w), _c(b)
    if stride == 1 and config.NUMBA_TILED_CONV:
        if not channels_last_memory(x):
            x = _c(x)
        y = aligned_empty((n, ph, pw, f), x.dtype).transpose(0, 3, 1, 2) if channels_last and config.NUMBA_CHANNELS_LAST \
            else aligned_empty((n, f, ph, pw), x.dtype)
        return y, _tiled_pool_forward(x, w, b, pad, oh, ow, size, pool_stride, y)
    x = _c(x)
    y = np.empty((n, f, ph, pw), x.dtype)
    arg = np.empty((n, f, ph, pw), np.int32)
    hp, wp = h + 2 * pad, wd + 2 * pad
    if stride == 1 and c * kh * kw <= config.DIRECT_CONV_MAX_K and hp * wp > config.CONV_BLOCK_MAX_PLANE:
        xp = _padded(x, pad)  # large planes: one plane per saxpy already runs long enough
        xf = xp.reshape(n, c, -1)
        K._conv_direct_pool_kernel(xf, wp, w, b, oh, ow, size, pool_stride, y, arg)
        return y, DirectPoolCache(xf, wp, x.shape, pad, oh, ow, y, arg)
    if stride == 1 and c * kh * kw <= config.DIRECT_CONV_MAX_K:
        xt = (np.zeros if pad else np.empty)((c, n, hp, wp), x.dtype)
        K._to_channels_first_kernel(x, pad, xt)
        xflat, plane, nb = xt.reshape(-1), hp * wp, _samples_per_block(n, hp * wp)
        K._conv_block_pool_kernel(xflat, n, c, plane, wp, w, b, oh, ow, size, pool_stride, nb, y, arg)
        return y, BlockPoolCache(xflat, plane, nb, wp, x.shape, pad, oh, ow, y, arg)
    cols = np.empty((n * oh * ow, c * kh * kw), x.dtype)
    K._im2col_kernel(x, kh, kw, stride, pad, oh, ow, cols)
    rows = _matmul(cols, w.reshape(f, -1).T)  # BLAS
    K._rows_pool_kernel(rows, b, oh, ow, size, pool_stride, y, arg)
    return y, Im2colPoolCache(cols, x.shape, stride, pad, oh, ow, y, arg)


def _tiled_pool_forward(x, w, b, pad, oh, ow, size, pool_stride, y):
    """The tiled kernel's forward pass into y; returns the cache its backward pass reads."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    cl_in = channels_last_memory(x)
    if cl_in and pad == 0:  # the previous layer's channels-last output, read where it lies
        xh = x.transpose(0, 2, 3, 1)
    elif cl_in:
        xh = aligned_empty((n, hp, wp, c), x.dtype)
        xh.fill(0)
        xh[:, pad:pad + h, pad:pad + wd] = x.transpose(0, 2, 3, 1)
    elif c == 1 and pad == 0:  # one channel, no border: (N, 1, H, W) already is channels last
        xh = x.reshape(n, hp, wp, 1)
    else:
        xh = aligned_empty((n, hp, wp, c), x.dtype)
        if pad:
            xh.fill(0)
        _tiled.to_channels_last_kernel(x, pad, xh)
    roff = _tiled.row_offsets(kh, kw, c, wp, c)
    fp = _tiled.padded_width(f, x.dtype.itemsize)
    bp = np.zeros(fp, x.dtype)
    bp[:f] = b
    cl_out = channels_last_memory(y)
    if config.CONV_PIXEL_LANES and _lanes.lanes_apply(x.dtype, c, f, kh, kw, ow, size, pool_stride, cl_out):
        arg = np.empty(y.shape, _lanes.arg_dtype(oh, ow))  # channels first, as y
        _lanes.lane_pool_forward_kernel(xh, _lanes.pack_lanes(w), _c(b), kh, kw, oh, ow, config.CONV_TILE_CHUNK, y, arg,
                                        _lanes.lane_filters(f))
        return TiledPoolCache(xh, roff, size, pool_stride, x.shape, pad, oh, ow, arg, cl_in, arg_cf=True)
    arg = np.empty((n, y.shape[2], y.shape[3], fp), np.int32)  # channels last, -1: stopped by the ReLU
    yk = y.transpose(0, 2, 3, 1) if cl_out else y  # the memory the kernel writes
    if _use_winograd(c, kh, kw, oh, ow) and (size, pool_stride) == (2, 2):
        u = _winograd.transform_filters(w, fp)
        _tiled.winograd_forward_kernel(xh, u, bp, oh, ow, config.CONV_TILE_CHUNK, yk, arg, cl_out)
    else:
        wpk = _tiled.pack_rows(w, fp)
        _tiled.conv_pool_forward_kernel(xh, roff, wpk, bp, oh, ow, size, pool_stride, config.CONV_TILE_CHUNK, yk, arg,
                                        cl_out, bool(config.CONV_UNIT_TILES), bool(config.CONV_PREFETCH_OUTPUT))
    return TiledPoolCache(xh, roff, size, pool_stride, x.shape, pad, oh, ow, arg, cl_in)


def _use_winograd(channels, kh, kw, oh, ow):
    """Winograd's F(2x2, 3x3) for a pass over ``channels`` (the input's forward; the fewer of input
    channels and filters for the input gradient): config.CONV_WINOGRAD and its channel floor."""
    return config.CONV_WINOGRAD and channels >= config.CONV_WINOGRAD_MIN_CHANNELS and \
        _winograd.applies(kh, kw, 1, oh, ow)


def _window_offsets(cache):
    """Where output pixel p = i*OW + j's window starts in an image of the channels-last input xh:
    (i*Wp + j)*C, for numba_window_grad.window_grad (a pooling argmax names p)."""
    _, _, wp, c = cache.xh.shape
    return _pixel_offsets(cache.oh, cache.ow, wp, c)


@functools.lru_cache(maxsize=64)
def _pixel_offsets(oh, ow, wp, c):  # _window_offsets' array, once per shape: shared, never written
    i, j = np.divmod(np.arange(oh * ow, dtype=np.int64), ow)
    return (i * wp + j) * c


def _tiled_pool_backward(dy, cache, w, need_dx):
    """The tiled kernel's backward pass: per-chunk partials summed in chunk order (numba_conv.py)."""
    f, c, kh, kw = w.shape
    dtype, itemsize = dy.dtype, dy.dtype.itemsize
    chunk = config.CONV_TILE_CHUNK
    chunks = -(-dy.shape[0] // chunk)
    fp = _tiled.padded_width(f, itemsize)
    # the weight gradient from the pooled side, one window per pooled value (numba_window_grad.py),
    # where the pooling leaves at most half the pixels' values and the window rows fit one of its
    # intrinsics: the narrow one (short rows: the first layers), else the wide one, a few rows a call
    ph, pw = dy.shape[2], dy.shape[3]
    narrow = _window.window_grad_applies(kh, kw * c, itemsize)
    wrows = 0 if narrow else _window.wide_rows(kw * c, itemsize) if config.CONV_WINDOW_WIDE else 0
    by_window = config.CONV_WINDOW_WEIGHT_GRADIENT and (narrow or wrows > 0) and 2 * ph * pw <= cache.oh * cache.ow
    # else by Winograd (its transform dU, taken back below) under the forward's conditions
    wino_dw = not by_window and config.CONV_WINOGRAD_WEIGHT_GRADIENT and \
        _use_winograd(min(f, c), kh, kw, cache.oh, cache.ow)
    wlen = kh * _window.window_row_values(kw * c, itemsize, not narrow) if by_window else 0  # each filter's rows
    # each chunk's partials (the kernel zeroes its own)
    dwin = np.empty((chunks, f * wlen), dtype)
    poff = _window_offsets(cache) if by_window else np.zeros(0, np.int64)
    dwp = np.empty((chunks, 0 if by_window else (16 if wino_dw else kh * kw) * c, fp), dtype)
    dbp = np.empty((chunks, fp), dtype)
    # the unused arguments empty, of the same types: one compiled kernel
    wcol, roffc, udx = np.zeros((0, fp), dtype), np.arange(f, dtype=np.int64), np.zeros((36, 0, fp), dtype)
    n, c_, h, wd = cache.x_shape
    dx = aligned_empty((n if need_dx else 0,) + ((h, wd, c_) if cache.channels_last else (c_, h, wd)), dtype)
    dy_cl = channels_last_memory(dy)
    if need_dx:
        # the filters, rotated, as the forward's; the products reduce over F and make Cp columns,
        # so few channels either way leave the transforms too large a share
        if _use_winograd(min(f, c), kh, kw, cache.oh, cache.ow):
            udx = _winograd.transform_filters(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]),
                                              _tiled.padded_width(c, itemsize), _winograd.G4)
        else:
            wcol = _tiled.pack_columns(w, _tiled.padded_width(c * kh * kw, itemsize))
    dyk = dy.transpose(0, 2, 3, 1) if dy_cl else dy  # the memory the kernel reads
    arg, arg_cf = cache.arg, cache.arg_cf
    if arg_cf and not (by_window and not need_dx):  # only window_grad reads the argmax channels first
        arg = np.full((n, ph, pw, fp), -1, np.int32)
        arg[..., :f] = cache.arg.transpose(0, 2, 3, 1)
        arg_cf = False
    _tiled.conv_pool_backward_kernel(dyk, arg, cache.xh, cache.roff, cache.oh, cache.ow, kh, kw, cache.size,
                                     cache.pool_stride, chunk, dwp, dbp, wcol, roffc, cache.pad, udx, dx, wino_dw,
                                     poff, dwin, wrows, dy_cl, cache.channels_last, arg_cf)
    if by_window:  # (F, KH, nvec*L) -> (F, KH, KW, C) -> (F, C, KH, KW)
        rows = _tiled.sum_partials(dwin).reshape(f, kh, -1)[:, :, :kw * c]
        dw = rows.reshape(f, kh, kw, c).transpose(0, 3, 1, 2)
    elif wino_dw:
        dw = _winograd.weight_gradient(_tiled.sum_partials(dwp.reshape(chunks, -1)).reshape(16, c, fp), f)
    else:
        dw = _tiled.sum_partials(dwp.reshape(chunks, -1)).reshape(-1, fp)[:, :f].reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
    db = _tiled.sum_partials(dbp)[:f]
    if cache.channels_last:
        dx = dx.transpose(0, 3, 1, 2)
    return (dx if need_dx else None), np.ascontiguousarray(dw, dtype), db.astype(dtype)


def conv2d_relu_maxpool_backward(dy, cache, w, need_dx=True):
    """Backward of the fused path: pooled dy (N, F, PH, PW) -> (dx or None, dw, db); dx in the
    memory layout the forward pass's x had (channels last: see conv2d_relu_maxpool_forward)."""
    w = _c(w)
    if not (isinstance(cache, TiledPoolCache) and channels_last_memory(dy)):
        dy = _c(dy)
    if isinstance(cache, TiledPoolCache):
        return _tiled_pool_backward(dy, cache, w, need_dx)
    if isinstance(cache, DirectPoolCache):
        return _direct_pool_backward(dy, cache, w, need_dx)
    if isinstance(cache, BlockPoolCache):
        return _block_pool_backward(dy, cache, w, need_dx)
    if isinstance(cache, Im2colPoolCache):
        return _im2col_pool_backward(dy, cache, w, need_dx)
    raise WrongType(f"conv2d_relu_maxpool_backward: a {type(cache).__name__} is not a cache of numba's "
                    "conv2d_relu_maxpool_forward")


def _direct_pool_backward(dy, cache, w, need_dx):
    dw, db = np.empty(w.shape, dy.dtype), np.empty(w.shape[0], dy.dtype)
    K._conv_direct_pool_dw_kernel(dy, cache.y, cache.arg, cache.xf, cache.wp, cache.oh, cache.ow, dw, db)
    if not need_dx:
        return None, dw, db
    dx = np.empty(cache.x_shape, dy.dtype)
    K._conv_direct_pool_dx_kernel(dy, cache.y, cache.arg, w, cache.wp, cache.oh, cache.ow, cache.pad, dx)
    return dx, dw, db


def _block_pool_backward(dy, cache, w, need_dx):
    f, c = w.shape[:2]
    dw, db = np.empty(w.shape, dy.dtype), np.empty(f, dy.dtype)
    K._conv_block_pool_dw_kernel(dy, cache.y, cache.arg, cache.xflat, c, cache.plane, cache.wp, cache.oh, cache.ow,
                                 cache.nb, dw, db)
    if not need_dx:
        return None, dw, db
    dx = np.empty(cache.x_shape, dy.dtype)
    wflip = np.ascontiguousarray(w[:, :, ::-1, ::-1])  # dx as a forward pass: see the kernel
    K._conv_block_pool_dx_kernel(dy, cache.y, cache.arg, wflip, cache.plane, cache.wp, cache.oh, cache.ow, cache.pad,
                                 cache.nb, dx)
    return dx, dw, db


def _im2col_pool_backward(dy, cache, w, need_dx):
    f, _, kh, kw = w.shape
    oh, ow = cache.oh, cache.ow
    rows = np.zeros((dy.shape[0] * oh * ow, f), dy.dtype)
    K._pool_to_rows_kernel(dy, cache.y, cache.arg, oh, ow, rows)
    dw = _matmul(rows.T, cache.cols).reshape(w.shape)  # BLAS
    db = rows.sum(axis=0)
    if not need_dx:
        return None, dw, db
    dx = np.zeros(cache.x_shape, dy.dtype)
    K._col2im_kernel(_matmul(rows, w.reshape(f, -1)), kh, kw, cache.stride, cache.pad, oh, ow, dx)
    return dx, dw, db


# ---- pooling ----

def maxpool2d_forward(x, size=2, stride=2):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) flat h*W+w indices)."""
    n, c, h, w, oh, ow = C.check_maxpool2d_forward(x, size, stride)
    y = np.empty((n, c, oh, ow), x.dtype)
    arg = np.empty((n, c, oh, ow), np.int64)
    K._maxpool_kernel(_c(x), size, stride, oh, ow, y, arg)
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape, size=2, stride=2, check=True):
    n, c, h, w = C.check_maxpool2d_backward(dy, argmax, x_shape, size, stride)
    dx = np.zeros((n, c, h * w), dy.dtype)
    bad = K._maxpool_backward_kernel(_c(dy), _c(argmax).astype(np.int64, copy=False), dx)
    if bad:
        C.check_argmax_range(argmax, h, w, int(argmax.min()), int(argmax.max()))
    return dx.reshape(n, c, h, w)


# ---- affine ----

def _dense_parts(n: int, d: int, m: int, dtype) -> int:
    """The threads an (N, D) @ (D, M) product of a dense layer splits over on numba_dense.py's
    tiles, or 0 for BLAS: tiles inside training_context, with config.NUMBA_DENSE_TILES, at least
    config.SPLIT_GEMM_MIN_FLOPS, M a whole number of tiles and more than one thread."""
    if not (_SPLIT_GEMMS and config.NUMBA_DENSE_TILES and 2 * n * d * m >= config.SPLIT_GEMM_MIN_FLOPS
            and m % _tiles_mod.tile_columns(np.dtype(dtype).itemsize) == 0):
        return 0
    parts = numba.get_num_threads()
    return parts if parts > 1 else 0


def _narrow(n: int, d: int, m: int) -> bool:
    """Whether an (N, D) -> (N, M) dense layer runs on numba_dense.py's narrow kernels (one
    thread): inside training_context, at most config.NARROW_DENSE_COLUMNS outputs, and a product
    too small to split over the cores (config.SPLIT_GEMM_MIN_FLOPS)."""
    return _SPLIT_GEMMS and m <= config.NARROW_DENSE_COLUMNS and 2 * n * d * m < config.SPLIT_GEMM_MIN_FLOPS


@functools.lru_cache(maxsize=32)
def _arange(n: int) -> np.ndarray:
    """0..n-1 as int64: the row offsets of a plain matrix for the tile kernels (never written)."""
    return np.arange(n, dtype=np.int64)


def affine_forward(x, w, b):
    """x (N, D), w (D, M), b (M,) -> (N, M)."""
    C.check_affine_forward(x, w, b)
    x, w = _c(x), _c(w)
    (n, d), m = x.shape, w.shape[1]
    if _narrow(n, d, m):
        return _dense.narrow_forward_kernel(x, w, _c(b), _tiled.padded_width(m, x.itemsize))
    parts = _dense_parts(n, d, m, x.dtype)
    if parts:
        y = np.empty((n, m), x.dtype)
        _dense.matmul_kernel(x, w, _arange(d), config.DENSE_K_BLOCK, parts, y)
    else:
        y = _matmul(x, w)  # BLAS
    _small(K._bias_add_kernel, y.size, y, _c(b))
    return y


def affine_backward(dy, x, w, need_dx=True):
    """dy (N, M), x (N, D), w (D, M) -> (dx (N, D) or None, dw (D, M), db (M,)).

    Inside training_context the two products run at once, one per core, each whole on
    single-threaded BLAS: 12-30% faster than cutting each in two (dropout-cnn's 3136 -> 128 layer,
    batch 200: 2.09 against 2.47 ms, measured)."""
    C.check_affine_backward(dy, x, w)
    dy, x, w = _c(dy), _c(x), _c(w)
    if _narrow(*x.shape, w.shape[1]):
        dx = np.empty(x.shape if need_dx else (0, 0), dy.dtype)
        dw, db = _dense.narrow_backward_kernel(dy, x, w, bool(need_dx), dx,
                                               _tiled.padded_width(x.shape[1], x.itemsize))
        return (dx if need_dx else None), dw, db
    if need_dx and _SPLIT_GEMMS and 2 * dy.size * w.shape[0] >= config.SPLIT_GEMM_MIN_FLOPS \
            and numba.get_num_threads() > 1:
        dx = np.empty(x.shape, dy.dtype)
        dw = np.empty(w.shape, dy.dtype)
        _products_at_once([(dy, w.T, dx), (x.T, dy, dw)])
        return dx, dw, dy.sum(axis=0)
    return (_matmul(dy, w.T) if need_dx else None), _matmul(x.T, dy), dy.sum(axis=0)


# ---- activations ----

def _unary(kernel, x):
    x = _c(x)
    out = np.empty_like(x)
    _small(kernel, x.size, x.reshape(-1), out.reshape(-1))
    return out


def _binary(kernel, a, b):
    a, b = _c(a), _c(b)
    out = np.empty_like(a)
    _small(kernel, a.size, a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def relu_forward(x):
    C.check_unary("relu_forward", x)
    return _unary(K._relu_kernel, x)


def relu_backward(dy, x):
    C.check_unary_backward("relu_backward", dy, x)
    return _binary(K._relu_backward_kernel, dy, x)


def sigmoid_forward(x):
    C.check_unary("sigmoid_forward", x)
    return _unary(K._sigmoid_kernel, x)


def sigmoid_backward(dy, y):
    C.check_unary_backward("sigmoid_backward", dy, y, "y")
    return _binary(K._sigmoid_backward_kernel, dy, y)


# ---- losses ----

def softmax(x):
    C.check_softmax(x)
    x = _c(x)
    out = np.empty_like(x)
    _small(K._softmax_kernel, x.size, x, out)
    return out


def softmax_cross_entropy(logits, labels, check=True):
    """Fused softmax + mean cross-entropy + gradient -> (loss 0-d, dlogits (N, M)).

    The kernel checks every label as it goes (for free), so ``check`` is accepted and unused."""
    C.check_softmax_cross_entropy(logits, labels)
    x = _c(logits)
    labels = _c(labels).astype(np.int64, copy=False)
    d = np.empty_like(x)
    row_loss = np.zeros(x.shape[0], np.float64)
    if _small(K._softmax_ce_kernel, x.size, x, labels, d, row_loss):
        C.check_label_range("softmax_cross_entropy", int(labels.min()), int(labels.max()), x.shape[1])
    return np.asarray(row_loss.sum() / x.shape[0], x.dtype), d


def mse_loss(y, t):
    C.check_mse(y, t)
    y = _c(y)
    d = np.empty_like(y)
    s = _small(K._mse_kernel, y.size, y, _c(t), d)
    return np.asarray(0.5 * s / y.shape[0], y.dtype), d


# ---- dropout ----

def affine_warp(x, theta):
    """x (N, C, H, W), theta float64 (N, 2, 3) -> (N, C, H, W); see the contract."""
    C.check_affine_warp(x, theta)
    x = _c(x)
    out = np.empty_like(x)
    K._affine_warp_kernel(x, np.ascontiguousarray(theta, np.float64), out)
    return out


def elastic_warp(x, grid):
    """x (N, C, H, W), grid float64 (N, 2, GH, GW) -> (N, C, H, W); see the contract."""
    C.check_elastic_warp(x, grid)
    x = _c(x)
    out = np.empty_like(x)
    _small(K._elastic_warp_kernel, x.size, x, np.ascontiguousarray(grid, np.float64), out)
    return out


def stroke_width(x, amount):
    """x (N, C, H, W), amount float64 (N,) in [-1, 1] -> (N, C, H, W); see the contract."""
    C.check_per_sample("stroke_width", x, amount, "amount", -1.0, 1.0)
    x = _c(x)
    out = np.empty_like(x)
    _small(K._stroke_width_kernel, x.size, x, np.ascontiguousarray(amount, np.float64), out)
    return out


def gaussian_blur(x, sigma):
    """x (N, C, H, W), sigma float64 (N,) in [0, MAX_BLUR_SIGMA] -> (N, C, H, W); see the contract."""
    C.check_per_sample("gaussian_blur", x, sigma, "sigma", 0.0, C.MAX_BLUR_SIGMA)
    x = _c(x)
    out = np.empty_like(x)
    _small(K._gaussian_blur_kernel, x.size, x, C.blur_taps(sigma).astype(x.dtype), out)
    return out


def dropout_forward(x, p, seed):
    C.check_dropout(x, p, seed)
    x = _c(x)
    y, mask = np.empty_like(x), np.empty_like(x)
    _small(K._dropout_kernel, x.size, x.reshape(-1), float(p), 1.0 / (1.0 - p), int(seed), y.reshape(-1),
           mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask):
    C.check_unary_backward("dropout_backward", dy, mask, "mask")
    return _binary(K._mul_kernel, dy, mask)


# ---- optimizer updates, in place ----

def sgd_update(param, grad, lr):
    C.check_update("sgd_update", param, grad, lr)
    _small(K._sgd_kernel, param.size, _flat(param, "sgd_update", "param"), _c(grad).reshape(-1), param.dtype.type(lr))


def momentum_update(param, grad, velocity, lr, momentum=0.9):
    C.check_update("momentum_update", param, grad, lr, velocity=velocity)
    f = param.dtype.type
    _small(K._momentum_kernel, param.size, _flat(param, "momentum_update", "param"), _c(grad).reshape(-1),
           _flat(velocity, "momentum_update", "velocity"), f(lr), f(momentum))


def adagrad_update(param, grad, h, lr, eps=1e-7):
    C.check_update("adagrad_update", param, grad, lr, h=h)
    f = param.dtype.type
    _small(K._adagrad_kernel, param.size, _flat(param, "adagrad_update", "param"), _c(grad).reshape(-1),
           _flat(h, "adagrad_update", "h"), f(lr), f(eps))


def adam_update(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One fused pass: m, v and the parameter updated together (PyTorch's bias-corrected form)."""
    C.check_update("adam_update", param, grad, lr, m=m, v=v)
    t = C.require_int("adam_update", "t", t, 1)
    f = param.dtype.type
    op = "adam_update"
    step_size, sqrt_bc2 = C.adam_corrections(lr, t, beta1, beta2)
    _small(K._adam_kernel, param.size, _flat(param, op, "param"), _c(grad).reshape(-1), _flat(m, op, "m"),
           _flat(v, op, "v"), f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), f(step_size), f(sqrt_bc2), f(eps))


def adam_update_many(params, grads, states, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """adam_update for every parameter in one parallel region (the optimizer uses it where present);
    ``states[k]`` holds ``m`` and ``v``. Models under config.ADAM_PARALLEL_MIN_ELEMENTS parameters
    in all run on one core, as a wake-up of the other threads would cost more than their work."""
    op = "adam_update_many"
    ps, ms, vs = _adam_views(op, params, grads, states, lr)
    t = C.require_int(op, "t", t, 1)
    f = params[0].dtype.type
    # one numba type for the whole tuple: a read-only gradient would make it mixed
    gs = tuple((_c(g) if g.flags.writeable else g.copy()).reshape(-1) for g in grads)
    step_size, sqrt_bc2 = C.adam_corrections(lr, t, beta1, beta2)
    hyper = (f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), f(step_size), f(sqrt_bc2), f(eps))
    if sum(p.size for p in ps) < config.ADAM_PARALLEL_MIN_ELEMENTS:
        for p, g, m, v in zip(ps, gs, ms, vs):
            K._adam_range(p, g, m, v, 0, p.size, *hyper)
        return
    block = config.ADAM_BLOCK
    K._adam_many_kernel(ps, gs, ms, vs, _block_starts(tuple(p.size for p in ps), block), block, *hyper)


_ADAM_LAST: list = [(), None]  # the last call's (params and moments, their flat views)


def _adam_views(op, params, grads, states, lr):
    """check_update_many's checks, and the flat views (ps, ms, vs) of the parameters and moments.
    A training loop passes the same parameter and moment arrays every step: where they are the
    last call's (the very objects, held here, still writeable), only the new gradients and lr are
    checked (each against its parameter's dtype and shape, the full checks naming any mismatch),
    and the views are the last call's. The full checks of six parameters took 70-90 us a step."""
    try:
        arrays = (*params, *(s["m"] for s in states), *(s["v"] for s in states))
    except (KeyError, TypeError):
        arrays = None  # the full checks say what is wrong
    held, views = _ADAM_LAST
    if arrays is not None and len(arrays) == len(held) and len(grads) == len(params) \
            and all(a is b for a, b in zip(arrays, held)) and all(a.flags.writeable for a in held):
        dtype = params[0].dtype
        if all(type(g) is np.ndarray and g.dtype == dtype and g.shape == p.shape for g, p in zip(grads, params)):
            C.require_number(op, "lr", lr)
            return views
    C.check_update_many(op, params, grads, states, ("m", "v"), lr)
    views = (tuple(_flat(p, op, f"params[{k}]") for k, p in enumerate(params)),
             tuple(_flat(s["m"], op, f"states[{k}]['m']") for k, s in enumerate(states)),
             tuple(_flat(s["v"], op, f"states[{k}]['v']") for k, s in enumerate(states)))
    _ADAM_LAST[:] = [tuple(arrays), views]
    return views


@functools.lru_cache(maxsize=16)
def _block_starts(sizes: tuple, block: int) -> np.ndarray:
    """Array j's blocks of ``block`` elements are starts[j] .. starts[j + 1] - 1 (once per model: shared, never written)."""
    starts = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum([-(-size // block) for size in sizes], out=starts[1:])
    return starts


# ---- whole training steps of a dense network ----

def dense_train_steps(program, xs, targets, labels, perm, first, batch_size, lrs, step_size, sqrt_bc2, seeds):
    """Run ``len(lrs)`` training steps of ``program`` in one compiled call (see
    :mod:`.numba_steps`); the contract and the reference are numpy_backend's."""
    n, batch_size, count = C.check_dense_train_steps(program, xs, targets, labels, perm, first, batch_size, lrs,
                                                     step_size, sqrt_bc2, seeds)
    dt = xs.dtype
    lists = program.prepared.get("numba")
    if lists is None:  # the model's own arrays, in numba's typed lists, once per program
        from numba.typed import List
        w, b = program.weights, program.biases
        ws = program.weight_slots + [w] * (2 - len(program.weight_slots))  # SGD: placeholders, never touched
        bs = program.bias_slots + [b] * (2 - len(program.bias_slots))
        lists = program.prepared["numba"] = tuple(List(_flat_check(a)) for a in (w, b, *ws[:2], *bs[:2]))
    targets = targets if program.loss == C.LOSS_MSE else np.empty((1, 1), dt)
    hyper = np.concatenate([program.hyper, 1 - program.hyper[:2]]).astype(dt)  # + (1 - beta1, 1 - beta2)
    # Inside training_context BLAS runs on one thread: the chunk's own parallel loops use the cores.
    step_loss, step_correct, done, bad_loss, bad = _numba_steps.dense_train_steps_kernel(
        program.ops, program.widths, program.slot, program.drop_p, program.loss, program.optimizer, hyper, *lists,
        _c(xs), _c(targets), _c(labels), _c(perm), first, batch_size,
        np.asarray(lrs, dt), np.asarray(step_size, dt), np.asarray(sqrt_bc2, dt),
        np.ascontiguousarray(seeds, np.int64), config.STEP_SMALL_BATCH, config.STEP_SPARSE_DENSITY,
        config.STEP_SPARSE_MIN_OUTPUTS, config.STEP_PARALLEL_BATCH, _step_parts(batch_size))
    return step_loss, step_correct, int(done), (float(bad_loss) if bad else None)


def _step_parts(batch_size):
    """How many threads share each compiled step (config.STEP_SPLIT_PARTS): every part must run at
    once, or its first barrier waits forever, so only with that many threads and a threading
    layer that gives each iteration of a parallel loop its own thread (OpenMP, workqueue; TBB may
    run two on one thread), and not where OpenMP may hand out fewer threads than asked (OMP_DYNAMIC)."""
    parts, threads = config.STEP_SPLIT_PARTS, numba.get_num_threads()
    if parts < 2 or batch_size < config.STEP_SPLIT_BATCH or threads < parts:
        return 1
    if os.environ.get("OMP_DYNAMIC", "").strip().lower() in ("true", "1", "yes", "on"):
        return 1
    if _started_threading_layer() not in ("omp", "workqueue"):
        return 1
    key = (parts, threads)
    if key not in _TOGETHER:  # once a process and thread count: e.g. OMP_THREAD_LIMIT=1 runs them in turn
        from .numba_sync import parts_run_together
        _TOGETHER[key] = parts_run_together(parts)
    return parts if _TOGETHER[key] else 1


_TOGETHER = {}  # (parts, Numba's thread count) -> whether a prange's parts were seen to run at once


def _started_threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet: run one, so that the layer is chosen
        K.warm_threads()
        return numba.threading_layer()


def _flat_check(arrays):
    for a in arrays:
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise InvalidArgument("dense_train_steps: parameters and optimizer state must be writable C-contiguous arrays")
    return list(arrays)


def count_correct(logits, labels):
    C.check_count_correct(logits, labels)
    labels = _c(labels).astype(np.int64, copy=False)
    return np.asarray(_small(K._count_correct_kernel, logits.size, _c(logits), labels))
