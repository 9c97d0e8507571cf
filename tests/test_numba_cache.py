"""The Numba cache: two processes compiling into one empty cache at once both succeed, a warm cache
means no recompilation, and NUMBA_CACHE_DIR is where the cache goes (for read-only installs)."""
import os
import subprocess
import sys

import pytest

from fastmnist.backends import backend_status

pytestmark = pytest.mark.skipif(not backend_status("numba")[0], reason="numba backend unavailable")

SCRIPT = """
import json, numpy as np
from fastmnist.backends import numba_backend as nb
x = np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32)
w = np.ones((2, 1, 3, 3), np.float32); b = np.zeros(2, np.float32)
y, _ = nb.maxpool2d_forward(nb.relu_forward(nb.conv2d_forward(x, w, b)))
loss, d = nb.softmax_cross_entropy(y.reshape(4, -1), np.array([0, 1, 2, 3]))
kernels = [nb._relu_kernel, nb._conv_direct_kernel, nb._maxpool_kernel, nb._softmax_ce_kernel]
print(json.dumps({"loss": float(loss), "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
                  "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels)}))
"""


def run_all(n, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        import json
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_concurrent_cold_cache_then_warm(tmp_path):
    cache = tmp_path / "numba-cache"
    first = run_all(2, cache)  # both compile into the same empty directory at once
    assert first[0]["loss"] == first[1]["loss"]
    assert any(cache.rglob("*.nbi")) and any(cache.rglob("*.nbc"))  # the cache went where it was told
    warm = run_all(1, cache)[0]
    assert warm["misses"] == 0 and warm["hits"] >= 4  # loaded, not compiled again
    assert warm["loss"] == first[0]["loss"]
