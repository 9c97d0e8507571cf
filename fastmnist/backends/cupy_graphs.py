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
    """What changes from step to step of a graphed epoch, on the device, and the epoch's sums.

    Everything the host writes before an epoch's graphs run lies in one int64 buffer, ``upload``,
    so an epoch costs one host-to-device copy (:meth:`load`):

    - ``counter`` (4,) = ``[step, steps loaded, first step of this load, this load's token]``;
    - the sums before the first step (two float64: zero, or a resumed epoch's sums so far);
    - ``perm`` (perm_size,): the epoch's permutation, read by ``gather_batch`` at the counter;
    - ``seeds`` (capacity, dropouts) int64: each step's seed of each dropout layer, in the order
      the forward pass calls them;
    - ``table`` (capacity, 2) in the parameters' dtype: each step's ``(lr / (1 - beta1**t),
      sqrt(1 - beta2**t))`` for Adam (SGD, Momentum and AdaGrad read the first column as their
      learning rate), rounded as the eager path rounds them.

    ``ledger`` (capacity, 3) float64 is what the device writes and the host reads: row s, written
    by step s's ``accumulate_step``, holds the epoch's running (loss sum, correct count) after
    that step and the token of the load it ran under. One read of an epoch's rows
    (:meth:`rows`) gives its sums, every point of its loss curve, the first step whose loss went
    non-finite, and proof that every step ran once.

    Inside ``backend.using_rates(rates)`` the updates and ``dropout_forward`` read the table and
    seeds at ``counter[0]``, whatever rate, ``t`` or seed they are given, and
    ``backend.advance_step(rates)`` moves the counter on (a step's last launch); a step past the
    loaded ones updates nothing, and :meth:`taken` reports it. The arrays keep their memory for
    life (a graph holds their pointers): :meth:`load` writes into them."""

    STATE_WORDS = 6  # the counter (4) and the base sums (2 float64)

    def __init__(self, backend, capacity: int, dtype, dropouts: int = 0, perm_size: int = 0):
        if int(capacity) < 1:
            raise InvalidArgument(f"DeviceRates: capacity must be at least 1 step, got {capacity!r}")
        if int(dropouts) < 0 or int(perm_size) < 0:
            raise InvalidArgument(f"DeviceRates: dropouts and perm_size must be 0 or more, got {dropouts!r} and "
                                  f"{perm_size!r}")
        cp = backend.device
        self.capacity, self.dtype, self.dropouts = int(capacity), np.dtype(dtype), int(dropouts)
        self.perm_size = int(perm_size)
        self._layout = self._regions(self.capacity, self.dtype, self.dropouts, self.perm_size)
        self.upload = cp.asarray(np.zeros(self._layout["words"], np.int64))
        self.counter, self.perm, self.seeds, self.table = self._views(self.upload)
        self.ledger = cp.asarray(np.zeros((self.capacity, 3)))
        self.first = self.loaded = self.token = 0
        self.base = (0.0, 0.0)

    @staticmethod
    def _regions(capacity, dtype, dropouts, perm_size) -> dict:
        """Word offsets of the upload's parts (8-byte words: every part starts aligned)."""
        perm = DeviceRates.STATE_WORDS
        seeds = perm + perm_size
        table = seeds + capacity * max(dropouts, 1)
        return {"perm": perm, "seeds": seeds, "table": table,
                "words": table + -(-capacity * 2 * dtype.itemsize // 8)}

    def _views(self, buffer):
        """(counter, perm, seeds, table) as views of ``buffer`` (the device upload or its host image)."""
        at, cap = self._layout, self.capacity
        table = buffer[at["table"]:at["words"]].view(self.dtype)[:2 * cap].reshape(cap, 2)
        return (buffer[0:4], buffer[at["perm"]:at["seeds"]],
                buffer[at["seeds"]:at["table"]].reshape(cap, max(self.dropouts, 1)), table)

    def load(self, step_size, sqrt_bc2, first: int = 0, seeds=None, perm=None, sums=(0.0, 0.0)) -> None:
        """Upload, in one copy, the scalars of steps ``first .. first + len(step_size) - 1``, their
        dropout seeds, the epoch's permutation and the sums before step ``first``, and set the
        counter to ``first`` (a host write: outside any capture, once per epoch; ``first`` > 0
        resumes an epoch mid-way). ``step_size``, ``sqrt_bc2``: float64, from
        ``fastmnist.steps.step_rates``; ``seeds`` (steps, dropouts) int64 from
        ``fastmnist.steps.dropout_seeds`` (needed when ``dropouts`` > 0); ``perm``: ``perm_size``
        int64 row indices (None: in order)."""
        step_size, sqrt_bc2 = np.asarray(step_size, np.float64), np.asarray(sqrt_bc2, np.float64)
        n, first = len(step_size), int(first)
        if step_size.shape != (n,) or sqrt_bc2.shape != (n,) or not 1 <= n or first < 0 or first + n > self.capacity:
            raise InvalidArgument(f"DeviceRates.load: step_size and sqrt_bc2 must be two vectors of the same length, "
                                  f"1 to {self.capacity} steps from step {first} on; got shapes {step_size.shape} and "
                                  f"{sqrt_bc2.shape}")
        image = np.zeros(self._layout["words"], np.int64)
        counter, perm_part, seed_part, table = self._views(image)
        if self.dropouts:
            seeds = None if seeds is None else np.asarray(seeds)
            if seeds is None or seeds.shape != (n, self.dropouts) or seeds.dtype != np.int64:
                raise InvalidArgument(f"DeviceRates.load: seeds must be int64 of shape ({n}, {self.dropouts}) (steps, "
                                      f"dropout layers), got {None if seeds is None else (seeds.shape, str(seeds.dtype))}")
            seed_part[first:first + n] = seeds
        if self.perm_size:
            perm = np.arange(self.perm_size) if perm is None else np.asarray(perm)
            if perm.shape != (self.perm_size,) or perm.dtype.kind not in "iu":
                raise InvalidArgument(f"DeviceRates.load: perm must be {self.perm_size} integer row indices, got "
                                      f"{perm.dtype} {perm.shape}")
            perm_part[:] = perm
        table[first:first + n, 0], table[first:first + n, 1] = step_size, sqrt_bc2
        self.token += 1
        counter[:] = first, first + n, first, self.token
        base = np.array([float(sums[0]), float(sums[1])])
        image[4:6] = base.view(np.int64)
        self.upload.set(image)
        self.first, self.loaded, self.base = first, n, (float(base[0]), float(base[1]))

    def taken(self) -> int:
        """Steps run since :meth:`load` (a host read of the counter: outside any capture); an error
        if the steps outran the table, whose extra steps updated nothing."""
        done = int(self.counter.get()[0]) - self.first
        if done > self.loaded:
            raise InvalidArgument(f"DeviceRates: {done} steps ran on a table of {self.loaded}: the last "
                                  f"{done - self.loaded} updated no weights (load the next steps' rates first)")
        return done

    def rows(self, end: int) -> np.ndarray:
        """The ledger's rows of steps ``first .. end - 1`` of this load, (end - first, 3), in one host
        read: the running (loss sum, correct count) after each step and its load token; an error
        naming the first step that did not run under this load (a row with an older token)."""
        if not self.first < end <= self.first + self.loaded:
            raise InvalidArgument(f"DeviceRates.rows: end must be in {self.first + 1}..{self.first + self.loaded}, "
                                  f"got {end}")
        rows = self.ledger[self.first:end].get()
        missing = np.flatnonzero(rows[:, 2] != self.token)
        if missing.size:
            raise InvalidArgument(f"DeviceRates: step {self.first + int(missing[0])} of this load did not run on the "
                                  f"device ({missing.size} of {end - self.first} steps missing)")
        return rows

    def sums(self, end: int) -> tuple[float, float]:
        """(loss sum, correct count) after steps ``.. end - 1``: the base where no step of this load
        ran yet (no read), else one host read of the ledger's row ``end - 1``."""
        if end == self.first:
            return self.base
        if not self.first < end <= self.first + self.loaded:
            raise InvalidArgument(f"DeviceRates.sums: end must be in {self.first}..{self.first + self.loaded}, got {end}")
        loss_sum, correct, token = self.ledger[end - 1].get()
        if token != self.token:
            raise InvalidArgument(f"DeviceRates: step {end - 1} of this load did not run on the device")
        return float(loss_sum), float(correct)
