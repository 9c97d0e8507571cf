"""Backend registry and selection.

A backend is a module that mirrors :mod:`fastmnist.backends.numpy_backend` function for function.
Select one by name (``numpy``, ``numba``, ``cupy``) or ``auto`` (cupy where a GPU works, else numba,
else numpy), through an argument, :func:`set_backend`, :func:`use_backend` or ``$FASTMNIST_BACKEND``.
Only ``auto`` falls back: a named backend that cannot run is an error saying why. For a zoo model,
``auto`` also weighs the network (:func:`resolve_for_model`): small-batch MLPs stay on numba.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from types import ModuleType

from ..errors import BackendUnavailable, InvalidArgument, WrongType

NAMES = ("numpy", "numba", "cupy", "cupy-sim")
AUTO_ORDER = ("cupy", "numba", "numpy")  # cupy-sim (the CUDA source on the CPU, for tests) only by name
_MODULES = {name: f"fastmnist.backends.{name.replace('-', '_')}_backend" for name in NAMES}
_HOW_TO_INSTALL = {
    "numba": "pip install numba",
    "cupy": "pip install 'fastmnist[cuda13]' (or [cuda12]; exactly one) on a machine with an NVIDIA GPU and driver",
    "cupy-sim": "apt-get install g++ (the simulator compiles the CUDA source as C++)",
}
_current: str | None = None  # set_backend(); None means $FASTMNIST_BACKEND or auto
_status_cache: dict[str, tuple[bool, str]] = {}
_warned: set = set()  # backends whose failure auto has reported once


def _import(name: str) -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module(_MODULES[name])
        ok, why = module.available()
    except ImportError as exc:
        return None, f"cannot import {_MODULES[name]}: {exc}"
    except Exception as exc:  # noqa: BLE001 -- a broken environment (NUMBA_NUM_THREADS=0, no cache dir) must
        # make the backend unavailable with its reason, never kill `info` or `auto`
        settings = ", ".join(f"{k}={v!r}" for k, v in os.environ.items() if k.startswith(("NUMBA_", "CUPY_")))
        return None, (f"{_MODULES[name]} failed to load ({type(exc).__name__}: {exc})"
                      + (f"; environment: {settings}" if settings else ""))
    return (module if ok else None), why


def backend_status(name: str) -> tuple[bool, str]:
    """(usable here?, reason) for one backend name; cached after the first probe."""
    _check_name(name)
    if name not in _status_cache:
        module, why = _import(name)
        _status_cache[name] = (module is not None, why)
    return _status_cache[name]


def available_backends() -> list[str]:
    """Names of the backends that run on this machine, in auto-preference order."""
    return [n for n in AUTO_ORDER if backend_status(n)[0]]


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise InvalidArgument(f"unknown backend {name!r}; valid names: {', '.join(NAMES)}, auto")


def resolve_name(name: str | None = None) -> str:
    """The concrete backend name that ``name`` (None, 'auto' or a backend name) selects."""
    if name is None:
        name = _current or os.environ.get("FASTMNIST_BACKEND", "").strip().lower() or "auto"
    if not isinstance(name, str):  # a backend module passed through
        return name.name
    name = name.lower()
    if name == "auto":
        for cand in AUTO_ORDER:
            ok, why = backend_status(cand)
            if ok:
                return cand
            if cand == "numba" and "failed to load" in why and cand not in _warned:  # installed but broken: say so
                _warned.add(cand)
                warnings.warn(f"auto: the numba backend cannot run here ({why}); using numpy", stacklevel=2)
        raise BackendUnavailable("no backend is usable (this should not happen: numpy is always there)")
    _check_name(name)
    ok, why = backend_status(name)
    if not ok:
        how = _HOW_TO_INSTALL.get(name, "") if "failed to load" not in why else ""  # installed, but broken
        raise BackendUnavailable(f"backend {name!r} is not available here: {why}" + (f"; to use it: {how}" if how else ""))
    return name


def resolve_for_model(name: str | None, dense_only: bool, batch_size: int | None) -> str:
    """resolve_name, told the network: where ``auto`` (asked for, or the default) would pick the GPU
    for a dense-only network trained in batches under ``config.AUTO_DEVICE_MIN_BATCH``, and numba
    runs here, it picks numba. Such steps are a dozen small kernels each, launch-bound on a GPU
    (~39 us of host time a launch on the H200 run: docs/benchmarks.md), while numba runs the
    whole step compiled (sigmoid-mlp at batch 1: about 9 us a step, 2-core Zen 4). A backend named outright is
    never replaced."""
    from .. import config
    asked = name
    if asked is None:
        asked = _current or os.environ.get("FASTMNIST_BACKEND", "").strip().lower() or "auto"
    chosen = resolve_name(name)
    if (isinstance(asked, str) and asked.lower() == "auto" and chosen == "cupy" and dense_only
            and batch_size is not None and batch_size < config.AUTO_DEVICE_MIN_BATCH and backend_status("numba")[0]):
        return "numba"
    return chosen


def get_backend(name: str | ModuleType | None = None) -> ModuleType:
    """Return the backend module for ``name`` (None: the current default; 'auto': the best one here),
    checked once against the contract (:func:`declared`)."""
    if isinstance(name, ModuleType):
        return declared(name)
    return declared(importlib.import_module(_MODULES[resolve_name(name)]))


_checked: set = set()


def declared(module: ModuleType) -> ModuleType:
    """``module`` after checking it is a backend: every op of ``contract.REQUIRED_OPS`` with the
    reference's parameters, capability flags (``contract.CAPABILITIES``, defaults filled in).
    A module that is not raises TypeError listing every problem."""
    if module in _checked:
        return module
    from . import contract
    from . import numpy_backend as reference
    problems = contract.backend_problems(module, reference)
    if problems:
        raise WrongType(f"{module.__name__} is not a fastmnist backend: " + "; ".join(problems))
    for flag, default in contract.CAPABILITIES.items():
        if not hasattr(module, flag):
            setattr(module, flag, default)
    _checked.add(module)
    return module


def set_backend(name: str | None) -> ModuleType:
    """Make ``name`` the default backend of this process (None: back to $FASTMNIST_BACKEND/auto)."""
    global _current
    backend = get_backend(name) if name is not None else None
    asked_auto = isinstance(name, str) and name.lower() == "auto"  # stays "auto": zoo models still choose
    _current = None if name is None else ("auto" if asked_auto else backend.name)
    return backend if backend is not None else get_backend()


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: ``with use_backend('numba'): ...`` selects a backend for the block."""
    global _current
    previous = _current
    backend = set_backend(name)
    try:
        yield backend
    finally:
        _current = previous
