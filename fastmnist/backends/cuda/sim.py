"""The CUDA simulator's compiler and launcher: ``kernels.cu`` built as C++ and run on the CPU.

The CUDA source is compiled with g++ behind ``sim_prelude.h`` (CPU stand-ins for threadIdx,
__syncthreads, atomics, __shared__); a generated wrapper per ``extern "C" __global__`` kernel
takes an array of argument pointers, so one ctypes entry point launches any kernel over a grid.

Every launch is checked the way a careful reader checks a CuPy launch, strictly: the argument
count; each scalar's exact NumPy type against its C type (CuPy passes a NumPy scalar's bytes as
they are, so ``np.int64`` into an ``int`` parameter is silent garbage on a GPU, and a Python int
is passed as 64 bits); each pointer argument a simulated device array of the pointee's dtype,
C-contiguous; each pointer table (``T**``) entries that point at live simulated arrays of ``T``;
the grid and block within CUDA's limits. The simulator is a CPU check of the source, never GPU
evidence: it cannot see warp behaviour, races between blocks, or speed.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

PRELUDE = Path(__file__).with_name("sim_prelude.h")
# Hidden symbols and no GNU-unique ones: two builds loaded in one process (another block size, say)
# must never share a kernel's static __shared__ array through the dynamic linker.
CXX_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w", "-fvisibility=hidden", "-fno-gnu-unique")
EXPORT = '__attribute__((visibility("default")))'


#: C base type -> NumPy dtype (after ``typedef long long i64`` etc. are read from the source).
C_TYPES = {"float": "float32", "double": "float64", "int": "int32", "unsigned": "uint32", "unsigned int": "uint32",
           "long long": "int64", "long": "int64", "unsigned long long": "uint64", "unsigned long": "uint64",
           "bool": "bool", "char": "int8", "unsigned char": "uint8", "short": "int16"}
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)


class SimLaunchError(TypeError):
    """A launch the simulator refused: on a GPU it would have run on wrong arguments."""


def compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def available() -> tuple[bool, str]:
    cxx = compiler()
    if cxx is None:
        return False, "the CUDA simulator needs a C++ compiler (g++), and none was found"
    return True, f"CUDA simulator: kernels.cu compiled by {Path(cxx).name} and run on the CPU (not a GPU)"


def cache_dir() -> Path:
    root = os.environ.get("FASTMNIST_CUDASIM_CACHE") or os.path.join(tempfile.gettempdir(), f"fastmnist-cudasim-{os.getuid()}")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- reading the source: signatures, typedefs, which kernels use __syncthreads ----

def _preprocess(code: str, defines: list[str]) -> str:
    """Macro-expand the source without the prelude, so kernels keep their ``__global__`` marker."""
    proc = subprocess.run([compiler(), "-E", "-P", "-x", "c++", *defines, "-"], input=code, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"CUDA simulator: preprocessing the kernel source failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _functions(src: str) -> dict[str, str]:
    """Top-level function name -> body text (brace matching; enough for kernel sources)."""
    bodies, depth, start, name = {}, 0, 0, None
    for m in re.finditer(r"[{}]|\b(\w+)\s*\(", src):
        token = m.group(0)
        if token == "{":
            if depth == 0:
                start = m.end()
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0 and name:
                bodies[name] = bodies.get(name, "") + src[start:m.start()]
                name = None
        elif depth == 0:
            name = m.group(1)
    return bodies


def _sync_kernels(src: str) -> set[str]:
    """Functions that reach __syncthreads, directly or through the functions they call."""
    bodies = _functions(src)
    calls = {f: set(re.findall(r"\b(\w+)\s*(?:<[^<>;]*>)?\s*\(", body)) for f, body in bodies.items()}
    reach = {f for f, body in bodies.items() if "__syncthreads" in body}
    grown = True
    while grown:
        more = {f for f, called in calls.items() if f not in reach and called & reach}
        reach |= more
        grown = bool(more)
    return reach


def _typedefs(src: str) -> dict[str, str]:
    return {alias: " ".join(base.split()) for base, alias in re.findall(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;", src)}


def parse_param(text: str, typedefs: dict[str, str]) -> tuple[str, str, int, str]:
    """'const T* x' -> (ctype as written, numpy dtype name, pointer depth, name)."""
    text = " ".join(text.replace("*", " * ").split())
    words = [w for w in text.split() if w not in ("const", "volatile", "__restrict__", "__restrict")]
    name, stars = words[-1], words.count("*")
    base = " ".join(w for w in words[:-1] if w != "*")
    base = typedefs.get(base, base)
    if base not in C_TYPES:
        raise RuntimeError(f"CUDA simulator: no NumPy type for C type {base!r} (parameter {name!r})")
    ctype = text[: text.rfind(name)].strip()
    return ctype, C_TYPES[base], stars, name


def read_kernels(pre: str) -> dict[str, dict]:
    typedefs = _typedefs(pre)
    sync = _sync_kernels(pre)
    kernels = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', pre):
        parsed = [parse_param(p, typedefs) for p in params.split(",") if p.strip()]
        kernels[name] = {"params": parsed, "sync": name in sync}
    if not kernels:
        raise RuntimeError('CUDA simulator: no extern "C" __global__ kernels found in the source')
    return kernels


def _wrappers(kernels: dict[str, dict]) -> str:
    out = []
    for name, k in kernels.items():
        args = ", ".join(f"*({ctype}*)a[{i}]" for i, (ctype, _, _, _) in enumerate(k["params"]))
        out.append(f'extern "C" {EXPORT} void fmsim_launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, '
                   f'unsigned by, unsigned bz, void** a) {{ fmsim::run(dim3(gx, gy, gz), dim3(bx, by, bz), '
                   f'{"true" if k["sync"] else "false"}, [&] {{ {name}({args}); }}); }}')
    return "\n".join(out) + "\n"


# ---- building ----

_lock = threading.Lock()


def build(code: str, options=()) -> tuple[ctypes.CDLL, dict[str, dict]]:
    """Compile ``code`` (a CUDA source) for the simulator; cached by content. Returns (library, kernels)."""
    defines = [o for o in options if o.startswith(("-D", "--define-macro"))]
    defines = [d.replace("--define-macro=", "-D") for d in defines]
    pre = _preprocess(code, defines)
    kernels = read_kernels(pre)
    source = PRELUDE.read_text() + '\n#line 1 "kernels.cu"\n' + code + "\n" + _wrappers(kernels)
    key = hashlib.sha256("\0".join([source, *defines, *CXX_FLAGS, compiler()]).encode()).hexdigest()[:20]
    lib = cache_dir() / f"kernels-{key}.so"
    with _lock:
        if not lib.exists():
            src = cache_dir() / f"kernels-{key}-{os.getpid()}.cpp"
            src.write_text(source)
            tmp = lib.with_suffix(f".{os.getpid()}.tmp")
            proc = subprocess.run([compiler(), *CXX_FLAGS, *defines, str(src), "-o", str(tmp)], capture_output=True,
                                  text=True, timeout=600)
            src.unlink(missing_ok=True)
            if proc.returncode:
                raise RuntimeError(f"CUDA simulator: g++ could not compile the kernel source:\n{proc.stderr[-4000:]}")
            os.replace(tmp, lib)  # atomic: concurrent builders never load a half-written library
        return ctypes.CDLL(str(lib)), kernels


# ---- launching ----

def _dims(what, value, limits):
    dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3 or any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) for d in dims):
        raise SimLaunchError(f"{what} must be 1-3 integers, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    for d, limit, axis in zip(dims, limits, "xyz"):
        if not 1 <= d <= limit:
            raise SimLaunchError(f"{what}.{axis} = {d} is outside CUDA's limit 1..{limit}")
    return dims


def check_and_pack(kernel: str, params, args, live) -> tuple[ctypes.Array, list]:
    """The strict argument check; returns the void* array the wrapper reads and what keeps it alive."""
    if len(args) != len(params):
        raise SimLaunchError(f"{kernel}: {len(args)} arguments for {len(params)} parameters "
                             f"({', '.join(f'{c} {n}' for c, _, _, n in params)})")
    keep, ptrs = [], (ctypes.c_void_p * len(params))()
    for i, ((ctype, dtype, stars, pname), arg) in enumerate(zip(params, args)):
        where = f"{kernel}: argument {i} ({ctype} {pname})"
        want = np.dtype(dtype)
        if stars == 0:
            if type(arg) is not want.type:
                hint = (" (CuPy passes a Python int as 64 bits and a float as a double)"
                        if isinstance(arg, (int, float)) and not isinstance(arg, np.generic) else "")
                raise SimLaunchError(f"{where} got {type(arg).__name__} {arg!r}; it must be numpy.{want.name}{hint}")
            slot = np.ctypeslib.as_ctypes_type(want)(arg.item()) if want.kind != "b" else ctypes.c_bool(bool(arg))
        else:
            ptr = live.pointer_of(arg, where)
            if stars == 1 and np.dtype(arg.dtype) != want:
                raise SimLaunchError(f"{where} got an array of {arg.dtype}; it must be {want.name}")
            if stars == 2:
                live.check_table(arg, want, where)
            slot = ctypes.c_void_p(ptr)
        keep.append(slot)
        ptrs[i] = ctypes.addressof(slot)
    return ptrs, keep


class Kernel:
    """One simulated kernel: ``kernel(grid, block, args)`` like ``cupy.RawKernel``."""

    def __init__(self, lib, name, spec, live, counters):
        self.name, self.spec, self.live, self.counters = name, spec, live, counters
        self._entry = getattr(lib, f"fmsim_launch_{name}")
        self._entry.restype = None
        self._entry.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p]
        self._error = lib.fmsim_error
        self._error.restype = ctypes.c_char_p

    def __call__(self, grid, block, args, shared_mem=0, **_):
        gx, gy, gz = _dims(f"{self.name}: grid", grid, MAX_GRID)
        bx, by, bz = _dims(f"{self.name}: block", block, MAX_BLOCK)
        if bx * by * bz > 1024:
            raise SimLaunchError(f"{self.name}: block of {bx * by * bz} threads; CUDA allows at most 1024")
        ptrs, keep = check_and_pack(self.name, self.spec["params"], tuple(args), self.live)
        capture = self.live.capture_for_launch(self.name)
        if capture is not None:  # recorded for the graph, run only when it is launched (simgraph.py)
            pointers = [(f"argument {i} ({pname})", arg, np.dtype(dtype) if stars == 2 else None)
                        for i, ((_, dtype, stars, pname), arg) in enumerate(zip(self.spec["params"], args)) if stars]
            capture.record(self, (gx, gy, gz, bx, by, bz), ptrs, keep, pointers)
            return
        self.run((gx, gy, gz, bx, by, bz), ptrs)
        self.counters["kernel_launches"] += 1
        del keep

    def run(self, dims, ptrs):
        """Run over the grid ``dims`` (gx, gy, gz, bx, by, bz) with packed arguments."""
        with _lock:
            self._entry(*dims, ptrs)
            error = self._error().decode()
        if error:
            raise RuntimeError(f"CUDA simulator: kernel {self.name}: {error}")
