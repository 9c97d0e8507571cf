"""Property-based fuzzing (hypothesis) of everything that reads bytes from outside: the IDX, CSV
and npz readers and model files. Each input either loads or raises the one documented exception
(DataError / ModelFileError); nothing else escapes, nothing hangs, nothing is unpickled.

CI runs FASTMNIST_FUZZ_EXAMPLES (default 150) examples per property; set it higher for a long run.
"""
import gzip
import io
import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmnist.config import env_number
from fastmnist.data import parse_idx, read_csv, read_idx_images, read_idx_labels, read_npz
from fastmnist.errors import DataError, ModelFileError
from fastmnist.model import load

EXAMPLES = env_number("FASTMNIST_FUZZ_EXAMPLES", 150, integer=True, minimum=1)  # a bad value: one clear error
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def idx(arr, code=0x08):
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


VALID_IMAGES = idx(np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28))
VALID_LABELS = idx(np.array([1, 2, 3], np.uint8))


@fuzz
@given(st.binary(max_size=200))
def test_idx_random_bytes(blob):
    try:
        parse_idx(blob, "fuzz")
    except DataError as err:
        assert "fuzz" in str(err)


@fuzz
@given(cut=st.integers(0, len(VALID_IMAGES)), flips=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)),
                                                            max_size=4), extra=st.binary(max_size=8),
       gz=st.booleans(), labels=st.booleans())
def test_idx_mutated_files(tmp_path, cut, flips, extra, gz, labels):
    blob = bytearray((VALID_LABELS if labels else VALID_IMAGES)[:cut] + extra)
    for pos, val in flips:
        if pos < len(blob):
            blob[pos] = val
    data = gzip.compress(bytes(blob)) if gz else bytes(blob)
    if gz and cut % 3 == 0:
        data = data[: len(data) // 2]  # a truncated gzip stream
    path = tmp_path / "f"
    path.write_bytes(data)
    try:
        out = (read_idx_labels if labels else read_idx_images)(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert out.dtype == np.uint8  # whatever loaded is well-formed
    if labels:
        assert out.ndim == 1 and (out.size == 0 or out.max() <= 9)
    else:
        assert out.ndim == 3


@fuzz
@given(rows=st.lists(st.lists(st.one_of(st.integers(-5, 300), st.text(max_size=3)), max_size=790), max_size=3))
def test_csv_random_rows(tmp_path, rows):
    path = tmp_path / "f.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in rows))
    try:
        x, y = read_csv(path)
    except DataError as err:
        assert "f.csv" in str(err)
        return
    assert x.shape[1:] == (28, 28) and x.dtype == np.uint8 and y.max() <= 9


@fuzz
@given(st.binary(max_size=300))
def test_npz_random_bytes(tmp_path, blob):
    path = tmp_path / "f.npz"
    path.write_bytes(b"PK\x03\x04" + blob)
    try:
        read_npz(path)
    except DataError:
        pass


arrays = st.sampled_from([np.zeros((2, 28, 28), np.uint8), np.zeros((2, 784)), np.ones((2,), np.int64) * 3,
                          np.array(["a", "b"]), np.zeros((2, 5)), np.full((2,), 12), np.full((2, 28, 28), np.nan),
                          np.zeros((3,), np.int64), np.zeros((0, 28, 28))])


@fuzz
@given(st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]), arrays, max_size=5))
def test_npz_wrong_arrays(tmp_path, content):
    path = tmp_path / "m.npz"
    np.savez(path, **content)
    try:
        (x, y), (xt, yt) = read_npz(path)
    except DataError:
        return
    assert x.shape[1:] == (28, 28) and len(x) == len(y)


def _model_bytes():
    from fastmnist import zoo
    buf = io.BytesIO()
    model = zoo.create("two-layer", backend="numpy")
    arrays = {"architecture": np.array(json.dumps(model.architecture()))}
    arrays.update(model.state_arrays())
    np.savez(buf, **arrays)
    return arrays


MODEL = _model_bytes()


@fuzz
@given(drop=st.sets(st.sampled_from(sorted(MODEL))), replace=st.dictionaries(st.sampled_from(sorted(MODEL)), arrays,
                                                                             max_size=2),
       arch=st.one_of(st.none(), st.text(max_size=40), st.just('{"format": 1, "layers": [{"type": "Dense"}]}'),
                      st.just('{"format": 1, "input_shape": [784], "loss": "mse", "dtype": "float32", '
                              '"layers": [{"type": "Dense", "units": -3}]}')))
def test_model_file_tampering(tmp_path, drop, replace, arch):
    content = {k: v for k, v in MODEL.items() if k not in drop}
    content.update(replace)
    if arch is not None:
        content["architecture"] = np.array(arch)
    path = tmp_path / "m.npz"
    np.savez(path, **content)
    try:
        model = load(path)
    except ModelFileError as err:
        assert "m.npz" in str(err)
        return
    assert model.architecture()["layers"]  # it loaded: it is a whole, valid model
