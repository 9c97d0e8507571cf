"""The spread of every test verdict that depends on a model trained in the test session.

    python3 benchmarks/test_margins.py --seeds 0-4 --out benchmarks/results/test-margins.json

A model trained in the test session differs in its last bits from one CPU to another (BLAS and
LLVM pick other kernels, so sums run in another order), and training amplifies those bits. Another
seed is a perturbation of the same kind and size, so each test's metric is measured here over
seeds, on numpy and numba, and on numba again with ``NUMBA_CPU_NAME=haswell`` (AVX2 code, a second
CPU); the thresholds in the tests sit outside the spread this writes, with the spread quoted beside
them. Each configuration runs in its own process (``NUMBA_CPU_NAME`` is read when numba loads).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = [("numba", ""), ("numba", "haswell"), ("numpy", "")]


def photo_metrics(model, xt, yt) -> dict:
    """The photo tests' metrics (tests/test_photos.py), on one trained model."""
    from PIL import Image

    from fastmnist.photos import photosynth
    from fastmnist.photos.images import predict_images, read_numbers
    out = {}
    photos = photosynth.digit_photos(xt, yt, 400, seed=7)
    got = predict_images(model, [Image.open(io.BytesIO(p.data)) for p in photos])
    out["digits400_seed7_right"] = sum(g.get("digit") == p.labels[0] for g, p in zip(got, photos))
    for size, count in ((28, 60), (40, 60), (4000, 3)):
        photos = photosynth.digit_photos(xt, yt, count, seed=size, sizes=[size])
        got = predict_images(model, [Image.open(io.BytesIO(p.data)) for p in photos])
        ok = [g.get("digit") == p.labels[0] for g, p in zip(got, photos)]
        out[f"size{size}_{count}_right"] = int(sum(ok))
        # what the same digits score as MNIST images: the model's share of the misses
        same = [p.conditions["mnist_index"][0] for p in photos]
        out[f"size{size}_{count}_as_mnist_right"] = int(np.sum(np.argmax(model.predict(xt[same][:, None]), 1) == yt[same]))
    with tempfile.TemporaryDirectory() as tmp:
        photos = photosynth.number_photos(xt, yt, 100, seed=7)
        paths = [p.save(Path(tmp) / f"n{k}{p.suffix}") for k, p in enumerate(photos)]
        read = read_numbers(model, paths)
    out["numbers100_seed7_exact"] = sum(r["number"] == "".join(map(str, p.labels)) for r, p in zip(read, photos))
    out.update(wide_metrics(model, xt, yt))
    return out


def wide_metrics(model, xt, yt) -> dict:
    """tests/test_photos.py's wide-photo verdicts: 200 wide single digits and 50 wide numbers, seed 3."""
    from PIL import Image

    from fastmnist.photos import photosynth
    from fastmnist.photos.images import predict_images, read_numbers
    photos = photosynth.digit_photos(xt, yt, 200, seed=3, wide=True)
    got = predict_images(model, [Image.open(io.BytesIO(p.data)) for p in photos])
    numbers = photosynth.number_photos(xt, yt, 50, seed=3, wide=True)
    read = read_numbers(model, [Image.open(io.BytesIO(p.data)) for p in numbers])
    return {"wide200_seed3_right": sum(g.get("digit") == p.labels[0] for g, p in zip(got, photos)),
            "wide_numbers50_seed3_exact": sum(r["number"] == "".join(map(str, p.labels)) for r, p in zip(read, numbers))}


def run_one(backend: str, seed: int, data: str) -> dict:
    """Train and measure every model-dependent test verdict for one (backend, seed)."""
    import fastmnist
    from fastmnist import zoo
    from fastmnist.optim import Adam
    (x, y), (xt, yt) = fastmnist.load_mnist(data)
    res = {"backend": backend, "seed": seed, "numba_cpu_name": os.environ.get("NUMBA_CPU_NAME", "")}
    t0 = time.perf_counter()
    # conftest.photo_model: fast-cnn, one epoch by its recipe
    model = zoo.create("fast-cnn", backend=backend, seed=seed)
    model.fit(x, y, **zoo.fit_args("fast-cnn", epochs=1), verbose=0, seed=seed)
    res["fastcnn_mnist_accuracy"] = model.evaluate(xt, yt)["accuracy"]
    res.update(photo_metrics(model, xt[:, 0], yt))
    # test_images.trained: relu-mlp, 12000 images, 2 epochs; 20 photographed digits agree with the originals
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_images import photographed_agreement
    mlp = zoo.create("relu-mlp", backend=backend, seed=seed)
    xf, xtf = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    mlp.fit(xf[:12000], y[:12000], epochs=2, batch_size=200, optimizer="adam", lr=1e-3, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        res["relu_mlp_photographed_agree20"] = photographed_agreement(mlp, xtf, Path(tmp))
    # README main command: simple-cnn, one epoch by its recipe, on the full test set
    cnn = zoo.create("simple-cnn", backend=backend, seed=seed)
    cnn.fit(x, y, **zoo.fit_args("simple-cnn", epochs=1), verbose=0, seed=seed)
    res["simplecnn_1epoch_accuracy"] = cnn.evaluate(xt, yt)["accuracy"]
    # test_cli: simple-cnn on 2000 images, evaluated on 500
    cnn = zoo.create("simple-cnn", backend=backend, seed=seed)
    cnn.fit(x[:2000], y[:2000], epochs=1, batch_size=100, optimizer="adam", lr=1e-3, verbose=0, seed=seed)
    res["simplecnn_2000_accuracy500"] = cnn.evaluate(xt[:500], yt[:500])["accuracy"]
    # test_model.test_training_learns: simple-cnn on the synthetic strokes
    from test_model import tiny_data
    xs, ys = tiny_data(256)
    cnn = zoo.create("simple-cnn", backend=backend, seed=seed)
    hist = cnn.fit(xs, ys, epochs=3, batch_size=32, optimizer=Adam(0.002), verbose=0, validation_data=tiny_data(64, seed=1))
    res["tiny_strokes_val_accuracy"] = hist["val_accuracy"][-1]
    res["seconds"] = time.perf_counter() - t0
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--numpy-seeds", default="0-1", help="numpy is slow: fewer seeds")
    ap.add_argument("--data", default=os.environ.get("FASTMNIST_DATA", "../shared/data/mnist"))
    ap.add_argument("--out")
    ap.add_argument("--one", nargs=2, metavar=("BACKEND", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.data)))
        return

    def seeds(spec):
        lo, _, hi = spec.partition("-")
        return range(int(lo), int(hi or lo) + 1)

    from fastmnist.bench import environment
    results = []
    for backend, cpu in CONFIGS:
        for seed in seeds(args.numpy_seeds if backend == "numpy" else args.seeds):
            env = dict(os.environ)
            env.pop("NUMBA_CPU_NAME", None)
            if cpu:
                env["NUMBA_CPU_NAME"] = cpu
            proc = subprocess.run([sys.executable, __file__, "--one", backend, str(seed), "--data", args.data],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    keys = [k for k in results[0] if k not in ("backend", "seed", "numba_cpu_name", "seconds")]
    spread = {k: {"min": min(r[k] for r in results), "max": max(r[k] for r in results)} for k in keys}
    report = {"machine": environment(), "runs": results, "spread": spread}
    for k, s in spread.items():
        print(f"{k:36s} {s['min']:.4g} .. {s['max']:.4g}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
