"""The ``fastmnist`` command line: train, evaluate, info, download.

Errors a user can fix (missing data, a bad file, an unknown or unavailable backend, a bad
argument) print one line on stderr and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import config
from . import options as O
from .errors import InvalidArgument


def _add_train(sub):
    p = sub.add_parser("train", help="train a zoo model and print its test accuracy")
    p.add_argument("--model", default=None, help="zoo model name (default simple-cnn; see `fastmnist info`)")
    p.add_argument("--backend", default=None, help="numpy, numba, cupy or auto (default: $FASTMNIST_BACKEND or auto)")
    p.add_argument("--epochs", type=O.count, default=None, help="default: the model's recipe")
    p.add_argument("--batch-size", type=O.count, default=None, help="default: the model's recipe")
    p.add_argument("--lr", type=O.positive_float, default=None, help="base learning rate (default: the model's recipe)")
    p.add_argument("--optimizer", default=None, help="sgd, momentum, adagrad or adam (default: the recipe's)")
    p.add_argument("--seed", type=O.seed, default=0, help="seeds the initial weights, shuffling and dropout (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="floating-point type of weights and data (default float32; float64 for checks)")
    p.add_argument("--data", default=None,
                   help="MNIST directory (default: $FASTMNIST_DATA, ./data/mnist, ~/.cache/fastmnist/mnist)")
    p.add_argument("--validation-split", type=O.fraction, default=None, help="hold out this fraction for validation")
    p.add_argument("--limit-train", type=O.count, default=None, help="train on the first N images only")
    p.add_argument("--limit-test", type=O.count, default=None, help="evaluate on the first N test images only")
    p.add_argument("--out", default=None, help="save the trained model to this .npz file")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--checkpoint-dir", default=None, help="write DIR/checkpoint.npz after every epoch and on "
                   "Ctrl-C/SIGTERM (atomically)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint-dir")
    p.add_argument("--augment", action="store_true", default=None,
                   help="warp every training batch by random affine maps (rotation, scale, shear, shift; "
                        "fastmnist.augment.Augment's ranges)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the training curves after training")


def _add_others(sub):
    p = sub.add_parser("evaluate", help="evaluate a saved model on the MNIST test set")
    p.add_argument("file")
    p.add_argument("--backend", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--limit-test", type=O.count, default=None, help="evaluate on the first N test images only")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("info", help="backends available here (and why not), versions, threads, GPU, the zoo")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("download", help="download MNIST, verifying SHA-256 of each decompressed file")
    p.add_argument("--data", default=None, help="target directory")
    p.add_argument("--mirror", action="append", default=None, help="base URL to try (repeatable; default: built-in list)")
    p.add_argument("--force", action="store_true", help="download even when valid files are present")


def _add_bench(sub):
    p = sub.add_parser("bench", help="time kernels, a training step and an epoch on every backend, side by side")
    p.add_argument("--backends", default=None,
                   help="comma list of numpy,numba,cupy,cupy-sim,torch,torch-cl,torch-compile,tutorial "
                        "(default: all available but cupy-sim)")
    p.add_argument("--kernels", default=None, help="comma list of kernel names (default: all)")
    p.add_argument("--models", default=None, help="comma list of zoo models (default: simple-cnn,dropout-cnn,relu-mlp)")
    p.add_argument("--batch-sizes", default=None, help="one size for all models, or model=size,...")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--epochs-only", action="store_true")
    group.add_argument("--kernels-only", action="store_true")
    p.add_argument("--json", dest="json_file", default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw a grouped bar chart (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="few repeats, a 2000-image epoch: under a minute")
    p.add_argument("--repeats", type=O.int_at_least(1, 1000), default=None, metavar="N",
                   help="timed calls per case, 1 to 1000 (default: 3 per epoch, 20 per kernel or step; with "
                        "--quick 1 and 5): more make the medians steadier on a noisy machine")
    p.add_argument("--interleave", action="store_true",
                   help="with --epochs-only: every backend's process at once, taking turns epoch by epoch, so that a "
                        "machine whose speed drifts skews no ratio")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="MNIST directory (default: $FASTMNIST_DATA, else ./data/mnist); without MNIST, random images "
                        "are timed and the report says so")


def _add_people(sub):
    p = sub.add_parser("predict", help="predict digits in your own images (PNG, JPEG, BMP, ...)")
    p.add_argument("images", nargs="+", metavar="[MODEL.npz] IMAGE",
                   help="pictures to read; a first argument ending in .npz is the model (as --model)")
    p.add_argument("--model", action="append", default=None, help="a saved model (.npz); given more than once, the "
                   "models read together (the mean of their probabilities); without one, the reader cached in "
                   "$XDG_CACHE_HOME/fastmnist (trained there on first use: zoo recipe 'reader', three seeds)")
    p.add_argument("--data", default=None, help="MNIST directory, to train the reader on first use")
    p.add_argument("--backend", default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--show", action="store_true", help="save the 28x28 input the network saw as NAME.mnist.png "
                   "(with --number: the picture with boxes and reading as NAME.number.png)")
    p.add_argument("--number", action="store_true", help="read a whole number written left to right (2-10 digits "
                   "that do not touch) instead of one digit")
    p = sub.add_parser("plot", help="pictures: training curves, samples, confusion matrix, worst mistakes")
    p.add_argument("kind", choices=["curves", "samples", "confusion", "errors"])
    p.add_argument("model", nargs="?", help="a saved model (.npz); not needed for samples")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--data", default=None)
    p.add_argument("--backend", default=None)
    p.add_argument("--limit-test", type=O.count, default=None, help="use the first N test images only")
    p = sub.add_parser("reproduce", help="run a zoo model's classic schedule and compare with its source")
    p.add_argument("name")
    p.add_argument("--backend", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--seed", type=O.seed, default=0)
    p.add_argument("--out", default=None, help="save the trained model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")


#: Help for the options several commands share, written once; build_parser() fills it in where an
#: option was declared without its own.
COMMON_HELP = {
    "--backend": "numpy, numba, cupy or auto (default: $FASTMNIST_BACKEND or auto)",
    "--data": "MNIST directory (default: $FASTMNIST_DATA, ./data/mnist, ~/.cache/fastmnist/mnist)",
    "--json": "print one JSON object as the last line",
    "--quiet": "no progress output",
    "--seed": "seeds the initial weights, shuffling and dropout (default 0)",
    "--dtype": "floating-point type of weights and data (default float32)",
    "--model": "zoo model name (see `fastmnist info`)",
    "--out": "the file to write",
    "--epochs-only": "time whole epochs only",
    "--kernels-only": "time the kernels (and a step) only",
    "file": "a saved model (.npz)",
    "name": "a zoo model name (see `fastmnist info`)",
    "kind": "curves (a saved history), samples, confusion or errors (a saved model on the test set)",
}


def _fill_help(parser: argparse.ArgumentParser) -> None:
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in sub.choices.values():
        for action in command._actions:
            key = action.option_strings[-1] if action.option_strings else action.dest
            if action.help is None and key in COMMON_HELP:
                action.help = COMMON_HELP[key]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="fastmnist", description="Train MNIST networks on compiled-kernel backends.")
    parser.add_argument("--version", action="version", version=f"fastmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_others(sub)
    _add_bench(sub)
    _add_people(sub)
    from . import sweep
    sweep.add_parser(sub)
    _fill_help(parser)
    return parser


def _limit(arr, n):
    return arr if n is None else arr[:n]


def cmd_train(args) -> dict:
    from . import zoo
    from .checkpoint import Checkpointer, StopRequest
    from .data import load_mnist
    from .errors import FastMnistError
    from .trainer import TrainingInterrupted

    if args.resume and not args.checkpoint_dir:
        raise FastMnistError("--resume needs --checkpoint-dir")
    run = {"model": args.model or zoo.DEFAULT_MODEL, "seed": args.seed, "dtype": args.dtype,
           "limit_train": args.limit_train, "validation_split": args.validation_split, "augment": args.augment}
    recipe = zoo.recipe(run["model"])
    given = lambda value, default: default if value is None else value  # noqa: E731 (0 is never "the default")
    run.update(epochs=given(args.epochs, recipe.epochs), batch_size=given(args.batch_size, recipe.batch_size),
               optimizer=given(args.optimizer, recipe.optimizer), lr=given(args.lr, recipe.lr))
    _check_outputs(args)
    ckpt = Checkpointer(args.checkpoint_dir, run) if args.checkpoint_dir else None
    resume = history = None
    if args.resume:
        if not ckpt.exists():
            raise FastMnistError(f"--resume: no checkpoint in {args.checkpoint_dir}")
        model, optimizer, saved_run, resume = ckpt.load(args.backend)
        _check_resume_matches(args, saved_run, ckpt.path)
        if args.epochs is not None:  # the only setting a resumed run may change: train for longer
            saved_run["epochs"] = args.epochs
        run = ckpt.run = saved_run
        recipe = zoo.recipe(run["model"])
        history = resume.pop("history")
    else:
        model = zoo.create(run["model"], backend=args.backend, seed=run["seed"], dtype=run["dtype"],
                           batch_size=run["batch_size"])
        optimizer = zoo.fit_args(run["model"], optimizer=run["optimizer"], lr=run["lr"])["optimizer"]
    (x, y), (xt, yt) = load_mnist(args.data, flatten=recipe.flat_input, dtype=run["dtype"])
    x, y = _limit(x, run["limit_train"]), _limit(y, run["limit_train"])
    x, y = zoo.training_data(run["model"], x, y, log=None if args.quiet else lambda line: print(line, file=sys.stderr),
                             progress=not args.quiet)
    xt, yt = _limit(xt, args.limit_test), _limit(yt, args.limit_test)
    if not args.quiet:
        print(f"training {run['model']} on {model.backend.name} ({run['dtype']}): {len(x)} images, {run['epochs']} "
              f"epoch(s), batch {run['batch_size']}, {run['optimizer']} lr {optimizer.lr:g}"
              + (f", resuming at epoch {resume['epoch'] + 1} step {resume['step']}" if resume else ""),
              file=sys.stderr)
    augment = zoo.fit_args(run["model"], augment=run.get("augment"))["augment"]
    warmup = _warm_up(model, optimizer, recipe, x, y, run["batch_size"], args.quiet, augment)
    on_epoch_end = (lambda state: ckpt.save(model, optimizer, state)) if ckpt else None
    stop = StopRequest()
    t0 = time.perf_counter()
    with stop.installed() if ckpt else contextlib.nullcontext():
        try:
            history = model.fit(x, y, epochs=run["epochs"], batch_size=run["batch_size"], optimizer=optimizer,
                                schedule=recipe.schedule, validation_split=run["validation_split"],
                                verbose=0 if args.quiet else 1, seed=run["seed"], history=history, resume=resume,
                                on_epoch_end=on_epoch_end, stop=stop if ckpt else None, augment=augment)
        except TrainingInterrupted as exc:
            path = ckpt.save(model, optimizer, exc.state)
            raise Interrupted(f"interrupted at epoch {exc.state['epoch'] + 1}, step {exc.state['step']}; "
                              f"checkpoint saved to {path}; continue with --checkpoint-dir {args.checkpoint_dir} "
                              "--resume", 128 + (stop.signum or 2)) from None
    train_seconds = time.perf_counter() - t0
    result = model.evaluate(xt, yt)
    if args.out:  # before the picture: a finished training is never lost to a plotting problem
        path = _save_or_rescue(model, optimizer, history, args.out)
        if not args.quiet:
            print(f"saved {path}", file=sys.stderr)
    if args.plot:
        from .plots import training_curves
        print(f"wrote {training_curves(history, args.plot, run['model'])}", file=sys.stderr)
    summary = {
        "model": run["model"], "backend": model.backend.name, "dtype": run["dtype"], "epochs": run["epochs"],
        "batch_size": run["batch_size"], "optimizer": run["optimizer"], "lr": optimizer.lr, "seed": run["seed"],
        "train_samples": int(len(x)), "epoch_seconds": history["seconds"], "train_seconds": train_seconds,
        "warmup_seconds": warmup,
        "samples_per_second": len(x) * len(history["seconds"]) / max(sum(history["seconds"]), 1e-9),
        "train_loss": history["loss"], "train_accuracy": history["accuracy"],
        "val_accuracy": history["val_accuracy"], "test_loss": result["loss"], "test_accuracy": result["accuracy"],
        "out": args.out, "augment": augment.config() if augment is not None else None,
    }
    print(f"test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) after {run['epochs']} epoch(s); "
          f"{summary['samples_per_second']:.0f} samples/s on {model.backend.name}")
    return summary


def _check_outputs(args) -> None:
    """Every path the run will write, checked before the first epoch."""
    if args.out:
        _check_model_output(args.out)
    if args.plot:
        O.check_output_file(args.plot, "--plot")
    if args.checkpoint_dir:
        O.check_output_dir(args.checkpoint_dir, "--checkpoint-dir")


def _check_model_output(out) -> None:
    """``--out``: a model file that can be written (a directory given as --out is refused, not renamed)."""
    from .model import npz_path
    O.check_output_file(out, "--out")
    O.check_output_file(npz_path(out), "--out")


def _check_resume_matches(args, saved_run, path) -> None:
    """--resume continues the saved run: a setting that contradicts it is an error, not ignored."""
    from .errors import FastMnistError
    asked = {"model": args.model, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
             "dtype": args.dtype if args.dtype != "float32" else None, "seed": args.seed or None,
             "limit_train": args.limit_train, "validation_split": args.validation_split, "augment": args.augment}
    for key, value in asked.items():
        if value is not None and key in saved_run and value != saved_run[key]:
            option = "--" + key.replace("_", "-")
            raise FastMnistError(f"--resume: {option} {value} contradicts the checkpoint {path}, which was "
                                 f"started with {saved_run[key]!r}; drop {option} (only --epochs may change)")


def _save_or_rescue(model, optimizer, history, out) -> str:
    """Save the trained model to ``out``; if that fails now (the disk filled, the directory went
    away), save it in the working or temporary directory instead, say where, and exit 2."""
    import tempfile

    from .errors import FastMnistError
    try:
        return str(model.save(out, optimizer=optimizer, extra={"history": history}))
    except OSError as exc:
        for where in (Path.cwd(), Path(tempfile.gettempdir())):
            rescue = where / f"fastmnist-rescued-{os.getpid()}.npz"
            try:
                model.save(rescue, optimizer=optimizer, extra={"history": history})
            except OSError:
                continue
            raise FastMnistError(f"--out {out}: could not save ({exc}); the trained model was saved to "
                                 f"{rescue} instead") from None
        raise FastMnistError(f"--out {out}: could not save ({exc}), nor anywhere else") from None


def _warm_up(model, optimizer, recipe, x, y, batch_size, quiet, augment=None) -> float:
    """One training step and one evaluation batch on a throwaway copy of the model, so that JIT
    compilation (Numba's, or CUDA's on a GPU) is timed apart from the epochs: the epoch times then
    say how fast training runs, and the one-time cost is reported on its own line."""
    from .model import model_from_architecture
    from .optim import make_optimizer
    if not model.backend.compiles_kernels:
        return 0.0
    clone = model_from_architecture(model.architecture(), backend=model.backend)
    hyper = {k: getattr(optimizer, k) for k in getattr(optimizer, "hyper", ())}
    n = min(len(x), batch_size)
    t0 = time.perf_counter()
    clone.fit(x[:n], y[:n], epochs=1, batch_size=n, optimizer=make_optimizer(type(optimizer).__name__.lower(),
              optimizer.lr, **hyper), schedule=recipe.schedule, verbose=0, augment=augment)
    clone.evaluate(x[:n], y[:n])
    seconds = time.perf_counter() - t0
    if not quiet:
        print(f"compiled kernels in {seconds:.1f} s (one warm-up step; compiled kernels are cached, so later "
              "runs start faster); the epoch times below exclude it", file=sys.stderr)
    return seconds


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint; carries the exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def _mnist_model(model, path):
    """A model these commands can run: MNIST images in ((1, 28, 28) or (784,)), ten classes out."""
    from .npzfile import refuse
    if model.input_shape not in ((1, 28, 28), (784,)):
        raise refuse(path, f"the model takes inputs of shape {model.input_shape}, not MNIST's (1, 28, 28) or (784,)")
    if model.output_shape != (10,):
        raise refuse(path, f"the model has outputs of shape {model.output_shape}, not MNIST's ten classes")
    return model


def cmd_evaluate(args) -> dict:
    from .data import load_mnist
    from .model import load

    model = _mnist_model(load(args.file, backend=args.backend), args.file)
    _, (xt, yt) = load_mnist(args.data, flatten=len(model.input_shape) == 1, dtype=model.dtype.name)
    xt, yt = _limit(xt, args.limit_test), _limit(yt, args.limit_test)
    result = model.evaluate(xt, yt)
    print(f"{args.file}: test accuracy {result['accuracy']:.4f} (loss {result['loss']:.4f}) on {model.backend.name}")
    return {"file": args.file, "model": model.name, "backend": model.backend.name,
            "test_accuracy": result["accuracy"], "test_loss": result["loss"], "test_samples": int(len(xt))}


def gather_info() -> dict:
    from . import __version__, zoo
    from .backends import NAMES, backend_status, get_backend, resolve_for_model, resolve_name

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
                                           "OMP_NUM_THREADS", "FASTMNIST_DATA", "FASTMNIST_NUMBA_GEMM")
                if k in os.environ},
        "backends": backends,
        "models": {name: r.description for name, r in zoo.ZOO.items()},
        "auto_per_model": {name: resolve_for_model("auto", r.flat_input, r.batch_size) for name, r in zoo.ZOO.items()},
        "env_backend_problem": _env_backend_problem(resolve_name),
    }


def _env_backend_problem(resolve_name) -> str | None:
    """What is wrong with $FASTMNIST_BACKEND, if anything (every command but info would fail on it)."""
    from .errors import FastMnistError
    value = os.environ.get("FASTMNIST_BACKEND", "").strip()
    if not value:
        return None
    try:
        resolve_name(value.lower())
    except FastMnistError as exc:  # an unknown name (InvalidArgument) or one that cannot run here (BackendUnavailable)
        return f"FASTMNIST_BACKEND={value!r} cannot be used: {exc}"
    return None


def cmd_info(args) -> dict:
    info = gather_info()
    if info["env_backend_problem"]:
        print(f"fastmnist info: warning: {info['env_backend_problem']}; train, evaluate and predict will refuse "
              "to run until it is unset or corrected", file=sys.stderr)
    if not args.json:
        print(f"fastmnist {info['fastmnist']} on Python {info['python']}, {info['cpu_count']} CPUs; "
              f"auto selects: {info['auto_backend']}{_auto_exceptions(info)}")
        for name, b in info["backends"].items():
            print(f"  {name:8s} {'yes' if b['available'] else 'no '}  {b['reason']}")
            details = _info_details(b)
            if details:
                print(f"  {'':8s}      {details}")
        print("models:")
        for name, desc in info["models"].items():
            print(f"  {name:12s} {desc}")
    return info


def _auto_exceptions(info: dict) -> str:
    """The zoo models auto gives another backend (resolve_for_model), as a parenthesis; or ''."""
    others: dict = {}
    for model, backend in info["auto_per_model"].items():
        if backend != info["auto_backend"]:
            others.setdefault(backend, []).append(model)
    return "".join(f" ({backend} for {', '.join(models)}: dense networks trained in batches under "
                   f"{config.AUTO_DEVICE_MIN_BATCH}, launch-bound on a GPU)" for backend, models in others.items())


def _info_details(entry: dict) -> str:
    """The backend's facts that its reason line does not already say, each once."""
    facts = {k: v for k, v in entry.items() if k not in ("available", "reason")}
    if entry.get("simulator"):  # its "device" is host memory with a size limit, not a GPU
        return (f"simulated device memory {facts['memory_total_gib']} GiB (FASTMNIST_CUDASIM_MEMORY)"
                if "memory_total_gib" in facts else "")
    said = entry["reason"]
    shown = [f"{k} {v}" for k, v in facts.items() if str(v) not in said]
    return ", ".join(shown)


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
        raise InvalidArgument(f"unknown kernel(s) {sorted(unknown)}; valid: {', '.join(bench.KERNELS)}")
    for path, option in ((args.json_file, "--json"), (args.plot, "--plot")):
        if path:  # before anything is timed: no finished benchmark is lost to an output
            O.check_output_file(path, option)
    if args.data is not None:  # the per-backend worker processes read it from the environment
        os.environ["FASTMNIST_DATA"] = str(args.data)
    report = bench.run(split(args.backends), models, kernels, bench.parse_batch_sizes(args.batch_sizes, models),
                       args.kernels_only, args.epochs_only, args.quick, log=lambda s: print(s, file=sys.stderr),
                       interleave=args.interleave, repeats=args.repeats)
    print(bench.format_table(report))
    if args.json_file:
        _write_text(args.json_file, json.dumps(report, indent=1), "--json")
        print(f"wrote {args.json_file}", file=sys.stderr)
    if args.plot:
        O.write_output(args.plot, lambda p: bench.plot(report, p), "--plot")
        print(f"wrote {args.plot}", file=sys.stderr)
    return {"results": len(report["results"])}


def _write_text(path, text: str, option: str) -> None:
    """Write an output the user named; one that cannot be written (checked before, but a disk can
    fill) is their error, named with its option."""
    O.write_output(path, lambda p: p.write_text(text), option)


def cmd_predict(args) -> dict:
    from .model import load
    from .photos.images import predict_images, read_numbers

    images = list(args.images)
    if args.model is None and images[0].endswith(".npz"):  # the older form: predict MODEL IMAGE...
        args.model = [images.pop(0)]
    if not images:
        from .errors import FastMnistError
        raise FastMnistError("no image to read (give one or more picture files after the model)")
    if args.model is None:
        from .reader import get_reader
        model = get_reader(backend=args.backend, data=args.data, verbose=1)
    else:
        from .ensemble import Ensemble
        model = Ensemble([_mnist_model(load(path, backend=args.backend), path) for path in args.model],
                         [f"--model {path}" for path in args.model])
    results = (read_numbers if args.number else predict_images)(model, images, show=args.show)
    for r in results:
        if "warning" in r:
            print(f"{r['file']}: warning: {r['warning']}", file=sys.stderr)
        if args.json:
            print(json.dumps(r))
        elif "error" in r:
            print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
        elif args.number:
            print(f"{r['file']}: {r['number']}  (" + ", ".join(f"{d['digit']}:{d['probability']:.2f}" for d in r["digits"])
                  + ")" + (f"  drawn to {r['shown']}" if "shown" in r else ""))
        else:
            probs = " ".join(f"{d}:{p:.3f}" for d, p in enumerate(r["probabilities"]))
            print(f"{r['file']}: {r['digit']}  ({probs})" + (f"  input saved to {r['shown']}" if "shown" in r else ""))
    args.json = False  # the per-image lines were the JSON output
    failed = [r["file"] for r in results if "error" in r]
    if failed:  # every answer that could be given was printed above; the exit status still says not all
        from .errors import FastMnistError
        if len(failed) == len(results):
            raise FastMnistError("no image could be read" if args.number else "no image could be predicted")
        raise FastMnistError(f"{len(failed)} of {len(results)} images could not be used: {', '.join(failed)}")
    return {"predicted": len(results)}


def cmd_plot(args) -> dict:
    result = _plot(args)
    print(f"wrote {result['out']}", file=sys.stderr)
    return result


def _plot(args) -> dict:
    from . import plots
    from .data import load_mnist
    from .model import load, load_with_state

    if args.kind == "samples":
        _, (xt, yt) = load_mnist(args.data)
        return {"out": str(plots.sample_grid(xt[:50], yt[:50], args.out))}
    if not args.model:
        raise InvalidArgument(f"plot {args.kind} needs a saved model file")
    if args.kind == "curves":
        model, arrays = load_with_state(args.model, args.backend)
        key = "extra/history" if "extra/history" in arrays else "extra/trainer"
        if key not in arrays:
            raise InvalidArgument(f"{args.model} holds no training history (save it with train --out or a checkpoint)")
        from .checkpoint import check_history
        from .model import json_entry
        history = json_entry(arrays, key, args.model)
        if key == "extra/trainer":
            history = history.get("history") if isinstance(history, dict) else None
        check_history(history, args.model, key)
        return {"out": str(plots.training_curves(history, args.out, model.name or args.model))}
    model = _mnist_model(load(args.model, backend=args.backend), args.model)
    _, (xt, yt) = load_mnist(args.data, flatten=len(model.input_shape) == 1, dtype=model.dtype.name)
    xt, yt = _limit(xt, args.limit_test), _limit(yt, args.limit_test)
    probs = model.predict(xt)
    if args.kind == "confusion":
        return {"out": str(plots.confusion(yt, probs.argmax(1), args.out))}
    return {"out": str(plots.worst_errors(xt, yt, probs, args.out))}


def cmd_reproduce(args) -> dict:
    from .reproduce import reproduce

    if args.out:  # before the schedule runs: no finished training is lost to an output
        _check_model_output(args.out)
    result = reproduce(args.name, backend=args.backend, data=args.data, seed=args.seed, out=args.out,
                       verbose=0 if args.quiet else 2)
    print(f"{args.name}: test accuracy {result['test_accuracy']:.4f} (reported {result['reported']}) in "
          f"{result['seconds']:.1f} s on {result['backend']}; schedule: {result['schedule']}")
    return result


def cmd_sweep(args) -> dict:
    from . import sweep
    return sweep.command(args)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info, "download": cmd_download, "bench": cmd_bench,
            "predict": cmd_predict, "plot": cmd_plot, "reproduce": cmd_reproduce, "sweep": cmd_sweep}


def main(argv=None) -> int:
    from .errors import FastMnistError

    try:  # a FASTMNIST_* variable that is not a number in its range stops every command, --help too
        config.check_environment()
    except FastMnistError as exc:
        if os.environ.get("FASTMNIST_DEBUG"):
            raise
        print(f"fastmnist: error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    import warnings  # one line per warning, as the errors below, not Python's two with a source line
    warnings.formatwarning = lambda message, *rest, **kw: f"fastmnist {args.command}: warning: {message}\n"
    try:
        result = COMMANDS[args.command](args)
    except Interrupted as exc:
        print(f"fastmnist {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except FastMnistError as exc:  # the user's to fix; anything else is a bug and shows its traceback
        if os.environ.get("FASTMNIST_DEBUG"):
            raise
        print(f"fastmnist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # NumPy's own (the GPU's is errors.OutOfMemory, above): it names the array's shape
        if os.environ.get("FASTMNIST_DEBUG"):
            raise
        print(f"fastmnist {args.command}: error: out of memory: {exc or 'no details'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmnist {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
