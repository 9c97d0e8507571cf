"""Every backend is a declared object of one contract: each has every required op with the
reference's (numpy's) parameters and the declared capability flags; a module or object that is not
a backend is refused with the list of what is wrong."""
import inspect
import re
import types
from pathlib import Path

import pytest

from fastmnist.backends import NAMES, backend_status, contract, declared, get_backend
from fastmnist.backends import numpy_backend as reference


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_backend_keeps_the_contract(name):
    ok, why = backend_status(name)
    if not ok:
        pytest.skip(f"{name} unavailable here: {why}")
    module = get_backend(name)
    assert contract.backend_problems(module, reference) == []
    assert module.name == name
    for flag in contract.CAPABILITIES:
        assert isinstance(getattr(module, flag), bool)


def fake_backend(**changes):
    module = types.ModuleType("fake_backend")
    for op in contract.REQUIRED_OPS:
        setattr(module, op, getattr(reference, op))
    module.name = "fake"
    for key, value in changes.items():
        if value is None:
            delattr(module, key)
        else:
            setattr(module, key, value)
    return module


def test_a_module_missing_ops_or_with_other_parameters_is_refused():
    with pytest.raises(TypeError, match=r"fake_backend is not a fastmnist backend: no op 'softmax'"):
        declared(fake_backend(softmax=None))
    with pytest.raises(TypeError, match=r"relu_forward\(y\) does not take relu_forward\(x\)"):
        declared(fake_backend(relu_forward=lambda y: y))
    with pytest.raises(TypeError, match=r"affine_forward\(x, w, b, relu\) does not take .* need defaults"):
        declared(fake_backend(affine_forward=lambda x, w, b, relu: x))
    with pytest.raises(TypeError, match=r"capability 'is_device' is 'yes', not a bool"):
        declared(fake_backend(is_device="yes"))


def test_a_conforming_module_gets_the_default_capabilities():
    module = declared(fake_backend(affine_forward=lambda x, w, b, relu=False: x))  # extra parameter, defaulted
    assert module.is_device is False and module.compiles_kernels is False
    assert get_backend(module) is module


def test_a_backend_object_is_checked_by_its_bound_methods():
    """cupy and cupy-sim are CupyBackend instances: their methods are compared as bound (without
    self), as strictly as a module's functions; the class itself, whose functions take self, is not
    a backend."""
    from fastmnist.backends.cupy_backend import CupyBackend, LazyCupy
    backend = CupyBackend(LazyCupy(), name="fake-gpu")
    assert contract.backend_problems(backend, reference) == []
    assert get_backend(backend) is backend and backend.is_device is True

    class Renamed(CupyBackend):
        def relu_forward(self, y):
            return y
    with pytest.raises(TypeError, match=r"<CupyBackend 'fake-gpu'> is not a fastmnist backend: "
                                        r"relu_forward\(y\) does not take relu_forward\(x\)"):
        declared(Renamed(LazyCupy(), name="fake-gpu"))
    with pytest.raises(TypeError, match=r"im2col\(self, x, kh, kw, stride=1, pad=0\) does not take im2col\(x, kh"):
        declared(CupyBackend)


def _documented_ops() -> dict:
    """docs/kernels.md's table rows: op name -> the parameter list its first cell shows."""
    rows = {}
    for line in (Path(__file__).resolve().parents[1] / "docs" / "kernels.md").read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            for name, params in re.findall(r"`(\w+)\(([^)]*)\)`", first_cell):
                rows[name] = [p.split("=")[0].strip() for p in params.split(",") if p.strip()]
    return rows


def test_docs_kernels_md_lists_exactly_the_contracts_ops_with_their_parameters():
    """The written contract and the code cannot drift: every required and optional op has a row,
    no row names an op the contract lacks, and each row shows the reference's parameters."""
    documented = _documented_ops()
    ops = set(contract.REQUIRED_OPS) | set(contract.OPTIONAL_OPS)
    assert set(documented) == ops, (sorted(ops - set(documented)), sorted(set(documented) - ops))
    for op, params in documented.items():
        source = getattr(reference, op, None) or getattr(get_backend("numba") if backend_status("numba")[0] else None,
                                                        op, None)
        if source is not None:
            assert params == list(inspect.signature(source).parameters), op
