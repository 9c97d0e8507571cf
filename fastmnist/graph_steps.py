"""Training steps replayed as CUDA graphs (issue 19), for backends that can capture a step.

A backend with ``capture_step`` (the cupy backend, and ``cupy-sim`` for tests) can record a whole
training step as one graph and replay it with one launch. What changes from step to step is kept
on the device, so the replays need no host values:

- the batch: ``gather_batch`` reads the epoch's permutation (a fixed device buffer the host
  refills each epoch) at the device's step counter;
- the learning rate, and Adam's step size and bias correction: a per-epoch table
  (``device_rates``, filled from :func:`fastmnist.steps.step_rates`, exactly as the per-step loop
  computes them), read at the counter by the optimizers' updates;
- the dropout seeds: a per-epoch table of each step's seed for each dropout layer, drawn by
  :func:`fastmnist.steps.dropout_seeds` from a copy of the run's generator (the generator itself
  draws the same numbers step by step, so a run stopped mid-epoch saves the state the per-step
  loop would), read at the counter;
- the loss and correct count: summed on the device (``accumulate_step``), read by the host only
  every ``config.PROGRESS_EVERY`` steps and at the epoch's end;
- the counter: moved on by the step's last launch (``advance_step``).

One graph per batch shape: the full batches share one, the epoch's shorter last batch has its own.
A graph's first use captures it, and its capture runs that step eagerly (it counts as the step).
Steps with augmentation (warped on the host) or an optimizer the backend cannot feed from the
table (one that is not SGD, Momentum, AdaGrad or Adam) run step by step; so does everything when
``config.CUDA_GRAPHS`` is off, its default until a GPU has timed both paths.
"""
from __future__ import annotations

import numpy as np

from . import config
from .optim import SGD, AdaGrad, Adam, Momentum


class GraphSteps:
    """The graphs, device tables and buffers of one ``fit()`` call; :meth:`run` runs epoch steps."""

    @staticmethod
    def applies(model, optimizer, dropouts, augment) -> bool:
        """Whether this run's steps can be graphs: config.CUDA_GRAPHS, a backend that captures, one
        of the optimizers whose rates the backend reads on the device, no augmentation (dropout
        layers take their seeds from the device)."""
        return (config.CUDA_GRAPHS and model.backend.capture_step is not None
                and type(optimizer) in (SGD, Momentum, AdaGrad, Adam) and augment is None)

    def __init__(self, model, optimizer, xs, labels, targets, batch_size, steps, dropouts=0):
        be = self.be = model.backend
        self.model, self.optimizer = model, optimizer
        self.xs, self.labels, self.targets, self.batch_size = xs, labels, targets, batch_size
        self.rates = be.device_rates(steps, model.dtype, dropouts)
        self.perm = be.asarray(np.arange(xs.shape[0], dtype=np.int64))
        self.totals = be.asarray(np.zeros(2))
        self.graphs: dict = {}  # rows -> StepGraph

    def start_epoch(self, perm, step_size, sqrt_bc2, first, loss_sum, correct, seeds=None) -> None:
        """Host writes before the epoch's graphs run: its permutation (None: in order), Adam's
        scalars and the dropout seeds for steps ``first..``, and the sums so far."""
        n = self.xs.shape[0]
        self.perm.set(np.arange(n, dtype=np.int64) if perm is None else np.asarray(perm, np.int64))
        self.rates.load(step_size, sqrt_bc2, first=first, seeds=seeds)
        self.totals.set(np.array([float(loss_sum), float(correct)]))

    def step(self, step: int) -> None:
        """Run epoch step ``step`` (the next one on the device's counter)."""
        rows = min(self.batch_size, self.xs.shape[0] - step * self.batch_size)
        graph = self.graphs.get(rows)
        if graph is None:
            with self.be.using_rates(self.rates):
                self.graphs[rows] = self.be.capture_step(lambda: self._one_step(rows), (rows,) + tuple(self.xs.shape[1:]))
        else:
            graph.launch()

    def sums(self) -> tuple[float, float]:
        """(loss summed over samples, correct count) so far this epoch: a host read."""
        loss_sum, correct = self.totals.get()
        return float(loss_sum), float(correct)

    def taken(self) -> int:
        """Steps the device ran since the epoch's start (its counter), checked against the table."""
        return self.rates.taken()

    def _one_step(self, rows):
        be, model = self.be, self.model
        gather = lambda a: be.gather_batch(a, self.perm, self.rates, self.batch_size, rows)  # noqa: E731
        xb, lb = gather(self.xs), gather(self.labels)
        tb = lb if self.targets is self.labels else gather(self.targets)
        out = model.forward(xb, train=True)
        loss, dout = model.loss_and_grad(out, tb)
        model.backward(dout)
        self.optimizer.step()  # the rates from the device table: the host lr (and Adam's t) are not read
        be.accumulate_step(loss, be.count_correct(out, lb), rows, self.totals)
        be.advance_step(self.rates)
