"""Adam's one-region update over simple-cnn's parameters alone, against a copy of as many bytes.

    python3 benchmarks/adam_alone.py

``adam_update_many`` on arrays of simple-cnn's parameter shapes (float32), medians of 50 calls
after warm-up, the arrays staying where the last call left them (in the caches, as far as 12 MB
fit); then ``np.copyto`` of 14 bytes a parameter into 14 others (Adam reads parameter, gradient
and both moments and writes three: 28 bytes a parameter) on one thread. Inside a training step
(``benchmarks/step_ab.py``'s optimizer column) the moments come from memory instead.
"""
import numpy as np

from fastmnist.backends import numba_backend as nb
from fastmnist.bench.machine import median_seconds

SHAPES = [(30, 1, 5, 5), (30,), (4320, 100), (100,), (100, 10), (10,)]  # simple-cnn's parameters


def main():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    states = [{"m": np.zeros(s, np.float32), "v": np.zeros(s, np.float32)} for s in SHAPES]
    n = sum(p.size for p in params)
    src = np.zeros(n * 7 // 2, np.float32)
    dst = np.zeros_like(src)
    steps = iter(range(1, 10**9))
    print(f"{n} parameters, {n * 28 / 1e6:.1f} MB touched a step")
    adam = median_seconds(lambda: nb.adam_update_many(params, grads, states, next(steps), 1e-3), 50)
    copy = median_seconds(lambda: np.copyto(dst, src), 50)
    print(f"adam_update_many   {adam * 1e3:.3f} ms")
    print(f"copy of as many bytes, one thread   {copy * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
