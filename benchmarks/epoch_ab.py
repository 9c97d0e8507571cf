"""Whole-epoch A/B of one config flag: fit() alternated in one process, the flag on then off.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/epoch_ab.py FLAG model[,model...] ROUNDS

Prints each model's epoch times (seconds) and medians on the numba backend; the first fit of each
model, on 2560 images, warms up the JIT and is not counted. Alternating inside one process is the
fair comparison on a noisy VM (docs/benchmarks.md).
"""
import os
import sys
import time

import numpy as np

import fastmnist
from fastmnist import config, zoo


def epoch_seconds(name, x, y):
    model = zoo.create(name, backend="numba", seed=0)
    start = time.perf_counter()
    model.fit(x, y, **zoo.fit_args(name, epochs=1), verbose=0, seed=0)
    return time.perf_counter() - start


def main(flag, models, rounds):
    (x, y), _ = fastmnist.load_mnist(os.environ.get("FASTMNIST_DATA", "../shared/data/mnist"))
    for name in models:
        epoch_seconds(name, x[:2560], y[:2560])  # JIT warm-up
        times = {True: [], False: []}
        for _ in range(rounds):
            for on in (True, False):
                setattr(config, flag, on)
                times[on].append(epoch_seconds(name, x, y))
        print(name, flag, *(f"{'on' if on else 'off'}: {' '.join(f'{t:.3f}' for t in times[on])} "
                             f"median {np.median(times[on]):.3f}" for on in (True, False)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]))
