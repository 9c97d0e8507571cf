"""A BLAS ``gemm`` called from inside a Numba parallel region: one product per thread.

Inside ``training_context`` BLAS runs on one thread, and a dense layer's products are spread over
the cores by hand (numba_backend._matmul, affine_backward). Handing the pieces to a Python thread
pool made two kinds of threads share the cores: the pool's, woken through a futex for every
product, and Numba's OpenMP threads, which then cannot spin between parallel regions without
taking the pool's core. Here the pieces run as the iterations of one ``prange`` instead, each an
ordinary ``cblas_?gemm`` call, so the same threads run every parallel piece of a training step.
With NumPy's own library the results are NumPy's to the bit (same library, same kernel, same
blocking); with MKL they agree with NumPy's within rounding.

The library (config.NUMBA_GEMM) is Intel MKL where the ``mkl`` package is installed and chosen,
loaded with its sequential threading layer so that each call runs whole on the thread that makes
it; otherwise the one threadpoolctl reports for NumPy's BLAS. Either way its ``gemm``'s products
must agree with NumPy's; its C entry point is found by name (``scipy_cblas_sgemm64_`` in NumPy's
own wheels, the plain ``cblas_sgemm`` of a system OpenBLAS or MKL) and called through its address,
so compiled kernels stay cacheable. Where none is found, :func:`gemm_library` is None and
numba_backend keeps its thread pool.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import threading
from dataclasses import dataclass, replace

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import config
from ..errors import InvalidArgument
from .numba_cache import lock_caches

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
#: (symbol pattern, integer width): NumPy's wheels (scipy-openblas, 64-bit integers), older
#: 64-bit-integer OpenBLAS builds, then the LP64 names of system OpenBLAS, BLIS and MKL.
_SYMBOLS = (("scipy_cblas_{}gemm64_", 64), ("cblas_{}gemm64_", 64), ("scipy_cblas_{}gemm", 32),
            ("cblas_{}gemm", 32))


@dataclass(frozen=True)
class GemmLibrary:
    """Where ``cblas_sgemm`` / ``cblas_dgemm`` are, and the width of their integer arguments."""
    path: str
    addresses: dict  # np.dtype('float32') / np.dtype('float64') -> function address
    int_type: type   # np.int64 or np.int32: the job table's dtype (BLAS's integer arguments)
    name: str = "NumPy's BLAS"  # what reports print


@intrinsic
def _gemm_call(typingctx, addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, c, ldc):
    """cblas_?gemm(RowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc) through the
    function address ``addr``; a, b, c are data addresses; the integers have BLAS's width (the
    job table's dtype), ``alpha``'s type picks s or d."""
    sig = types.void(addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, signature, args):
        addr_, ta_, tb_, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, c_, ldc_ = args
        i32, ptr = ir.IntType(32), ir.IntType(8).as_pointer()
        blasint = context.get_value_type(signature.args[3])
        real = context.get_value_type(signature.args[6])
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, blasint, blasint, blasint, real, ptr, blasint,
                                               ptr, blasint, real, ptr, blasint])
        fn = builder.inttoptr(addr_, fnty.as_pointer())

        def enum(v):  # CBLAS's enums are C ints whatever the library's integer width
            return builder.trunc(v, i32) if v.type.width > 32 else v

        builder.call(fn, [ir.Constant(i32, ROW_MAJOR), enum(ta_), enum(tb_), m_, n_, k_, alpha_,
                          builder.inttoptr(a_, ptr), lda_, builder.inttoptr(b_, ptr), ldb_,
                          ir.Constant(real, 0.0), builder.inttoptr(c_, ptr), ldc_])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, parallel=True)
def gemm_jobs_kernel(addr, dims, ptrs, one):
    """Job j: C = op(A) @ op(B), with dims[j] = (transA, transB, M, N, K, lda, ldb, ldc) and
    ptrs[j] = (A, B, C) data addresses; the jobs spread over the threads (one each when there
    are as many jobs as threads). ``one`` is 1 in the products' dtype."""
    for j in prange(dims.shape[0]):
        d = dims[j]
        _gemm_call(addr, d[0], d[1], d[2], d[3], d[4], one, ptrs[j, 0], d[5], ptrs[j, 1], d[6], ptrs[j, 2], d[7])


def _operand(a: np.ndarray):
    """(trans flag, leading dimension) of a 2-D operand whose rows or columns are contiguous, or None."""
    item = a.itemsize
    if a.strides[1] == item and a.strides[0] % item == 0 and a.strides[0] >= a.shape[1] * item:
        return NO_TRANS, a.strides[0] // item
    if a.strides[0] == item and a.strides[1] % item == 0 and a.strides[1] >= a.shape[0] * item:
        return TRANS, a.strides[1] // item
    return None


def job_table(lib: GemmLibrary, products):
    """(dims, ptrs) for :func:`gemm_jobs_kernel` from (a, b, out) triples, or None where one is not
    a BLAS product: other than 2-D float32/float64 arrays of one dtype with matching, non-zero
    shapes, a and b rows- or columns-contiguous, out rows-contiguous, writeable and apart from a
    and b."""
    dtype = products[0][2].dtype
    if dtype not in lib.addresses:
        return None
    dims = np.empty((len(products), 8), lib.int_type)
    ptrs = np.empty((len(products), 3), np.int64)
    for j, (a, b, out) in enumerate(products):
        if not all(isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype == dtype for v in (a, b, out)):
            return None
        (m, k), n = a.shape, b.shape[1]
        if b.shape[0] != k or out.shape != (m, n) or 0 in (m, n, k) or out.strides[1] != out.itemsize \
                or out.strides[0] < n * out.itemsize or not out.flags.writeable \
                or np.may_share_memory(out, a) or np.may_share_memory(out, b):
            return None
        fa, fb = _operand(a), _operand(b)
        if fa is None or fb is None:
            return None
        dims[j] = (fa[0], fb[0], m, n, k, fa[1], fb[1], out.strides[0] // out.itemsize)
        _data_addresses(ptrs, j, a, b, out)
    return dims, ptrs


@njit(cache=True, nogil=True)
def data_address(a):
    """The address of a's data (NumPy's ``a.ctypes.data``, a third of its cost)."""
    return a.ctypes.data


@njit(cache=True, nogil=True)
def _data_addresses(ptrs, j, a, b, out):
    """ptrs[j] = the data addresses of a, b and out, in one call: 1.3-1.8 us a product, where
    three NumPy ``.ctypes.data`` took 8 (a training step makes two to six such products)."""
    ptrs[j, 0] = data_address(a)
    ptrs[j, 1] = data_address(b)
    ptrs[j, 2] = data_address(out)


def run_products(lib: GemmLibrary, products) -> bool:
    """out = a @ b for every (a, b, out) in ``products``, at once, one per thread; False (nothing
    done) where :func:`job_table` refuses them."""
    table = job_table(lib, products)
    if table is None:
        return False
    dtype = products[0][2].dtype
    gemm_jobs_kernel(lib.addresses[dtype], table[0], table[1], dtype.type(1))
    return True


def _find(path: str):
    """GemmLibrary for the library at ``path``, or None when it exports no known gemm pair."""
    try:
        dll = ctypes.CDLL(path)
    except OSError:
        return None
    for pattern, width in _SYMBOLS:
        try:
            funcs = {np.dtype(t): getattr(dll, pattern.format(p)) for t, p in ((np.float32, "s"), (np.float64, "d"))}
        except AttributeError:
            continue
        addresses = {t: ctypes.cast(f, ctypes.c_void_p).value for t, f in funcs.items()}
        return GemmLibrary(path, addresses, np.int64 if width == 64 else np.int32)
    return None


def _agrees(lib: GemmLibrary) -> bool:
    """Whether the library's products match NumPy's, in both dtypes and every transpose."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((37, 19)).astype(dtype)
        b = rng.standard_normal((19, 23)).astype(dtype)
        for x, y in ((a, b), (np.asfortranarray(a), b), (a, np.asfortranarray(b)), (np.asfortranarray(a), np.asfortranarray(b))):
            out = np.full((37, 23), np.nan, dtype)
            if not run_products(lib, [(x, y, out)]) or not np.allclose(out, a @ b, rtol=1e-4, atol=1e-4):
                return False
    return True


def gemm_library() -> GemmLibrary | None:
    """The BLAS config.NUMBA_GEMM picks, callable from Numba kernels, or None (numba_backend then
    uses threads). 'mkl' where MKL cannot be used raises InvalidArgument saying why."""
    choice = config.NUMBA_GEMM
    key = choice.strip().lower() if isinstance(choice, str) else None
    if key not in config.NUMBA_GEMM_CHOICES:
        raise InvalidArgument(f"config.NUMBA_GEMM={choice!r}: must be one of {', '.join(config.NUMBA_GEMM_CHOICES)}")
    with _FINDING:  # two threads' first calls must not both load and check a library
        return _gemm_library(key)


_FINDING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _gemm_library(choice: str) -> GemmLibrary | None:
    if choice == "mkl" or (choice == "auto" and _intel_cpu()):
        lib, why_not = mkl_library()
        if lib is not None:
            return lib
        if choice == "mkl":
            raise InvalidArgument(f"config.NUMBA_GEMM (FASTMNIST_NUMBA_GEMM) is 'mkl', but {why_not}")
    return numpy_library()


def _blas_info() -> list[dict]:
    """threadpoolctl's entries for the BLAS libraries loaded in this process ([] without it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [info for info in threadpool_info() if info.get("user_api") == "blas"]


@functools.lru_cache(maxsize=1)
def numpy_library() -> GemmLibrary | None:
    """The BLAS NumPy uses, callable from Numba kernels, or None."""
    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy loads its BLAS lazily on some builds
    found = _blas_info()
    for info in sorted(found, key=lambda info: "numpy" not in info["filepath"]):  # NumPy's own first
        lib = _find(info["filepath"])
        if lib is not None and _agrees(lib):
            name = " ".join(str(part) for part in (info.get("internal_api", "BLAS"), info.get("version")) if part)
            return replace(lib, name=f"{name} (NumPy's)")
    return None


def _intel_cpu() -> bool:
    from ..bench.machine import cpu_vendor
    return cpu_vendor() == "GenuineIntel"


# mkl_service.h: the sequential threading layer, 32-bit integers (LP64), and conditional numerical
# reproducibility on the code path MKL picks for this CPU, strict: the same bits whatever the
# operands' alignment (the CPU backends promise a repeated run the same weights, bit for bit)
_MKL_THREADING_SEQUENTIAL, _MKL_INTERFACE_LP64 = 1, 0
_MKL_CBWR_AUTO, _MKL_CBWR_STRICT, _MKL_CBWR_SUCCESS = 2, 0x10000, 0
_MKL_CBWR = _MKL_CBWR_AUTO | _MKL_CBWR_STRICT  # what mkl_library asks for (None: nothing; a timing A/B)


def _mkl_paths() -> list[str]:
    """Where libmkl_rt may be: the ``mkl`` package's own files (newest soname first), then what the
    loader finds."""
    paths = []
    try:
        from importlib.metadata import PackageNotFoundError, files
        try:
            listed = files("mkl") or []
        except PackageNotFoundError:
            listed = []
        found = [str(f.locate()) for f in listed if f.name.startswith("libmkl_rt.so")]
        paths += sorted(found, key=lambda p: [int(v) for v in re.findall(r"\d+", os.path.basename(p))], reverse=True)
    except ImportError:
        pass
    loader = ctypes.util.find_library("mkl_rt")
    return [p for p in paths if os.path.exists(p)] + ([loader] if loader else [])


@functools.lru_cache(maxsize=1)
def mkl_library() -> tuple[GemmLibrary | None, str]:
    """(Intel MKL's gemm with its sequential threading layer, 32-bit integers and strict
    reproducibility, None where it cannot be had; why not). MKL is the ``mkl`` package's
    ``libmkl_rt``. An MKL already loaded by someone else (NumPy or SciPy built on MKL) is left
    alone: switching it to sequential would take its threads from whoever loaded it."""
    paths = _mkl_paths()
    if not paths:
        return None, "MKL is not installed (pip install 'fastmnist[mkl]' on Linux x86-64)"
    path = paths[0]
    for info in _blas_info():
        if info.get("internal_api") == "mkl" and not (
                os.path.realpath(info["filepath"]) == os.path.realpath(path) and info.get("threading_layer") == "sequential"):
            return None, (f"an MKL is loaded already ({info['filepath']}, threading layer "
                          f"{info.get('threading_layer')}), which numba_blas leaves as it is")
    try:
        dll = ctypes.CDLL(path)
        # before any other MKL call; each answers the setting in force, which another user of
        # this libmkl_rt may have fixed already
        layer = dll.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
        interface = dll.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64)
        reproducible = _MKL_CBWR_SUCCESS if _MKL_CBWR is None else dll.MKL_CBWR_Set(_MKL_CBWR)
        version = ctypes.create_string_buffer(256)
        dll.MKL_Get_Version_String(version, len(version))
    except (OSError, AttributeError) as exc:
        return None, f"{path} is not a usable MKL ({exc})"
    if layer != _MKL_THREADING_SEQUENTIAL or interface != _MKL_INTERFACE_LP64:
        return None, f"{path} runs threading layer {layer} and interface {interface}, not sequential and LP64"
    if reproducible != _MKL_CBWR_SUCCESS:
        return None, f"{path} refused strict reproducibility (MKL_CBWR_Set answered {reproducible})"
    lib = _find(path)
    if lib is None or lib.int_type is not np.int32:
        return None, f"{path} exports no cblas_sgemm / cblas_dgemm"
    number = re.search(r"Version ([0-9.]+)", version.value.decode(errors="replace"))
    lib = replace(lib, name=f"MKL {number.group(1) if number else '(version unknown)'}, sequential")
    if not _agrees(lib):
        return None, f"{path}'s products disagree with NumPy's"
    return lib, ""


lock_caches(globals())  # several processes compiling into one cache at once: numba_cache.py
