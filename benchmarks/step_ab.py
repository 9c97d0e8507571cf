"""In-process A/B of one config setting on training steps: blocks of four steps per value, in turn.

    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/step_ab.py dropout-cnn 200 ADAM_PARALLEL_MIN_ELEMENTS \\
        1000000,100000 800
    FASTMNIST_DATA=../shared/data/mnist python3 benchmarks/step_ab.py simple-cnn 100 NUMBA_GEMM numpy,mkl 800

Runs ``STEPS`` steps of the zoo model's recipe (its optimizer, fixed learning rate 0.001) on random
MNIST batches of ``BATCH`` inside the numba backend's training context; the value of ``FLAG``
changes every four steps, and the first step of each block and the first 40 steps are not counted.
Prints, per value, the median of the optimizer's step and of the whole step (milliseconds). Finer
than whole epochs (benchmarks/epoch_ab.py) on a machine whose speed drifts from minute to minute.
"""
import collections
import sys
import time

import numpy as np

import fastmnist
from fastmnist import config, zoo


def main(name, batch, flag, values, steps):
    be = fastmnist.get_backend("numba")
    model = zoo.create(name, backend=be, seed=0)
    opt = zoo.fit_args(name)["optimizer"].attach(model)
    (x, y), _ = fastmnist.load_mnist(flatten=zoo.recipe(name).flat_input)
    rng = np.random.default_rng(0)
    optimizer, whole = collections.defaultdict(list), collections.defaultdict(list)
    with be.training_context():
        for s in range(steps):
            value = values[(s // 4) % len(values)]
            setattr(config, flag, value)
            t0 = time.perf_counter()
            idx = rng.integers(0, len(x), batch)
            out = model.forward(x[idx], train=True)
            _, d = model.loss_and_grad(out, y[idx].astype(np.int64))
            model.backward(d)
            t1 = time.perf_counter()
            opt.step(0.001)
            t2 = time.perf_counter()
            if s >= 40 and s % 4:
                optimizer[value].append(t2 - t1)
                whole[value].append(t2 - t0)
    for value in values:
        print(f"{name} b{batch} {flag}={value}: optimizer {np.median(optimizer[value]) * 1e3:.3f} ms, "
              f"step {np.median(whole[value]) * 1e3:.3f} ms (medians of {len(whole[value])})")


def _value(text):
    """A flag's value as given: an integer where it reads as one (1000000), else the string (mkl)."""
    try:
        return int(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], [_value(v) for v in sys.argv[4].split(",")],
         int(sys.argv[5]) if len(sys.argv) > 5 else 400)
