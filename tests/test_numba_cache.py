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
from fastmnist.backends import numba_kernels as K
x = np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32)
w = np.ones((2, 1, 3, 3), np.float32); b = np.zeros(2, np.float32)
y, _ = nb.maxpool2d_forward(nb.relu_forward(nb.conv2d_forward(x, w, b)))
loss, d = nb.softmax_cross_entropy(y.reshape(4, -1), np.array([0, 1, 2, 3]))
kernels = [K._relu_kernel, K._conv_direct_kernel, K._maxpool_kernel, K._softmax_ce_kernel]
kernels += [nb._TWINS[k] for k in kernels if k in nb._TWINS]  # small inputs run a kernel's serial twin
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


RACE = """
import json, os, sys, time
import numpy as np
import numba.core.caching as caching

role, barrier = sys.argv[1], sys.argv[2]
if role in ("a", "b"):  # both read the empty index, then write it: a first, b second; a's data lands last
    save_index, save_data = caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data

    def slow_index(self, overloads):
        open(os.path.join(barrier, role), "w").close()
        deadline = time.time() + 4  # with the lock the other process waits for ours: give up then
        while time.time() < deadline and not all(os.path.exists(os.path.join(barrier, r)) for r in "ab"):
            time.sleep(0.01)
        time.sleep(0.5 if role == "b" else 0)
        save_index(self, overloads)

    def slow_data(self, name, data):
        time.sleep(2 if role == "a" else 0)
        save_data(self, name, data)

    caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data = slow_index, slow_data
from fastmnist.backends import numba_kernels as k

dtype = np.float32 if role in ("a", "load-a") else np.float64
x = np.linspace(-3, 3, 4001).astype(dtype)
out = np.full_like(x, np.nan)
k._relu_kernel(x, out)
print(json.dumps({"ok": bool(np.array_equal(out, np.maximum(x, 0))),
                  "hits": sum(k._relu_kernel.stats.cache_hits.values())}))
"""


def run_race(role, cache_dir, barrier):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    return subprocess.Popen([sys.executable, "-c", RACE, role, str(barrier)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outcome(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err[-2000:]}"
    import json
    return json.loads(out.strip().splitlines()[-1])


def test_two_signatures_saved_at_once_load_their_own_code(tmp_path):
    # Numba's cache gives a new signature the first free data-file number it finds in the index:
    # two processes saving float32 and float64 at once both take number 1, and without a lock the
    # index names one's code while the file holds the other's. Found as a SIGSEGV on a 16-core
    # machine (benchmarks/results/gpu/suite.txt); here the interleaving is forced, so that it is
    # the lock of fastmnist/backends/numba_cache.py, not timing luck, that makes this pass.
    cache, barrier = tmp_path / "numba-cache", tmp_path / "barrier"
    barrier.mkdir()
    a, b = run_race("a", cache, barrier), run_race("b", cache, barrier)
    assert outcome(a)["ok"] and outcome(b)["ok"]
    for role in ("load-b", "load-a"):  # fresh processes: each signature's code from the cache, and right
        result = outcome(run_race(role, cache, barrier))
        assert result["hits"] == 1 and result["ok"], (role, result)


PARALLEL_CALLEE = """
from numba import njit, prange
from fastmnist.backends.numba_cache import lock_caches


@njit(cache=True, parallel=True)
def inner(x):
    for i in prange(x.size):
        x[i] += 1.0


@njit(cache=True)
def outer(x):  # not parallel itself: it inherits the thread pool's start-up hook from inner
    inner(x)
    return x.sum()


lock_caches(globals())
"""

CALL_OUTER = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import cachedpar as m
total = m.outer(np.zeros(1000))
print(json.dumps({"total": float(total), "hooks": len(next(iter(m.outer.overloads.values())).reload_init),
                  "outer_hits": sum(m.outer.stats.cache_hits.values()),
                  "inner_hits": sum(m.inner.stats.cache_hits.values())}))
"""


def test_plain_kernel_calling_a_parallel_one_loads_safely(tmp_path):
    # Numba drops a parallel callee's "start the threads" hook when the callee comes from the cache,
    # so a caller compiled then was saved without it, and the next process to load that caller
    # first crashed with SIGSEGV (numba_cache.py's docstring). Forced here: compile both, drop the
    # caller's entries, compile the caller against the cached callee, then load it fresh.
    module, cache = tmp_path / "module", tmp_path / "numba-cache"
    module.mkdir()
    (module / "cachedpar.py").write_text(PARALLEL_CALLEE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))

    def call():
        proc = subprocess.run([sys.executable, "-c", CALL_OUTER, str(module)], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
        import json
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert call()["total"] == 1000.0  # compiles both
    outer_files = list(cache.rglob("cachedpar.outer-*"))
    assert outer_files
    for path in outer_files:
        path.unlink()
    recompiled = call()
    assert recompiled["inner_hits"] == 1 and recompiled["outer_hits"] == 0 and recompiled["hooks"] >= 1
    loaded = call()  # crashed before the fix
    assert loaded == {"total": 1000.0, "hooks": loaded["hooks"], "outer_hits": 1, "inner_hits": 0}
    assert loaded["hooks"] >= 1  # the caller's cache entry starts the threads itself now
