"""``cupy-sim``: the cupy backend's own code and CUDA source, run on the CPU through the simulator.

Not a fast backend and never evidence about a GPU: it exists so that every commit checks the CUDA
kernels' arithmetic and launch-argument types on a machine without one (as Numba-based projects run
their CUDA kernels under Numba's simulator in CI). ``cupy_backend.py`` is loaded a second time as a
private module whose ``cupy`` is :class:`~fastmnist.backends.cuda.simcupy.SimCupy`; every function
here is that module's, unchanged. ``auto`` never selects it; ``FASTMNIST_BACKEND=cupy-sim`` or
``--backend cupy-sim`` does.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .. import config
from .cuda import sim
from .cuda.simcupy import SimCupy

name = "cupy-sim"
_IMPL_NAME = "fastmnist.backends._cupy_sim_impl"


def _load():
    if _IMPL_NAME in sys.modules:
        return sys.modules[_IMPL_NAME]
    spec = importlib.util.spec_from_file_location(_IMPL_NAME, Path(__file__).with_name("cupy_backend.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[_IMPL_NAME] = module
    spec.loader.exec_module(module)
    module.name = name
    module._cp = SimCupy(memory_bytes=config.CUDASIM_MEMORY_BYTES)
    return module


_impl = _load()
globals().update({k: v for k, v in vars(_impl).items() if not k.startswith("__") and k not in ("name", "available")})
device = _impl._cp  # the simulated device: .counters (see simcupy.py), .memory_bytes


def available():
    return sim.available()
