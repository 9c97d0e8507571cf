"""On a GPU: fast-cnn's recipe over seeds, timed as the anchor times it, and a model carried to NumPy.

    python3 benchmarks/gpu_checks.py --backend cupy --seeds 0-9 --out seeds.jsonl --model-out model.npz

Each seed: model init + one epoch of training + test evaluation, timed together (the anchor's own
measure: 99.04% in 0.762 s on a GTX 1660 Ti), after one warm-up run on 1024 images so that NVRTC
compilation, cuBLAS handles and the CUDA context stay out of the numbers; the test evaluation ends
in host floats, so the time includes the device's work. The last seed's model is saved and read
back on the NumPy backend, whose test accuracy must match within one image (0.01 points).
Runs on any backend (``--backend numpy`` checks the script itself on a CPU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import fastmnist
from fastmnist import zoo


def seed_list(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def one_run(be, name, seed, x, y, x_test, y_test, epochs=1):
    """Init + training + test evaluation of zoo model ``name``; returns (model, record)."""
    t0 = time.perf_counter()
    model = zoo.create(name, backend=be, seed=seed)
    hist = model.fit(x, y, verbose=0, seed=seed, **zoo.fit_args(name, epochs=epochs))
    test = model.evaluate(x_test, y_test)
    total = time.perf_counter() - t0
    return model, {"model": name, "backend": be.name, "seed": seed, "epochs": epochs,
                   "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                   "train_loss": hist["loss"][-1], "epoch_seconds": hist["seconds"],
                   "init_train_eval_seconds": total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="cupy")
    p.add_argument("--model", default="fast-cnn")
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--limit-train", type=int, default=None, help="first N training images (a quick check)")
    p.add_argument("--out", default=None, help="append one JSON line per seed")
    p.add_argument("--model-out", default=None, help="save the last seed's model here and evaluate it on numpy")
    args = p.parse_args(argv)
    be = fastmnist.get_backend(args.backend)
    (x, y), (x_test, y_test) = fastmnist.load_mnist()
    if args.limit_train:
        x, y = x[:args.limit_train], y[:args.limit_train]
    one_run(be, args.model, 0, x[:1024], y[:1024], x_test[:1000], y_test[:1000])  # warm-up: compile, handles
    rows, model = [], None
    for seed in seed_list(args.seeds):
        model, row = one_run(be, args.model, seed, x, y, x_test, y_test)
        rows.append(row)
        print(f"{args.model} seed {seed}: test {row['test_accuracy']:.4f}, epoch {row['epoch_seconds'][0]:.3f} s, "
              f"init+train+eval {row['init_train_eval_seconds']:.3f} s", flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    acc = np.array([r["test_accuracy"] for r in rows])
    secs = np.array([r["init_train_eval_seconds"] for r in rows])
    print(f"{args.model} on {args.backend}, {len(rows)} seeds: test accuracy mean {acc.mean():.4f} "
          f"(min {acc.min():.4f}, max {acc.max():.4f}); init+train+eval median {np.median(secs):.3f} s")
    status = 0
    if args.model_out:
        model.save(args.model_out)
        here = rows[-1]["test_accuracy"]
        there = fastmnist.load(args.model_out, backend=fastmnist.get_backend("numpy")).evaluate(x_test, y_test)
        same = abs(there["accuracy"] - here) <= 1 / len(y_test) + 1e-12
        print(f"saved on {args.backend} ({here:.4f}), evaluated on numpy: {there['accuracy']:.4f} -> "
              f"{'same within one image' if same else 'DIFFERENT'}")
        status = 0 if same else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
