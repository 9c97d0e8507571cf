"""The spread behind tests/test_cuda_sim.py's float32 verdict: two epochs of 768 images on cupy-sim
and on numpy, each seed, the test accuracy on 500 images of each (the test allows 0.004 apart).

    python3 benchmarks/sim_margins.py 0 8 > benchmarks/results/sim-margins.jsonl
"""
import json
import os
import sys

import fastmnist
from fastmnist import zoo

(x, y), (xt, yt) = fastmnist.load_mnist(os.environ.get("FASTMNIST_DATA", "../shared/data/mnist"))
data = (x[:768], y[:768], xt[:500], yt[:500])


def train(name, backend, seed, dtype="float32"):
    xx, yy, xxt, yyt = data
    r = zoo.recipe(name)
    model = zoo.create(name, backend=backend, seed=seed, dtype=dtype)
    if r.flat_input:
        xx, xxt = xx.reshape(len(xx), -1), xxt.reshape(len(xxt), -1)
    model.fit(xx.astype(dtype), yy, epochs=2, batch_size=min(max(r.batch_size, 32), 256), optimizer=r.optimizer, lr=r.lr,
              schedule=r.schedule, verbose=0, seed=seed)
    return model.evaluate(xxt.astype(dtype), yyt)["accuracy"]

for name in ["fast-cnn", "dropout-cnn", "sigmoid-mlp"]:
    for seed in range(int(sys.argv[1]), int(sys.argv[2])):
        a, b = train(name, "cupy-sim", seed), train(name, "numpy", seed)
        print(json.dumps({"model": name, "seed": seed, "cupy_sim": a, "numpy": b, "diff": abs(a - b)}), flush=True)
