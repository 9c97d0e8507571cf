"""The training loop: ``fit``, ``evaluate`` and ``predict``.

The data is moved to the model's backend once; each epoch it is permuted there once and batches
are contiguous slices of it. Inside an epoch nothing is read back to the host except every
``config.PROGRESS_EVERY`` steps (on a GPU each read is a synchronisation); on the CPU backends the
loss is checked for NaN/Inf every step, at no cost.
"""
from __future__ import annotations

import contextlib
import copy
import math
import sys
import time

import numpy as np

from . import config
from .augment import Augment, warp_batch
from .data import validation_split as _split
from .errors import FastMnistError, InvalidArgument, TrainingDiverged, WrongType
from .graph_steps import GraphSteps
from .layers import Dropout
from .optim import Optimizer, make_optimizer, make_schedule
from .steps import dropout_seeds, first_chunk, next_chunk, program_for, step_rates


def _progress(total, desc, enabled, unit="step"):
    """A bar on the terminal (verbose=1): tqdm redraws it at most every ``config.PROGRESS_SECONDS``
    however often it is updated; it is removed at the epoch's end, where the epoch's line stays."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety; training goes on without it
        return None
    import shutil
    columns = shutil.get_terminal_size(fallback=(80, 24)).columns
    narrow = columns < 20  # a terminal that reports 0 columns would get an invisible bar
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=not narrow,
                ncols=80 if narrow else None, mininterval=config.PROGRESS_SECONDS)


def _to_backend(model, x, y):
    be = model.backend
    x = be.asarray(x, model.dtype)
    if tuple(x.shape[1:]) != model.input_shape:
        hint = ""
        if math.prod(x.shape[1:]) == math.prod(model.input_shape):  # the same pixels, laid out otherwise
            hint = ("; load the data with fastmnist.load_mnist(flatten=True)" if len(model.input_shape) == 1 else
                    "; load the data with fastmnist.load_mnist() (not flatten=True)")
            hint += f" or reshape to (N, {', '.join(map(str, model.input_shape))})"
        raise InvalidArgument(f"inputs have per-sample shape {tuple(x.shape[1:])}; model {model.name or ''} "
                              f"expects {model.input_shape}{hint}")
    if not hasattr(y, "shape"):
        y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InvalidArgument(f"labels have shape {tuple(y.shape)}; expected ({x.shape[0]},) integer labels")
    if np.dtype(y.dtype).kind not in "iu":
        raise WrongType(f"labels have dtype {y.dtype}; expected integer class indices")
    m = model.output_shape[0]
    lo, hi = int(y.min()), int(y.max())  # once here, so the kernels need not check every batch
    if lo < 0 or hi >= m:
        raise InvalidArgument(f"labels span {lo}..{hi}; expected class indices in 0..{m - 1}")
    labels = be.asarray(y, np.int64)
    targets = be.one_hot(labels, model.output_shape[0], model.dtype) if model.loss == "mse" else labels
    return x, labels, targets


def fit(model, x, y, *, epochs: int = 1, batch_size: int = 100, optimizer: Optimizer | str = "adam",
        lr: float | None = None, schedule=None, validation_data=None, validation_split: float | None = None,
        verbose: int = 1, seed: int | None = None, shuffle: bool = True, history: dict | None = None,
        resume: dict | None = None, on_epoch_end=None, stop=None, augment=None) -> dict:
    """Train ``model`` on ``(x, y)``.

    Parameters
    ----------
    x, y : arrays
        Inputs in the model's per-sample shape and integer labels ``(N,)``.
    epochs, batch_size : int
    optimizer : Optimizer or str
        An optimizer (attached to the model here) or a name (sgd, momentum, adagrad, adam).
    lr : float, optional
        Base learning rate when ``optimizer`` is a name.
    schedule : dict, str or callable, optional
        Learning-rate schedule (constant, step, onecycle) over the global step.
    validation_data : (x_val, y_val), optional
    validation_split : float, optional
        Fraction of ``(x, y)`` held out (seeded) when no validation_data is given.
    verbose : {0, 1, 2}
        0 silent; 1 a progress bar on a terminal (redrawn about every ``config.PROGRESS_SECONDS``)
        and one line per epoch that stays; 2 the epoch lines only.
    seed : int, optional
        Seeds shuffling and dropout (default: the model's seed).
    history, resume : dict, optional
        To continue an interrupted run: the history so far and the trainer state a checkpoint saved
        (:attr:`TrainState`); the run then ends exactly as an uninterrupted one would.
    on_epoch_end : callable, optional
        ``on_epoch_end(state: TrainState)`` after every epoch (checkpointing).
    augment : fastmnist.augment.Augment, optional
        Warp every training batch by random affine maps (rotation, scale, shear, shift) drawn from
        the run's generator, on the backend; runs each step layer by layer (no compiled steps).
    stop : callable, optional
        Polled between steps (between chunks of steps where whole steps run compiled, see
        :mod:`fastmnist.steps`); when it returns true, the loop raises :class:`TrainingInterrupted`
        carrying the mid-epoch state, so that it can be saved and resumed.

    Returns
    -------
    dict
        Per-epoch lists: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``seconds``, ``lr``.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgument(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgument(f"batch_size must be a positive integer, got {batch_size!r}")
    be = model.backend
    seed = model.seed if seed is None else seed
    if validation_data is None and validation_split:
        (x, y), validation_data = _split(_host(be, x), _host(be, y), fraction=validation_split, seed=seed)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, lr if lr is not None else 0.001)
    if optimizer.model is not model:
        optimizer.attach(model)
    if augment is not None and not isinstance(augment, Augment):
        raise WrongType(f"augment must be a fastmnist.augment.Augment, got {type(augment).__name__}")
    loop = _Loop(model, optimizer, schedule if callable(schedule) else make_schedule(schedule), epochs, batch_size,
                 shuffle, verbose, validation_data, on_epoch_end, stop, augment)
    loop.history = history if history is not None else {k: [] for k in HISTORY_KEYS + CURVE_KEYS + (COMPILE_KEY,)}
    loop.rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the init stream
    xs, labels, targets = _to_backend(model, x, y)
    if xs.shape[0] == 0:
        raise InvalidArgument("no training samples")
    if validation_data is not None:  # moved (and checked) once, not every epoch
        loop.validation_data = _to_backend(model, *validation_data)
    with (be.training_context or contextlib.nullcontext)():
        loop.run(xs, labels, targets, resume)
    return loop.history


HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "lr")
#: Within epochs: the position (epoch + fraction done), mean loss and batch accuracy of each window
#: of about ``config.CURVE_STEPS`` steps (as often as the loss is read back: on a GPU every
#: ``config.PROGRESS_EVERY`` steps), so that a one-epoch run still draws a curve.
CURVE_KEYS = ("curve_epoch", "curve_loss", "curve_accuracy")
#: Seconds of each epoch spent compiling kernels (JIT backends: the first epoch of a process pays it).
COMPILE_KEY = "compile_seconds"


class _Curve:
    """Appends a point to the history's CURVE_KEYS lists every ``config.CURVE_STEPS`` steps or more,
    from the epoch's running sums (read back from the backend only where the loop reads them anyway)."""

    def __init__(self, history, epoch, steps, step, loss_sum, correct, samples):
        for key in CURVE_KEYS:
            history.setdefault(key, [])
        self.history, self.epoch, self.steps = history, epoch, steps
        self.step, self.loss, self.correct, self.samples = step, float(loss_sum), float(correct), samples

    def add(self, step, loss_sum, correct, samples) -> None:
        if (step - self.step < config.CURVE_STEPS and step < self.steps) or samples <= self.samples:
            return
        loss, right, n = float(loss_sum), float(correct), samples - self.samples
        self.history["curve_epoch"].append(self.epoch + step / self.steps)
        self.history["curve_loss"].append((loss - self.loss) / n)
        self.history["curve_accuracy"].append((right - self.correct) / n)
        self.step, self.loss, self.correct, self.samples = step, loss, right, samples

    def add_steps(self, first, loss_sums, corrects, batch_size, n) -> None:
        """The points that fall due among steps ``first + 1 .. first + len(loss_sums)``, whose running
        sums are ``loss_sums`` and ``corrects``: the same points as :meth:`add` called every step."""
        last = first + len(loss_sums)
        every = max(1, config.CURVE_STEPS)
        due = self.step + every
        while due < last:
            self.add(due, loss_sums[due - first - 1], corrects[due - first - 1], min(n, due * batch_size))
            due = self.step + every
        if last > first:
            self.add(last, loss_sums[-1], corrects[-1], min(n, last * batch_size))


class TrainState(dict):
    """Where a run stands, as plain JSON-able values: ``epoch`` and ``step`` (the next to run),
    ``epoch_rng`` (the generator at the start of that epoch: it redraws the permutation),
    ``rng`` (the generator now: it draws the remaining dropout seeds), the partial sums of the
    epoch in progress, and the history."""


class TrainingInterrupted(FastMnistError):
    """Raised between two steps when ``stop()`` asked for it; ``.state`` resumes the run."""

    def __init__(self, state: TrainState):
        super().__init__(f"training interrupted at epoch {state['epoch'] + 1}, step {state['step']}")
        self.state = state


class _Loop:
    def __init__(self, model, optimizer, schedule, epochs, batch_size, shuffle, verbose, validation_data,
                 on_epoch_end, stop, augment=None):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.epochs, self.batch_size, self.shuffle, self.verbose = epochs, batch_size, shuffle, verbose
        self.validation_data, self.on_epoch_end, self.stop = validation_data, on_epoch_end, stop
        self.dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
        self.augment = augment

    def state(self, epoch, step, epoch_rng, loss_sum=0.0, correct=0.0, seconds=0.0) -> TrainState:
        return TrainState(epoch=epoch, step=step, epoch_rng=epoch_rng, rng=self.rng.bit_generator.state,
                          loss_sum=float(loss_sum), correct=float(correct), seconds=seconds, history=self.history)

    def run(self, xs, labels, targets, resume):
        be, model = self.model.backend, self.model
        n = xs.shape[0]
        steps = math.ceil(n / self.batch_size)
        total_steps = steps * self.epochs
        check_every = config.PROGRESS_EVERY if be.is_device else 1
        first_epoch, first_step = (resume["epoch"], resume["step"]) if resume else (0, 0)
        if resume:
            self.rng.bit_generator.state = resume["epoch_rng"]
        # whole steps in one backend call, where the backend has them (not with augmentation: its warp runs between)
        program = program_for(model, self.optimizer) if self.augment is None else None
        # or whole steps as CUDA graphs, where the backend captures them (graph_steps.py)
        graphs = GraphSteps(model, self.optimizer, xs, labels, targets, self.batch_size, steps, len(self.dropouts)) \
            if program is None and GraphSteps.applies(model, self.optimizer, self.dropouts, self.augment) else None
        for epoch in range(first_epoch, self.epochs):
            epoch_rng = self.rng.bit_generator.state
            # Gathered batch by batch: a whole-set permuted copy would move 188 MB per epoch at once.
            perm_host = self.rng.permutation(n) if self.shuffle else None
            perm = be.asarray(perm_host) if perm_host is not None and graphs is None else None
            loss_sum = correct = 0.0
            spent = 0.0
            start = first_step if epoch == first_epoch else 0
            if start:  # mid-epoch resume: the permutation is redrawn, then the generator moves on
                self.rng.bit_generator.state = resume["rng"]
                loss_sum, correct, spent = resume["loss_sum"], resume["correct"], resume["seconds"]
            bar = _progress(steps, f"epoch {epoch + 1}/{self.epochs}", self.verbose == 1 and sys.stderr.isatty())
            curve = _Curve(self.history, epoch, steps, start, loss_sum, correct, min(n, start * self.batch_size))
            compiled_before = self._compile_seconds()
            t0 = time.perf_counter()
            checked_loss, checked_step = float(loss_sum), start
            lr_now = self.optimizer.lr
            if program is not None:
                loss_sum, correct, lr_now = self._compiled_steps(program, xs, labels, targets, perm, epoch, start, steps,
                                                                 bar, t0, spent, epoch_rng, loss_sum, correct, curve)
            elif graphs is not None:
                loss_sum, correct, lr_now = self._graph_steps(graphs, perm_host, epoch, start, steps, bar, t0, spent,
                                                              epoch_rng, loss_sum, correct, curve)
            for step in range(start if program is None and graphs is None else steps, steps):
                if self.stop is not None and self.stop():
                    be.synchronize()
                    raise TrainingInterrupted(self.state(epoch, step, epoch_rng, loss_sum, correct,
                                                         spent + time.perf_counter() - t0))
                lo, hi = step * self.batch_size, min(n, (step + 1) * self.batch_size)
                if perm is None:
                    xb, tb, lb = xs[lo:hi], targets[lo:hi], labels[lo:hi]
                else:
                    idx = perm[lo:hi]
                    xb, tb, lb = xs[idx], targets[idx], labels[idx]
                if self.augment is not None:
                    xb = warp_batch(be, xb, self.augment, self.rng)
                for layer in self.dropouts:
                    layer.seed = int(self.rng.integers(2**62))
                out = model.forward(xb, train=True)
                loss, dout = model.loss_and_grad(out, tb)
                model.backward(dout)
                lr_now = self.schedule(self.optimizer.lr, epoch * steps + step, steps, total_steps)
                self.optimizer.step(lr_now)
                loss_sum = loss_sum + loss * (hi - lo)
                correct = correct + be.count_correct(out, lb)
                if (step + 1) % check_every == 0 or step == steps - 1:
                    seen = float(loss_sum)  # the only host read inside an epoch
                    if not math.isfinite(seen):
                        where = f"step {step + 1}" if check_every == 1 else f"steps {checked_step + 1}-{step + 1}"
                        raise _diverged(seen - checked_loss, epoch, where, steps, lr_now)
                    checked_loss, checked_step = seen, step + 1
                    curve.add(step + 1, seen, correct, hi)
                    if bar is not None:  # every step on the CPU (tqdm redraws by time), every read on a GPU
                        bar.update(step + 1 - bar.n)
                        if (step + 1) % config.PROGRESS_EVERY == 0 or step == steps - 1:
                            bar.set_postfix(loss=f"{seen / hi:.4f}", refresh=False)
            if graphs is None:  # the graphs' read of the epoch's sums waited for the device already
                be.synchronize()
            seconds = spent + time.perf_counter() - t0
            if bar is not None:
                bar.close()
            self._end_epoch(epoch, n, loss_sum, correct, seconds, lr_now, self._compile_seconds() - compiled_before)

    def _compiled_steps(self, program, xs, labels, targets, perm, epoch, start, steps, bar, t0, spent, epoch_rng,
                        loss_sum, correct, curve):
        """Steps ``start..steps-1`` of an epoch, a chunk of them per backend call; the learning rates,
        Adam's corrections and dropout seeds are drawn as the per-step loop draws them."""
        be, n = self.model.backend, xs.shape[0]
        if perm is None:
            perm = be.asarray(np.arange(n, dtype=np.int64))
        total_steps = steps * self.epochs
        # sized by the last call's pace (steps.next_chunk), from the last epoch's on
        chunk = getattr(self, "chunk", None) or first_chunk(self.batch_size)
        lr_now, step = self.optimizer.lr, start
        while step < steps:
            if self.stop is not None and self.stop():
                raise TrainingInterrupted(self.state(epoch, step, epoch_rng, loss_sum, correct,
                                                     spent + time.perf_counter() - t0))
            count = min(chunk, steps - step)
            lrs, step_size, sqrt_bc2 = step_rates(self.optimizer, self.schedule, epoch * steps + step, count, steps,
                                                  total_steps)
            seeds = dropout_seeds(self.rng, count, program.n_dropout)
            called = time.perf_counter()
            step_loss, step_correct, done, bad = be.dense_train_steps(
                program, xs, targets, labels, perm, step, self.batch_size, lrs, step_size, sqrt_bc2, seeds)
            chunk = next_chunk(self.batch_size, done, time.perf_counter() - called)
            # running sums added step by step, as the per-step loop adds them: the same sums, and the
            # same curve, wherever the chunks end
            loss_sums = np.cumsum(np.concatenate(([float(loss_sum)], step_loss)))[1:]
            corrects = float(correct) + np.cumsum(step_correct)
            good = done - (bad is not None)  # as the per-step loop, no point for a step whose loss is not finite
            curve.add_steps(step, loss_sums[:good], corrects[:good], self.batch_size, n)
            self.optimizer.t += done
            loss_sum, correct = float(loss_sums[-1]), float(corrects[-1])
            lr_now, step = float(lrs[done - 1]), step + done
            if bad is not None:
                raise _diverged(bad, epoch, f"step {step}", steps, lr_now)
            if bar is not None:
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{loss_sum / min(n, step * self.batch_size):.4f}")
        self.chunk = chunk
        return loss_sum, correct, lr_now

    def _graph_steps(self, graphs, perm, epoch, start, steps, bar, t0, spent, epoch_rng, loss_sum, correct, curve):
        """Steps ``start..steps-1`` of an epoch as CUDA graph replays (graph_steps.py): the learning
        rates and Adam's corrections computed as the per-step loop computes them, uploaded with the
        permutation and the seeds in one copy; the sums read back once at the epoch's end (every
        step's, so the loss curve and the divergence check see what the per-step loop's reads see),
        and in between only for a progress bar, every config.PROGRESS_EVERY steps."""
        n, t_before = graphs.xs.shape[0], self.optimizer.t
        lrs, step_size, sqrt_bc2 = step_rates(self.optimizer, self.schedule, epoch * steps + start, steps - start, steps,
                                              steps * self.epochs)
        # the seeds the per-step loop would draw, from a copy; the generator draws them step by step
        seeds = dropout_seeds(copy.deepcopy(self.rng), steps - start, len(self.dropouts)) if self.dropouts else None
        graphs.start_epoch(perm, step_size, sqrt_bc2, start, loss_sum, correct, seeds)
        checked_loss, checked_step = float(loss_sum), start
        for step in range(start, steps):
            if self.stop is not None and self.stop():
                self.optimizer.t = t_before + step - start
                raise TrainingInterrupted(self.state(epoch, step, epoch_rng, *graphs.sums(step),
                                                     spent + time.perf_counter() - t0))
            if self.dropouts:
                dropout_seeds(self.rng, 1, len(self.dropouts))  # this step's, as the per-step loop draws them
            graphs.step(step)
            if bar is not None and (step + 1) % config.PROGRESS_EVERY == 0 and step < steps - 1:
                seen_loss, _ = graphs.sums(step + 1)  # a read for the bar only
                if not math.isfinite(seen_loss):
                    raise _diverged(seen_loss - checked_loss, epoch, f"steps {checked_step + 1}-{step + 1}", steps,
                                    float(lrs[step - start]))
                checked_loss, checked_step = seen_loss, step + 1
                bar.update(step + 1 - bar.n)
                bar.set_postfix(loss=f"{seen_loss / ((step + 1) * self.batch_size):.4f}", refresh=False)
        rows = graphs.rows(steps)  # the epoch's one read: every step's running sums, each checked to have run
        self.optimizer.t = t_before + steps - start  # a capture runs the optimizer's host code twice
        before = float(loss_sum)
        for k, (row_loss, row_correct, _) in enumerate(rows, start):
            if not math.isfinite(row_loss):
                raise _diverged(row_loss - before, epoch, f"step {k + 1}", steps, float(lrs[k - start]))
            before = row_loss
            if (k + 1) % config.PROGRESS_EVERY == 0 or k == steps - 1:  # where the per-step loop reads
                curve.add(k + 1, row_loss, row_correct, min(n, (k + 1) * self.batch_size))
        if bar is not None:
            bar.update(steps - bar.n)
            bar.set_postfix(loss=f"{rows[-1, 0] / n:.4f}", refresh=False)
        return float(rows[-1, 0]), float(rows[-1, 1]), float(lrs[-1])

    def _compile_seconds(self) -> float:
        timer = self.model.backend.compile_seconds
        return timer() if timer is not None else 0.0

    def _end_epoch(self, epoch, n, loss_sum, correct, seconds, lr_now, compiling):
        h = self.history
        h.setdefault(COMPILE_KEY, []).append(compiling)
        h["loss"].append(float(loss_sum) / n)
        h["accuracy"].append(float(correct) / n)
        h["seconds"].append(seconds)
        h["lr"].append(float(lr_now))
        if self.validation_data is not None:
            val = _evaluate_prepared(self.model, *self.validation_data)
            h["val_loss"].append(val["loss"])
            h["val_accuracy"].append(val["accuracy"])
        if self.verbose >= 1:  # one line per epoch that stays on screen, as Keras prints
            val_txt = (f", val_loss {h['val_loss'][-1]:.4f}, val_accuracy {h['val_accuracy'][-1]:.4f}"
                       if self.validation_data is not None else "")
            print(f"epoch {epoch + 1}/{self.epochs}: loss {h['loss'][-1]:.4f}, accuracy {h['accuracy'][-1]:.4f}"
                  f"{val_txt}, {seconds:.2f} s" + (f" ({compiling:.1f} s of it compiling kernels)" if compiling >= 0.05 else "")
                  + f", {n / max(seconds - compiling, 1e-9):,.0f} samples/s", file=sys.stderr)
        if self.on_epoch_end is not None:
            state = self.rng.bit_generator.state
            self.on_epoch_end(self.state(epoch + 1, 0, state))


def _diverged(loss, epoch, where, steps, lr_now) -> TrainingDiverged:
    return TrainingDiverged(f"loss became {loss} at epoch {epoch + 1}, {where} of {steps}; "
                            f"lower the learning rate (now {lr_now:.3g})")


def _batches(model, x, batch_size):
    bs = batch_size or config.EVAL_BATCH_SIZE
    for lo in range(0, x.shape[0], bs):
        yield lo, min(x.shape[0], lo + bs), model.forward(x[lo:lo + bs], train=False)


def _host(be, a):
    """A NumPy copy of ``a`` wherever it lives (np.asarray refuses device arrays, as CuPy's should)."""
    return a if isinstance(a, np.ndarray) else (be.to_numpy(a) if hasattr(a, "shape") else np.asarray(a))


def evaluate(model, x, y, batch_size: int | None = None) -> dict:
    """Mean loss and accuracy of ``model`` on ``(x, y)``: ``{'loss': float, 'accuracy': float}``."""
    return _evaluate_prepared(model, *_to_backend(model, x, y), batch_size)


def _evaluate_prepared(model, xs, labels, targets, batch_size=None) -> dict:
    loss_sum = correct = 0.0
    for lo, hi, out in _batches(model, xs, batch_size):
        loss, _ = model.loss_and_grad(out, targets[lo:hi])
        loss_sum = loss_sum + loss * (hi - lo)
        correct = correct + model.backend.count_correct(out, labels[lo:hi])
    n = xs.shape[0]
    return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}


def predict(model, x, batch_size: int | None = None) -> np.ndarray:
    """Class probabilities ``(N, 10)`` as a NumPy array (softmax; sigmoid outputs are normalised)."""
    be = model.backend
    xs = be.asarray(x, model.dtype)
    parts = []
    for _, _, out in _batches(model, xs, batch_size):
        if model.loss == "mse":
            parts.append(be.to_numpy(out) / np.maximum(be.to_numpy(out).sum(axis=1, keepdims=True), 1e-12))
        else:
            parts.append(be.to_numpy(be.softmax(out)))
    return np.concatenate(parts).astype(model.dtype, copy=False)
