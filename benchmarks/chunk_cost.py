"""What a chunk of compiled steps costs beyond its steps: one-epoch fits of a zoo model on numba over
the first 12000 MNIST images, alternately with ``config.STEP_CHUNK_SAMPLES`` of one batch (a call per
step) and of all 12000 (one call), five times each; prints the medians and their difference per call.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/chunk_cost.py two-layer
"""
import sys
import time

import numpy as np

import fastmnist
from fastmnist import config, zoo


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "two-layer"
    (x, y), _ = fastmnist.load_mnist(flatten=True)
    x, y = x[:12000], y[:12000]
    batch = zoo.fit_args(name, epochs=1)["batch_size"]
    warm = zoo.create(name, backend="numba", seed=0)
    warm.fit(x[:2560], y[:2560], **zoo.fit_args(name, epochs=1), verbose=0)
    times = {batch: [], len(x): []}
    for _ in range(5):
        for chunk in times:
            config.STEP_CHUNK_SAMPLES = config.STEP_CHUNK_FIRST_SAMPLES = chunk
            config.STEP_CHUNK_SECONDS = float("inf")  # calls of exactly ``chunk`` samples, not sized by pace
            model = zoo.create(name, backend="numba", seed=0)
            t0 = time.perf_counter()
            model.fit(x, y, **zoo.fit_args(name, epochs=1), verbose=0)
            times[chunk].append(time.perf_counter() - t0)
    many, one = np.median(times[batch]), np.median(times[len(x)])
    calls = len(x) // batch
    print(f"{name}: {calls} calls {many * 1e3:.1f} ms, 1 call {one * 1e3:.1f} ms: "
          f"{(many - one) / (calls - 1) * 1e6:.0f} us per call")


if __name__ == "__main__":
    main()
