"""A training step as one CUDA graph (issue 19): the buffers it writes, and its capture.

A graph replays the kernel launches of capture time with the pointers of capture time, so every
array a step writes must be the same array at every replay, alive as long as the graph. The
cupy backend's operations allocate their outputs through ``CupyBackend._empty``; inside
:meth:`StepArena.recording` those allocations are kept in order, and inside
:meth:`StepArena.replaying` the same sequence of requests gets the same arrays back (a request
that differs in shape or dtype is an error naming both). So a step written for the eager path,
with fresh outputs, is captured unchanged: :func:`capture_step` runs it once eagerly (recording;
kernels load, pointer tables fill), then captures a second pass (replaying) on a non-blocking
stream; :class:`StepGraph` holds the arena and the graph together.

What the step must not do, as on a GPU (the simulator enforces it, simgraph.py): read device
values on the host, copy from the host, use cuBLAS or cuRAND, or run CuPy's own array
operations; and values passed from the host (a learning rate, Adam's step count, a dropout
seed) are baked in at capture, so a step whose scalars change must read them from device memory.
:class:`DeviceRates` does that for Adam: a table of each step's bias-corrected step size and
``sqrt(1 - beta2**t)``, uploaded before the graph runs, and a step counter on the device that
the step's last launch moves on (``CupyBackend.using_rates``, ``advance_step``). The batch comes
from the device too (``gather_batch``: a permutation buffer the host refills each epoch, read at
the counter), and the loss and accuracy are summed there (``accumulate_step``). Dropout seeds and
SGD's learning rate from the device are not built yet (issue 19). Inside the arena the backend uses its own gemm and
colsum whatever ``config.CUPY_OWN_GEMM`` says, and zeros by its own kernel.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..errors import InvalidArgument


class StepArena:
    """The arrays one step allocates, in order: recorded once, handed out again at every pass."""

    def __init__(self, cp):
        self._cp = cp
        self.arrays: list = []
        self.keep: list = []  # other device memory the step's launches point at (pointer tables)
        self._next: int | None = None  # None: recording; else the index of the next array to hand out

    def take(self, shape, dtype):
        """A device array of ``shape`` and ``dtype``: new while recording, the recorded one after."""
        shape, dtype = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,))), np.dtype(dtype)
        if self._next is None:
            a = self._cp.empty(shape, dtype)
            self.arrays.append(a)
            return a
        k = self._next
        if k >= len(self.arrays):
            raise InvalidArgument(f"step arena: the step asked for a buffer #{k} {shape} {dtype}, beyond the "
                                  f"{len(self.arrays)} of the recorded step: a captured step must allocate the same "
                                  "buffers at every pass (same model, batch shape and dtype)")
        a = self.arrays[k]
        if a.shape != shape or a.dtype != dtype:
            raise InvalidArgument(f"step arena: buffer #{k} was {a.shape} {a.dtype} when the step was recorded, "
                                  f"now {shape} {dtype}: a captured step must allocate the same buffers at every "
                                  "pass (same model, batch shape and dtype)")
        self._next = k + 1
        return a

    @contextlib.contextmanager
    def recording(self, backend):
        with backend._using_arena(self):
            self._next = None
            yield self

    @contextlib.contextmanager
    def replaying(self, backend):
        with backend._using_arena(self):
            self._next = 0
            yield self
            if self._next != len(self.arrays):
                raise InvalidArgument(f"step arena: the step used {self._next} of the {len(self.arrays)} buffers it "
                                      "allocated when recorded: a captured step must allocate the same buffers at "
                                      "every pass")


class StepGraph:
    """One captured step: :meth:`launch` runs it again (on the current stream); it keeps every
    buffer the step writes alive, and the batch shape it was captured for in ``shape``."""

    def __init__(self, graph, arena: StepArena, stream, shape=None):
        self.graph, self.arena, self.stream, self.shape = graph, arena, stream, shape

    def launch(self):
        self.graph.launch()

    @property
    def nodes(self) -> int | None:
        """Kernel launches in the graph where the array module says (the simulator does)."""
        nodes = getattr(self.graph, "nodes", None)
        return len(nodes) if nodes is not None else None


def capture_step(backend, step, shape=None) -> StepGraph:
    """Run ``step()`` once eagerly (it counts: the weights move once), then capture it as a graph.

    ``step`` is a function of no arguments that runs one training step on ``backend`` (a
    CupyBackend) through its public operations. ``shape`` is kept on the graph (the batch shape it
    was made for). Raises the array module's capture error where the step does what a graph cannot
    hold (see the module's docstring)."""
    cp = backend.device
    arena = StepArena(cp)
    with arena.recording(backend):
        step()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            with arena.replaying(backend):
                step()
        except BaseException:  # end the broken capture, but report what broke it
            with contextlib.suppress(Exception):
                stream.end_capture()
            raise
        graph = stream.end_capture()
    return StepGraph(graph, arena, stream, shape)


class DeviceRates:
    """Adam's per-step scalars and the dropout seeds on the device, for steps run as a graph.

    ``table`` (capacity, 2) holds each step's ``(lr / (1 - beta1**t), sqrt(1 - beta2**t))`` in the
    parameters' dtype, as the eager path rounds them; ``seeds`` (capacity, dropouts) int64 each
    step's seed of each dropout layer, in the order the forward pass calls them; ``counter`` holds
    ``[step, steps loaded]``. Inside ``backend.using_rates(rates)`` the backend's
    ``adam_update_many`` reads the scalars of step ``counter[0]``, whatever ``t`` and ``lr`` it is
    given, its ``dropout_forward`` the seed of that step and layer, whatever seed it is given, and
    ``backend.advance_step(rates)`` moves the counter on (a step's last launch); a step past the
    loaded ones updates nothing, and :meth:`taken` reports it. The arrays keep their memory for
    life (a graph holds their pointers): :meth:`load` writes into them."""

    def __init__(self, backend, capacity: int, dtype, dropouts: int = 0):
        if int(capacity) < 1:
            raise InvalidArgument(f"DeviceRates: capacity must be at least 1 step, got {capacity!r}")
        if int(dropouts) < 0:
            raise InvalidArgument(f"DeviceRates: dropouts must be 0 or more layers, got {dropouts!r}")
        cp = backend.device
        self.capacity, self.dtype, self.dropouts = int(capacity), np.dtype(dtype), int(dropouts)
        self.table = cp.asarray(np.zeros((self.capacity, 2), self.dtype))
        self.seeds = cp.asarray(np.zeros((self.capacity, max(self.dropouts, 1)), np.int64))
        self.counter = cp.asarray(np.zeros(2, np.int64))
        self.first = self.loaded = 0

    def load(self, step_size, sqrt_bc2, first: int = 0, seeds=None) -> None:
        """Upload the scalars of steps ``first .. first + len(step_size) - 1`` and set the counter to
        ``first`` (a host write: outside any capture, e.g. once per epoch; ``first`` > 0 resumes an
        epoch mid-way). ``step_size``, ``sqrt_bc2``: float64, from ``fastmnist.steps.step_rates``;
        ``seeds`` (steps, dropouts) int64 from ``fastmnist.steps.dropout_seeds`` (needed when
        ``dropouts`` > 0)."""
        step_size, sqrt_bc2 = np.asarray(step_size, np.float64), np.asarray(sqrt_bc2, np.float64)
        n, first = len(step_size), int(first)
        if step_size.shape != (n,) or sqrt_bc2.shape != (n,) or not 1 <= n or first < 0 or first + n > self.capacity:
            raise InvalidArgument(f"DeviceRates.load: step_size and sqrt_bc2 must be two vectors of the same length, "
                                  f"1 to {self.capacity} steps from step {first} on; got shapes {step_size.shape} and "
                                  f"{sqrt_bc2.shape}")
        if self.dropouts:
            seeds = None if seeds is None else np.asarray(seeds)
            if seeds is None or seeds.shape != (n, self.dropouts) or seeds.dtype != np.int64:
                raise InvalidArgument(f"DeviceRates.load: seeds must be int64 of shape ({n}, {self.dropouts}) (steps, "
                                      f"dropout layers), got {None if seeds is None else (seeds.shape, str(seeds.dtype))}")
            table = np.zeros((self.capacity, self.dropouts), np.int64)
            table[first:first + n] = seeds
            self.seeds.set(table)
        table = np.zeros((self.capacity, 2), self.dtype)
        table[first:first + n, 0], table[first:first + n, 1] = step_size, sqrt_bc2
        self.table.set(table)
        self.counter.set(np.array([first, first + n], np.int64))
        self.first, self.loaded = first, n

    def taken(self) -> int:
        """Steps run since :meth:`load` (a host read: outside any capture); an error if the steps
        outran the table, whose extra steps updated nothing."""
        done = int(self.counter.get()[0]) - self.first
        if done > self.loaded:
            raise InvalidArgument(f"DeviceRates: {done} steps ran on a table of {self.loaded}: the last "
                                  f"{done - self.loaded} updated no weights (load the next steps' rates first)")
        return done
