"""Training steps replayed as CUDA graphs (issue 19), for backends that can capture a step.

A backend with ``capture_step`` (the cupy backend, and ``cupy-sim`` for tests) can record a whole
training step as one graph and replay it with one launch. What changes from step to step is kept
on the device, so the replays need no host values:

- the batch: ``gather_batch`` reads the epoch's permutation at the device's step counter;
- the learning rate, and Adam's step size and bias correction: a per-epoch table filled from
  :func:`fastmnist.steps.step_rates`, exactly as the per-step loop computes them, read at the
  counter by the optimizers' updates;
- the dropout seeds: a per-epoch table of each step's seed for each dropout layer, drawn by
  :func:`fastmnist.steps.dropout_seeds` from a copy of the run's generator (the generator itself
  draws the same numbers step by step, so a run stopped mid-epoch saves the state the per-step
  loop would), read at the counter;
- the counter: moved on by the step's last launch (``advance_step``).

All four lie in one device buffer (``device_rates``, :class:`.backends.cupy_graphs.DeviceRates`)
that the host writes once an epoch, in one copy. Each step adds its loss and correct count to the
epoch's running sums on the device (``accumulate_step``), one ledger row a step; the host reads
the epoch's rows once at its end (its sums, its loss curve, the first non-finite loss, and proof
that every step ran), and in between only where a progress bar shows them, every
``config.PROGRESS_EVERY`` steps: never under ``verbose=0``.

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
        self.rates = be.device_rates(steps, model.dtype, dropouts, perm_size=xs.shape[0])
        self.graphs: dict = {}  # rows -> StepGraph

    def start_epoch(self, perm, step_size, sqrt_bc2, first, loss_sum, correct, seeds=None) -> None:
        """The epoch's one host write, before its graphs run: its permutation (None: in order), the
        rates and dropout seeds of steps ``first..``, and the sums so far (a resumed epoch's)."""
        self.rates.load(step_size, sqrt_bc2, first=first, seeds=seeds, perm=perm, sums=(loss_sum, correct))

    def step(self, step: int) -> None:
        """Run epoch step ``step`` (the next one on the device's counter)."""
        rows = min(self.batch_size, self.xs.shape[0] - step * self.batch_size)
        graph = self.graphs.get(rows)
        if graph is None:
            with self.be.using_rates(self.rates):
                self.graphs[rows] = self.be.capture_step(lambda: self._one_step(rows), (rows,) + tuple(self.xs.shape[1:]))
        else:
            graph.launch()

    def sums(self, end: int) -> tuple[float, float]:
        """(loss summed over samples, correct count) after the epoch's steps ``.. end - 1``: one
        host read (none before the first step)."""
        return self.rates.sums(end)

    def rows(self, end: int) -> np.ndarray:
        """The epoch's running sums after each of its steps up to ``end - 1``, checked that each ran
        (DeviceRates.rows): the epoch's one host read."""
        return self.rates.rows(end)

    def _one_step(self, rows):
        be, model = self.be, self.model
        gather = lambda a: be.gather_batch(a, self.rates.perm, self.rates, self.batch_size, rows)  # noqa: E731
        xb, lb = gather(self.xs), gather(self.labels)
        tb = lb if self.targets is self.labels else gather(self.targets)
        out = model.forward(xb, train=True)
        loss, dout = model.loss_and_grad(out, tb)
        model.backward(dout)
        self.optimizer.step()  # the rates from the device table: the host lr (and Adam's t) are not read
        be.accumulate_step(loss, be.count_correct(out, lb), rows, self.rates)
        be.advance_step(self.rates)
