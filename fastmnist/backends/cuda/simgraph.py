"""Stream capture and CUDA graphs on the CUDA simulator, with the rules a GPU enforces.

``stream.begin_capture()`` ... ``stream.end_capture()`` records the own-kernel launches made on
that stream into a :class:`SimGraph`; ``graph.launch()`` replays them. As on a GPU, a captured
launch does not run at capture time, and a replay runs with the pointers and scalar values of
capture time: a learning rate or step count passed from the host is baked in, so code that
forgets this gets wrong numbers here, not a silent pass.

What a GPU refuses during capture (and what would invalidate the capture there) raises
:class:`CaptureError` here and marks the capture broken, so ``end_capture`` fails too:

1. capture on the null (legacy) stream, or a second capture while one is open;
2. any synchronisation (stream, event, device) or event timing query;
3. any host<->device transfer: ``.get()``, ``int()``/``float()``/``bool()`` of a device value (so a
   Python branch on one), ``asarray`` of a host array, ``.set()``, assigning a host array;
4. cuBLAS (``matmul``: ``NotImplementedError``, as CuPy's ``cublas.setStream`` raises during
   capture, CuPy issue #6290) and the random generators (cuRAND);
5. compiling a module or loading a kernel for the first time (warm up first);
6. a launch on another stream than the capturing one.

Stricter than a GPU: CuPy's own array operations (elementwise arithmetic, reductions, ``zeros``,
copies) are kernels a GPU would capture, but the simulator runs them eagerly on NumPy and cannot
defer them, so it refuses them during capture; a captured step consists of own kernels (and
views, which compute nothing). ``empty`` is allowed: an allocation during capture is counted in
``counters['capture_allocations']`` and must outlive the graph.

At replay, every device array a recorded launch points at (and every array a pointer table
names) must still be the same live array as at capture: a freed buffer, or one whose memory went
to another array, is an error naming the launch and argument, where a GPU would read whatever
lies there now. The simulator never proves speed or GPU behaviour: docs/gpu.md.
"""
from __future__ import annotations

import weakref

import numpy as np

HINT = "allocate and warm up before capture, keep every value a step needs on the device"


class CaptureError(RuntimeError):
    """Something a GPU refuses during stream capture, or a graph replay over freed memory."""


def root(a: np.ndarray) -> np.ndarray:
    """The array that owns a view's memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _Reference:
    """A device array a recorded launch points at: its owner, held weakly, and what it was."""

    def __init__(self, where, array, table_of=None):
        self.where, self.owner, self.ptr = where, weakref.ref(root(array._a)), array._a.ctypes.data
        self.table = weakref.ref(array._a) if table_of is not None else None
        self.table_of = table_of

    def check(self, device, node):
        owner = self.owner()
        if owner is None or device._live.get(root(owner).ctypes.data) is not owner:
            raise CaptureError(f"graph replay: launch {node} ({self.where}) points at 0x{self.ptr:x}, freed since "
                               "capture (on a GPU the graph would read or write whatever array lives there now): "
                               "keep every buffer a graph uses alive as long as the graph")
        table = self.table() if self.table is not None else None
        if table is not None:
            device.check_table(device._wrap(table), self.table_of, f"graph replay: launch {node} ({self.where})")


class _Node:
    def __init__(self, kernel, dims, ptrs, keep, refs):
        self.kernel, self.dims, self.ptrs, self.keep, self.refs = kernel, dims, ptrs, keep, refs


class Capture:
    """An open capture: the stream, the recorded launches, the allocations, what broke it."""

    def __init__(self, stream):
        self.stream, self.nodes, self.allocations, self.broken = stream, [], [], None

    def record(self, kernel, dims, ptrs, keep, pointer_args):
        refs = [_Reference(where, arg, table_of) for where, arg, table_of in pointer_args]
        self.nodes.append(_Node(kernel, dims, ptrs, keep, refs))


class SimGraph:
    """What ``end_capture()`` returns; ``launch()`` replays the recorded kernels in order."""

    def __init__(self, device, capture: Capture):
        self._device, self.nodes, self.allocations = device, capture.nodes, capture.allocations

    def launch(self, stream=None):
        device = self._device
        if device._capture is not None:
            device.forbid_in_capture("launching a graph")
        for k, node in enumerate(self.nodes):
            for ref in node.refs:
                ref.check(device, f"{k} ({node.kernel.name})")
        for node in self.nodes:
            node.kernel.run(node.dims, node.ptrs)
        device.counters["graph_launches"] += 1
        device.counters["graph_nodes"] += len(self.nodes)

    def upload(self, stream=None):  # CuPy's Graph.upload: nothing to do on the simulator
        pass
