"""One-epoch fits of zoo models on numba, timed, from whichever fastmnist Python imports: run it
alternately against two checkouts to compare code versions (a flag inside one version:
benchmarks/epoch_ab.py). Each model is warmed up (compiled) on 4000 rows first; each timed fit is a
fresh model, seed 0, over all 60000 rows.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/epoch_times.py two-layer,relu-mlp 4
    git worktree add /tmp/old <commit>
    (cd /tmp && PYTHONPATH=/tmp/old FASTMNIST_DATA=/abs/path/to/mnist python3 /abs/path/to/epoch_times.py two-layer 4)

Prints one line: the package's folder, then per model the epochs in seconds and the last accuracy
(the same accuracy from two versions says their training took the same path).
"""
import argparse
import os
import time

import fastmnist
from fastmnist import zoo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", help="zoo models, comma-separated")
    ap.add_argument("fits", type=int, help="timed one-epoch fits per model")
    args = ap.parse_args()
    parts = []
    for name in args.models.split(","):
        (x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)  # images for the CNNs
        warm = zoo.create(name, backend="numba", seed=0)
        warm.fit(x[:4000], y[:4000], **zoo.fit_args(name, epochs=1), verbose=0)
        times = []
        for _ in range(args.fits):
            model = zoo.create(name, backend="numba", seed=0)
            t0 = time.perf_counter()
            hist = model.fit(x, y, **zoo.fit_args(name, epochs=1), verbose=0)
            times.append(time.perf_counter() - t0)
        parts.append(f"{name} {' '.join(f'{t:.3f}' for t in times)} acc {hist['accuracy'][-1]:.4f}")
    print(os.path.dirname(os.path.dirname(fastmnist.__file__)), " | ".join(parts))


if __name__ == "__main__":
    main()
