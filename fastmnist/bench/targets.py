"""What a case is timed on: a fastmnist backend, or an outside reference (PyTorch in one setup, the
seed tutorials' NumPy code). Each is a :class:`Target` with the same methods, so the cases and the
runner never ask which one they hold; a target answers None for a case it cannot run."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import zoo
from ..backends import AUTO_ORDER, NAMES, backend_status, get_backend
from ..errors import InvalidArgument

if TYPE_CHECKING:
    from .cases import Case
    from .kernel_cases import KernelSpec

#: The timed call of a case: no arguments, its result ignored.
Timed = Callable[[], object]


class Target:
    """One column of the report: something every case can be asked to run on.

    Attributes
    ----------
    name : str
        As ``--backends`` spells it and the report shows it.
    is_reference : bool
        An outside reference, not fastmnist code: its worker runs with the user's own
        ``OMP_WAIT_POLICY``, and it never asks for the GPU ceilings (those are measured with CuPy).
    """

    name: str
    is_reference = False

    def status(self) -> tuple[bool, str]:
        """(available here, why or why not)."""
        raise NotImplementedError

    def supports(self, case: Case) -> bool:
        """Whether ``case`` applies at all (decided before any data is loaded)."""
        return True

    def context(self) -> contextlib.AbstractContextManager:
        """Held around every case of a worker, the way ``fit()`` holds it."""
        return contextlib.nullcontext()

    def device(self) -> str:
        """Where the timed work runs: ``"gpu"`` or ``"cpu"`` (picks the ceilings of its floor)."""
        return "cpu"

    def sync(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def kernel(self, spec: KernelSpec) -> Timed | None:
        """One kernel call on ``spec``'s inputs, moved here once beforehand."""
        return None

    def train_step(self, model_name: str, x: np.ndarray, y: np.ndarray) -> Timed | None:
        """One training step (forward, backward, optimizer) of a zoo model on the batch ``(x, y)``."""
        return None

    def train_epoch(self, model_name: str, batch_size: int, x: np.ndarray, y: np.ndarray) -> Timed | None:
        """One training epoch of a zoo model over ``(x, y)`` with its recipe."""
        return None


class BackendTarget(Target):
    """A fastmnist backend, run the way ``fit()`` runs it."""

    def __init__(self, name: str):
        self.name = name

    @property
    def module(self):
        return get_backend(self.name)

    def status(self):
        return backend_status(self.name)

    def context(self):
        # training_context is an optional op of the backend contract (contract.OPTIONAL_OPS): used where present
        return (self.module.training_context or contextlib.nullcontext)()

    def device(self):
        return "gpu" if self.module.is_device and not self.module.is_simulator else "cpu"

    def sync(self):
        self.module.synchronize()

    def kernel(self, spec):
        be = self.module
        return spec.fastmnist(be, **{k: be.asarray(v) for k, v in spec.inputs.items()})

    def train_step(self, model_name, x, y):
        model = zoo.create(model_name, backend=self.name)
        be = model.backend
        opt = zoo.fit_args(model_name)["optimizer"].attach(model)
        xb, yb = be.asarray(x), be.asarray(y.astype(np.int64))
        if model.loss == "mse":
            yb = be.one_hot(yb, 10, model.dtype)

        def step():
            out = model.forward(xb, train=True)
            _, d = model.loss_and_grad(out, yb)
            model.backward(d)
            opt.step()
        return step

    def train_epoch(self, model_name, batch_size, x, y):
        model = zoo.create(model_name, backend=self.name)
        xd, yd = model.backend.asarray(x), model.backend.asarray(y.astype(np.int64))

        def epoch():  # a fresh optimizer each epoch (fit_args makes one), inside the timed call as in a run
            model.fit(xd, yd, **zoo.fit_args(model_name, batch_size=batch_size, epochs=1), verbose=0)
        return epoch


class TutorialTarget(Target):
    """The seed tutorials' own NumPy training code (float64): epochs of the zoo MLPs they teach."""

    name = "tutorial"
    is_reference = True

    def status(self):
        return True, "the seed tutorials' own NumPy training code (float64), epochs of the zoo MLPs only"

    def supports(self, case):
        return case.group == "epoch"

    def train_epoch(self, model_name, batch_size, x, y):
        from ..tutorials import tutorial_epoch
        made = tutorial_epoch(model_name, x, y)  # None where the zoo model has no tutorial (the CNNs)
        return None if made is None else made[0]


def _torch_target(setup: str) -> Callable[[str], Target]:
    def make(name):
        from .torch_target import TorchTarget
        return TorchTarget(name, setup)
    return make


# Timed beside the backends: PyTorch in each setup a user could pick, and the seed tutorials' own
# NumPy code. Ratios "vs torch" take the fastest PyTorch setup of each case.
TORCH_SETUPS = {"torch": "eager", "torch-cl": "channels_last", "torch-compile": "compile"}
_REFERENCE_TARGETS: dict[str, Callable[[str], Target]] = {
    **{name: _torch_target(setup) for name, setup in TORCH_SETUPS.items()}, "tutorial": lambda name: TutorialTarget()}
REFERENCES = tuple(_REFERENCE_TARGETS)


def target(name: str | Target) -> Target:
    """The target ``--backends`` calls ``name`` (a target is returned as is)."""
    if isinstance(name, Target):
        return name
    if name in _REFERENCE_TARGETS:
        return _REFERENCE_TARGETS[name](name)
    if name in NAMES:
        return BackendTarget(name)
    raise InvalidArgument(f"unknown backend {name!r}; valid: {', '.join(NAMES)}, {', '.join(REFERENCES)}")


def requested_targets(requested: list[str] | None = None) -> list[Target]:
    """The targets of ``requested`` names; by default every backend auto may choose (not the
    simulator, which runs device code on the CPU: only when asked for by name), and every reference."""
    names = requested or [*(n for n in NAMES if n in AUTO_ORDER), *REFERENCES]
    return [target(name) for name in names]


def backend_list(requested: list[str] | None = None) -> list[tuple[str, bool, str]]:
    """(name, available, reason) for each requested backend (default: see :func:`requested_targets`)."""
    return [(t.name, *t.status()) for t in requested_targets(requested)]
