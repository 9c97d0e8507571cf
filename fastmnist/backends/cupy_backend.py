"""The CuPy backend: CUDA kernels (``cuda/kernels.cu`` through ``cupy.RawModule``) plus cuBLAS.

Importable everywhere: CuPy itself is imported lazily, on first use, so the library and its CPU
backends work on machines without CuPy or without a GPU; ``available()`` says why not.

Status: ran on an NVIDIA H200 once (2026-11-30, benchmarks/results/gpu/): the conformance suite
passed, compute-sanitizer found nothing, fast-cnn trains to ~99% (docs/gpu.md). Nothing here
synchronises with the host except where a public function must validate device data (label or
argmax ranges), which the layers' paths avoid.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import numpy as np

from .. import config
from ..errors import InvalidArgument, OutOfMemory, WrongType
from . import contract as C

name = "cupy"
compiles_kernels = True  # JIT: `fastmnist train` times a warm-up step apart from the epochs
is_device = True
_cp = None
_module = None
_kernels: dict = {}  # (stem, dtype) -> compiled kernel: get_function once, not per launch
_compile_total = 0.0
_why_not = None


def _cupy():
    """Import cupy and check that a GPU answers; raise BackendUnavailable-ready ImportError else."""
    global _cp, _why_not
    if _cp is not None:
        return _cp
    if _why_not is not None:
        raise ImportError(_why_not)
    try:
        import cupy
    except ImportError as exc:
        _why_not = f"cupy is not installed ({exc})"
        raise ImportError(_why_not) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise RuntimeError("no CUDA device found")
        probe = cupy.asarray(np.arange(4, dtype=np.float32))  # driver, context, a copy: no compiler needed
        if probe.get()[3] != 3:
            raise RuntimeError("a host-device round trip returned wrong data")
    except Exception as exc:  # CUDARuntimeError, driver missing, ...: all mean "no usable GPU"
        _why_not = f"cupy {cupy.__version__} is installed but no usable CUDA GPU: {type(exc).__name__}: {exc}"
        raise ImportError(_why_not) from None
    try:  # a GPU answers; now the run-time compiler (NVRTC) that builds kernels.cu
        cupy.RawKernel('extern "C" __global__ void fastmnist_probe(float* x) { x[threadIdx.x] += 1.0f; }',
                       "fastmnist_probe")((1,), (4,), (probe,))
        cupy.cuda.get_current_stream().synchronize()
    except Exception as exc:
        _why_not = (f"cupy {cupy.__version__} sees a CUDA GPU but cannot compile kernels (NVRTC, the CUDA run-time "
                    f"compiler, is missing or broken: {type(exc).__name__}: {exc}); install the toolkit wheels with "
                    "pip install 'cupy-cuda13x[ctk]' (or cupy-cuda12x[ctk]), i.e. fastmnist's [cuda13]/[cuda12] extra")
        raise ImportError(_why_not) from None
    _cp = cupy
    return cupy


def available():
    try:
        cp = _cupy()
    except ImportError as exc:
        return False, str(exc)
    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"cupy {cp.__version__} on {gpu}"


def info():
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(0)
    free, total = cp.cuda.runtime.memGetInfo()
    return {"cupy": cp.__version__, "gpu": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            "gpus": cp.cuda.runtime.getDeviceCount(),
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(), "cuda_driver": cp.cuda.runtime.driverGetVersion(),
            "memory_free_gib": round(free / 2**30, 2), "memory_total_gib": round(total / 2**30, 2)}


def __getattr__(attr):
    if attr == "xp":
        return _cupy()
    raise AttributeError(attr)


def _threads():
    t = config.CUDA_THREADS
    if not isinstance(t, int) or t < 32 or t > 1024 or t & (t - 1):
        raise InvalidArgument(f"config.CUDA_THREADS must be a power of two in 32..1024 (block reductions halve it), got {t!r}")
    return t


def _kernel(stem, dtype):
    """The compiled kernel, cached: RawModule.get_function costs host time on every call otherwise."""
    global _module
    key = (stem, np.dtype(dtype).char, config.CUDA_THREADS)
    fn = _kernels.get(key)
    if fn is None:
        global _compile_total
        started = time.perf_counter()
        cp = _cupy()
        threads = _threads()
        if _module is None or _module[0] != threads:  # the reductions' shared memory is sized at compile time
            source = (Path(__file__).parent / "cuda" / "kernels.cu").read_text()
            _module = (threads, cp.RawModule(code=source, options=("--std=c++14", f"-DFASTMNIST_THREADS={threads}")))
            _kernels.clear()
        fn = _kernels[key] = _module[1].get_function(f"{stem}_{'f32' if np.dtype(dtype) == np.float32 else 'f64'}")
        _compile_total += time.perf_counter() - started  # NVRTC compiles the module at the first get_function
    return fn


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels.cu (NVRTC) and loading its functions so far."""
    return _compile_total


def _launch(stem, dtype, n, args):
    """Grid-stride launch over n elements (capped grid: the kernels loop)."""
    threads = config.CUDA_THREADS
    blocks = max(1, min(int(math.ceil(n / threads)), 65535))
    _kernel(stem, dtype)((blocks,), (threads,), args)


def _product(a, b, trans_a=False, trans_b=False, bias=None, relu=False):
    """op(a) @ op(b), op transposing where asked (a and b as stored, C-contiguous), then + bias[n]
    and ReLU where given. cuBLAS (cupy.matmul) unless config.CUPY_OWN_GEMM: then kernels.cu's own
    gemm, with bias and ReLU in its epilogue, which a CUDA graph can capture (CuPy cannot capture
    cuBLAS: issue 19); cuBLAS stays the default until a GPU measures the two side by side."""
    cp = _cupy()
    a, b = _c(a), _c(b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n, kb = (b.shape[0], b.shape[1]) if trans_b else (b.shape[1], b.shape[0])
    assert k == kb and a.dtype == b.dtype and (bias is not None or not relu), "internal: _product's operands"
    if not config.CUPY_OWN_GEMM:
        y = cp.matmul(a.T if trans_a else a, b.T if trans_b else b)
        if bias is not None:
            _launch("bias_act", y.dtype, y.size, (y, _c(bias), _l(m), _i(n), _i(relu)))
        return y
    if m == 0 or n == 0 or k == 0:  # no grid to launch (an empty sum is zero)
        y = cp.zeros((m, n), a.dtype)
        if bias is not None and y.size:
            _launch("bias_act", y.dtype, y.size, (y, _c(bias), _l(m), _i(n), _i(relu)))
        return y
    y = cp.empty((m, n), a.dtype)
    grid = ((m + GEMM_TILE - 1) // GEMM_TILE, (n + GEMM_TILE - 1) // GEMM_TILE)  # rows on x: no 65535 cap
    _kernel("gemm", a.dtype)(grid, (16, 16), (a, b, _c(bias) if bias is not None else y, y, _i(m), _i(n), _i(k),
                                              _i(trans_a), _i(trans_b), _i(bias is not None), _i(relu), _i(0)))
    return y


GEMM_TILE = 32  # kernels.cu's tile of outputs per block (16 x 16 threads, 2 x 2 outputs each)


def _column_sums(x):
    """x (M, N) -> (N,): CuPy's sum, or kernels.cu's colsum under config.CUPY_OWN_GEMM (capturable)."""
    if not config.CUPY_OWN_GEMM:
        return x.sum(axis=0)
    out = _cupy().empty(x.shape[1], x.dtype)
    _launch("colsum", x.dtype, x.shape[1], (_c(x), _i(x.shape[0]), _i(x.shape[1]), out))
    return out


def _block(stem, dtype, args):
    """One block of config.CUDA_THREADS threads (the shared-memory reductions)."""
    _kernel(stem, dtype)((1,), (config.CUDA_THREADS,), args)


def _in_place(op, **arrays):
    """In-place updates must write the caller's own device memory: no silent copy."""
    cp = _cupy()
    for what, a in arrays.items():
        if not isinstance(a, cp.ndarray):
            raise WrongType(f"{op}: {what} must be a device array (cupy.ndarray) for an in-place update on the GPU, "
                            f"got {type(a).__name__}; move it with backend.asarray first")
        if not a.flags.c_contiguous:
            raise InvalidArgument(f"{op}: {what} must be C-contiguous for an in-place update, got strides {a.strides}")


def _c(a):
    """A C-contiguous device array: host (NumPy) inputs of the public kernels are moved first."""
    cp = _cupy()
    return cp.ascontiguousarray(a if isinstance(a, cp.ndarray) else asarray(a))


def _i(v):
    return np.int32(v)


def _l(v):
    return np.int64(v)


def _s(dtype, v):
    return np.dtype(dtype).type(v)


# ---- array plumbing ----

def asarray(a, dtype=None):
    cp = _cupy()
    try:
        return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))
    except cp.cuda.memory.OutOfMemoryError as exc:
        nbytes = getattr(a, "nbytes", 0)
        raise OutOfMemory(f"GPU out of memory moving an array of {nbytes / 2**20:.1f} MiB to the device ({exc}); "
                          "use a smaller batch or dataset") from None


def to_numpy(a):
    return _cupy().asnumpy(a)


def synchronize():
    _cupy().cuda.get_current_stream().synchronize()


def one_hot(labels, m, dtype):
    cp = _cupy()
    return cp.eye(m, dtype=dtype)[labels]


# ---- convolution ----

def im2col(x, kh, kw, stride=1, pad=0):
    n, c, h, w, oh, ow = C.check_im2col(x, kh, kw, stride, pad)
    out = _cupy().empty((n * oh * ow, c * kh * kw), x.dtype)
    _launch("im2col", x.dtype, out.size, (_c(x), _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(stride), _i(pad),
                                          _i(oh), _i(ow), out))
    return out


def col2im(col, x_shape, kh, kw, stride=1, pad=0):
    n, c, h, w, oh, ow = C.check_col2im(col, x_shape, kh, kw, stride, pad)
    return _col2im(_c(col), n, c, h, w, kh, kw, stride, pad, oh, ow)


def _col2im(col, n, c, h, w, kh, kw, stride, pad, oh, ow):
    x = _cupy().empty((n, c, h, w), col.dtype)
    _launch("col2im", col.dtype, x.size, (col, _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(stride), _i(pad),
                                          _i(oh), _i(ow), x))
    return x


def conv2d_forward(x, w, b, stride=1, pad=0):
    return conv2d_forward_cached(x, w, b, stride, pad)[0]


def conv2d_forward_cached(x, w, b, stride=1, pad=0, relu=False):
    cp = _cupy()
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, pad)
    rows = _product(cols, _c(w).reshape(f, -1), trans_b=True)
    y = cp.empty((n, f, oh, ow), x.dtype)
    _launch("rows_to_nchw", x.dtype, y.size, (rows, _c(b), _i(relu), _l(n), _i(f), _l(oh * ow), y))
    return y, (cols, x.shape, stride, pad)


def conv2d_backward(dy, x, w, stride=1, pad=0):
    C.check_conv2d_backward(dy, x, w, stride, pad)
    cols = im2col(x, w.shape[2], w.shape[3], stride, pad)
    return conv2d_backward_cached(dy, (cols, x.shape, stride, pad), w)


def conv2d_backward_cached(dy, cache, w, need_dx=True):
    cp = _cupy()
    cols, x_shape, stride, pad = cache
    f, c, kh, kw = w.shape
    n, _, oh, ow = dy.shape
    rows = cp.empty((n * oh * ow, f), dy.dtype)
    _launch("nchw_to_rows", dy.dtype, rows.size, (_c(dy), _l(n), _i(f), _l(oh * ow), rows))
    return _conv_grads(rows, cols, w, x_shape, stride, pad, oh, ow, need_dx)


def _conv_grads(rows, cols, w, x_shape, stride, pad, oh, ow, need_dx):
    f, c, kh, kw = w.shape
    dw = _product(rows, cols, trans_a=True).reshape(w.shape)
    db = _column_sums(rows)
    if not need_dx:
        return None, dw, db
    dcols = _product(rows, _c(w).reshape(f, -1))
    n, _, h, wd = x_shape
    return _col2im(dcols, n, c, h, wd, kh, kw, stride, pad, oh, ow), dw, db


def conv2d_relu_maxpool_forward(x, w, b, stride=1, pad=0, size=2, pool_stride=2):
    """Fused conv -> ReLU -> max-pool: im2col, one cuBLAS product, one pooling kernel."""
    cp = _cupy()
    n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
    f, _, kh, kw = w.shape
    ph = C.conv_out("conv2d_relu_maxpool_forward", oh, size, pool_stride, 0, "height")
    pw = C.conv_out("conv2d_relu_maxpool_forward", ow, size, pool_stride, 0, "width")
    cols = im2col(x, kh, kw, stride, pad)
    rows = _product(cols, _c(w).reshape(f, -1), trans_b=True)
    y = cp.empty((n, f, ph, pw), x.dtype)
    arg = cp.empty((n, f, ph, pw), cp.int32)
    _launch("rows_pool", x.dtype, y.size, (rows, _c(b), _l(n), _i(f), _i(oh), _i(ow), _i(size), _i(pool_stride),
                                           _i(ph), _i(pw), y, arg))
    return y, (cols, x.shape, stride, pad, oh, ow, y, arg)


def conv2d_relu_maxpool_backward(dy, cache, w, need_dx=True):
    cp = _cupy()
    cols, x_shape, stride, pad, oh, ow, y, arg = cache
    f = w.shape[0]
    n, _, ph, pw = dy.shape
    rows = cp.zeros((n * oh * ow, f), dy.dtype)
    _launch("pool_to_rows", dy.dtype, dy.size, (_c(dy), y, arg, _l(n), _i(f), _i(ph), _i(pw), _i(oh * ow), rows))
    return _conv_grads(rows, cols, w, x_shape, stride, pad, oh, ow, need_dx)


# ---- pooling ----

def maxpool2d_forward(x, size=2, stride=2):
    cp = _cupy()
    n, c, h, w, oh, ow = C.check_maxpool2d_forward(x, size, stride)
    y = cp.empty((n, c, oh, ow), x.dtype)
    arg = cp.empty((n, c, oh, ow), cp.int64)
    _launch("maxpool", x.dtype, y.size, (_c(x), _l(n * c), _i(h), _i(w), _i(size), _i(stride), _i(oh), _i(ow), y, arg))
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape, size=2, stride=2, check=True):
    """``check=False`` skips the host read that reports out-of-plane argmax values (the kernel
    skips them either way, never writing out of bounds); the layers pass it, so no step syncs."""
    cp = _cupy()
    n, c, h, w = C.check_maxpool2d_backward(dy, argmax, x_shape, size, stride)
    dx = cp.zeros((n, c, h, w), dy.dtype)
    bad = cp.zeros(1, cp.int32)
    _launch("maxpool_backward", dy.dtype, dy.size, (_c(dy), _c(argmax).astype(cp.int64, copy=False), _l(n * c),
                                                     _l(dy.shape[2] * dy.shape[3]), _l(h * w), dx, bad))
    if check and int(bad[0]):  # a host read
        C.check_argmax_range(argmax, h, w, int(argmax.min()), int(argmax.max()))
    return dx


# ---- affine ----

def affine_forward(x, w, b, relu=False):
    C.check_affine_forward(x, w, b)
    return _product(x, w, bias=b, relu=relu)


def affine_backward(dy, x, w, need_dx=True):
    C.check_affine_backward(dy, x, w)
    return (_product(dy, w, trans_b=True) if need_dx else None), _product(x, dy, trans_a=True), _column_sums(dy)


# ---- elementwise ----

def _unary(stem, x):
    x = _c(x)
    out = _cupy().empty_like(x)
    _launch(stem, x.dtype, x.size, (x, _l(x.size), out))
    return out


def _binary(stem, a, b):
    a, b = _c(a), _c(b)
    out = _cupy().empty_like(a)
    _launch(stem, a.dtype, a.size, (a, b, _l(a.size), out))
    return out


def relu_forward(x):
    C.check_unary("relu_forward", x)
    return _unary("relu", x)


def relu_backward(dy, x):
    C.check_unary_backward("relu_backward", dy, x)
    return _binary("relu_backward", dy, x)


def sigmoid_forward(x):
    C.check_unary("sigmoid_forward", x)
    return _unary("sigmoid", x)


def sigmoid_backward(dy, y):
    C.check_unary_backward("sigmoid_backward", dy, y, "y")
    return _binary("sigmoid_backward", dy, y)


def affine_warp(x, theta):
    """x (N, C, H, W), theta float64 (N, 2, 3) -> (N, C, H, W); see the contract."""
    cp = _cupy()
    n, c, h, w = C.check_affine_warp(x, theta)
    x = _c(x)
    theta = cp.ascontiguousarray(theta if isinstance(theta, cp.ndarray) else cp.asarray(theta, dtype=np.float64))
    out = cp.empty_like(x)
    _launch("affine_warp", x.dtype, n * h * w, (x, theta, _i(n), _i(c), _i(h), _i(w), out))
    return out


def dropout_forward(x, p, seed):
    cp = _cupy()
    C.check_dropout(x, p, seed)
    x = _c(x)
    y, mask = cp.empty_like(x), cp.empty_like(x)
    _launch("dropout", x.dtype, x.size, (x, _l(x.size), np.float64(p), np.float64(1.0 / (1.0 - p)), np.uint64(seed),
                                         y, mask))
    return y, mask


def dropout_backward(dy, mask):
    C.check_unary_backward("dropout_backward", dy, mask, "mask")
    return _binary("mul", dy, mask)


# ---- losses ----

def softmax(x):
    C.check_softmax(x)
    x = _c(x)
    out = _cupy().empty_like(x)
    _launch("softmax", x.dtype, x.shape[0], (x, _i(x.shape[0]), _i(x.shape[1]), out))
    return out


def softmax_cross_entropy(logits, labels, check=True):
    """Fused softmax + mean cross-entropy + gradient, one launch. ``check=False`` skips the host
    read that validates label ranges (the trainer validated them once, on the host)."""
    cp = _cupy()
    C.check_softmax_cross_entropy(logits, labels)
    x = _c(logits)
    d = cp.empty_like(x)
    loss = cp.empty((), x.dtype)
    bad = cp.zeros(1, cp.int32)
    _block("softmax_ce", x.dtype, (x, _c(labels).astype(cp.int64, copy=False), _i(x.shape[0]), _i(x.shape[1]), d,
                                   loss, bad))
    if check and int(bad[0]):
        C.check_label_range("softmax_cross_entropy", int(labels.min()), int(labels.max()), x.shape[1])
    return loss, d


def mse_loss(y, t):
    cp = _cupy()
    C.check_mse(y, t)
    y = _c(y)
    d = cp.empty_like(y)
    loss = cp.empty((), y.dtype)
    _block("mse", y.dtype, (y, _c(t), _l(y.size), _i(y.shape[0]), d, loss))
    return loss, d


def count_correct(logits, labels):
    cp = _cupy()
    C.check_count_correct(logits, labels)
    count = cp.zeros((), cp.int64)
    _launch("count_correct", logits.dtype, logits.shape[0], (_c(logits), _c(labels).astype(cp.int64, copy=False),
                                                             _i(logits.shape[0]), _i(logits.shape[1]), count))
    return count


# ---- optimizers ----

def sgd_update(param, grad, lr):
    C.check_update("sgd_update", param, grad, lr)
    _in_place("sgd_update", param=param)
    _launch("sgd", param.dtype, param.size, (param, _c(grad), _l(param.size), _s(param.dtype, lr)))


def momentum_update(param, grad, velocity, lr, momentum=0.9):
    C.check_update("momentum_update", param, grad, lr, velocity=velocity)
    _in_place("momentum_update", param=param, velocity=velocity)
    f = param.dtype
    _launch("momentum", f, param.size, (param, _c(grad), velocity, _l(param.size), _s(f, lr), _s(f, momentum)))


def adagrad_update(param, grad, h, lr, eps=1e-7):
    C.check_update("adagrad_update", param, grad, lr, h=h)
    _in_place("adagrad_update", param=param, h=h)
    f = param.dtype
    _launch("adagrad", f, param.size, (param, _c(grad), h, _l(param.size), _s(f, lr), _s(f, eps)))


def adam_update(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    C.check_update("adam_update", param, grad, lr, m=m, v=v)
    t = C.require_int("adam_update", "t", t, 1)
    _in_place("adam_update", param=param, m=m, v=v)
    f = param.dtype
    _launch("adam", f, param.size, (param, _c(grad), m, v, _l(param.size), _s(f, beta1), _s(f, beta2),
                                    *(_s(f, c) for c in C.adam_corrections(lr, t, beta1, beta2)), _s(f, eps)))


_tables: dict = {}  # (dtype, (ptr, size) of every param/m/v) -> device pointer tables


def adam_update_many(params, grads, states, t, lr, beta1, beta2, eps):
    """One launch for the Adam step of every parameter (the optimizer uses it when present).

    The tables of parameter, m and v pointers and the size offsets are built once per set of
    arrays and kept with references to those arrays, so their memory cannot be freed and reused by
    other arrays while a table points at it. Gradients are new arrays every step: their pointers go
    into the entry's own device table with one small host-to-device copy per step.
    """
    cp = _cupy()
    C.check_update_many("adam_update_many", params, grads, states, ("m", "v"), lr)
    t = C.require_int("adam_update_many", "t", t, 1)
    _in_place("adam_update_many", **{f"params[{k}]": p for k, p in enumerate(params)},
              **{f"states[{k}]['{s}']": st[s] for k, st in enumerate(states) for s in ("m", "v")})
    grads = [_c(g) for g in grads]
    f = params[0].dtype
    ms, vs = [s["m"] for s in states], [s["v"] for s in states]
    key = (np.dtype(f).char,) + tuple((a.data.ptr, a.size) for group in (params, ms, vs) for a in group)
    entry = _tables.get(key)
    if entry is None:
        table = lambda arrays: cp.asarray(np.array([a.data.ptr for a in arrays], np.uint64))
        sizes = np.concatenate([[0], np.cumsum([p.size for p in params])]).astype(np.int64)
        if len(_tables) >= 8:  # a few models at a time; drop the oldest
            _tables.pop(next(iter(_tables)))
        entry = _tables[key] = {"p": table(params), "m": table(ms), "v": table(vs), "g": table(grads),
                                "offsets": cp.asarray(sizes), "total": int(sizes[-1]), "keep": (params, ms, vs),
                                "grads": [g.data.ptr for g in grads]}
    if [g.data.ptr for g in grads] != entry["grads"]:
        entry["g"].set(np.array([g.data.ptr for g in grads], np.uint64))
        entry["grads"] = [g.data.ptr for g in grads]
    step_size, sqrt_bc2 = C.adam_corrections(lr, t, beta1, beta2)
    _launch("adam_many", f, entry["total"], (entry["p"], entry["g"], entry["m"], entry["v"], entry["offsets"],
                                             _i(len(params)), _s(f, beta1), _s(f, beta2), _s(f, step_size),
                                             _s(f, sqrt_bc2), _s(f, eps)))


# ---- out of device memory: one clear OutOfMemory (a MemoryError) from every public function ----

def _gpu_oom_to_memory_error(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if _cp is None or not isinstance(exc, _cp.cuda.memory.OutOfMemoryError):
                raise
            shapes = ", ".join(str(tuple(a.shape)) for a in args if hasattr(a, "shape"))
            raise OutOfMemory(f"GPU out of memory in {fn.__name__} (inputs {shapes or 'none'}): {exc} "
                              "Use a smaller batch size (--batch-size), or evaluate in smaller batches.") from None
    return wrapper


for _name, _fn in list(globals().items()):
    if (callable(_fn) and getattr(_fn, "__module__", None) == __name__ and not _name.startswith("_")
            and _name not in ("available", "info", "asarray")):
        globals()[_name] = _gpu_oom_to_memory_error(_fn)
