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
import json
import os
import signal
from pathlib import Path

from .errors import ModelFileError
from .model import load_optimizer_state, load_with_state

FILE = "checkpoint.npz"


class Checkpointer:
    """Writes and reads ``DIR/checkpoint.npz`` for one run."""

    def __init__(self, directory, run: dict):
        self.dir = Path(directory)
        self.path = self.dir / FILE
        self.run = dict(run)

    def save(self, model, optimizer, state) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_files()
        path = model.save(self.path, optimizer=optimizer, extra={"run": self.run, "trainer": dict(state)})
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

        model, arrays = load_with_state(self.path, backend)
        try:
            run = json.loads(str(arrays["extra/run"]))
            state = json.loads(str(arrays["extra/trainer"]))
            opt_cfg = json.loads(str(arrays["optimizer"]))
        except (KeyError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: not a training checkpoint (missing or bad {exc})") from None
        hyper = {k: v for k, v in opt_cfg.items() if k not in ("type", "lr", "t")}
        optimizer = make_optimizer(opt_cfg["type"], opt_cfg["lr"], **hyper).attach(model)
        load_optimizer_state(optimizer, arrays, self.path)
        state["rng"] = _state_from_json(state["rng"])
        state["epoch_rng"] = _state_from_json(state["epoch_rng"])
        return model, optimizer, run, state


def _state_from_json(state):
    """numpy generator states hold Python ints that JSON keeps exact; nothing to convert."""
    return state


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
