"""What a training step costs beyond its arithmetic: a 1-unit model (one input, one weight, one
bias, squared error), batch 1, SGD, one epoch of ``--samples`` steps through ``fit()``.

    python3 benchmarks/step_overhead.py --out benchmarks/results/step-overhead.json

Per backend, the compiled path (whole steps in ``dense_train_steps``, a chunk per call) and the
per-layer path (``set_fusion(False)``: layer objects, argument checks, one kernel call per
operation). Median of ``--repeat`` epochs after a warm-up epoch (JIT compilation).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from fastmnist import Sequential
from fastmnist.backends import available_backends
from fastmnist.bench import environment
from fastmnist.layers import Dense


def per_step_us(backend: str, fused: bool, samples: int, repeat: int) -> list[float]:
    rng = np.random.default_rng(0)
    x = rng.random((samples, 1), dtype=np.float32)
    y = np.zeros(samples, np.int64)  # one class: the target is 1 (one-hot of 0)
    model = Sequential([Dense(1)], (1,), loss="mse", backend=backend)
    model.set_fusion(fused)
    out = []
    for k in range(repeat + 1):
        t0 = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=1, optimizer="sgd", lr=0.01, verbose=0)
        if k:  # the first epoch compiles
            out.append((time.perf_counter() - t0) / samples * 1e6)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for name in (n for n in available_backends() if n != "cupy"):
        for fused in (True, False):
            samples = args.samples if fused else min(args.samples, 10000)  # the per-layer path is slow
            times = per_step_us(name, fused, samples, args.repeat)
            rows.append({"backend": name, "path": "compiled steps" if fused else "per layer", "samples": samples,
                         "per_step_us": times, "median_us": statistics.median(times)})
            print(f"{name:6s} {rows[-1]['path']:15s} {rows[-1]['median_us']:8.2f} us/step", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": environment(), "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
