"""Checkpoints: training interrupted at any moment loses at most the epoch in progress (SIGKILL)
or nothing (Ctrl-C, SIGTERM), and resumes to the same final weights as an uninterrupted run.

A checkpoint is a model file (:meth:`Sequential.save`) with the optimizer state and two extra
JSON entries: ``run`` (what was asked: model, epochs, batch size, optimizer, seed, ...) and
``trainer`` (:class:`fastmnist.trainer.TrainState`: epoch, step, generator states, partial sums,
history). It is written to a temporary file, fsynced and renamed over the previous one, and the
directory is fsynced, so a kill at any moment leaves the last good checkpoint intact.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from .errors import FastMnistError
from .model import json_entry, load_optimizer_state, load_with_state, read_npz_file
from .npzfile import refuse

FILE = "checkpoint.npz"


class Checkpointer:
    """Writes and reads ``DIR/checkpoint.npz`` for one run."""

    def __init__(self, directory, run: dict):
        self.dir = Path(directory)
        self.path = self.dir / FILE
        self.run = dict(run)

    def save(self, model, optimizer, state) -> Path:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temp_files()
            path = model.save(self.path, optimizer=optimizer, extra={"run": self.run, "trainer": dict(state)})
        except OSError as exc:  # the disk filled or the directory went away mid-run (it was checked before)
            raise FastMnistError(f"{self.path}: could not write the checkpoint ({exc})") from None
        _fsync_dir(self.dir)
        return path

    def _remove_stale_temp_files(self) -> None:
        """A run killed (SIGKILL) while writing leaves ``.checkpoint.npz.PID.tmp`` behind; the next
        save removes those of processes that no longer exist (never another live run's)."""
        for tmp in self.dir.glob(f".{FILE}.*.tmp"):
            try:
                pid = int(tmp.name.split(".")[-2])
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:  # it exists, under another user
                pass

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self, backend=None):
        """(model, optimizer, run, state) from the checkpoint, the optimizer attached and restored."""
        from .optim import make_optimizer

        arrays = read_npz_file(self.path)
        run = json_entry(arrays, "extra/run", self.path)
        _check_run(run, self.path)
        model, arrays = load_with_state(self.path, _backend_for(backend, run), arrays)
        state = json_entry(arrays, "extra/trainer", self.path)
        opt_cfg = json_entry(arrays, "optimizer", self.path)
        _check_state(state, self.path)
        if not isinstance(opt_cfg, dict) or not isinstance(opt_cfg.get("type"), str):
            raise refuse(self.path, "entry 'optimizer' names no optimizer type")
        hyper = {k: v for k, v in opt_cfg.items() if k not in ("type", "lr", "t")}
        try:
            optimizer = make_optimizer(opt_cfg["type"], opt_cfg.get("lr"), **hyper).attach(model)
        except (TypeError, ValueError, KeyError) as exc:
            raise refuse(self.path, f"entry 'optimizer' is not a usable optimizer ({exc})") from None
        load_optimizer_state(optimizer, arrays, self.path)
        return model, optimizer, run, state


def _backend_for(backend, run: dict):
    """The backend a resumed run gets: under auto, the one a fresh run of that zoo model and batch
    size gets (zoo.create's choice), so that a resumed run continues where it started."""
    from . import zoo
    from .backends import resolve_for_model
    from .errors import InvalidArgument
    if backend is not None and not (isinstance(backend, str) and backend.lower() == "auto"):
        return backend
    try:
        r = zoo.recipe(run["model"])
    except InvalidArgument:  # not a zoo model: the plain choice
        return backend
    return resolve_for_model(backend, r.flat_input, run["batch_size"])


#: The keys of the 'run' entry that --resume reads, each with the JSON types it accepts.
RUN_KEYS = {"model": (str,), "epochs": (int,), "batch_size": (int,), "optimizer": (str,), "seed": (int,),
            "dtype": (str,), "limit_train": (int, type(None)), "validation_split": (int, float, type(None))}
#: The keys of the 'trainer' entry (fastmnist.trainer.TrainState) and their JSON types.
STATE_KEYS = {"epoch": (int,), "step": (int,), "epoch_rng": (dict,), "rng": (dict,), "loss_sum": (int, float),
              "correct": (int, float), "seconds": (int, float), "history": (dict,)}


def _check_keys(entry, keys, name, path):
    if not isinstance(entry, dict):
        raise refuse(path, f"entry {name!r} is not a JSON object")
    for key, types in keys.items():
        if key not in entry:
            raise refuse(path, f"entry {name!r} has no {key!r}")
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise refuse(path, f"entry {name!r}: {key!r} is {value!r}, expected "
                               f"{' or '.join(t.__name__ for t in types)}")


def _check_run(run, path):
    _check_keys(run, RUN_KEYS, "extra/run", path)
    for key in ("epochs", "batch_size"):
        if run[key] < 1:
            raise refuse(path, f"entry 'extra/run': {key!r} must be >= 1, got {run[key]}")


def _check_state(state, path):
    """Every field the trainer reads on resume, with its type; the generator states are tried."""
    import numpy as np

    _check_keys(state, STATE_KEYS, "extra/trainer", path)
    if state["epoch"] < 0 or state["step"] < 0:
        raise refuse(path, f"entry 'extra/trainer': negative epoch or step ({state['epoch']}, {state['step']})")
    for key in ("rng", "epoch_rng"):
        try:
            np.random.default_rng().bit_generator.state = state[key]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise refuse(path, f"entry 'extra/trainer': {key!r} is not a generator state ({exc})") from None
    check_history(state["history"], path, "extra/trainer")


def check_history(history, path, entry="extra/history") -> dict:
    """A training history read from a file: a list of numbers for each of HISTORY_KEYS."""
    from .trainer import COMPILE_KEY, CURVE_KEYS, HISTORY_KEYS
    if not isinstance(history, dict):
        raise refuse(path, f"entry {entry!r}: the history is not a JSON object")
    optional = tuple(k for k in CURVE_KEYS + (COMPILE_KEY,) if k in history)  # in files since 2026-11-30
    for key in HISTORY_KEYS + optional:
        values = history.get(key)
        if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                               for v in values):
            raise refuse(path, f"entry {entry!r}: history {key!r} is not a list of numbers")
    return history


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StopRequest:
    """SIGINT/SIGTERM set a flag instead of killing the process mid-step; the training loop polls
    it between steps, saves a checkpoint and raises. A second signal exits at once."""

    def __init__(self):
        self.signum = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: the user means it
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
