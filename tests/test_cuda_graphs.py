"""Stream capture and graph replay on the CUDA simulator (simgraph.py): each rule a GPU enforces
during capture is caught with a clear message, and a replay runs what was recorded, with the
pointers and scalars of capture time. None of it is GPU evidence (docs/gpu.md)."""
import gc

import numpy as np
import pytest

from fastmnist.backends import backend_status
from fastmnist.backends.cuda.simcupy import SimCupy
from fastmnist.backends.cuda.simgraph import CaptureError

pytestmark = pytest.mark.skipif(not backend_status("cupy-sim")[0], reason=backend_status("cupy-sim")[1])

SOURCE = r"""
extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) y[i] += a * x[i];
}
extern "C" __global__ void first_of(float** tables, float* out) { out[threadIdx.x] = tables[threadIdx.x][0]; }
"""


@pytest.fixture()
def dev():
    cp = SimCupy()
    module = cp.RawModule(code=SOURCE)
    axpy = module.get_function("axpy")
    x, y = cp.asarray(np.arange(8, dtype=np.float32)), cp.asarray(np.zeros(8, np.float32))
    axpy((1,), (32,), (np.float32(0), x, y, np.int32(8)))  # warm-up: the kernel is loaded
    return cp, module, axpy, x, y


def capture(cp, body):
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            body()
        finally:
            graph = stream.end_capture() if stream.is_capturing() else None
    return graph


def test_a_captured_launch_runs_at_replay_only_with_its_capture_time_scalars(dev):
    cp, _, axpy, x, y = dev
    launches = cp.counters["kernel_launches"]
    lr = 2.0
    graph = capture(cp, lambda: axpy((1,), (32,), (np.float32(lr), x, y, np.int32(8))))
    assert (y.get() == 0).all(), "a captured launch must not run at capture time"
    lr = 5.0  # a host value changed after capture: the graph keeps 2.0
    for _ in range(3):
        graph.launch()
    np.testing.assert_array_equal(y.get(), 3 * 2.0 * np.arange(8, dtype=np.float32))
    assert lr == 5.0
    assert cp.counters["graph_launches"] == 3 and cp.counters["graph_nodes"] == 3
    assert cp.counters["kernel_launches"] == launches  # replays are graph launches, not kernel launches


def test_capture_on_the_null_stream_or_nested_is_refused(dev):
    cp = dev[0]
    with pytest.raises(CaptureError, match="null .legacy. stream"):
        cp.cuda.get_current_stream().begin_capture()
    stream, other = cp.cuda.Stream(), cp.cuda.Stream()
    with stream:
        stream.begin_capture()
        with pytest.raises(CaptureError, match="second stream capture"):
            other.begin_capture()
        stream.end_capture()


@pytest.mark.parametrize("violation, message", [
    (lambda cp, y: cp.cuda.get_current_stream().synchronize(), r"stream\.synchronize\(\)"),
    (lambda cp, y: cp.cuda.Event().synchronize(), r"event\.synchronize\(\)"),
    (lambda cp, y: cp.cuda.get_elapsed_time(cp.cuda.Event(), cp.cuda.Event()), "event timing query"),
    (lambda cp, y: y.get(), r"host read \(\.get\(\)"),
    (lambda cp, y: float(y[0]), r"host read \(float\(\)"),
    (lambda cp, y: bool(y[0] > 0), "the CuPy array operation gt|Python branch"),
    (lambda cp, y: cp.asarray(np.ones(8, np.float32)), "host-to-device copy"),
    (lambda cp, y: y.set(np.ones(8, np.float32)), r"host-to-device copy \(\.set"),
    (lambda cp, y: y.__setitem__(slice(None), np.ones(8, np.float32)), "assigning a host array"),
    (lambda cp, y: cp.random.random(8), "cuRAND"),
    (lambda cp, y: cp.RawModule(code=SOURCE), "compiling a module"),
    (lambda cp, y: y.sum(), r"array operation \.sum\(\)"),
    (lambda cp, y: y * 2, "array operation mul"),
    (lambda cp, y: cp.zeros(8, np.float32), "fill kernel"),
], ids=["stream sync", "event sync", "event query", "get", "float", "branch", "asarray", "set", "setitem",
        "curand", "compile", "reduction", "arithmetic", "zeros"])
def test_what_a_gpu_refuses_during_capture_is_caught_and_breaks_the_capture(dev, violation, message):
    cp, _, axpy, x, y = dev
    stream = cp.cuda.Stream()
    with stream:
        stream.begin_capture()
        axpy((1,), (32,), (np.float32(1), x, y, np.int32(8)))
        with pytest.raises(CaptureError, match=message):
            violation(cp, y)
        with pytest.raises(CaptureError, match="invalidated by"):
            stream.end_capture()
    assert cp._capture is None  # the device is usable again
    axpy((1,), (32,), (np.float32(1), x, y, np.int32(8)))


def test_cublas_raises_as_cupy_does_and_first_loads_are_refused(dev):
    cp, module, axpy, x, y = dev
    stream = cp.cuda.Stream()
    with stream:
        stream.begin_capture()
        with pytest.raises(NotImplementedError, match="cuBLAS"):
            cp.matmul(x.reshape(2, 4), x.reshape(4, 2))
        with pytest.raises(CaptureError, match="invalidated by cuBLAS"):
            stream.end_capture()
        stream.begin_capture()
        with pytest.raises(CaptureError, match="loading kernel 'first_of' for the first time"):
            module.get_function("first_of")
        with pytest.raises(CaptureError):
            stream.end_capture()


def test_views_and_empty_are_allowed_and_counted(dev):
    cp, _, axpy, x, y = dev
    held = []

    def body():
        out = cp.empty(8, np.float32)  # from the pool during capture: counted, must outlive the graph
        held.append(out)
        axpy((1,), (32,), (np.float32(1), x.reshape(2, 4).reshape(8), out, np.int32(8)))
    before = cp.counters["capture_allocations"]
    graph = capture(cp, body)
    assert cp.counters["capture_allocations"] == before + 1
    assert len(graph.allocations) == 1


def test_a_launch_on_another_stream_is_refused(dev):
    cp, _, axpy, x, y = dev
    stream = cp.cuda.Stream()
    stream.begin_capture()  # capturing, but not the current stream: the launch goes to the null stream
    with pytest.raises(CaptureError, match="another stream than the capturing one"):
        axpy((1,), (32,), (np.float32(1), x, y, np.int32(8)))
    with pytest.raises(CaptureError):
        stream.end_capture()


def test_replay_over_a_freed_buffer_is_an_error_naming_the_launch(dev):
    cp, _, axpy, x, _ = dev
    scratch = [cp.asarray(np.zeros(8, np.float32))]
    graph = capture(cp, lambda: axpy((1,), (32,), (np.float32(1), x, scratch[0], np.int32(8))))
    graph.launch()
    scratch.clear()  # the graph holds its buffers weakly, as a GPU graph holds raw pointers
    gc.collect()
    with pytest.raises(CaptureError, match=r"launch 0 \(axpy\) \(argument 2 \(y\)\).*freed since capture"):
        graph.launch()


def test_replay_checks_pointer_tables_too(dev):
    cp, module, *_ = dev
    first_of = module.get_function("first_of")
    a, b = cp.asarray(np.full(4, 3, np.float32)), cp.asarray(np.full(4, 4, np.float32))
    table = cp.asarray(np.array([a.data.ptr, b.data.ptr], np.uint64))
    out = cp.asarray(np.zeros(2, np.float32))
    first_of((1,), (2,), (table, out))  # warm-up
    graph = capture(cp, lambda: first_of((1,), (2,), (table, out)))
    graph.launch()
    np.testing.assert_array_equal(out.get(), [3, 4])
    del b
    gc.collect()
    with pytest.raises(Exception, match="table entry 1"):
        graph.launch()
