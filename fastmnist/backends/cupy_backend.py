"""The CuPy backend: CUDA kernels (``cuda/kernels.cu`` through ``cupy.RawModule``) plus cuBLAS.

One class, :class:`CupyBackend`, built on an array module with CuPy's API: ``backend`` here, on
the real cupy (:class:`LazyCupy`, imported on first use), is the ``cupy`` backend;
``cupy_sim_backend.backend``, on the simulator's ``SimCupy``, is ``cupy-sim``. Each instance
holds its own state (compiled kernels, compile time, pointer tables), so the two never share one.

Importable everywhere: CuPy itself is imported lazily, on first use, so the library and its CPU
backends work on machines without CuPy or without a GPU; ``available()`` says why not.

Status: ran on an NVIDIA H200 once (2026-11-30, benchmarks/results/gpu/): the conformance suite
passed, compute-sanitizer found nothing, fast-cnn trains to ~99% (docs/gpu.md). Nothing here
synchronises with the host except where a public function must validate device data (label or
argmax ranges), which the layers' paths avoid.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from pathlib import Path

import numpy as np

from .. import config
from ..errors import InvalidArgument, OutOfMemory, WrongType
from . import contract as C

KERNELS_SOURCE = Path(__file__).parent / "cuda" / "kernels.cu"
GEMM_TILE = 32  # kernels.cu's tile of outputs per block (16 x 16 threads, 2 x 2 outputs each)


class LazyCupy:
    """The real ``cupy`` module, imported on first :meth:`load` and checked once: a GPU answers and
    NVRTC compiles. Importing this file must never import cupy (machines without it use the CPU
    backends), hence the wait until the backend is first used."""

    def __init__(self):
        self.module = None
        self.why_not = None  # the first failure, kept: every later load raises it again at no cost

    def load(self):
        """Return the cupy module; raise ImportError saying why not (BackendUnavailable-ready)."""
        if self.module is not None:
            return self.module
        if self.why_not is not None:
            raise ImportError(self.why_not)
        try:
            import cupy
        except ImportError as exc:
            self.why_not = f"cupy is not installed ({exc})"
            raise ImportError(self.why_not) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
            if count < 1:
                raise RuntimeError("no CUDA device found")
            probe = cupy.asarray(np.arange(4, dtype=np.float32))  # driver, context, a copy: no compiler needed
            if probe.get()[3] != 3:
                raise RuntimeError("a host-device round trip returned wrong data")
        except Exception as exc:  # CUDARuntimeError, driver missing, ...: all mean "no usable GPU"
            self.why_not = f"cupy {cupy.__version__} is installed but no usable CUDA GPU: {type(exc).__name__}: {exc}"
            raise ImportError(self.why_not) from None
        try:  # a GPU answers; now the run-time compiler (NVRTC) that builds kernels.cu
            cupy.RawKernel('extern "C" __global__ void fastmnist_probe(float* x) { x[threadIdx.x] += 1.0f; }',
                           "fastmnist_probe")((1,), (4,), (probe,))
            cupy.cuda.get_current_stream().synchronize()
        except Exception as exc:
            self.why_not = (f"cupy {cupy.__version__} sees a CUDA GPU but cannot compile kernels (NVRTC, the CUDA "
                            f"run-time compiler, is missing or broken: {type(exc).__name__}: {exc}); install the "
                            "toolkit wheels with pip install 'cupy-cuda13x[ctk]' (or cupy-cuda12x[ctk]), i.e. "
                            "fastmnist's [cuda13]/[cuda12] extra")
            raise ImportError(self.why_not) from None
        self.module = cupy
        return cupy


def _threads():
    t = config.CUDA_THREADS
    if not isinstance(t, int) or t < 32 or t > 1024 or t & (t - 1):
        raise InvalidArgument(f"config.CUDA_THREADS must be a power of two in 32..1024 (block reductions halve it), got {t!r}")
    return t


def _i(v):
    return np.int32(v)


def _l(v):
    return np.int64(v)


def _s(dtype, v):
    return np.dtype(dtype).type(v)


class CupyBackend:
    """The kernel contract (:mod:`fastmnist.backends.contract`) on a GPU through an array module
    with CuPy's API. Its public methods take the numpy backend's parameters exactly.

    Parameters
    ----------
    array_module : LazyCupy or module-like
        The real cupy, as a :class:`LazyCupy` (imported and probed at first use), or a stand-in
        with CuPy's API used as given (the simulator's ``SimCupy``).
    name : str
        The registry's name for this backend (``cupy``, ``cupy-sim``).
    requirement : callable, optional
        ``() -> (usable?, why)`` that :meth:`available` reports instead of probing the array
        module: the simulator needs a C++ compiler, not a GPU.
    """

    compiles_kernels = True  # JIT: `fastmnist train` times a warm-up step apart from the epochs
    is_device = True
    is_simulator = False  # the instance on the simulator sets it

    def __init__(self, array_module, name: str = "cupy", requirement=None):
        self.name = name
        self._lazy = array_module if isinstance(array_module, LazyCupy) else None
        self._cp = None if self._lazy is not None else array_module  # the module itself, once known
        self._requirement = requirement
        self._module = None  # (threads, RawModule): kernels.cu compiled for one block size
        self._kernels: dict = {}  # (stem, dtype, threads) -> compiled kernel: get_function once, not per launch
        self._compile_total = 0.0
        self._tables: dict = {}  # (dtype, (ptr, size) of every param/m/v) -> adam_update_many's pointer tables
        self._arena = None  # a cupy_graphs.StepArena while a step is recorded or captured
        self._rates = None  # a cupy_graphs.DeviceRates that adam_update_many reads, inside using_rates
        self._dropout_layer = 0  # inside using_rates: the dropout layer the next dropout_forward is

    def __repr__(self):
        return f"<CupyBackend {self.name!r}>"

    def _cupy(self):
        """The array module; for the real cupy, imported now if not yet (ImportError saying why not)."""
        if self._cp is None:
            self._cp = self._lazy.load()
        return self._cp

    @property
    def device(self):
        """The array module the kernels run through: cupy itself, or the simulator's ``SimCupy``
        (its ``counters`` and ``memory_bytes`` are what the tests read and patch)."""
        return self._cupy()

    def available(self):
        """(usable here?, why): the GPU and CuPy version, or what is missing."""
        if self._requirement is not None:
            return self._requirement()
        try:
            cp = self._cupy()
        except ImportError as exc:
            return False, str(exc)
        props = cp.cuda.runtime.getDeviceProperties(0)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return True, f"cupy {cp.__version__} on {gpu}"

    def info(self):
        """The device's facts for `fastmnist info`: CuPy, GPU, CUDA versions, memory."""
        cp = self._cupy()
        props = cp.cuda.runtime.getDeviceProperties(0)
        free, total = cp.cuda.runtime.memGetInfo()
        facts = {"cupy": cp.__version__,
                 "gpu": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                 "gpus": cp.cuda.runtime.getDeviceCount(),
                 "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(), "cuda_driver": cp.cuda.runtime.driverGetVersion(),
                 "memory_free_gib": round(free / 2**30, 2), "memory_total_gib": round(total / 2**30, 2)}
        if self.is_simulator:
            facts["simulator"] = True
        return facts

    def _kernel(self, stem, dtype):
        """The compiled kernel, cached: RawModule.get_function costs host time on every call otherwise."""
        key = (stem, np.dtype(dtype).char, config.CUDA_THREADS)
        fn = self._kernels.get(key)
        if fn is None:
            started = time.perf_counter()
            cp = self._cupy()
            threads = _threads()
            if self._module is None or self._module[0] != threads:  # the reductions' shared memory is sized at compile time
                source = KERNELS_SOURCE.read_text()
                self._module = (threads, cp.RawModule(code=source, options=("--std=c++14", f"-DFASTMNIST_THREADS={threads}")))
                self._kernels.clear()
            fn = self._kernels[key] = self._module[1].get_function(f"{stem}_{'f32' if np.dtype(dtype) == np.float32 else 'f64'}")
            self._compile_total += time.perf_counter() - started  # NVRTC compiles the module at the first get_function
        return fn

    def compile_seconds(self) -> float:
        """Seconds this backend has spent compiling kernels.cu (NVRTC) and loading its functions so far."""
        return self._compile_total

    def _launch(self, stem, dtype, n, args):
        """Grid-stride launch over n elements (capped grid: the kernels loop)."""
        threads = config.CUDA_THREADS
        blocks = max(1, min(int(math.ceil(n / threads)), 65535))
        self._kernel(stem, dtype)((blocks,), (threads,), args)

    # ---- outputs: fresh arrays, or a captured step's own (cupy_graphs.py) ----

    @contextlib.contextmanager
    def _using_arena(self, arena):
        if self._arena is not None:
            raise InvalidArgument("a step is already being recorded or captured on this backend")
        self._arena = arena
        try:
            yield
        finally:
            self._arena = None

    def _empty(self, shape, dtype):
        """An uninitialised device array: from the step arena while a step is recorded or captured."""
        if self._arena is not None:
            return self._arena.take(shape, dtype)
        return self._cupy().empty(shape, dtype)

    def _zeros(self, shape, dtype):
        """A zeroed device array, by kernels.cu's zero_bytes (a launch a graph can capture)."""
        a = self._empty(shape, dtype)
        if a.nbytes:
            self._launch("zero_bytes", np.float32, a.nbytes, (a.reshape(-1).view(np.uint8), _l(a.nbytes)))
        return a

    def _own_gemm(self):
        """kernels.cu's gemm and colsum rather than cuBLAS and CuPy's sum: where config says, and
        always inside a captured step (CuPy cannot capture cuBLAS)."""
        return config.CUPY_OWN_GEMM or self._arena is not None

    def _int64(self, a):
        """Labels as int64 on the device, without an operation where they already are."""
        a = self._c(a)
        return a if a.dtype == np.int64 else a.astype(np.int64)

    def device_rates(self, capacity, dtype, dropouts=0, perm_size=0):
        """A graphed epoch's per-step state on the device for ``capacity`` steps (rates, ``dropouts``
        layers' seeds, a permutation of ``perm_size`` rows, the sums' ledger): see
        :class:`.cupy_graphs.DeviceRates`."""
        from .cupy_graphs import DeviceRates
        return DeviceRates(self, capacity, dtype, dropouts, perm_size)

    @contextlib.contextmanager
    def using_rates(self, rates):
        """Inside, adam_update_many takes its step's scalars from ``rates`` (a DeviceRates) at the
        device's step counter, ignoring the ``t`` and ``lr`` it is given, sgd_update,
        momentum_update and adagrad_update its learning rate (the table's step size), and
        dropout_forward its seeds, the k-th call of a step layer k's, ignoring the seed it is given."""
        previous, self._rates = self._rates, rates
        previous_layer, self._dropout_layer = self._dropout_layer, 0
        try:
            yield rates
        finally:
            self._rates, self._dropout_layer = previous, previous_layer

    def advance_step(self, rates):
        """Move ``rates``' device step counter on by one: the last launch of a captured step."""
        self._kernel("advance_step", rates.dtype)((1,), (1,), (rates.counter,))
        self._dropout_layer = 0  # the next step's first dropout call is layer 0 again

    def gather_batch(self, src, perm, rates, batch_size, rows):
        """(rows, ...) = src[perm[s*batch_size : s*batch_size + rows]] for the device's step s
        (``rates.counter``): a captured step's batch, gathered on the device. ``src`` (N, ...) a
        device array of 4- or 8-byte elements, ``perm`` int64 (a fixed buffer the host refills
        each epoch, outside the graph)."""
        src, perm = self._c(src), self._c(perm)
        if src.dtype.itemsize not in (4, 8) or perm.dtype != np.int64 or perm.ndim != 1:
            raise InvalidArgument(f"gather_batch: src of 4- or 8-byte elements and a 1-D int64 perm expected, "
                                  f"got {src.dtype} and {perm.dtype} {perm.shape}")
        if not 0 < rows <= batch_size:
            raise InvalidArgument(f"gather_batch: rows must be 1..batch_size ({batch_size}), got {rows}")
        out = self._empty((rows,) + src.shape[1:], src.dtype)
        words = src[0].nbytes // 4 if src.shape[0] else 0
        self._launch("gather_rows", rates.dtype, rows * words,
                     (src.reshape(-1).view(np.uint32), perm, rates.counter, _l(perm.size), _l(batch_size), _l(rows),
                      _l(words), out.reshape(-1).view(np.uint32)))
        return out

    def accumulate_step(self, loss, correct, rows, rates):
        """The ledger row of the device's step s (``rates``, a DeviceRates) = the row before it +
        (loss * rows, correct), in float64: a captured step's loss and accuracy summed where they
        are computed, read by the host once per epoch (``rates.rows``)."""
        loss = self._c(loss)
        self._kernel("accumulate_step", loss.dtype)((1,), (1,), (loss, self._c(correct), _l(rows), rates.upload,
                                                               rates.ledger))

    def capture_step(self, step, shape=None):
        """One training step as a CUDA graph: see :func:`fastmnist.backends.cupy_graphs.capture_step`."""
        from .cupy_graphs import capture_step
        return capture_step(self, step, shape)

    def _product(self, a, b, trans_a=False, trans_b=False, bias=None, relu=False):
        """op(a) @ op(b), op transposing where asked (a and b as stored, C-contiguous), then + bias[n]
        and ReLU where given. cuBLAS (cupy.matmul) unless config.CUPY_OWN_GEMM: then kernels.cu's own
        gemm, with bias and ReLU in its epilogue, which a CUDA graph can capture (CuPy cannot capture
        cuBLAS: issue 19); cuBLAS stays the default until a GPU measures the two side by side."""
        cp = self._cupy()
        a, b = self._c(a), self._c(b)
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        n, kb = (b.shape[0], b.shape[1]) if trans_b else (b.shape[1], b.shape[0])
        assert k == kb and a.dtype == b.dtype and (bias is not None or not relu), "internal: _product's operands"
        if not self._own_gemm():
            y = cp.matmul(a.T if trans_a else a, b.T if trans_b else b)
            if bias is not None:
                self._launch("bias_act", y.dtype, y.size, (y, self._c(bias), _l(m), _i(n), _i(relu)))
            return y
        if m == 0 or n == 0 or k == 0:  # no grid to launch (an empty sum is zero)
            y = self._zeros((m, n), a.dtype)
            if bias is not None and y.size:
                self._launch("bias_act", y.dtype, y.size, (y, self._c(bias), _l(m), _i(n), _i(relu)))
            return y
        y = self._empty((m, n), a.dtype)
        grid = ((m + GEMM_TILE - 1) // GEMM_TILE, (n + GEMM_TILE - 1) // GEMM_TILE)  # rows on x: no 65535 cap
        self._kernel("gemm", a.dtype)(grid, (16, 16), (a, b, self._c(bias) if bias is not None else y, y, _i(m), _i(n), _i(k),
                                                       _i(trans_a), _i(trans_b), _i(bias is not None), _i(relu), _i(0)))
        return y

    def _column_sums(self, x):
        """x (M, N) -> (N,): CuPy's sum, or kernels.cu's colsum under config.CUPY_OWN_GEMM (capturable)."""
        if not self._own_gemm():
            return x.sum(axis=0)
        out = self._empty(x.shape[1], x.dtype)
        self._launch("colsum", x.dtype, x.shape[1], (self._c(x), _i(x.shape[0]), _i(x.shape[1]), out))
        return out

    def _block(self, stem, dtype, args):
        """One block of config.CUDA_THREADS threads (the shared-memory reductions)."""
        self._kernel(stem, dtype)((1,), (config.CUDA_THREADS,), args)

    def _in_place(self, op, **arrays):
        """In-place updates must write the caller's own device memory: no silent copy."""
        cp = self._cupy()
        for what, a in arrays.items():
            if not isinstance(a, cp.ndarray):
                raise WrongType(f"{op}: {what} must be a device array (cupy.ndarray) for an in-place update on the GPU, "
                                f"got {type(a).__name__}; move it with backend.asarray first")
            if not a.flags.c_contiguous:
                raise InvalidArgument(f"{op}: {what} must be C-contiguous for an in-place update, got strides {a.strides}")

    def _c(self, a):
        """A C-contiguous device array: host (NumPy) inputs of the public kernels are moved first."""
        cp = self._cupy()
        return cp.ascontiguousarray(a if isinstance(a, cp.ndarray) else self.asarray(a))

    # ---- array plumbing ----

    def asarray(self, a, dtype=None):
        cp = self._cupy()
        try:
            return cp.ascontiguousarray(cp.asarray(a, dtype=dtype))
        except cp.cuda.memory.OutOfMemoryError as exc:
            nbytes = getattr(a, "nbytes", 0)
            raise OutOfMemory(f"GPU out of memory moving an array of {nbytes / 2**20:.1f} MiB to the device ({exc}); "
                              "use a smaller batch or dataset") from None

    def to_numpy(self, a):
        return self._cupy().asnumpy(a)

    def synchronize(self):
        self._cupy().cuda.get_current_stream().synchronize()

    def one_hot(self, labels, m, dtype):
        cp = self._cupy()
        return cp.eye(m, dtype=dtype)[labels]

    # ---- convolution ----

    def im2col(self, x, kh, kw, stride=1, pad=0):
        n, c, h, w, oh, ow = C.check_im2col(x, kh, kw, stride, pad)
        out = self._empty((n * oh * ow, c * kh * kw), x.dtype)
        self._launch("im2col", x.dtype, out.size, (self._c(x), _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(stride), _i(pad),
                                                   _i(oh), _i(ow), out))
        return out

    def col2im(self, col, x_shape, kh, kw, stride=1, pad=0):
        n, c, h, w, oh, ow = C.check_col2im(col, x_shape, kh, kw, stride, pad)
        return self._col2im(self._c(col), n, c, h, w, kh, kw, stride, pad, oh, ow)

    def _col2im(self, col, n, c, h, w, kh, kw, stride, pad, oh, ow):
        x = self._empty((n, c, h, w), col.dtype)
        self._launch("col2im", col.dtype, x.size, (col, _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(stride), _i(pad),
                                                   _i(oh), _i(ow), x))
        return x

    def conv2d_forward(self, x, w, b, stride=1, pad=0):
        return self.conv2d_forward_cached(x, w, b, stride, pad)[0]

    def conv2d_forward_cached(self, x, w, b, stride=1, pad=0):
        n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
        f, _, kh, kw = w.shape
        cols = self.im2col(x, kh, kw, stride, pad)
        rows = self._product(cols, self._c(w).reshape(f, -1), trans_b=True)
        y = self._empty((n, f, oh, ow), x.dtype)
        self._launch("rows_to_nchw", x.dtype, y.size, (rows, self._c(b), _l(n), _i(f), _l(oh * ow), y))
        return y, (cols, x.shape, stride, pad)

    def conv2d_backward(self, dy, x, w, stride=1, pad=0):
        C.check_conv2d_backward(dy, x, w, stride, pad)
        cols = self.im2col(x, w.shape[2], w.shape[3], stride, pad)
        return self.conv2d_backward_cached(dy, (cols, x.shape, stride, pad), w)

    def conv2d_backward_cached(self, dy, cache, w, need_dx=True):
        cols, x_shape, stride, pad = cache
        f, c, kh, kw = w.shape
        n, _, oh, ow = dy.shape
        rows = self._empty((n * oh * ow, f), dy.dtype)
        self._launch("nchw_to_rows", dy.dtype, rows.size, (self._c(dy), _l(n), _i(f), _l(oh * ow), rows))
        return self._conv_grads(rows, cols, w, x_shape, stride, pad, oh, ow, need_dx)

    def _conv_grads(self, rows, cols, w, x_shape, stride, pad, oh, ow, need_dx):
        f, c, kh, kw = w.shape
        dw = self._product(rows, cols, trans_a=True).reshape(w.shape)
        db = self._column_sums(rows)
        if not need_dx:
            return None, dw, db
        dcols = self._product(rows, self._c(w).reshape(f, -1))
        n, _, h, wd = x_shape
        return self._col2im(dcols, n, c, h, wd, kh, kw, stride, pad, oh, ow), dw, db

    def conv2d_relu_maxpool_forward(self, x, w, b, stride=1, pad=0, size=2, pool_stride=2, channels_last=False):
        """Fused conv -> ReLU -> max-pool: im2col, one cuBLAS product, one pooling kernel (the
        ``channels_last`` layout hint is not used: y is always (N, F, PH, PW) memory)."""
        n, c, h, wd, oh, ow = C.check_conv2d_forward(x, w, b, stride, pad)
        f, _, kh, kw = w.shape
        ph = C.conv_out("conv2d_relu_maxpool_forward", oh, size, pool_stride, 0, "height")
        pw = C.conv_out("conv2d_relu_maxpool_forward", ow, size, pool_stride, 0, "width")
        cols = self.im2col(x, kh, kw, stride, pad)
        rows = self._product(cols, self._c(w).reshape(f, -1), trans_b=True)
        y = self._empty((n, f, ph, pw), x.dtype)
        arg = self._empty((n, f, ph, pw), np.int32)
        self._launch("rows_pool", x.dtype, y.size, (rows, self._c(b), _l(n), _i(f), _i(oh), _i(ow), _i(size), _i(pool_stride),
                                                    _i(ph), _i(pw), y, arg))
        return y, (cols, x.shape, stride, pad, oh, ow, y, arg)

    def conv2d_relu_maxpool_backward(self, dy, cache, w, need_dx=True):
        cols, x_shape, stride, pad, oh, ow, y, arg = cache
        f = w.shape[0]
        n, _, ph, pw = dy.shape
        rows = self._zeros((n * oh * ow, f), dy.dtype)
        self._launch("pool_to_rows", dy.dtype, dy.size, (self._c(dy), y, arg, _l(n), _i(f), _i(ph), _i(pw), _i(oh * ow), rows))
        return self._conv_grads(rows, cols, w, x_shape, stride, pad, oh, ow, need_dx)

    # ---- pooling ----

    def maxpool2d_forward(self, x, size=2, stride=2):
        n, c, h, w, oh, ow = C.check_maxpool2d_forward(x, size, stride)
        y = self._empty((n, c, oh, ow), x.dtype)
        arg = self._empty((n, c, oh, ow), np.int64)
        self._launch("maxpool", x.dtype, y.size, (self._c(x), _l(n * c), _i(h), _i(w), _i(size), _i(stride), _i(oh),
                                                  _i(ow), y, arg))
        return y, arg

    def maxpool2d_backward(self, dy, argmax, x_shape, size=2, stride=2, check=True):
        """``check=False`` skips the host read that reports out-of-plane argmax values (the kernel
        skips them either way, never writing out of bounds); the layers pass it, so no step syncs."""
        n, c, h, w = C.check_maxpool2d_backward(dy, argmax, x_shape, size, stride)
        dx = self._zeros((n, c, h, w), dy.dtype)
        bad = self._zeros(1, np.int32)
        self._launch("maxpool_backward", dy.dtype, dy.size, (self._c(dy), self._int64(argmax), _l(n * c),
                                                             _l(dy.shape[2] * dy.shape[3]), _l(h * w), dx, bad))
        if check and int(bad[0]):  # a host read
            C.check_argmax_range(argmax, h, w, int(argmax.min()), int(argmax.max()))
        return dx

    # ---- affine ----

    def affine_forward(self, x, w, b):
        C.check_affine_forward(x, w, b)
        return self._product(x, w, bias=b)

    def affine_backward(self, dy, x, w, need_dx=True):
        C.check_affine_backward(dy, x, w)
        dx = self._product(dy, w, trans_b=True) if need_dx else None
        return dx, self._product(x, dy, trans_a=True), self._column_sums(dy)

    # ---- elementwise ----

    def _unary(self, stem, x):
        x = self._c(x)
        out = self._empty(x.shape, x.dtype)
        self._launch(stem, x.dtype, x.size, (x, _l(x.size), out))
        return out

    def _binary(self, stem, a, b):
        a, b = self._c(a), self._c(b)
        out = self._empty(a.shape, a.dtype)
        self._launch(stem, a.dtype, a.size, (a, b, _l(a.size), out))
        return out

    def relu_forward(self, x):
        C.check_unary("relu_forward", x)
        return self._unary("relu", x)

    def relu_backward(self, dy, x):
        C.check_unary_backward("relu_backward", dy, x)
        return self._binary("relu_backward", dy, x)

    def sigmoid_forward(self, x):
        C.check_unary("sigmoid_forward", x)
        return self._unary("sigmoid", x)

    def sigmoid_backward(self, dy, y):
        C.check_unary_backward("sigmoid_backward", dy, y, "y")
        return self._binary("sigmoid_backward", dy, y)

    def affine_warp(self, x, theta):
        """x (N, C, H, W), theta float64 (N, 2, 3) -> (N, C, H, W); see the contract."""
        n, c, h, w = C.check_affine_warp(x, theta)
        x = self._c(x)
        theta = self._device_f64(theta)
        out = self._empty(x.shape, x.dtype)
        self._launch("affine_warp", x.dtype, n * h * w, (x, theta, _i(n), _i(c), _i(h), _i(w), out))
        return out

    def elastic_warp(self, x, grid):
        """x (N, C, H, W), grid float64 (N, 2, GH, GW) -> (N, C, H, W); see the contract."""
        n, c, h, w = C.check_elastic_warp(x, grid)
        x, grid = self._c(x), self._device_f64(grid)
        out = self._empty(x.shape, x.dtype)
        self._launch("elastic_warp", x.dtype, n * h * w, (x, grid, _i(grid.shape[2]), _i(grid.shape[3]), _i(n), _i(c),
                                                          _i(h), _i(w), out))
        return out

    def stroke_width(self, x, amount):
        """x (N, C, H, W), amount float64 (N,) in [-1, 1] -> (N, C, H, W); see the contract."""
        n, c, h, w = C.check_per_sample("stroke_width", x, amount, "amount", -1.0, 1.0)
        x, amount = self._c(x), self._device_f64(amount)
        out = self._empty(x.shape, x.dtype)
        self._launch("stroke_width", x.dtype, x.size, (x, amount, _i(n), _i(c), _i(h), _i(w), out))
        return out

    def gaussian_blur(self, x, sigma):
        """x (N, C, H, W), sigma float64 (N,) in [0, MAX_BLUR_SIGMA] -> (N, C, H, W); see the contract."""
        cp = self._cupy()
        n, c, h, w = C.check_per_sample("gaussian_blur", x, sigma, "sigma", 0.0, C.MAX_BLUR_SIGMA)
        x = self._c(x)
        taps = self._device_f64(C.blur_taps(sigma, xp=cp if isinstance(sigma, cp.ndarray) else np))  # no host read
        out = self._empty(x.shape, x.dtype)
        self._launch("gaussian_blur", x.dtype, x.size, (x, taps, _i(C.BLUR_RADIUS), _i(n), _i(c), _i(h), _i(w), out))
        return out

    def _device_f64(self, values):
        """A float64 host or device array (augmentation's per-sample maps, amounts, taps) on the device
        and contiguous: one small upload from the host, nothing for a device array."""
        cp = self._cupy()
        return cp.ascontiguousarray(values if isinstance(values, cp.ndarray) else cp.asarray(values, dtype=np.float64))

    def dropout_forward(self, x, p, seed):
        C.check_dropout(x, p, seed)
        x = self._c(x)
        y, mask = self._empty(x.shape, x.dtype), self._empty(x.shape, x.dtype)
        rates = self._rates
        if rates is not None and rates.dropouts:  # a step of a graph: its seed from the device's table
            layer, self._dropout_layer = self._dropout_layer, self._dropout_layer + 1
            if layer >= rates.dropouts:
                raise InvalidArgument(f"dropout_forward: call {layer + 1} in one step, but the device table "
                                      f"holds seeds for {rates.dropouts} dropout layers")
            self._launch("dropout_at", x.dtype, x.size, (x, _l(x.size), np.float64(p), np.float64(1.0 / (1.0 - p)),
                                                         rates.seeds, rates.counter, _l(rates.dropouts), _l(layer),
                                                         y, mask))
            return y, mask
        self._launch("dropout", x.dtype, x.size, (x, _l(x.size), np.float64(p), np.float64(1.0 / (1.0 - p)), np.uint64(seed),
                                                  y, mask))
        return y, mask

    def dropout_backward(self, dy, mask):
        C.check_unary_backward("dropout_backward", dy, mask, "mask")
        return self._binary("mul", dy, mask)

    # ---- losses ----

    def softmax(self, x):
        C.check_softmax(x)
        x = self._c(x)
        out = self._empty(x.shape, x.dtype)
        self._launch("softmax", x.dtype, x.shape[0], (x, _i(x.shape[0]), _i(x.shape[1]), out))
        return out

    def softmax_cross_entropy(self, logits, labels, check=True):
        """Fused softmax + mean cross-entropy + gradient, one launch. ``check=False`` skips the host
        read that validates label ranges (the trainer validated them once, on the host)."""
        C.check_softmax_cross_entropy(logits, labels)
        x = self._c(logits)
        d = self._empty(x.shape, x.dtype)
        loss = self._empty((), x.dtype)
        bad = self._zeros(1, np.int32)
        self._block("softmax_ce", x.dtype, (x, self._int64(labels), _i(x.shape[0]), _i(x.shape[1]), d,
                                            loss, bad))
        if check and int(bad[0]):
            C.check_label_range("softmax_cross_entropy", int(labels.min()), int(labels.max()), x.shape[1])
        return loss, d

    def mse_loss(self, y, t):
        C.check_mse(y, t)
        y = self._c(y)
        d = self._empty(y.shape, y.dtype)
        loss = self._empty((), y.dtype)
        self._block("mse", y.dtype, (y, self._c(t), _l(y.size), _i(y.shape[0]), d, loss))
        return loss, d

    def count_correct(self, logits, labels):
        C.check_count_correct(logits, labels)
        count = self._zeros((), np.int64)
        args = (self._c(logits), self._int64(labels), _i(logits.shape[0]), _i(logits.shape[1]), count)
        self._launch("count_correct", logits.dtype, logits.shape[0], args)
        return count

    # ---- optimizers ----

    def _rate_update(self, kernel, param, arrays, lr, extra=()):
        """Launch optimizer ``kernel`` on ``arrays`` (param first) at learning rate ``lr``; inside
        using_rates (a step of a graph) its ``_at`` form, which reads the rate from the device's
        table at the step counter instead."""
        f, n = param.dtype, _l(param.size)
        rate = (self._rates.table, self._rates.counter) if self._rates is not None else (_s(f, lr),)
        self._launch(kernel + ("_at" if self._rates is not None else ""), f, param.size,
                     tuple(arrays) + (n,) + rate + tuple(_s(f, e) for e in extra))

    def sgd_update(self, param, grad, lr):
        C.check_update("sgd_update", param, grad, lr)
        self._in_place("sgd_update", param=param)
        self._rate_update("sgd", param, (param, self._c(grad)), lr)

    def momentum_update(self, param, grad, velocity, lr, momentum=0.9):
        C.check_update("momentum_update", param, grad, lr, velocity=velocity)
        self._in_place("momentum_update", param=param, velocity=velocity)
        self._rate_update("momentum", param, (param, self._c(grad), velocity), lr, (momentum,))

    def adagrad_update(self, param, grad, h, lr, eps=1e-7):
        C.check_update("adagrad_update", param, grad, lr, h=h)
        self._in_place("adagrad_update", param=param, h=h)
        self._rate_update("adagrad", param, (param, self._c(grad), h), lr, (eps,))

    def adam_update(self, param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        C.check_update("adam_update", param, grad, lr, m=m, v=v)
        t = C.require_int("adam_update", "t", t, 1)
        self._in_place("adam_update", param=param, m=m, v=v)
        f = param.dtype
        self._launch("adam", f, param.size, (param, self._c(grad), m, v, _l(param.size), _s(f, beta1), _s(f, beta2),
                                             *(_s(f, c) for c in C.adam_corrections(lr, t, beta1, beta2)), _s(f, eps)))

    def adam_update_many(self, params, grads, states, t, lr, beta1, beta2, eps):
        """One launch for the Adam step of every parameter (the optimizer uses it when present).

        The tables of parameter, m and v pointers and the size offsets are built once per set of
        arrays and kept with references to those arrays, so their memory cannot be freed and reused by
        other arrays while a table points at it. Gradients are new arrays every step: their pointers go
        into the entry's own device table with one small host-to-device copy per step.
        """
        cp = self._cupy()
        C.check_update_many("adam_update_many", params, grads, states, ("m", "v"), lr)
        t = C.require_int("adam_update_many", "t", t, 1)
        self._in_place("adam_update_many", **{f"params[{k}]": p for k, p in enumerate(params)},
                       **{f"states[{k}]['{s}']": st[s] for k, st in enumerate(states) for s in ("m", "v")})
        grads = [self._c(g) for g in grads]
        f = params[0].dtype
        ms, vs = [s["m"] for s in states], [s["v"] for s in states]
        key = (np.dtype(f).char,) + tuple((a.data.ptr, a.size) for group in (params, ms, vs) for a in group)
        if self._arena is not None:
            # a captured step's own tables: another graph of the model (another batch shape) has other
            # gradient buffers, and rewriting a shared table would point this one's replays at them
            key += tuple(g.data.ptr for g in grads)
        entry = self._tables.get(key)
        if entry is None:
            table = lambda arrays: cp.asarray(np.array([a.data.ptr for a in arrays], np.uint64))
            sizes = np.concatenate([[0], np.cumsum([p.size for p in params])]).astype(np.int64)
            if len(self._tables) >= 8:  # a few models at a time; drop the oldest
                self._tables.pop(next(iter(self._tables)))
            entry = self._tables[key] = {"p": table(params), "m": table(ms), "v": table(vs), "g": table(grads),
                                         "offsets": cp.asarray(sizes), "total": int(sizes[-1]), "keep": (params, ms, vs),
                                         "grads": [g.data.ptr for g in grads]}
            if self._arena is not None:
                self._arena.keep.append(entry)  # alive as long as the graph that reads it
        if [g.data.ptr for g in grads] != entry["grads"]:
            entry["g"].set(np.array([g.data.ptr for g in grads], np.uint64))
            entry["grads"] = [g.data.ptr for g in grads]
        tables = (entry["p"], entry["g"], entry["m"], entry["v"], entry["offsets"], _i(len(params)), _s(f, beta1),
                  _s(f, beta2))
        rates = self._rates
        if rates is not None:  # the scalars at the device's step counter (advance_step moves it on)
            if rates.dtype != np.dtype(f):
                raise InvalidArgument(f"adam_update_many: the device rates are {rates.dtype}, the parameters {np.dtype(f)}")
            self._launch("adam_many_rates", f, entry["total"], tables + (rates.table, rates.counter, _s(f, eps)))
            return
        step_size, sqrt_bc2 = C.adam_corrections(lr, t, beta1, beta2)
        self._launch("adam_many", f, entry["total"], tables + (_s(f, step_size), _s(f, sqrt_bc2), _s(f, eps)))


# ---- out of device memory: one clear OutOfMemory (a MemoryError) from every public method ----

def _gpu_oom_to_memory_error(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if self._cp is None or not isinstance(exc, self._cp.cuda.memory.OutOfMemoryError):
                raise
            shapes = ", ".join(str(tuple(a.shape)) for a in args if hasattr(a, "shape"))
            raise OutOfMemory(f"GPU out of memory in {method.__name__} (inputs {shapes or 'none'}): {exc} "
                              "Use a smaller batch size (--batch-size), or evaluate in smaller batches.") from None
    return wrapper


for _name, _method in list(vars(CupyBackend).items()):
    if inspect.isfunction(_method) and not _name.startswith("_") and _name not in ("available", "info", "asarray"):
        setattr(CupyBackend, _name, _gpu_oom_to_memory_error(_method))

backend = CupyBackend(LazyCupy())  # the `cupy` backend of the registry
