"""The ``fastmnist`` command line: train, evaluate, info, download.

Errors a user can fix (missing data, a bad file, an unknown or unavailable backend, a bad
argument) print one line on stderr and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def _add_train(sub):
    p = sub.add_parser("train", help="train a zoo model and print its test accuracy")
    p.add_argument("--model", default=None, help="zoo model name (default simple-cnn; see `fastmnist info`)")
    p.add_argument("--backend", default=None, help="numpy, numba, cupy or auto (default: $FASTMNIST_BACKEND or auto)")
    p.add_argument("--epochs", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default: the model's recipe)")
    p.add_argument("--optimizer", default=None, help="sgd, momentum, adagrad or adam (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", default=None, help="MNIST directory (default: $FASTMNIST_DATA, ./data/mnist, ~/.cache/fastmnist/mnist)")
    p.add_argument("--validation-split", type=float, default=None, help="hold out this fraction for validation")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N images only")
    p.add_argument("--limit-test", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--out", default=None, help="save the trained model to this .npz file")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_others(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model on the MNIST test set")
    p.add_argument("file")
    p.add_argument("--backend", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("info", help="backends available here (and why not), versions, threads, GPU, the zoo")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("download", help="download MNIST, verifying SHA-256 of each decompressed file")
    p.add_argument("--data", default=None, help="target directory")
    p.add_argument("--mirror", action="append", default=None, help="base URL to try (repeatable; default: built-in list)")
    p.add_argument("--force", action="store_true", help="download even when valid files are present")


def _add_bench(sub):
    p = sub.add_parser("bench", help="time kernels, a training step and an epoch on every backend, side by side")
    p.add_argument("--backends", default=None, help="comma list of numpy,numba,cupy,torch (default: all available)")
    p.add_argument("--kernels", default=None, help="comma list of kernel names (default: all)")
    p.add_argument("--models", default=None, help="comma list of zoo models (default: simple-cnn,dropout-cnn)")
    p.add_argument("--batch-sizes", default=None, help="one size for all models, or model=size,...")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs-only", action="store_true")
    group.add_argument("--kernels-only", action="store_true")
    p.add_argument("--json", dest="json_file", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw a grouped bar chart (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="few repeats, a 2000-image epoch: under a minute")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmnist", description="Train MNIST networks on compiled-kernel backends.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_others(sub)
    _add_bench(sub)
    return parser


def _limit(arr, n):
    return arr if n is None else arr[:n]


def cmd_train(args) -> dict:
    from . import zoo
    from .data import load_mnist
    from .optim import make_optimizer

    name = args.model or zoo.DEFAULT_MODEL
    recipe = zoo.recipe(name)
    (x, y), (xt, yt) = load_mnist(args.data, flatten=recipe.flat_input, dtype=args.dtype)
    x, y, xt, yt = _limit(x, args.limit_train), _limit(y, args.limit_train), _limit(xt, args.limit_test), _limit(yt, args.limit_test)
    model = zoo.create(name, backend=args.backend, seed=args.seed, dtype=args.dtype)
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    opt_name = args.optimizer or recipe.optimizer
    hyper = recipe.optimizer_args if opt_name == recipe.optimizer else {}
    optimizer = make_optimizer(opt_name, args.lr or recipe.lr, **hyper)
    verbose = 0 if args.quiet else 1
    if not args.quiet:
        print(f"training {name} on {model.backend.name} ({args.dtype}): {len(x)} images, {epochs} epoch(s), "
              f"batch {batch_size}, {opt_name} lr {optimizer.lr:g}", file=sys.stderr)
    t0 = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, schedule=recipe.schedule,
                        validation_split=args.validation_split, verbose=verbose, seed=args.seed)
    train_seconds = time.perf_counter() - t0
    result = model.evaluate(xt, yt)
    if args.out:
        path = model.save(args.out, optimizer=optimizer, extra={"history": history})
        if not args.quiet:
            print(f"saved {path}", file=sys.stderr)
    summary = {
        "model": name, "backend": model.backend.name, "dtype": args.dtype, "epochs": epochs,
        "batch_size": batch_size, "optimizer": opt_name, "lr": optimizer.lr, "seed": args.seed,
        "train_samples": int(len(x)), "epoch_seconds": history["seconds"], "train_seconds": train_seconds,
        "samples_per_second": len(x) * epochs / sum(history["seconds"]),
        "train_loss": history["loss"], "train_accuracy": history["accuracy"],
        "val_accuracy": history["val_accuracy"], "test_loss": result["loss"], "test_accuracy": result["accuracy"],
        "out": args.out,
    }
    print(f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) after {epochs} epoch(s); "
          f"{summary['samples_per_second']:.0f} samples/s on {model.backend.name}")
    return summary


def cmd_evaluate(args) -> dict:
    from .data import load_mnist
    from .model import load

    model = load(args.file, backend=args.backend)
    _, (xt, yt) = load_mnist(args.data, flatten=len(model.input_shape) == 1, dtype=model.dtype.name)
    xt, yt = _limit(xt, args.limit_test), _limit(yt, args.limit_test)
    result = model.evaluate(xt, yt)
    print(f"{args.file}: test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) on {model.backend.name}")
    return {"file": args.file, "model": model.name, "backend": model.backend.name,
            "test_accuracy": result["accuracy"], "test_loss": result["loss"], "test_samples": int(len(xt))}


def gather_info() -> dict:
    from . import __version__, zoo
    from .backends import NAMES, backend_status, get_backend, resolve_name

    backends = {}
    for name in NAMES:
        ok, why = backend_status(name)
        entry = {"available": ok, "reason": why}
        if ok:
            entry.update(get_backend(name).info())
        backends[name] = entry
    return {
        "fastmnist": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "numpy": np.__version__, "auto_backend": resolve_name("auto"),
        "env": {k: os.environ[k] for k in ("FASTMNIST_BACKEND", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR",
                                           "OMP_NUM_THREADS", "FASTMNIST_DATA") if k in os.environ},
        "backends": backends,
        "models": {name: r.description for name, r in zoo.ZOO.items()},
    }


def cmd_info(args) -> dict:
    info = gather_info()
    if not args.json:
        print(f"fastmnist {info['fastmnist']} on Python {info['python']}, {info['cpu_count']} CPUs; "
              f"auto selects: {info['auto_backend']}")
        for name, b in info["backends"].items():
            extras = ", ".join(f"{k} {v}" for k, v in b.items() if k not in ("available", "reason"))
            print(f"  {name:6s} {'yes' if b['available'] else 'no '}  {b['reason']}" + (f" ({extras})" if extras else ""))
        print("models:")
        for name, desc in info["models"].items():
            print(f"  {name:12s} {desc}")
    return info


def cmd_download(args) -> dict:
    from .download import download_mnist

    root = download_mnist(args.data, mirrors=args.mirror, force=args.force)
    return {"data": str(root)}


def cmd_bench(args) -> dict:
    from . import bench

    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None
    models = split(args.models) or list(bench.DEFAULT_MODELS)
    for m in models:
        from .zoo import recipe
        recipe(m)  # unknown names fail here, before anything is timed
    kernels = split(args.kernels) or list(bench.KERNELS)
    unknown = set(kernels) - set(bench.KERNELS)
    if unknown:
        raise ValueError(f"unknown kernel(s) {sorted(unknown)}; valid: {', '.join(bench.KERNELS)}")
    report = bench.run(split(args.backends), models, kernels, bench.parse_batch_sizes(args.batch_sizes, models),
                       args.kernels_only, args.epochs_only, args.quick, log=lambda s: print(s, file=sys.stderr))
    print(bench.format_table(report))
    if args.json_file:
        with open(args.json_file, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json_file}", file=sys.stderr)
    if args.plot:
        bench.plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return {"results": len(report["results"])}


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "download": cmd_download, "bench": cmd_bench}


def main(argv=None) -> int:
    from .errors import FastMnistError

    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except (FastMnistError, ValueError, TypeError, OSError) as exc:
        if os.environ.get("FASTMNIST_DEBUG"):
            raise
        print(f"fastmnist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmnist {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
