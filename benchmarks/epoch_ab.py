"""Whole-epoch A/B of one config setting: fit() alternated in one process, one value after another.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/epoch_ab.py FLAG model[,model...] ROUNDS [VALUES]

VALUES are comma-separated integers (default: on then off, True,False), e.g.
``epoch_ab.py STEP_SPLIT_PARTS two-layer,relu-mlp 3 2,1``. Prints each model's epoch times
(seconds), medians on the numba backend, and whether the last epochs of every value left the
same weights; the first fit of each model and value, on 2560 images, warms up the JIT and is not
counted. Alternating inside one process is the fair comparison on a noisy VM (docs/benchmarks.md).
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
    return time.perf_counter() - start, [np.asarray(p).copy() for p in model.parameters()]


def main(flag, models, rounds, values):
    data = os.environ.get("FASTMNIST_DATA", "../shared/data/mnist")
    for name in models:
        (x, y), _ = fastmnist.load_mnist(data, flatten=zoo.recipe(name).flat_input)
        for value in values:  # JIT warm-up, each value's code path
            setattr(config, flag, value)
            epoch_seconds(name, x[:2560], y[:2560])
        times, weights = {v: [] for v in values}, {}
        for _ in range(rounds):
            for value in values:
                setattr(config, flag, value)
                seconds, weights[value] = epoch_seconds(name, x, y)
                times[value].append(seconds)
        same = all(all(np.array_equal(a, b) for a, b in zip(weights[values[0]], weights[v])) for v in values)
        print(name, flag, " | ".join(f"{v}: {' '.join(f'{t:.3f}' for t in times[v])} median {np.median(times[v]):.3f}"
                                    for v in values), "same weights" if same else "weights differ", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]),
         [int(v) for v in sys.argv[4].split(",")] if len(sys.argv) > 4 else [True, False])
