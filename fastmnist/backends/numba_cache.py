"""Numba's on-disk cache, made safe for several processes compiling at once.

Numba keeps, per function, one index file that maps each signature to a numbered data file
(``numba.core.caching.IndexDataCacheFile``). Saving reads the index, takes the first free number,
writes the index, then the data. Two processes saving two signatures of one kernel at the same
time can take the same number: the index one of them leaves then names the other's machine code,
and the next process to load that signature runs code compiled for other argument types. That is
a segfault or silent garbage (seen on a 16-core machine where 12 test processes shared one cache:
``benchmarks/results/gpu/suite.txt``; Numba issues #4807 and #10128 report the same family).

Here every cached load and save of a fastmnist kernel holds an exclusive ``fcntl.flock`` on one
lock file in that kernel's cache directory, so an index and its data are read and written as one.
The lock is held for file I/O only, never while compiling. Where ``fcntl`` does not exist
(Windows) or the directory cannot hold a lock file, caching works as in Numba itself.

A second Numba bug (issues #8578 and #4807's parallel reproducer) is mended here too. A kernel
compiled with ``parallel=True`` needs Numba's thread pool started before its code runs: its cache
entry carries a "start the threads" hook that loading runs. A plain kernel that *calls* a parallel
one inherits that hook only from a callee compiled in the same process. Where the callee came
from the cache, the caller is saved without the hook, and the next process that loads that caller
before any parallel kernel jumps through a null pointer: a SIGSEGV (seen as ``fastmnist bench``
crashing in ``dense_train_steps_kernel`` after two pytest workers had shared one cache). So every
load here starts the thread pool first (once a process; fastmnist's kernels use it anyway), and a
loaded kernel's library gets its hooks back, so a caller compiled from it records them.
"""
from __future__ import annotations

import contextlib
import os

from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher
from numba.np.ufunc.parallel import _launch_threads

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; Numba's own behaviour
    fcntl = None

LOCK_NAME = "fastmnist-numba-cache.lock"


@contextlib.contextmanager
def _locked(directory: str):
    """Hold an exclusive lock on ``directory``/LOCK_NAME (shared by every kernel cached there)."""
    if fcntl is None:
        yield
        return
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:  # a read-only cache location: Numba falls back on its own, so do we
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class LockedFunctionCache(FunctionCache):
    """Numba's FunctionCache with each load and save of an index entry and its data under one lock.

    ``depends`` names more source files the kernels' machine code depends on (numba_conv.py's
    kernels inline numba_tiles.py's generated IR): their modification times and sizes join the
    stamp Numba keeps of the kernel's own file, so editing one invalidates the cache as editing
    the kernel's file does (Numba alone would keep loading the old code)."""

    def __init__(self, py_func, depends=()):
        super().__init__(py_func)
        self.depends = tuple(depends)
        if depends:
            stamp = self._cache_file._source_stamp
            self._cache_file._source_stamp = (stamp,) + tuple(_stamp(path) for path in depends)

    def load_overload(self, sig, target_context):
        _launch_threads()  # the cached code may call a parallel kernel: see the module docstring
        with _locked(self.cache_path):
            cres = super().load_overload(sig, target_context)
        if cres is not None:  # Numba drops them on load: a caller compiled against this library needs them
            cres.library._reload_init.update(cres.reload_init)
        return cres

    def save_overload(self, sig, data):
        with _locked(self.cache_path):
            super().save_overload(sig, data)


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return st.st_mtime, st.st_size


def lock_caches(namespace: dict, depends: tuple = ()) -> int:
    """Give every cached Numba dispatcher in ``namespace`` (a module's ``globals()``) the locked
    cache; returns how many. Call it where the kernels are defined, before their first call.
    ``depends``: other source files whose edits must invalidate these kernels' cache."""
    count = 0
    for obj in namespace.values():
        if isinstance(obj, CPUDispatcher) and type(getattr(obj, "_cache", None)) is FunctionCache:
            obj._cache = LockedFunctionCache(obj.py_func, depends)
            count += 1
    return count


def lock_like(dispatcher, model) -> None:
    """Give ``dispatcher`` (made at run time, such as a kernel's serial twin) the locked cache,
    with the extra source files of ``model``'s (the kernel it was made from), where it has one."""
    if type(getattr(dispatcher, "_cache", None)) is FunctionCache:
        dispatcher._cache = LockedFunctionCache(dispatcher.py_func, getattr(model._cache, "depends", ()))
