"""Two environments side by side in lockstep: the same zoo fits, timed turn by turn in two live
processes, for settings a process reads once (``GOMP_SPINCOUNT``, ``OMP_WAIT_POLICY``, ...) on a
machine whose speed drifts from minute to minute (flags inside one process: epoch_ab.py).

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/env_ab.py fast-cnn,simple-cnn 8 \\
        "FASTMNIST_GOMP_SPINCOUNT=0" "FASTMNIST_GOMP_SPINCOUNT=300000"

Each process loads MNIST, warms every model up (compiles) on 4000 rows, then waits. Each round,
each process in turn (the order alternating round by round) fits each model for one epoch on the
first ``--rows`` rows (fresh weights, seed 0) while the other one waits on its pipe, and reports
the seconds after ``--gap`` seconds of sleep: an idle side's OpenMP threads spin a while after
their last parallel region (GOMP_SPINCOUNT), and must not spin into the other side's turn.
Printed: per model, each side's median, and the median over rounds of B's time over A's (below 1:
B faster), with the lowest and highest of those ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def child(models, rows, gap):
    import fastmnist
    from fastmnist import zoo
    data = {}
    for name in models:
        (x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)
        data[name] = (x[:rows], y[:rows])
        zoo.create(name, backend="numba", seed=0).fit(x[:4000], y[:4000], **zoo.fit_args(name, epochs=1), verbose=0)
    print("ready", flush=True)
    for line in sys.stdin:
        name = line.strip()
        x, y = data[name]
        model = zoo.create(name, backend="numba", seed=0)
        t0 = time.perf_counter()
        model.fit(x, y, **zoo.fit_args(name, epochs=1), verbose=0)
        seconds = time.perf_counter() - t0
        time.sleep(gap)  # until this side's OpenMP threads stop spinning, before the other side's turn
        print(json.dumps(seconds), flush=True)


def start(env_text, models, rows, gap):
    env = dict(os.environ)
    for item in env_text.split():
        key, _, value = item.partition("=")
        env[key] = value
    proc = subprocess.Popen([sys.executable, __file__, "--child", ",".join(models), "--rows", str(rows),
                             "--gap", str(gap)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the process for {env_text!r} did not start")
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", help="zoo models, comma-separated")
    ap.add_argument("rounds", type=int, nargs="?", default=6)
    ap.add_argument("a", nargs="?", default="", help="side A: VAR=value ... (space-separated)")
    ap.add_argument("b", nargs="?", default="", help="side B: VAR=value ...")
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--gap", type=float, default=0.3,
                    help="seconds a side waits after each fit, longer than its OpenMP threads spin (GOMP_SPINCOUNT)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = args.models.split(",")
    if args.child:
        return child(models, args.rows, args.gap)
    sides = [start(args.a, models, args.rows, args.gap), start(args.b, models, args.rows, args.gap)]
    times = {name: ([], []) for name in models}
    for r in range(args.rounds):
        for name in models:
            for s in ((0, 1) if r % 2 == 0 else (1, 0)):
                sides[s].stdin.write(name + "\n")
                sides[s].stdin.flush()
                times[name][s].append(json.loads(sides[s].stdout.readline()))
    for proc in sides:
        proc.stdin.close()
        proc.wait()
    print(f"A: {args.a or '(as is)'}   B: {args.b or '(as is)'}   {args.rounds} rounds, {args.rows} rows")
    for name, (ta, tb) in times.items():
        ratio = np.array(tb) / np.array(ta)
        print(f"  {name:14s} A {np.median(ta):7.3f} s   B {np.median(tb):7.3f} s   B/A median {np.median(ratio):.3f} "
              f"(range {ratio.min():.3f}-{ratio.max():.3f})   A: {' '.join(f'{t:.3f}' for t in ta)}   "
              f"B: {' '.join(f'{t:.3f}' for t in tb)}")


if __name__ == "__main__":
    main()
