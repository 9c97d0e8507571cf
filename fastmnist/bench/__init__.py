"""Benchmark cases shared by ``fastmnist bench`` and the pytest-benchmark suite in ``benchmarks/``.

A case is a kernel at the shapes a zoo model uses at its batch size, one training step
(forward + backward + optimizer), or one training epoch. Each case knows its FLOPs and the bytes it
must move at least, so a time can be set against the floor that this machine's measured matmul
rate and copy bandwidth give. Backends: the fastmnist ones plus ``torch`` (PyTorch on the same
network, batch size, optimizer and dtype; CUDA where a GPU works, else CPU).

The modules: ``cases`` and ``kernel_cases`` (what is timed, its FLOPs and bytes), ``targets`` and
``torch_target`` (what it is timed on: a backend, PyTorch in a setup, the tutorials' code),
``machine`` (CPU, versions, ceilings), ``runner`` (timing, one process per target) and ``report``
(floors, ratios, table, chart). Everything used elsewhere is importable from here.
"""
from .cases import (
    DEFAULT_MODELS,
    Case,
    all_cases,
    epoch_case,
    kernel_cases,
    model_flops_per_sample,
    parse_batch_sizes,
    step_case,
    training_data_source,
)
from .kernel_cases import KERNELS
from .machine import VECTOR_FLAGS, cpu_model, cpu_vector_extensions, environment, measure_ceilings
from .report import fastest_lines, format_table, plot
from .runner import run, run_backend, time_case
from .targets import REFERENCES, TORCH_SETUPS, Target, backend_list, requested_targets, target

__all__ = ["Case", "DEFAULT_MODELS", "KERNELS", "REFERENCES", "TORCH_SETUPS", "Target", "VECTOR_FLAGS", "all_cases",
           "backend_list", "cpu_model", "cpu_vector_extensions", "environment", "epoch_case", "fastest_lines",
           "format_table", "kernel_cases", "measure_ceilings", "model_flops_per_sample", "parse_batch_sizes", "plot",
           "requested_targets", "run", "run_backend", "step_case", "target", "time_case", "training_data_source"]
