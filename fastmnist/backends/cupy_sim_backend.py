"""``cupy-sim``: the cupy backend's own code and CUDA source, run on the CPU through the simulator.

Not a fast backend and never evidence about a GPU: it exists so that every commit checks the CUDA
kernels' arithmetic and launch-argument types on a machine without one (as Numba-based projects run
their CUDA kernels under Numba's simulator in CI). ``backend`` is the same
:class:`~fastmnist.backends.cupy_backend.CupyBackend` as ``cupy``'s, built on
:class:`~fastmnist.backends.cuda.simcupy.SimCupy` instead of the real cupy; it is usable where the
simulator's C++ compiler is. ``auto`` never selects it; ``FASTMNIST_BACKEND=cupy-sim`` or
``--backend cupy-sim`` does.
"""
from __future__ import annotations

from .. import config
from .cuda import sim
from .cuda.simcupy import SimCupy
from .cupy_backend import CupyBackend

backend = CupyBackend(SimCupy(memory_bytes=config.CUDASIM_MEMORY_BYTES), name="cupy-sim", requirement=sim.available)
backend.is_simulator = True
device = backend.device  # the simulated device: .counters (see simcupy.py), .memory_bytes
