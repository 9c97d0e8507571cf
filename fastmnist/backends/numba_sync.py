"""A spin barrier for the threads of one Numba parallel region, in LLVM IR through llvmlite.

A compiled chunk of training steps (numba_steps.py) splits each step over its threads and meets
two or three times a step. A Numba parallel region per phase would cost a wake-up of the sleeping
OpenMP threads each time (OMP_WAIT_POLICY=PASSIVE, numba_backend.py): 20-100 us on the 2-core VMs
measured, against a step of 200-400 us. So the threads enter one region per chunk and wait for each
other here, spinning with ``pause`` and then yielding the core, on a counter only ever increased.

- ``barrier(sync, parts, passed)``: the caller's ``passed``-th crossing (from 1) of a barrier
  shared by ``parts`` threads; returns once every thread has arrived there. ``sync[0]`` counts the
  arrivals and must be 0 when the region starts.

Every thread of the region must run its part at the same time, or the first barrier waits forever:
the caller starts one only where Numba's threading layer runs each iteration of a ``prange`` on its
own thread (OpenMP and workqueue; TBB may run two on one thread), has as many threads as parts, and
``parts_run_together`` has seen them start together.
"""
import platform

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .numba_cache import lock_caches

#: spins with ``pause`` (a few tens of ns each) before a waiting thread starts yielding its core
#: to whatever else runs on the machine (compiled in: a change needs the kernel cache cleared)
SPINS_BEFORE_YIELD = 2000
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _element(context, builder, aryty, ary, index):
    return cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, ary),
                                    [index], wraparound=False)


def _check_counter(name, ary):
    if not (isinstance(ary, types.Array) and ary.dtype == types.int64 and ary.ndim == 1):
        raise TypeError(f"{name}: a 1-d int64 array expected, got {ary}")


@intrinsic
def atomic_add(typingctx, ary, index, value):
    """ary[index] += value as one atomic step (sequentially consistent); returns the old value."""
    _check_counter("atomic_add", ary)

    def codegen(context, builder, signature, args):
        ptr = _element(context, builder, ary, args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return types.int64(ary, types.int64, types.int64), codegen


@intrinsic
def atomic_load(typingctx, ary, index):
    """ary[index], read atomically with acquire order: what another thread wrote before its
    atomic_add is visible after this load sees that add."""
    _check_counter("atomic_load", ary)

    def codegen(context, builder, signature, args):
        ptr = _element(context, builder, ary, args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(ary, types.int64), codegen


@intrinsic
def spin_pause(typingctx):
    """x86 ``pause`` (a hint that this is a spin loop: less power, no memory-order flush on exit);
    nothing elsewhere."""
    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def yield_core(typingctx):
    """The C library's ``sched_yield()``: let another runnable thread have this core."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def barrier(sync, parts, passed):
    """Wait until all ``parts`` threads have called this for the ``passed``-th time (see the module)."""
    if parts == 1:
        return
    atomic_add(sync, 0, 1)
    goal = passed * parts
    spins = 0
    while atomic_load(sync, 0) < goal:
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            spin_pause()
        else:
            yield_core()


@njit(cache=True, nogil=True, parallel=True)
def _arrive_together(parts, arrived, patience):
    """Part 0 waits (at most ``patience`` yields of its core) for the other parts of a ``prange``
    to start; arrived[1] says how many had."""
    for t in prange(parts):
        if t > 0:
            atomic_add(arrived, 0, 1)
        else:
            waited = 0
            while atomic_load(arrived, 0) < parts - 1 and waited < patience:
                waited += 1
                yield_core()
            arrived[1] = atomic_load(arrived, 0)


def parts_run_together(parts: int, patience: int = 200_000) -> bool:
    """Whether the ``parts`` iterations of a Numba ``prange`` run at the same time here, each on its
    own thread: a barrier between them would otherwise wait forever (an OpenMP runtime capped by
    OMP_THREAD_LIMIT runs them one after another on one thread). Never blocks: the first part
    gives up after ``patience`` yields (well under a second) and the answer is no."""
    arrived = np.zeros(2, np.int64)
    _arrive_together(parts, arrived, patience)
    return bool(arrived[1] == parts - 1)


lock_caches(globals())  # one cache for several processes; numba_cache.py
