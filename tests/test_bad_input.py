"""Bad input, round two (issue #21): each group of mistakes a careful user or a hostile file makes
gets exit status 2 (or a FastMnistError subclass) and a message naming what is wrong; nothing the
user had is overwritten or truncated, and no finished training is lost."""
import gzip
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from test_data import idx_bytes, write_mnist

import fastmnist
from fastmnist import zoo
from fastmnist.cli import main
from fastmnist.data import load_mnist, parse_idx
from fastmnist.errors import DataError, FastMnistError, ModelFileError
from fastmnist.model import atomic_savez, load


def cli_error(capsys, *argv) -> str:
    """Run the CLI in-process; it must exit 2 with one line on stderr and no traceback."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ---- zero (or less) never means "the default" ----

@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["train", "--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["train", "--limit-train", "-5"], "argument --limit-train: must be >= 1, got -5"),
    (["train", "--limit-test", "0"], "argument --limit-test: must be >= 1, got 0"),
    (["train", "--validation-split", "1.5"], "argument --validation-split: must be between 0 and 1"),
    (["train", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["evaluate", "m.npz", "--limit-test", "0"], "argument --limit-test: must be >= 1, got 0"),
    (["sweep", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["bench", "--batch-sizes", "0", "--models", "relu-mlp"], "--batch-sizes: a batch size must be >= 1, got 0"),
    (["bench", "--batch-sizes", "nosuch=5", "--models", "relu-mlp"], "'nosuch' is not among the models timed"),
])
def test_numeric_options_are_checked_not_replaced(capsys, argv, message):
    assert message in cli_error(capsys, *argv)


# ---- every output checked before the first epoch ----

def test_outputs_that_cannot_be_written_stop_the_run_before_training(capsys, tmp_path, mnist_dir):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    common = ["train", "--data", str(mnist_dir), "--limit-train", "200", "--limit-test", "50", "--quiet"]
    for extra, message in ((["--out", str(tmp_path)], "is a directory; give a file name"),
                           (["--plot", str(a_file / "curves.png")], "is a file, not a directory"),
                           (["--checkpoint-dir", str(a_file)], "is a file, not a directory")):
        line = cli_error(capsys, *common, *extra)
        assert message in line and extra[0] in line
    assert capsys.readouterr().out == ""  # nothing was trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # and nothing left behind


def test_a_failed_save_leaves_no_temp_file_and_the_model_is_rescued(capsys, tmp_path, mnist_dir, monkeypatch):
    out = tmp_path / "m.npz"
    real_replace = os.replace

    def failing_replace(src, dst):  # the disk "fills" at the very end of the first save
        if str(dst) == str(out):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, "train", "--backend", "numpy", "--model", "two-layer", "--data", str(mnist_dir),
                     "--limit-train", "200", "--limit-test", "50", "--quiet", "--out", str(out))
    assert "could not save" in line and "No space left" in line and "saved to" in line
    rescued = tmp_path / f"fastmnist-rescued-{os.getpid()}.npz"
    assert str(rescued) in line and load(rescued).name == "two-layer"
    assert not list(tmp_path.glob(".*.tmp"))


# ---- model files are untrusted input ----

@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    model = zoo.create("relu-mlp", backend="numpy", seed=0)
    return model, model.save(tmp_path_factory.mktemp("m") / "good.npz")


def saved_variant(tmp_path, good_model, name, **arch_change):
    model, _ = good_model
    arch = model.architecture()
    arch.update(arch_change)
    arrays = {"architecture": np.array(arch_change.pop("raw", None) or json.dumps(arch)), **model.state_arrays()}
    return atomic_savez(tmp_path / name, arrays)


def flag_encrypted(blob: bytes) -> bytes:
    out = bytearray(blob)
    for signature, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        at = out.find(signature)
        while at != -1:
            out[at + offset] |= 1
            at = out.find(signature, at + 4)
    return bytes(out)


def npy_header_only(shape) -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


@pytest.mark.parametrize("case", ["random", "text", "png", "directory", "encrypted", "bzip2", "huge-header",
                                  "huge-layer", "inf-seed", "float-seed", "nested-json", "no-layers", "objects"])
def test_model_files_get_one_message_class_and_no_huge_allocation(tmp_path, good_model, case):
    _, good = good_model
    path = tmp_path / f"{case}.npz"
    if case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(400))
    elif case == "text":
        path.write_text("architecture = 'Dense'\n" * 20)
    elif case == "png":
        from PIL import Image
        Image.new("L", (28, 28)).save(path, format="PNG")
    elif case == "directory":
        path.mkdir()
    elif case == "encrypted":
        path.write_bytes(flag_encrypted(good.read_bytes()))
    elif case == "bzip2":
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info))
    elif case == "huge-header":  # 400 bytes claiming 10^13 floats (36 TiB)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("architecture.npy", npy_header_only((10**13,)))
    elif case == "huge-layer":  # an architecture asking for petabytes before the file was checked
        path = saved_variant(tmp_path, good_model, case, layers=[{"type": "Dense", "units": 10**13}])
    elif case == "inf-seed":
        path = saved_variant(tmp_path, good_model, case, seed=float("inf"))
    elif case == "float-seed":
        path = saved_variant(tmp_path, good_model, case, seed=1.5)
    elif case == "nested-json":
        path = saved_variant(tmp_path, good_model, case, raw="[" * 100_000 + "]" * 100_000)
    elif case == "no-layers":
        path = saved_variant(tmp_path, good_model, case, layers=[])
    elif case == "objects":
        np.savez(path, architecture=np.array([object()]))
    with pytest.raises(ModelFileError, match="not a fastmnist model file: ") as info:
        load(path)
    assert str(path) in str(info.value)
    assert "allow_pickle" not in str(info.value)


def test_evaluate_cli_on_random_bytes_is_one_line(capsys, tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(os.urandom(300))
    line = cli_error(capsys, "evaluate", str(path))
    assert line.startswith("fastmnist evaluate: error: ") and "not a fastmnist model file: not a zip" in line


# ---- checkpoints and histories ----

def checkpoint_with(tmp_path, mnist_dir, capsys, edit):
    ck = tmp_path / "ck"
    assert main(["train", "--backend", "numpy", "--model", "two-layer", "--data", str(mnist_dir), "--limit-train",
                 "200", "--limit-test", "50", "--quiet", "--checkpoint-dir", str(ck)]) == 0
    capsys.readouterr()
    path = ck / "checkpoint.npz"
    arrays = dict(np.load(path, allow_pickle=False))
    edit(arrays)
    atomic_savez(path, arrays)
    return ck


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update({"extra/trainer": np.array(json.dumps({
        k: v for k, v in json.loads(str(a["extra/trainer"])).items() if k != "rng"}))}),
     "entry 'extra/trainer' has no 'rng'"),
    (lambda a: a.update({"extra/trainer": np.array(json.dumps({**json.loads(str(a["extra/trainer"])),
                                                                "epoch": "one"}))}),
     "'epoch' is 'one', expected int"),
    (lambda a: a.update({"extra/trainer": np.array(json.dumps({**json.loads(str(a["extra/trainer"])),
                                                                "rng": {"state": 5}}))}),
     "'rng' is not a generator state"),
    (lambda a: a.pop("extra/run"), "no 'extra/run' entry"),
])
def test_malformed_checkpoints_name_file_and_key(capsys, tmp_path, mnist_dir, edit, message):
    ck = checkpoint_with(tmp_path, mnist_dir, capsys, edit)
    line = cli_error(capsys, "train", "--data", str(mnist_dir), "--checkpoint-dir", str(ck), "--resume", "--epochs",
                     "2", "--quiet")
    assert message in line and "checkpoint.npz" in line


def test_resume_refuses_a_contradicting_model(capsys, tmp_path, mnist_dir):
    ck = checkpoint_with(tmp_path, mnist_dir, capsys, lambda a: None)
    line = cli_error(capsys, "train", "--model", "simple-cnn", "--data", str(mnist_dir), "--checkpoint-dir", str(ck),
                     "--resume", "--epochs", "2", "--quiet")
    assert "--model simple-cnn contradicts the checkpoint" in line and "'two-layer'" in line


def test_plot_curves_on_a_malformed_history(capsys, tmp_path, good_model):
    model, _ = good_model
    path = model.save(tmp_path / "h.npz", extra={"history": {"loss": "lots"}})
    line = cli_error(capsys, "plot", "curves", str(path), "--out", str(tmp_path / "c.png"))
    assert "history 'loss' is not a list of numbers" in line and "h.npz" in line


# ---- data ----

def test_idx_dimensions_whose_product_overflows_int64():
    dims = (2**31, 2**31, 2**31)
    raw = bytes([0, 0, 0x08, 3]) + b"".join(struct.pack(">I", d) for d in dims) + b"\0" * 16
    with pytest.raises(DataError, match=r"header says shape \(2147483648, 2147483648, 2147483648\)"):
        parse_idx(raw, "forged")


def test_zero_images_and_other_sizes_and_a_file_as_the_directory(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: holds no image"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 56, 14), np.uint8))))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(20, np.uint8))))
    with pytest.raises(DataError, match=r"images are 56x14 pixels; MNIST's are 28x28"):
        load_mnist(tmp_path)
    a_file = tmp_path / "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="is a file, not a directory"):
        load_mnist(a_file)


# ---- predict: one bad picture does not lose the others ----

def test_predict_keeps_the_good_answers(tmp_path, capsys, good_model):
    from PIL import Image
    model, path = good_model
    good = tmp_path / "seven.png"
    picture = np.full((60, 60), 255, np.uint8)
    picture[10:50, 28:33] = 0
    Image.fromarray(picture).save(good)
    nan_tiff = tmp_path / "nan.tiff"
    Image.fromarray(np.full((40, 40), np.nan, np.float32), mode="F").save(nan_tiff)
    line = cli_error(capsys, "predict", str(path), str(good), str(nan_tiff))
    assert "1 of 2 images could not be used" in line and "nan.tiff" in line
    main(["predict", str(path), str(good), str(nan_tiff)])
    captured = capsys.readouterr()
    assert "seven.png: " in captured.out  # the good answer was printed
    assert "nan.tiff: error: " in captured.err and "NaN or infinite" in captured.err


def test_predict_show_with_an_unwritable_name_still_answers(tmp_path, capsys, good_model):
    from PIL import Image
    model, path = good_model
    name = tmp_path / ("d" * 250 + ".png")  # legal; its .mnist.png sibling is too long for the file system
    picture = np.full((60, 60), 255, np.uint8)
    picture[10:50, 28:33] = 0
    Image.fromarray(picture).save(name)
    assert main(["predict", str(path), str(name), "--show"]) == 0
    captured = capsys.readouterr()
    assert ".png: " in captured.out and "warning: could not save the input picture" in captured.err


# ---- sweep ----

def test_sweep_out_file_of_other_lines_is_refused_untouched(tmp_path):
    from fastmnist.sweep import parse_ints, read_done
    out = tmp_path / "notes.txt"
    out.write_bytes(b"my own notes\nno newline at the end")
    before = out.read_bytes()
    with pytest.raises(FastMnistError, match="line 1 is not a sweep record"):
        read_done(out)
    out.write_bytes(b"only one line, no newline")
    with pytest.raises(FastMnistError, match="the last line is not a sweep record"):
        read_done(out)
    assert out.read_bytes() == b"only one line, no newline" and before  # never truncated
    with pytest.raises(ValueError, match="more than 100,000 values"):
        parse_ints("0-999999999999", "seeds")
    with pytest.raises(ValueError, match="runs backwards"):
        parse_ints("9-3", "seeds")


# ---- environment ----

def test_numba_threads_zero_info_lives_auto_falls_back_numba_is_named(tmp_path, mnist_dir):
    env = dict(os.environ, NUMBA_NUM_THREADS="0")
    env.pop("FASTMNIST_BACKEND", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "fastmnist", *a], capture_output=True, text=True,  # noqa
                                    env=env, timeout=300)
    info = run("info", "--json")
    assert info.returncode == 0, info.stderr
    numba = json.loads(info.stdout.strip().splitlines()[-1])["backends"]["numba"]
    assert numba["available"] is False and "NUMBA_NUM_THREADS='0'" in numba["reason"]
    auto = run("train", "--model", "two-layer", "--data", str(mnist_dir), "--limit-train", "200", "--limit-test", "50",
               "--quiet")
    assert auto.returncode == 0, auto.stderr
    assert "warning: auto: the numba backend cannot run here" in auto.stderr and "numpy" in auto.stdout
    named = run("train", "--backend", "numba", "--data", str(mnist_dir), "--limit-train", "200", "--quiet")
    assert named.returncode == 2 and "Traceback" not in named.stderr
    assert "NUMBA_NUM_THREADS='0'" in named.stderr and "pip install" not in named.stderr


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_a_bad_numeric_variable_is_one_line_even_for_help(value):
    env = dict(os.environ, FASTMNIST_DOWNLOAD_TIMEOUT=value)
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == (f"fastmnist: error: environment variable FASTMNIST_DOWNLOAD_TIMEOUT={value!r}: "
                           "must be a finite number > 0 (unset: 30.0)\n")


def test_a_bad_spin_count_is_refused_and_not_passed_to_openmp():
    """FASTMNIST_GOMP_SPINCOUNT must be a whole number >= 0: the CLI says so, and the numba backend
    leaves GOMP_SPINCOUNT unset rather than hand libgomp text it would ignore."""
    env = dict(os.environ, FASTMNIST_GOMP_SPINCOUNT="lots")
    env.pop("GOMP_SPINCOUNT", None)
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "info"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("fastmnist: error: environment variable FASTMNIST_GOMP_SPINCOUNT='lots'")
    code = "import os; import fastmnist.backends.numba_backend; print(os.environ.get('GOMP_SPINCOUNT'))"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert probe.stdout.strip() == "None", probe.stderr
    env["FASTMNIST_GOMP_SPINCOUNT"] = "0"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert probe.stdout.strip() == "0", probe.stderr


def test_env_number_names_the_variable_the_value_and_the_range(monkeypatch):
    from fastmnist.config import env_number
    from fastmnist.errors import InvalidArgument
    monkeypatch.delenv("FASTMNIST_X", raising=False)
    assert env_number("FASTMNIST_X", 30.0, above=True) == 30.0
    for raw, rules, value in ((" 2.5 ", {"above": True}, 2.5), ("", {}, 7), ("0", {}, 0.0),
                              ("12", {"integer": True, "above": True}, 12), ("1", {"integer": True, "maximum": 1}, 1)):
        monkeypatch.setenv("FASTMNIST_X", raw)
        assert env_number("FASTMNIST_X", 7, **rules) == value
    for raw, rules, expected in (("abc", {"above": True}, "a finite number > 0"),
                                 ("-1", {}, "a finite number >= 0"), ("0", {"above": True}, "a finite number > 0"),
                                 ("nan", {}, "a finite number >= 0"), ("inf", {}, "a finite number >= 0"),
                                 ("1e9", {"integer": True}, "an integer >= 0"),
                                 ("2", {"integer": True, "maximum": 1}, "an integer >= 0 and <= 1")):
        monkeypatch.setenv("FASTMNIST_X", raw)
        with pytest.raises(InvalidArgument) as info:
            env_number("FASTMNIST_X", 7, **rules)
        assert str(info.value) == f"environment variable FASTMNIST_X={raw!r}: must be {expected} (unset: 7)"


def test_a_bad_gemm_choice_is_refused_by_name():
    """FASTMNIST_NUMBA_GEMM takes auto, numpy or mkl (any case); the CLI names the variable, the
    value and the choices before it runs anything."""
    env = dict(os.environ, FASTMNIST_NUMBA_GEMM="openblas")
    proc = subprocess.run([sys.executable, "-m", "fastmnist", "info"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == ("fastmnist: error: environment variable FASTMNIST_NUMBA_GEMM='openblas': "
                           "must be one of auto, numpy, mkl (unset: auto)\n")
    code = "from fastmnist import config; print(config.NUMBA_GEMM)"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, FASTMNIST_NUMBA_GEMM=" NumPy "))
    assert probe.stdout.strip() == "numpy", probe.stderr


def test_a_bad_variable_does_not_stop_the_import_only_its_setting():
    # the package must import (the command line's error handler is in it); the refused setting
    # raises when read, and works again once a program assigns it
    code = ("import fastmnist; from fastmnist import config\n"
            "for read in (lambda: config.CUDASIM_MEMORY_BYTES, config.check_environment):\n"
            "    try: read(); print('no error')\n"
            "    except fastmnist.errors.InvalidArgument as exc: print(exc)\n"
            "config.CUDASIM_MEMORY_BYTES = 5; config.check_environment(); print(config.CUDASIM_MEMORY_BYTES)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, FASTMNIST_CUDASIM_MEMORY="8G"))
    assert proc.returncode == 0, proc.stderr
    message = "environment variable FASTMNIST_CUDASIM_MEMORY='8G': must be an integer > 0 (unset: 8589934592)"
    assert proc.stdout.splitlines() == [message, message, "5"]


def test_library_errors_are_fastmnist_errors():
    assert issubclass(ModelFileError, FastMnistError) and issubclass(DataError, FastMnistError)
    assert issubclass(fastmnist.OutOfMemory, MemoryError)


def test_commands_refuse_a_model_that_is_not_an_mnist_classifier(capsys, tmp_path):
    from fastmnist.layers import Dense
    from fastmnist.model import Sequential
    path = Sequential([Dense(784)], (784,), backend="numpy").save(tmp_path / "wide.npz")
    picture = tmp_path / "p.png"
    from PIL import Image
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(picture)
    for argv in (["evaluate", str(path)], ["predict", str(path), str(picture)]):
        line = cli_error(capsys, *argv)
        assert "not a fastmnist model file: the model has outputs of shape (784,), not MNIST's ten classes" in line


def test_an_unreachable_scheduler_is_reported_within_seconds(capsys, tmp_path):
    pytest.importorskip("distributed")
    import time
    started = time.perf_counter()
    line = cli_error(capsys, "sweep", "--model", "two-layer", "--scheduler", "tcp://127.0.0.1:9", "--out",
                     str(tmp_path / "s.jsonl"), "--limit-train", "100", "--quiet")
    assert "--scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 5 s" in line
    assert time.perf_counter() - started < 20


# ---- only FastMnistErrors are the user's: every output is named, a bug is a traceback ----

@pytest.mark.parametrize("argv, message", [
    (["plot", "samples", "--out", "{f}/x.png"], "{f}/x.png: could not write the picture"),
    (["download", "--data", "{f}/mnist", "--mirror", "http://127.0.0.1:9/"], "MNIST data directory {f}/mnist: cannot create it"),
    (["reproduce", "two-layer", "--out", "{f}/m.npz"], "--out {f}/m.npz: {f} is a file, not a directory"),
    (["bench", "--models", "relu-mlp", "--kernels-only", "--json", "{f}/b.json"], "--json {f}/b.json: {f} is a file"),
    (["bench", "--models", "relu-mlp", "--kernels-only", "--plot", "{f}/b.png"], "--plot {f}/b.png: {f} is a file"),
    (["sweep", "--out", "{f}/s.jsonl"], "--out {f}/s.jsonl: {f} is a file, not a directory"),
    (["sweep", "--plot", "{f}/s.png"], "--plot {f}/s.png: {f} is a file, not a directory"),
    (["sweep", "--bench", "'unclosed", "--out", "{d}/b.json"], "--bench \"'unclosed\": No closing quotation"),
])
def test_outputs_that_cannot_be_written_are_named_before_any_work(capsys, tmp_path, mnist_dir, argv, message):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    fill = lambda s: s.format(f=a_file, d=tmp_path)  # noqa: E731
    line = cli_error(capsys, *map(fill, argv), *(["--data", str(mnist_dir)] if argv[0] == "plot" else []))
    assert fill(message) in line


def test_an_output_in_a_folder_not_made_yet_is_written(tmp_path):
    """The checks before the work accept a folder that does not exist yet; the writers (bench
    --json/--plot, sweep --out/--plot) make it, and a failed write names the option and file."""
    from fastmnist.options import write_output
    path = write_output(tmp_path / "new" / "deeper" / "r.json", lambda p: p.write_text("{}"), "--json")
    assert path.read_text() == "{}"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FastMnistError, match=r"--plot .*file/x\.png: could not write"):
        write_output(tmp_path / "file" / "x.png", lambda p: p.write_text(""), "--plot")


def test_a_checkpoint_that_cannot_be_written_names_it(tmp_path, good_model):
    from fastmnist.checkpoint import Checkpointer
    from fastmnist.optim import make_optimizer
    (tmp_path / "file").write_text("x")
    model, _ = good_model
    with pytest.raises(FastMnistError, match="checkpoint.npz: could not write the checkpoint"):
        Checkpointer(tmp_path / "file" / "ck", {}).save(model, make_optimizer("sgd", 0.1), {"epoch": 0})


def test_a_downloaded_file_that_cannot_be_written_names_it(tmp_path):
    from fastmnist.download import _write_atomically
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="t.gz: cannot write the downloaded file"):
        _write_atomically(tmp_path / "file" / "t.gz", b"data")


def test_a_bug_is_a_traceback_not_the_users_mistake(monkeypatch):
    """Only FastMnistError is printed as the user's error; a ValueError from fastmnist's own code
    (a bug) propagates with its traceback."""
    from fastmnist import cli

    def broken(args):
        raise ValueError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["info"])
