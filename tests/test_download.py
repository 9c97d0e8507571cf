"""`fastmnist download` against a real HTTP server on 127.0.0.1 serving files the test writes."""
import functools
import gzip
import hashlib
import http.server
import threading

import pytest
from test_data import write_mnist

from fastmnist import download as dl
from fastmnist.cli import main
from fastmnist.data import FILES, load_mnist
from fastmnist.errors import DataError


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Two mirror folders over HTTP on localhost: 'bad' has a corrupted file, 'good' is intact."""
    site = tmp_path / "site"
    (site / "good").mkdir(parents=True)
    (site / "bad").mkdir()
    write_mnist(site / "good")
    sums = {}
    for stem in FILES.values():
        raw = gzip.decompress((site / "good" / (stem + ".gz")).read_bytes())
        sums[stem] = hashlib.sha256(raw).hexdigest()
        corrupted = bytearray(raw)
        corrupted[-1] ^= 0xFF
        (site / "bad" / (stem + ".gz")).write_bytes(gzip.compress(bytes(corrupted)))
    monkeypatch.setattr(dl, "SHA256_UNCOMPRESSED", sums)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_skips_corrupt_mirror(served, tmp_path):
    target = tmp_path / "data"
    logs = []
    dl.download_mnist(target, mirrors=[served + "/missing/", served + "/bad/", served + "/good/"], log=logs.append)
    (x, y), (xt, yt) = load_mnist(target)
    assert x.shape == (20, 1, 28, 28) and len(yt) == 10
    assert all("downloaded from" in line and "/good/" in line for line in logs)
    dl.download_mnist(target, mirrors=[served + "/bad/"], log=logs.append)  # present and valid: not fetched
    assert logs[-1].endswith("present and verified")


def test_download_all_mirrors_bad(served, tmp_path):
    with pytest.raises(DataError, match=r"could not download .* SHA-256 of the decompressed file is [0-9a-f]{64}"):
        dl.download_mnist(tmp_path / "d", mirrors=[served + "/bad/"], log=lambda s: None)
    assert not any((tmp_path / "d").glob("*.gz"))  # nothing unverified is left behind


def test_download_cli(served, tmp_path, capsys):
    assert main(["download", "--data", str(tmp_path / "c"), "--mirror", served + "/good/"]) == 0
    assert main(["download", "--data", str(tmp_path / "e"), "--mirror", served + "/bad/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastmnist download: error: could not download")


def test_real_sums_match_shared_data(mnist_dir):
    for stem, want in dl.SHA256_UNCOMPRESSED.items():
        path = mnist_dir / (stem + ".gz")
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == want
