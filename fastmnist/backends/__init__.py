"""Backend registry and selection.

A backend is an object that mirrors :mod:`fastmnist.backends.numpy_backend` function for function:
a module (``numpy``, ``numba``) or an instance (``cupy`` and ``cupy-sim``: two
:class:`~fastmnist.backends.cupy_backend.CupyBackend` objects, on the real cupy and on the simulator).
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
from typing import Any

from ..errors import BackendUnavailable, InvalidArgument, WrongType

NAMES = ("numpy", "numba", "cupy", "cupy-sim")
AUTO_ORDER = ("cupy", "numba", "numpy")  # cupy-sim (the CUDA source on the CPU, for tests) only by name
#: Where each backend is: a module, or ``module:attribute`` for a backend object built in that module.
_SOURCES = {"numpy": "fastmnist.backends.numpy_backend", "numba": "fastmnist.backends.numba_backend",
            "cupy": "fastmnist.backends.cupy_backend:backend", "cupy-sim": "fastmnist.backends.cupy_sim_backend:backend"}
#: A backend module or object: every op of ``contract.REQUIRED_OPS`` with numpy's parameters, a ``name``.
Backend = Any
_HOW_TO_INSTALL = {
    "numba": "pip install numba",
    "cupy": "pip install 'fastmnist[cuda13]' (or [cuda12]; exactly one) on a machine with an NVIDIA GPU and driver",
    "cupy-sim": "apt-get install g++ (the simulator compiles the CUDA source as C++)",
}
_current: str | None = None  # set_backend(); None means $FASTMNIST_BACKEND or auto
_status_cache: dict[str, tuple[bool, str]] = {}
_warned: set = set()  # backends whose failure auto has reported once


def _load(name: str) -> Backend:
    """The backend object ``_SOURCES[name]`` names: its module imported, then the attribute if one is named."""
    module_name, _, attribute = _SOURCES[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _probe(name: str) -> tuple[Backend | None, str]:
    """(the backend if it runs here else None, why); a broken install is a reason, never an exception."""
    module_name = _SOURCES[name].partition(":")[0]
    try:
        backend = _load(name)
        ok, why = backend.available()
    except ImportError as exc:
        return None, f"cannot import {module_name}: {exc}"
    except Exception as exc:  # noqa: BLE001 -- a broken environment (NUMBA_NUM_THREADS=0, no cache dir) must
        # make the backend unavailable with its reason, never kill `info` or `auto`
        settings = ", ".join(f"{k}={v!r}" for k, v in os.environ.items() if k.startswith(("NUMBA_", "CUPY_")))
        return None, (f"{module_name} failed to load ({type(exc).__name__}: {exc})"
                      + (f"; environment: {settings}" if settings else ""))
    return (backend if ok else None), why


def backend_status(name: str) -> tuple[bool, str]:
    """(usable here?, reason) for one backend name; cached after the first probe."""
    _check_name(name)
    if name not in _status_cache:
        backend, why = _probe(name)
        _status_cache[name] = (backend is not None, why)
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
    if not isinstance(name, str):  # a backend object passed through
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


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the backend for ``name`` (None: the current default; 'auto': the best one here; a
    backend object: itself), checked once against the contract (:func:`declared`)."""
    if name is not None and not isinstance(name, str):
        return declared(name)
    return declared(_load(resolve_name(name)))


_checked: set = set()


def declared(backend: Backend) -> Backend:
    """``backend`` (a module or an object) after checking it is one: every op of
    ``contract.REQUIRED_OPS`` with the reference's parameters, capability flags
    (``contract.CAPABILITIES``, defaults filled in); an optional op it lacks
    (``contract.OPTIONAL_OPS``) is set to None, so callers test ``be.op is None`` instead of probing.
    One that is not a backend raises TypeError listing every problem."""
    if backend in _checked:
        return backend
    from . import contract
    from . import numpy_backend as reference
    problems = contract.backend_problems(backend, reference)
    if problems:
        what = getattr(backend, "__name__", None) or repr(backend)  # a module's name; an object says what it is
        raise WrongType(f"{what} is not a fastmnist backend: " + "; ".join(problems))
    for flag, default in contract.CAPABILITIES.items():
        if not hasattr(backend, flag):
            setattr(backend, flag, default)
    for op in contract.OPTIONAL_OPS:
        if not hasattr(backend, op):
            setattr(backend, op, None)
    _checked.add(backend)
    return backend


def set_backend(name: str | Backend | None) -> Backend:
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
