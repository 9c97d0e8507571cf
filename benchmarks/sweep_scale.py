"""Runs per hour of `fastmnist sweep` on this machine with 1 and 2 local workers, and the
scheduler's overhead per task (a grid of near-trivial runs). Writes JSON; docs/scale-out.md quotes it.

    python3 benchmarks/sweep_scale.py --out benchmarks/results/sweep-scale.json
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastmnist import sweep
from fastmnist.bench import cpu_model


def timed_sweep(runs, workers):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        recs = sweep.run_sweep(runs, Path(tmp) / "s.jsonl", workers=workers, progress=False, log=lambda s: None)
        wall = time.perf_counter() - t0
    assert len(recs) == len(runs) and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    return wall, recs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit-train", type=int, default=10000)
    args = ap.parse_args()
    grid = sweep.grid("fast-cnn", "numba", [0, 1, 2, 3], [0.005, 0.01], [128, 256], 1, limit_train=args.limit_train,
                      limit_test=2000)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "grid": f"fast-cnn numba, 4 seeds x 2 lr x 2 batch sizes, "
              f"1 epoch of {args.limit_train} images, 2000 test images", "configs": []}
    for workers in (1, 2):
        timed_sweep(grid[:2], workers)  # warm the Numba cache so neither setting pays compilation
        wall, recs = timed_sweep(grid, workers)
        row = {"workers": workers, "threads_per_worker": (os.cpu_count() or 1) // workers, "runs": len(grid),
               "wall_s": wall, "runs_per_hour": 3600 * len(grid) / wall,
               "median_run_s": statistics.median(r["run_seconds"] for r in recs),
               "median_epoch_s": statistics.median(r["mean_epoch_seconds"] for r in recs),
               "mean_accuracy": statistics.fmean(r["test_accuracy"] for r in recs)}
        result["configs"].append(row)
        print(json.dumps(row), file=sys.stderr)
    trivial = sweep.grid("relu-mlp", "numpy", list(range(64)), [0.001], [100], 1, limit_train=100, limit_test=100)
    timed_sweep(trivial[:2], 2)
    wall, recs = timed_sweep(trivial, 2)
    busy = sum(r["run_seconds"] for r in recs)
    result["overhead"] = {"runs": len(trivial), "workers": 2, "wall_s": wall, "sum_run_s": busy,
                          "overhead_per_task_ms": 1e3 * (wall - busy / 2) / len(trivial),
                          "note": "wall includes starting the LocalCluster (once per sweep)"}
    print(json.dumps(result["overhead"]), file=sys.stderr)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
