"""Running a benchmark: every case on every available target, each target in a process of its own."""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

from ..errors import InvalidArgument
from .cases import DEFAULT_MODELS, Case, spec_cases, training_data_source
from .kernel_cases import KERNELS
from .lockstep import run_interleaved
from .machine import environment, measure_ceilings
from .report import add_floors, add_ratios
from .targets import Target, requested_targets, target


def time_case(case: Case, backend: str | Target, warmup: int = 2) -> list[float] | None:
    """Seconds per call, ``case.repeat`` times, after ``warmup`` calls (one for an epoch); device
    synchronised inside. None where the case does not apply to ``backend`` (the tutorials have
    epochs of the MLPs only)."""
    made = case.make(backend)
    if made is None:
        return None
    fn, sync = made
    warm_up(case, made, warmup)
    times = []
    for _ in range(case.repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def warm_up(case: Case, made, warmup: int = 2) -> None:
    """Run a made case ``warmup`` times untimed (an epoch once): JIT compilation, CUDA context, caches."""
    fn, sync = made
    for _ in range(warmup if case.group != "epoch" else 1):
        fn()
    sync()


def _row(case: Case, t: Target, times: list[float]) -> dict:
    med = statistics.median(times)
    q = np.percentile(times, [25, 75])
    return {"case": case.name, "group": case.group, "model": case.model, "batch_size": case.batch_size,
            "backend": t.name, "device": t.device(), "median_s": med, "iqr_s": float(q[1] - q[0]), "times_s": times,
            "flops": case.flops, "bytes": case.bytes, "gflops": case.flops / med / 1e9, "gbs": case.bytes / med / 1e9}


def run_backend(name: str, spec: dict, log=print) -> list[dict]:
    """Time every case of ``spec`` (``run``'s arguments as a dict) on one target, in this process,
    the way fit() runs it; returns a report row per case that applies."""
    t = target(name)
    rows = []
    with t.context():
        for case in spec_cases(spec):
            times = time_case(case, t)
            if times is not None:
                rows.append(_row(case, t, times))
                log(f"{case.name:48s} {name:6s} {rows[-1]['median_s'] * 1e3:10.3f} ms")
    return rows


def _worker_environment(t: Target) -> dict:
    env = dict(os.environ)
    if t.is_reference:  # PyTorch's OpenMP threads wait as the user's environment says, not as fastmnist's
        from .. import config
        for name, users in (("OMP_WAIT_POLICY", config.USER_OMP_WAIT_POLICY),
                            ("GOMP_SPINCOUNT", config.USER_GOMP_SPINCOUNT)):
            env.pop(name, None)
            if users is not None:
                env[name] = users
    return env


def _run_isolated(t: Target, spec: dict, log) -> list[dict]:
    """:func:`run_backend` in a fresh process (``python -m fastmnist.bench``); its log lines are passed on."""
    proc = subprocess.run([sys.executable, "-m", "fastmnist.bench", t.name, json.dumps(spec)], capture_output=True,
                          text=True, env=_worker_environment(t))
    for line in proc.stderr.splitlines():
        log(line)
    if proc.returncode != 0:
        raise WorkerFailed(f"its benchmark worker failed (exit {proc.returncode}): {error_line(proc.stderr.splitlines())}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def error_line(lines: list[str]) -> str:
    """What a failed worker's error output says went wrong: its last exception line
    (``RuntimeError: ...``; Python's fatal errors end with lines of thread state after it), else its
    last non-empty line."""
    said = [line.strip() for line in lines if line.strip()]
    raised = [line for line in said if re.match(r"[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    return (raised or said or ["no output"])[-1]


class WorkerFailed(RuntimeError):
    """A backend's benchmark process ended in an error; the report leaves that backend out."""


def run(backends=None, models=DEFAULT_MODELS, kernels=KERNELS, batch_sizes=None, kernels_only=False,
        epochs_only=False, quick=False, log=print, isolate=True, interleave=False, repeats=None) -> dict:
    """Time every case on every available backend; returns the report dict (see ``format_table``).

    Each backend runs in a process of its own (``isolate``): thread pools of different libraries
    in one process (Numba's OpenMP, PyTorch's, BLAS's) spin against each other and would distort
    every number after the first backend. With ``interleave`` (epochs only) the processes run at
    once and take turns, one timed call each (lockstep.py): ratios that a drifting machine's speed
    does not skew. ``repeats``: timed calls per case (default: see ``all_cases``), an integer >= 1.
    """
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1):
        raise InvalidArgument(f"repeats must be an integer >= 1, got {repeats!r}")
    if interleave and not epochs_only:
        raise InvalidArgument("interleaved timing is for epochs only (--interleave needs --epochs-only): "
                              "each timed call is followed by a pause")
    requested = requested_targets(backends)
    statuses = [(t, *t.status()) for t in requested]
    usable = [t for t, ok, _ in statuses if ok]
    for t, ok, why in statuses:
        if not ok:
            log(f"skipping backend {t.name}: {why}")
    # the GPU ceilings are measured with CuPy: where a fastmnist backend runs on a GPU, CuPy does
    ceilings = measure_ceilings(quick, gpu=any(not t.is_reference and t.device() == "gpu" for t in usable))
    spec = {"models": list(models), "kernels": list(kernels), "batch_sizes": batch_sizes or {},
            "kernels_only": kernels_only, "epochs_only": epochs_only, "quick": quick,
            "repeats": None if repeats is None else int(repeats)}
    results, failed = [], {}
    if interleave:
        results, failed = run_interleaved(usable, spec, _worker_environment, log)
    else:
        for t in usable:
            try:
                results += _run_isolated(t, spec, log) if isolate else run_backend(t.name, spec, log)
            except WorkerFailed as exc:  # e.g. torch.compile under ATEN_CPU_CAPABILITY=avx2: the others still count
                failed[t] = exc
    gone = {t.name for t in failed}
    results = [r for r in results if r["backend"] not in gone]  # an interleaved worker may die after some cases
    for t, exc in failed.items():
        log(f"leaving out backend {t.name}: {exc} (its output is above)")
        usable.remove(t)
        statuses = [(s, False, str(exc)) if s is t else (s, ok, why) for s, ok, why in statuses]
    add_floors(results, ceilings)
    order = {c: i for i, c in enumerate(dict.fromkeys(r["case"] for r in results))}
    names = [t.name for t in usable]
    results.sort(key=lambda r: (order[r["case"]], names.index(r["backend"])))
    add_ratios(results)
    data = training_data_source()
    if not data.startswith("MNIST"):
        log(f"note: timing on {data}; set FASTMNIST_DATA or pass --data for MNIST's own sparsity")
    return {"environment": environment(), "data": data, "ceilings": ceilings, "backends": [
        {"name": t.name, "available": ok, "reason": why} for t, ok, why in statuses], "quick": quick,
        "results": results}
