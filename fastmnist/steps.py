"""Whole training steps as one backend call: the *step program* of a dense network.

At batch 1 a step of the 784-200-10 sigmoid MLP is about a microsecond of arithmetic and a few
hundred microseconds of Python (layer objects, argument checks, one kernel call per operation).
So where the backend offers ``dense_train_steps`` and the model is a stack of Dense / Sigmoid /
ReLU / Dropout layers, the trainer describes the model, its optimizer and its loss once, as a
:class:`StepProgram` of plain arrays, and runs a *chunk* of steps per call — batch gather, forward,
loss, backward and update, for every step of the chunk. Between chunks the trainer polls ``stop``,
updates the progress bar and checks the loss, so checkpoints, Ctrl-C and resume keep working; the
chunk size never changes a result (tests/test_steps.py trains with chunks of 1, 7 and all steps).

The per-step inputs that Python computes (learning rate from the schedule, Adam's bias corrections,
dropout seeds) are computed exactly as the per-kernel path computes them, drawn from the same
generator in the same order, so a checkpoint written by either path resumes on the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import config
from .backends.contract import (
    LOSS_MSE,
    LOSS_SOFTMAX_CE,
    OP_DENSE,
    OP_DROPOUT,
    OP_RELU,
    OP_SIGMOID,
    OPT_ADAGRAD,
    OPT_ADAM,
    OPT_MOMENTUM,
    OPT_SGD,
    adam_corrections,
)
from .layers import Dense, Dropout, ReLU, Sigmoid
from .optim import SGD, AdaGrad, Adam, Momentum

_OPS = {Dense: OP_DENSE, Sigmoid: OP_SIGMOID, ReLU: OP_RELU, Dropout: OP_DROPOUT}
_OPTIMIZERS = {SGD: OPT_SGD, Momentum: OPT_MOMENTUM, AdaGrad: OPT_ADAGRAD, Adam: OPT_ADAM}
_LOSSES = {"softmax_cross_entropy": LOSS_SOFTMAX_CE, "mse": LOSS_MSE}


@dataclass
class StepProgram:
    """A dense network, its loss and its optimizer as plain arrays (what ``dense_train_steps`` runs).

    ``ops[k]`` is the k-th layer's code (OP_DENSE, OP_SIGMOID, OP_RELU, OP_DROPOUT), ``widths[k]``
    the features entering it (``widths[k + 1]`` leaving it); ``slot[k]`` indexes ``weights`` /
    ``biases`` for a dense layer and the column of the seed table for a dropout layer; ``drop_p[k]``
    is a dropout layer's rate. ``weights[i]`` (D, M) and ``biases[i]`` (M,) are the model's own
    parameter arrays (updated in place); ``weight_slots[s][i]`` and ``bias_slots[s][i]`` the
    optimizer's state arrays of slot ``s`` (none for SGD). ``hyper`` holds the optimizer's
    ``(beta1, beta2, eps, momentum)`` in float64 (unused entries 0); each backend rounds them as its
    own update kernels do.
    """

    ops: np.ndarray
    widths: np.ndarray
    slot: np.ndarray
    drop_p: np.ndarray
    loss: int
    optimizer: int
    hyper: np.ndarray
    weights: list
    biases: list
    weight_slots: list
    bias_slots: list
    n_dropout: int
    prepared: dict = field(default_factory=dict)  # a backend's own form of the lists, made once


def program_for(model, optimizer) -> StepProgram | None:
    """The step program of ``model`` trained by ``optimizer``, or None where a compiled step does
    not cover it (other layer types, fusion turned off, a backend without ``dense_train_steps``)."""
    be = model.backend
    if not model.fused or be.dense_train_steps is None or len(model.input_shape) != 1:
        return None
    if type(optimizer) not in _OPTIMIZERS or not model.layers:
        return None
    ops, slot, drop_p, weights, biases = [], [], [], [], []
    slots = [[] for _ in optimizer.slots]
    state = iter(optimizer.state)  # one entry per parameter, in model.parameters() order: b then w
    n_dropout = 0
    for layer in model.layers:
        kind = _OPS.get(type(layer))
        if kind is None:
            return None
        ops.append(kind)
        drop_p.append(layer.rate if kind == OP_DROPOUT else 0.0)
        if kind == OP_DENSE:
            slot.append(len(weights))
            weights.append(layer.params["w"])
            biases.append(layer.params["b"])
            b_state, w_state = next(state), next(state)
            for s, name in enumerate(optimizer.slots):
                slots[s].append((w_state[name], b_state[name]))
        elif kind == OP_DROPOUT:
            slot.append(n_dropout)
            n_dropout += 1
        else:
            slot.append(-1)
    widths = [model.input_shape[0]]
    for layer, kind in zip(model.layers, ops):
        widths.append(layer.units if kind == OP_DENSE else widths[-1])
    hyper = np.array([getattr(optimizer, "beta1", 0.0), getattr(optimizer, "beta2", 0.0),
                      getattr(optimizer, "eps", 0.0), getattr(optimizer, "momentum", 0.0)], np.float64)
    return StepProgram(np.array(ops, np.int64), np.array(widths, np.int64), np.array(slot, np.int64),
                       np.array(drop_p, np.float64), _LOSSES[model.loss], _OPTIMIZERS[type(optimizer)], hyper,
                       weights, biases, [[w for w, _ in s] for s in slots], [[b for _, b in s] for s in slots],
                       n_dropout)


def chunk_steps(batch_size: int) -> int:
    """The most steps one compiled call runs: ``config.STEP_CHUNK_SAMPLES`` samples, at least one step."""
    return max(1, config.STEP_CHUNK_SAMPLES // batch_size)


def first_chunk(batch_size: int) -> int:
    """Steps of a fit's first compiled call, before the pace is known."""
    return min(chunk_steps(batch_size), max(1, config.STEP_CHUNK_FIRST_SAMPLES // batch_size))


def next_chunk(batch_size: int, done: int, seconds: float) -> int:
    """Steps of the next compiled call: as many as fit in ``config.STEP_CHUNK_SECONDS`` at the pace
    of the last call (``done`` steps in ``seconds``), at least one, at most :func:`chunk_steps`.
    A call that compiled the kernels is slow: the next one is short, the one after it sized again."""
    most = chunk_steps(batch_size)
    if seconds <= 0:
        return most
    return max(1, int(min(most, done * config.STEP_CHUNK_SECONDS / seconds)))


def step_rates(optimizer, schedule, first_global: int, count: int, steps_per_epoch: int, total_steps: int):
    """Per-step ``(lr, step_size, sqrt_bc2)`` for ``count`` steps from global step ``first_global``,
    in float64, computed as the per-kernel path computes them (Adam's bias corrections use the
    optimizer's step counter, which counts from ``optimizer.t + 1``)."""
    lrs = np.empty(count)
    step_size = np.empty(count)
    sqrt_bc2 = np.ones(count)
    adam = isinstance(optimizer, Adam)
    for k in range(count):
        lr = schedule(optimizer.lr, first_global + k, steps_per_epoch, total_steps)
        lrs[k] = lr
        if adam:
            step_size[k], sqrt_bc2[k] = adam_corrections(lr, optimizer.t + 1 + k, optimizer.beta1, optimizer.beta2)
        else:
            step_size[k] = lr
    return lrs, step_size, sqrt_bc2


def dropout_seeds(rng: np.random.Generator, count: int, n_dropout: int) -> np.ndarray:
    """The seeds the per-kernel path draws (``int(rng.integers(2**62))`` per dropout layer per step,
    layer by layer within a step), drawn at once: the same numbers, the generator left in the same state."""
    if not n_dropout:
        return np.zeros((count, 0), np.int64)
    return rng.integers(2**62, size=(count, n_dropout), dtype=np.int64)
