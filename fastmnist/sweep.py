"""``fastmnist sweep``: a grid of independent training runs on Dask, resumable, one JSON line each.

The grid (model x backend x seeds x learning rates x batch sizes) becomes one Dask task per run.
Only this process (the client) writes the result file: a run's line is appended, flushed and
fsynced when its result arrives, so a run appears once however often Dask had to start it (a
worker that dies mid-run has its task run elsewhere) and an interrupted sweep loses no finished
run. Running the same command again skips every run already in the file.

Without ``--scheduler`` an embedded ``distributed.LocalCluster`` of worker processes is sized to
the machine (workers x threads <= cores, each worker's Numba/BLAS threads set to its share); on a
GPU machine (backend cupy) one worker per GPU, each pinned to its device. With ``--scheduler`` the
runs go to the user's cluster (``dask scheduler`` + ``dask worker ADDRESS`` on each machine).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

from . import config
from . import options as O
from .errors import FastMnistError, InvalidArgument

HOW_TO_INSTALL = "fastmnist sweep needs Dask distributed: pip install 'fastmnist[distributed]'"
GRID_KEYS = ("model", "backend", "seed", "lr", "batch_size", "epochs", "limit_train", "limit_test", "dtype")


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise FastMnistError(f"{HOW_TO_INSTALL} ({exc})") from None
    return distributed


MAX_VALUES = 100_000  # a seed range of 0-999999999999 is a typo, not a sweep


def parse_ints(text: str, what: str, lo: int = 0) -> list[int]:
    """'0-9' or '1,2,5' or '0-3,8' -> a list of integers, each >= lo, at most MAX_VALUES of them."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part.lstrip("-"):
                first, last = (int(v) for v in part.split("-", 1))
                if last < first:
                    raise InvalidArgument(f"--{what}: range {part!r} runs backwards")
                if last - first + 1 + len(out) > MAX_VALUES:
                    raise InvalidArgument(f"--{what}: {part!r} has more than {MAX_VALUES:,} values")
                out.extend(range(first, last + 1))
            elif part:
                out.append(int(part))
        except ValueError as exc:
            if str(exc).startswith("--"):
                raise
            raise InvalidArgument(f"--{what}: {part!r} is not an integer or a range like 0-9") from None
    if not out:
        raise InvalidArgument(f"--{what}: no values in {text!r}")
    if min(out) < lo:
        raise InvalidArgument(f"--{what}: values must be >= {lo}, got {min(out)}")
    return out


def parse_floats(text: str, what: str) -> list[float]:
    """'0.001,0.01' -> finite positive numbers."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InvalidArgument(f"--{what}: {text!r} is not a comma list of numbers") from None
    if not values:
        raise InvalidArgument(f"--{what}: no values in {text!r}")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise InvalidArgument(f"--{what}: values must be finite and > 0, got {v}")
    return values


def grid(model, backend, seeds, lrs, batch_sizes, epochs, limit_train=None, limit_test=None, dtype="float32"):
    """Every run of the sweep, as plain dicts (the run's identity is the dict itself)."""
    from .zoo import recipe
    r = recipe(model)
    return [dict(model=model, backend=backend, seed=s, lr=lr if lr is not None else r.lr,
                 batch_size=bs if bs is not None else r.batch_size, epochs=epochs or r.epochs,
                 limit_train=limit_train, limit_test=limit_test, dtype=dtype)
            for lr, bs, s in itertools.product(lrs or [None], batch_sizes or [None], seeds)]


def run_key(run: dict) -> str:
    return json.dumps({k: run.get(k) for k in GRID_KEYS}, sort_keys=True)


# ---- the task (runs on a worker) ----

_MACHINE: dict = {}


def _machine() -> dict:
    """Where a run ran: host, CPU model, process (cached: once per worker process)."""
    if not _MACHINE:
        from .bench import cpu_model
        _MACHINE.update(host=socket.gethostname(), cpu=cpu_model() or platform.processor(), gpu=None)
    return dict(_MACHINE, pid=os.getpid())


_DATA: dict = {}


def _data(root, flatten, dtype):
    from .data import load_mnist
    key = (root, flatten, dtype)
    if key not in _DATA:  # once per worker process, not per run
        _DATA[key] = load_mnist(root, flatten=flatten, dtype=dtype)
    return _DATA[key]


def run_one(run: dict, data_root=None, threads=None) -> dict:
    """Train and evaluate one run; never raises: an error becomes the record's ``error``."""
    record = {"key": run_key(run), "config": run, "worker": _machine()}
    t0 = time.perf_counter()
    try:
        from . import zoo
        if threads:
            _limit_threads(threads)
        r = zoo.recipe(run["model"])
        (x, y), (xt, yt) = _data(data_root, r.flat_input, run["dtype"])
        n, m = run.get("limit_train"), run.get("limit_test")
        x, y, xt, yt = x[:n], y[:n], xt[:m], yt[:m]
        x, y = zoo.training_data(run["model"], x, y)
        fit = zoo.fit_args(run["model"], lr=run["lr"], batch_size=run["batch_size"], epochs=run["epochs"])
        model = zoo.create(run["model"], backend=run["backend"], seed=run["seed"], dtype=run["dtype"],
                           batch_size=fit["batch_size"])
        history = model.fit(x, y, **fit, verbose=0, seed=run["seed"])
        result = model.evaluate(xt, yt)
        if model.backend.is_device:
            record["worker"]["gpu"] = model.backend.info().get("gpu")
        record.update(status="ok", backend=model.backend.name, test_accuracy=result["accuracy"],
                      test_loss=result["loss"], epoch_seconds=history["seconds"],
                      mean_epoch_seconds=statistics.fmean(history["seconds"]))
    except Exception as exc:  # recorded, and the sweep goes on
        record.update(status="error", error=f"{type(exc).__name__}: {exc}")
    record["run_seconds"] = time.perf_counter() - t0
    return record


def _limit_threads(threads: int) -> None:
    try:
        import numba
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)


# ---- the result file ----

def read_done(path: Path) -> dict[str, dict]:
    """Records already in the file, by run key; a torn last line (a killed client) is cut off."""
    done = {}
    if not path.exists():
        return done
    if not path.is_file():
        raise FastMnistError(f"--out {path}: not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FastMnistError(f"--out {path}: cannot read it ({exc})") from None
    complete = raw[: raw.rfind(b"\n") + 1]
    for lineno, line in enumerate(complete.decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done[rec["key"]] = rec
        except (ValueError, KeyError, TypeError):
            raise FastMnistError(f"{path}: line {lineno} is not a sweep record; use another --out file") from None
    torn = raw[len(complete):]
    if torn:  # cut off only what a killed client leaves: the start of a record after valid ones
        if not torn.startswith(b'{"') or (complete.strip() and not done):
            raise FastMnistError(f"{path}: the last line is not a sweep record; use another --out file")
        with open(path, "r+b") as fh:
            fh.truncate(len(complete))
    return done


def _appending(out: Path):
    """The result file opened to append, or a FastMnistError naming it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return open(out, "a")
    except OSError as exc:
        raise FastMnistError(f"--out {out}: could not open it to append ({exc})") from None


def append_record(fh, record: dict) -> None:
    fh.write(json.dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


# ---- the cluster ----

def local_cluster(backend: str, workers: int | None, log):
    """An embedded cluster: one worker per GPU for cupy, else processes sharing the cores."""
    distributed = _distributed()
    from .backends import get_backend
    be = get_backend(backend)
    if be.is_device and not be.is_simulator:  # real GPUs (a simulator is a CPU process like the others)
        gpus = be.info()["gpus"]
        try:
            from dask_cuda import LocalCUDACluster
            log(f"LocalCUDACluster: one worker per GPU ({gpus})")
            return LocalCUDACluster(n_workers=workers or gpus, threads_per_worker=1), 1
        except ImportError:
            specs = {i: {"cls": distributed.Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
                     for i in range(workers or gpus)}
            log(f"{len(specs)} GPU worker(s), each pinned with CUDA_VISIBLE_DEVICES")
            return distributed.SpecCluster(workers=specs, scheduler={"cls": distributed.Scheduler,
                                                                     "options": {"dashboard_address": None}}), 1
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, cores))
    threads = max(1, cores // workers)
    env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    log(f"LocalCluster: {workers} worker process(es) x 1 task, {threads} Numba/BLAS thread(s) each ({cores} cores)")
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, env=env,
                                       dashboard_address=None)
    return cluster, threads


# ---- the client: submit, collect, write ----

@contextlib.contextmanager
def _connected(scheduler, make_cluster, log):
    """(client, threads per run): the user's cluster at ``scheduler``, or the one ``make_cluster``
    builds (returning (cluster, threads)); closed again on the way out, Ctrl-C included."""
    distributed = _distributed()
    cluster, threads = (None, None) if scheduler else make_cluster()
    try:
        client = distributed.Client(scheduler or cluster, timeout=f"{config.SWEEP_CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise FastMnistError(f"--scheduler {scheduler}: no Dask scheduler answered within "
                             f"{config.SWEEP_CONNECT_TIMEOUT_S} s ({type(exc).__name__})") from None
    if scheduler:
        log(f"cluster at {scheduler}: {len(client.scheduler_info()['workers'])} worker(s)")
    try:
        yield client, threads
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(runs: list[dict], out: Path, scheduler=None, workers=None, data_root=None, progress=True,
              log=lambda s: print(s, file=sys.stderr)) -> list[dict]:
    """Run every run not yet in ``out``; returns all records of the grid (old and new)."""
    _distributed()  # without Dask, say so before touching the result file
    out = Path(out)
    done = read_done(out)
    todo = [r for r in runs if run_key(r) not in done]
    log(f"{len(runs)} run(s) in the grid; {len(runs) - len(todo)} already in {out}; {len(todo)} to run")
    if todo:
        make = None if scheduler else (lambda: local_cluster(todo[0]["backend"], workers, log))
        with _connected(scheduler, make, log) as (client, threads):
            _collect(client, todo, out, data_root, threads, progress, done)
    return [done[run_key(r)] for r in runs if run_key(r) in done]


def _collect(client, todo, out, data_root, threads, progress, done):
    from distributed import as_completed
    futures = [client.submit(run_one, r, data_root, threads, key=f"fastmnist-run-{i}-{abs(hash(run_key(r)))}",
                             pure=False, retries=0) for i, r in enumerate(todo)]
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(futures), desc="runs", unit="run", file=sys.stderr)
        except ImportError:
            pass
    with _appending(out) as fh:
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as exc:  # the task itself never raises: this is Dask giving up on it
                record = {"key": None, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
                record["config"] = todo[futures.index(future)]
                record["key"] = run_key(record["config"])
            if record["key"] in done:  # cannot happen with one client; never write a run twice
                continue
            append_record(fh, record)
            done[record["key"]] = record
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()


# ---- the command ----

def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of training runs on Dask (local or a cluster), resumable")
    p.add_argument("--model", default="simple-cnn")
    p.add_argument("--backend", default="auto", help="numpy, numba, cupy or auto, resolved on each worker")
    p.add_argument("--seeds", default="0", help="e.g. 0-9 or 0,3,7")
    p.add_argument("--lr", default=None, help="comma list (default: the recipe's)")
    p.add_argument("--batch-size", default=None, help="comma list (default: the recipe's)")
    p.add_argument("--epochs", type=O.count, default=None, help="default: the recipe's")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--limit-train", type=O.count, default=None, help="train on the first N images only")
    p.add_argument("--limit-test", type=O.count, default=None, help="evaluate on the first N test images only")
    p.add_argument("--data", default=None, help="MNIST directory on every worker (default: as for train)")
    p.add_argument("--out", default="sweep.jsonl", help="result file, one JSON line per run (appended)")
    p.add_argument("--scheduler", default=None, help="address of a running dask scheduler (tcp://HOST:8786)")
    p.add_argument("--workers", type=O.count, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="accuracy against epoch time")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object (runs, errors, summary) as the last line")
    p.add_argument("--bench", default=None, nargs="?", const="--quick", metavar="'BENCH ARGS'",
                   help="run `fastmnist bench` (default args: --quick) once on every worker machine instead")


def command(args) -> dict:
    from . import sweep_report as report
    log = lambda s: print(s, file=sys.stderr)
    for path, option in ((args.out, "--out"), (args.plot, "--plot")):
        if path:  # before any run: no finished sweep is lost to an output
            O.check_output_file(path, option)
    if args.bench is not None:
        return _bench_command(args, log)
    batch_sizes = parse_ints(args.batch_size, "batch-size", lo=1) if args.batch_size else None
    runs = grid(args.model, args.backend, parse_ints(args.seeds, "seeds"),
                parse_floats(args.lr, "lr") if args.lr else None, batch_sizes, args.epochs, args.limit_train,
                args.limit_test, args.dtype)
    records = run_sweep(runs, Path(args.out), args.scheduler, args.workers, args.data, progress=not args.quiet,
                        log=log)
    rows = report.summarize(records)
    print(report.format_summary(rows))
    failed = [r for r in records if r.get("status") != "ok"]
    for r in failed:
        log(f"failed: {_short(r['config'])}: {r.get('error')}")
    if args.plot:
        log(f"wrote {O.write_output(args.plot, lambda p: report.plot(records, p), '--plot')}")
    return {"runs": len(records), "errors": len(failed), "summary": rows, "out": args.out}


def _short(cfg: dict) -> str:
    return ", ".join(f"{k}={cfg[k]}" for k in ("model", "backend", "seed", "lr", "batch_size") if k in cfg)


def _bench_command(args, log) -> dict:
    import shlex

    from . import sweep_report as report
    try:
        bench_args = shlex.split(args.bench)
    except ValueError as exc:  # an unclosed quote
        raise InvalidArgument(f"--bench {args.bench!r}: {exc}") from None
    local = lambda: (_distributed().LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None), None)
    with _connected(args.scheduler, local, log) as (client, _):
        reports = report.bench_every_machine(client, bench_args, log)
    print(report.merge_bench(reports))
    O.write_output(args.out, lambda p: p.write_text(json.dumps(reports, indent=1)), "--out")
    log(f"wrote {args.out}")
    return {"machines": list(reports)}
