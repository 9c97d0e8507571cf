"""`fastmnist reproduce`: runs a classic schedule and reports against the source's figure."""
import json
import subprocess
import sys

import pytest
from test_data import write_mnist

from fastmnist import reproduce as rep
from fastmnist import zoo


def test_every_zoo_model_has_a_classic_schedule():
    assert set(rep.CLASSIC) == set(zoo.ZOO)


def test_reproduce_runs_the_schedule(tmp_path, monkeypatch):
    write_mnist(tmp_path, n_train=60, n_test=20)
    monkeypatch.setitem(rep.CLASSIC, "relu-mlp", (2, 0.2, "~97.8%", "test schedule"))
    result = rep.reproduce("relu-mlp", backend="numpy", data=tmp_path, verbose=0)
    assert result["reported"] == "~97.8%" and 0 <= result["test_accuracy"] <= 1
    assert result["val_accuracy"] is not None and result["backend"] == "numpy"
    assert result["command"].startswith("fastmnist reproduce relu-mlp")


def test_reproduce_cli_unknown_name(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "reproduce", "lenet"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no classic schedule for 'lenet'" in proc.stderr


@pytest.mark.parametrize("name", ["two-layer"])
def test_reproduce_cli_json(tmp_path, name, monkeypatch):
    write_mnist(tmp_path, n_train=100, n_test=20)
    proc = subprocess.run([sys.executable, "-c", "import sys; from fastmnist import reproduce as r; "
                           "r.CLASSIC['two-layer'] = (1, None, '94-95%', 'one epoch'); "
                           "from fastmnist.cli import main; sys.exit(main(sys.argv[1:]))",
                           "reproduce", name, "--backend", "numpy", "--data", str(tmp_path), "--json", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model"] == name and out["schedule"] == "one epoch"
