"""A/B of two checkouts of fastmnist on whole training epochs: one process per epoch, alternating.

    git worktree add /tmp/base <old commit>
    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/tree_ab.py simple-cnn 100 6 /tmp/base

Each round runs, in turn (the order alternating from round to round), a fresh process on this
checkout and one on BASE, each training MODEL's recipe at BATCH: a short fit first (JIT, caches),
then two one-epoch fits, the faster of which it reports. Prints each round's times, the medians
and each round's ratio (this checkout over BASE: below 1 is faster). For changes no config flag
turns off (benchmarks/step_ab.py A/Bs those inside one process). Warm both checkouts' Numba caches
first (one run each), or the first round times compiling.
"""
import os
import statistics
import subprocess
import sys

WORKER = r'''
import sys, time
import fastmnist
from fastmnist import zoo
name, batch = sys.argv[1], int(sys.argv[2])
be = fastmnist.get_backend("numba")
(x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)
model = zoo.create(name, backend=be, seed=0)
model.fit(x[:3000], y[:3000], **zoo.fit_args(name, batch_size=batch, epochs=1), verbose=0)
times = []
for _ in range(2):
    t = time.perf_counter()
    model.fit(x, y, **zoo.fit_args(name, batch_size=batch, epochs=1), verbose=0)
    times.append(time.perf_counter() - t)
print(min(times))
'''


def epoch_seconds(tree: str, model: str, batch: int) -> float:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", WORKER, model, str(batch)], cwd=tree, env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"{tree}: the worker failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(model: str, batch: int, rounds: int, base: str) -> None:
    trees = {"this": os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "base": os.path.abspath(base)}
    times = {k: [] for k in trees}
    for r in range(rounds):
        for k in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            times[k].append(epoch_seconds(trees[k], model, batch))
        print(f"round {r}: this {times['this'][-1]:.3f} s, base {times['base'][-1]:.3f} s", flush=True)
    ratios = [a / b for a, b in zip(times["this"], times["base"])]
    print(f"{model} b{batch}: this median {statistics.median(times['this']):.3f} s, base median "
          f"{statistics.median(times['base']):.3f} s; this/base per round "
          f"{', '.join(f'{q:.3f}' for q in ratios)} (median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
