"""A strict stand-in for the part of CuPy the cupy backend uses, over the CUDA simulator.

``SimCupy()`` looks like the ``cupy`` module to ``cupy_backend.py``: ``SimArray`` is a device
array that lives in host memory but behaves like ``cupy.ndarray`` where it matters for finding
faults: NumPy refuses it (``np.asarray`` raises as CuPy does), mixing it with NumPy arrays raises,
reductions return 0-d arrays (not host scalars), and every host read (``int()``, ``float()``,
``.item()``, ``.get()``, ``asnumpy``) is counted as a host synchronisation. ``empty`` fills
memory with NaN (floats) or a large negative sentinel (integers), so an output a kernel forgot
to write shows up. ``counters`` counts own-kernel launches and cuBLAS-like products
(``kernel_launches``), CuPy's other array operations (``array_ops``), host reads
(``host_reads``), host-to-device copies (``h2d_copies``), device allocations (``allocations``) and
graph replays (``graph_launches``, ``graph_nodes``); the tests read them to prove a training step
does not synchronise. Stream capture and graphs, with the rules a GPU enforces: simgraph.py.
"""
from __future__ import annotations

import operator
import weakref

import numpy as np

from . import sim
from .simgraph import HINT, Capture, CaptureError, SimGraph, root

POISON_INT = -(2**31) + 7
REFUSE = ("Unsupported type <class 'numpy.ndarray'> (the CUDA simulator refuses host arrays where CuPy would: "
          "move them with cupy.asarray first)")


class OutOfMemoryError(MemoryError):
    def __init__(self, size, total, limit):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, "
                         f"simulated device memory {limit:,} bytes).")


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


def _unwrap(x, host_ok=False):
    if isinstance(x, SimArray):
        return x._a
    if isinstance(x, np.ndarray) and not host_ok:
        raise TypeError(REFUSE)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, host_ok) for v in x)
    return x


class SimArray:
    """A simulated ``cupy.ndarray``: a NumPy array that NumPy may not touch implicitly."""

    __array_ufunc__ = None  # numpy operators defer to ours, numpy ufuncs refuse

    def __init__(self, a: np.ndarray, owner: SimCupy):
        self._a, self._cp = a, owner

    # -- attributes --
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: self._wrap(self._a.T))
    data = property(lambda self: _Pointer(self._a.ctypes.data))

    def _wrap(self, r):
        return self._cp._wrap(r)

    def __repr__(self):
        return f"SimArray({self._a!r})"

    # -- host reads: each one a synchronisation on a GPU --
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def _read(self, how):
        self._cp.forbid_in_capture(f"a host read ({how} of a device array)")
        self._cp.counters["host_reads"] += 1
        return self._a

    def get(self, stream=None, out=None):
        return self._read(".get()").copy()

    def item(self):
        return self._read(".item()").item()

    def tolist(self):
        return self._read(".tolist()").tolist()

    def __int__(self):
        return int(self._read("int()"))

    def __float__(self):
        return float(self._read("float()"))

    def __bool__(self):
        return bool(self._read("bool(), or a Python branch on it,"))

    def __complex__(self):
        return complex(self._read("complex()"))

    def set(self, host, stream=None):
        self._cp.forbid_in_capture("a host-to-device copy (.set())")
        self._cp.counters["h2d_copies"] += 1
        self._a[...] = np.asarray(host)

    # -- indexing and views --
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self._wrap(row) for row in self._a)

    def __getitem__(self, key):
        r = self._a[_unwrap(key, host_ok=True)]
        if isinstance(r, np.ndarray) and root(r) is not root(self._a):
            self._cp.forbid_in_capture("indexing that copies (a gather kernel)")
        return self._wrap(r)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):
            self._cp.forbid_in_capture("a host-to-device copy (assigning a host array)")
            self._cp.counters["h2d_copies"] += 1
        else:
            self._cp.forbid_in_capture("an assignment into a device array (a CuPy kernel)")
        self._a[_unwrap(key, host_ok=True)] = _unwrap(value, host_ok=True)

    def __getattr__(self, attr):  # reshape, astype, sum, min, max, argmax, ravel, copy, fill, ...
        if attr.startswith("__"):  # never numpy's __array_interface__ & co: NumPy must not read device memory
            raise AttributeError(attr)
        method = getattr(self._a, attr)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            if attr not in _VIEWS:
                self._cp.forbid_in_capture(f"the CuPy array operation .{attr}()")
            r = method(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
            if isinstance(r, np.ndarray) and root(r) is not root(self._a):  # a view method that copied
                self._cp.forbid_in_capture(f".{attr}() that copies")
            self._cp.counters["array_ops"] += 1
            return self._wrap(r)
        return call


_VIEWS = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "ravel"})  # no work when they are views


def _binary(op, reflected=False, inplace=False, unary=False):
    def method(self, other=None):
        if unary:
            self._cp.forbid_in_capture(f"the CuPy array operation {op.__name__}")
            self._cp.counters["array_ops"] += 1
            return self._wrap(op(self._a))
        other = _unwrap(other)
        self._cp.forbid_in_capture(f"the CuPy array operation {op.__name__}")
        self._cp.counters["array_ops"] += 1
        if inplace:
            op(self._a, other)
            return self
        return self._wrap(op(other, self._a) if reflected else op(self._a, other))
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "matmul"):
    _op = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(SimArray, f"__{_name}__", _binary(_op))
    setattr(SimArray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(SimArray, f"__i{_name}__", _binary(getattr(operator, f"i{_name}"), inplace=True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(SimArray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(SimArray, f"__{_name}__", _binary(getattr(operator, _name), unary=True))


class _Namespace:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


class _Stream:
    """``cupy.cuda.Stream``: ``with stream:`` makes it current; it can capture a graph."""

    def __init__(self, owner, null=False):
        self._cp, self.null = owner, null

    def synchronize(self):
        self._cp.forbid_in_capture("stream.synchronize()")
        self._cp.counters["host_reads"] += 1

    def __enter__(self):
        self._cp._streams.append(self)
        return self

    def __exit__(self, *exc):
        self._cp._streams.pop()

    def begin_capture(self, mode=None):
        self._cp.begin_capture(self)

    def end_capture(self) -> SimGraph:
        return self._cp.end_capture(self)

    def is_capturing(self) -> bool:
        return self._cp._capture is not None and self._cp._capture.stream is self


class _Event:
    def __init__(self, owner, *args, **kwargs):
        self._cp, self.time = owner, 0.0

    def record(self, stream=None):
        import time
        self.time = time.perf_counter()

    def synchronize(self):
        self._cp.forbid_in_capture("event.synchronize()")
        self._cp.counters["host_reads"] += 1


class SimModule:
    """``cupy.RawModule`` over the simulator: compiled with g++ on first use, cached by content."""

    def __init__(self, owner, code=None, options=(), **_):
        self._cp = owner
        self._lib, self._kernels = sim.build(code, tuple(options))
        self._live = owner

    def get_function(self, name):
        if (id(self), name) not in self._cp._loaded:  # per module: a rebuilt one loads afresh
            self._cp.forbid_in_capture(f"loading kernel {name!r} for the first time")
            self._cp._loaded.add((id(self), name))
        if name not in self._kernels:
            raise RuntimeError(f"CUDA simulator: no kernel named {name!r} in the module "
                               f"(CUDA_ERROR_NOT_FOUND on a GPU); it has {', '.join(sorted(self._kernels))}")
        return sim.Kernel(self._lib, name, self._kernels[name], self._cp, self._cp.counters)


class SimCupy:
    """The fake ``cupy`` module. One instance is one simulated device."""

    __version__ = "sim"
    ndarray = SimArray

    def __init__(self, memory_bytes: int = 8 * 2**30, seed: int = 0):
        self.memory_bytes = memory_bytes
        self.counters = dict.fromkeys(("kernel_launches", "array_ops", "host_reads", "h2d_copies", "allocations",
                                       "graph_launches", "graph_nodes", "capture_allocations"), 0)
        self._capture: Capture | None = None
        self._null, self._streams, self._loaded = _Stream(self, null=True), [], set()
        self._live = weakref.WeakValueDictionary()  # data pointer -> owning numpy array
        self._used = 0
        self._rng = np.random.default_rng(seed)
        props = {"name": b"CUDA simulator (CPU)", "major": 0, "minor": 0, "totalGlobalMem": memory_bytes}
        runtime = _Namespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: dict(props),
                             memGetInfo=lambda: (memory_bytes - self._used, memory_bytes),
                             runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0)
        self.cuda = _Namespace(runtime=runtime, memory=_Namespace(OutOfMemoryError=OutOfMemoryError),
                               get_current_stream=self.current_stream, Stream=lambda *a, **k: _Stream(self),
                               Event=lambda *a, **k: _Event(self), get_elapsed_time=self._elapsed,
                               Device=lambda i=0: _Namespace(synchronize=lambda: _Stream(self).synchronize()),
                               graph=_Namespace(Graph=SimGraph), CaptureError=CaptureError)
        self.random = _Namespace(standard_normal=lambda size=None, dtype=np.float64: self._random(
            "standard_normal", size, dtype), random=lambda size=None, dtype=np.float64: self._random("random", size, dtype))

    # -- streams and capture (rules: simgraph.py) --
    def current_stream(self):
        return self._streams[-1] if self._streams else self._null

    def forbid_in_capture(self, what: str, error=CaptureError):
        """Raise ``error`` (and break the capture, as a GPU would) if a capture is open."""
        if self._capture is not None:
            self._capture.broken = self._capture.broken or what
            raise error(f"{what} during stream capture: a GPU refuses it and invalidates the capture ({HINT})")

    def begin_capture(self, stream):
        if stream.null:
            raise CaptureError("stream capture on the null (legacy) stream: capture on a cupy.cuda.Stream() of "
                               "your own, made current with `with stream:`")
        if self._capture is not None:
            raise CaptureError("a second stream capture while one is open: end the first one first")
        self._capture = Capture(stream)

    def end_capture(self, stream) -> SimGraph:
        capture = self._capture
        if capture is None or capture.stream is not stream:
            raise CaptureError("end_capture() on a stream that is not capturing")
        self._capture = None
        if capture.broken:
            raise CaptureError(f"the capture was invalidated by {capture.broken}; no graph was made")
        return SimGraph(self, capture)

    def capture_for_launch(self, kernel: str):
        """The open capture an own-kernel launch goes into, or None (run it now)."""
        if self._capture is None:
            return None
        if self.current_stream() is not self._capture.stream:
            self.forbid_in_capture(f"launching {kernel} on another stream than the capturing one")
        return self._capture

    def _elapsed(self, start, end):
        self.forbid_in_capture("an event timing query")
        return 1e3 * (end.time - start.time)

    def _random(self, kind, size, dtype):
        self.forbid_in_capture(f"cupy.random.{kind} (cuRAND)")
        return self._wrap(getattr(self._rng, kind)(size).astype(dtype))

    # -- allocation bookkeeping --
    def _wrap(self, r):
        if isinstance(r, np.generic):
            r = np.asarray(r)  # reductions give 0-d device arrays, as CuPy does
        if isinstance(r, tuple):
            return tuple(self._wrap(v) for v in r)
        if not isinstance(r, np.ndarray):
            return r
        owner = root(r)  # a copy NumPy returns as a view of its own temporary counts as new memory too
        if owner.ctypes.data not in self._live and owner.nbytes:
            self._track(owner)
        return SimArray(r, self)

    def _track(self, a):
        if self._used + a.nbytes > self.memory_bytes:
            raise OutOfMemoryError(a.nbytes, self._used, self.memory_bytes)
        self.counters["allocations"] += 1
        if self._capture is not None:  # from the pool during capture: it must outlive the graph
            self.counters["capture_allocations"] += 1
            self._capture.allocations.append(weakref.ref(a))
        self._used += a.nbytes
        self._live[a.ctypes.data] = a
        weakref.finalize(a, self._release, a.nbytes)

    def _release(self, nbytes):
        self._used -= nbytes

    def _alloc(self, shape, dtype, fill):
        if fill is not None:
            self.forbid_in_capture("zeros/ones/full (a fill kernel of CuPy's; allocate before capture)")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self._used + nbytes > self.memory_bytes:  # before numpy tries to allocate it
            raise OutOfMemoryError(nbytes, self._used, self.memory_bytes)
        a = np.empty(shape, dtype)
        if fill is not None:
            a.fill(fill)
        elif dtype.kind == "f":
            a.fill(np.nan)
        elif dtype.kind in "iu":
            a.fill(POISON_INT if dtype.kind == "i" and dtype.itemsize >= 4 else np.iinfo(dtype).max)
        return self._wrap(a)

    def pointer_of(self, arg, where):
        if not isinstance(arg, SimArray):
            raise sim.SimLaunchError(f"{where} got {type(arg).__name__}; a kernel needs a device array")
        if not arg._a.flags.c_contiguous:
            raise sim.SimLaunchError(f"{where} got a non-contiguous array (shape {arg.shape}, strides {arg.strides}); "
                                     "the kernel would read it as if it were contiguous")
        return arg._a.ctypes.data

    def check_table(self, table, pointee, where):
        if np.dtype(table.dtype) not in (np.dtype("uint64"), np.dtype("int64")):
            raise sim.SimLaunchError(f"{where}: a pointer table must be a uint64 array, got {table.dtype}")
        for k, ptr in enumerate(table._a.ravel().tolist()):
            owner = self._live.get(ptr)
            if owner is None or owner.dtype != pointee:
                what = "no live device array" if owner is None else f"an array of {owner.dtype}"
                raise sim.SimLaunchError(f"{where}: table entry {k} (0x{ptr:x}) points at {what}; "
                                         f"expected the start of a live {pointee} array")

    # -- the CuPy functions the backend, trainer and benchmarks use --
    def empty(self, shape, dtype=np.float64, order="C"):
        return self._alloc(shape, dtype, None)

    def empty_like(self, a, dtype=None):
        return self._alloc(a.shape, dtype or a.dtype, None)

    def zeros(self, shape, dtype=np.float64):
        return self._alloc(shape, dtype, 0)

    def zeros_like(self, a, dtype=None):
        return self._alloc(a.shape, dtype or a.dtype, 0)

    def ones(self, shape, dtype=np.float64):
        return self._alloc(shape, dtype, 1)

    def full(self, shape, value, dtype=None):
        return self._alloc(shape, dtype or np.asarray(value).dtype, value)

    def asarray(self, a, dtype=None, order=None):
        if isinstance(a, SimArray):
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        self.forbid_in_capture("a host-to-device copy (cupy.asarray of a host array)")
        self.counters["h2d_copies"] += 1
        host = np.asarray(a, dtype=dtype)
        out = self._alloc(host.shape, host.dtype, 0)
        out._a[...] = host
        return out

    array = asarray

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, SimArray):
            raise TypeError(REFUSE)
        if a._a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        self.forbid_in_capture("a copy to a contiguous array (a CuPy kernel)")
        self.counters["array_ops"] += 1
        return self._wrap(np.ascontiguousarray(a._a, dtype=dtype))

    def asnumpy(self, a, stream=None):
        if isinstance(a, SimArray):
            return a.get()
        return np.asarray(a)

    def matmul(self, a, b, out=None):
        self.forbid_in_capture("cuBLAS (matmul; CuPy's cublas.setStream raises NotImplementedError during capture, "
                               "CuPy issue #6290)", NotImplementedError)
        self.counters["kernel_launches"] += 1  # one cuBLAS call
        return self._wrap(np.matmul(_unwrap(a), _unwrap(b)))

    def RawModule(self, code=None, options=(), **kwargs):
        self.forbid_in_capture("compiling a module")
        return SimModule(self, code=code, options=options, **kwargs)

    def get_default_memory_pool(self):
        return _Namespace(used_bytes=lambda: self._used, total_bytes=lambda: self._used, free_all_blocks=lambda: None)

    def __getattr__(self, attr):  # everything else: numpy's function on device arrays, counted
        target = getattr(np, attr)
        if isinstance(target, type) or not callable(target):
            return target  # dtypes (cupy.float32), constants

        def call(*args, **kwargs):
            self.forbid_in_capture(f"the CuPy operation cupy.{attr}()")
            self.counters["array_ops"] += 1
            return self._wrap(target(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
        return call
