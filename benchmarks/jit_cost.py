"""JIT cost of the numba backend: time from process start to the end of the first training step,
in a fresh process with an empty Numba cache (everything compiles) and with a warm one.

    python3 benchmarks/jit_cost.py [--model simple-cnn] [--repeat 3] [--json FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

STEP = """
import time, numpy as np
t0 = time.perf_counter()
from fastmnist import zoo
r = zoo.recipe("{model}")
m = zoo.create("{model}", backend="numba")
x = np.random.default_rng(0).random((r.batch_size, *m.input_shape), dtype=np.float32)
y = np.arange(r.batch_size) % 10
m.fit(x, y, **zoo.fit_args("{model}", epochs=1), verbose=0)
print(time.perf_counter() - t0)
"""


def first_step(model, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", STEP.format(model=model)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return time.perf_counter() - t0, float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="simple-cnn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cold, warm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(first_step(args.model, cache))
            warm.append(first_step(args.model, cache))
    report = {"model": args.model,
              "cold_wall_s": statistics.median(c[0] for c in cold), "cold_in_process_s": statistics.median(c[1] for c in cold),
              "warm_wall_s": statistics.median(w[0] for w in warm), "warm_in_process_s": statistics.median(w[1] for w in warm),
              "runs": {"cold": cold, "warm": warm}}
    print(f"{args.model}: first training step, empty cache {report['cold_wall_s']:.2f} s "
          f"(in process {report['cold_in_process_s']:.2f} s); warm cache {report['warm_wall_s']:.2f} s "
          f"(in process {report['warm_in_process_s']:.2f} s); medians of {args.repeat}, wall = from process start")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
