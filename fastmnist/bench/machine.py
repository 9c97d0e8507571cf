"""The machine a report was timed on: CPU name and vector extensions, library versions and thread
settings, and its measured ceilings (float32 matmul rate, copy bandwidth) that set each case's floor."""
from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "amx_tile", "neon", "asimd", "sve")
# Variables that change what a backend does, recorded when set (the user's, not fastmnist's defaults).
RECORDED_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "FASTMNIST_BACKEND",
                      "FASTMNIST_NUMBA_GEMM", "MKL_ENABLE_INSTRUCTIONS")


def _cpuinfo_value(prefixes: tuple[str, ...]) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of ``prefixes``; None where absent."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(prefixes):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name (/proc/cpuinfo's 'model name', else what the platform module says)."""
    name = _cpuinfo_value(("model name",))
    return name.strip() if name is not None else platform.processor() or "unknown"


def cpu_vendor() -> str:
    """/proc/cpuinfo's 'vendor_id' (GenuineIntel, AuthenticAMD, ...); '' where there is none."""
    vendor = _cpuinfo_value(("vendor_id",))
    return vendor.strip() if vendor is not None else ""


def cpu_vector_extensions() -> list[str]:
    """The CPU's vector extensions from /proc/cpuinfo (x86 'flags', Arm 'Features'), in a fixed order."""
    flags = _cpuinfo_value(("flags", "Features"))
    have = set(flags.split()) if flags is not None else set()
    return [f for f in VECTOR_FLAGS if f in have]


def environment() -> dict:
    """What the result file needs to be read later: machine, threads, versions."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_vector_extensions": cpu_vector_extensions(),
           "numpy": np.__version__}
    env.update({var: os.environ[var] for var in RECORDED_VARIABLES if var in os.environ})
    for versions in (_numba_versions, _cupy_versions, _torch_versions):
        env.update(versions())
    return env


def _numba_versions() -> dict:
    try:
        import llvmlite.binding as llvm
        import numba
    except ImportError:
        return {}
    from ..backends import numba_backend
    return {"numba": numba.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS,
            "numba_target_cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(),  # NUMBA_CPU_NAME overrides
            **{f"numba_{k}": v for k, v in numba_backend.info().items() if k in ("gemm", "threading_layer")}}


def _cupy_versions() -> dict:
    env: dict = {}
    try:
        import cupy
        env["cupy"] = cupy.__version__  # kept where CuPy is installed but no GPU answers
        props = cupy.cuda.runtime.getDeviceProperties(0)
        env["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        env["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:  # no cupy or no GPU: the file says so by leaving these out
        pass
    return env


def _torch_versions() -> dict:
    try:
        import torch
    except ImportError:
        return {}
    env = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}  # ATEN_CPU_CAPABILITY overrides
    if torch.cuda.is_available():
        env["torch_gpu"] = torch.cuda.get_device_name(0)
    return env


# ---- ceilings ----

def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_ceilings(quick: bool = False, gpu: bool = False) -> dict:
    """This machine's float32 matmul rate and copy bandwidth (CPU, and the GPU where asked).

    Returns
    -------
    dict
        ``cpu_matmul_gflops``, ``cpu_copy_gbs``; with ``gpu``, ``gpu_matmul_gflops`` and
        ``gpu_copy_gbs`` too (measured with CuPy).
    """
    n, repeats = (1024, 3) if quick else (2048, 5)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    out = {"cpu_matmul_gflops": 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9}
    src = np.ones(16 * 2**20 if quick else 64 * 2**20, np.float32)
    dst = np.empty_like(src)
    # bytes read + written
    out["cpu_copy_gbs"] = 2 * src.nbytes / median_seconds(lambda: np.copyto(dst, src), repeats) / 1e9
    if gpu:
        out.update(_gpu_ceilings())
    return out


def _gpu_seconds(cp, fn, calls: int) -> float:
    """GPU seconds for ``calls`` calls of ``fn`` after one, timed with CUDA events."""
    fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3


def _gpu_ceilings() -> dict:
    import cupy as cp
    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    b = cp.random.standard_normal((n, n), dtype=cp.float32)
    gflops = 5 * 2 * n ** 3 / _gpu_seconds(cp, lambda: a @ b, 5) / 1e9
    src = cp.ones(512 * 2**20 // 4, cp.float32)
    dst = cp.empty_like(src)

    def copy():
        dst[...] = src
    gbs = 10 * 2 * src.nbytes / _gpu_seconds(cp, copy, 10) / 1e9
    return {"gpu_matmul_gflops": gflops, "gpu_copy_gbs": gbs}
