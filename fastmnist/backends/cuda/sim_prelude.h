// The CUDA simulator's prelude: CPU stand-ins for the CUDA built-ins that kernels.cu uses, so that
// the same source compiles as C++ (g++) and runs on a machine without a GPU.
//
// Execution model (fmsim::run): blocks run one after another. A kernel that never calls
// __syncthreads runs its threads one after another too (a plain loop: fast); a kernel that does
// runs each block's threads as fibers meeting on a barrier (below), so shared-memory reductions
// are exercised as written. __shared__ becomes a function-local static: one copy per kernel, which
// is exact while blocks run one at a time. Atomics are real atomics.
//
// This checks the kernels' arithmetic, indexing and argument types; it says nothing about speed,
// warp-level behaviour or memory-model races on a real GPU. It is never GPU evidence.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <ucontext.h>
#include <vector>

using std::ceil; using std::exp; using std::fabs; using std::floor; using std::fmax; using std::fmin;
using std::log; using std::pow; using std::sqrt; using std::tanh;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

namespace fmsim {
thread_local dim3 thread_idx, block_idx;
thread_local bool threaded = false;
dim3 block_dim, grid_dim;
std::string error;

inline void fail(const char* what) {
    if (error.empty()) error = what;
}

// Threads of a kernel that calls __syncthreads run as fibers (ucontext) on the calling thread: each
// block's threads start one after another, each runs until it reaches a barrier (or its end) and
// hands back to the scheduler, which resumes them all once every one of them is there. Switching a
// fiber costs well under a microsecond where waking an OS thread on a barrier cost several
// (fast-cnn's own-gemm step on the simulator ran about 10x slower on OS threads).
const size_t FIBER_STACK = 128 * 1024;  // the kernels keep a few scalars and small arrays a thread
struct Fibers {
    std::vector<ucontext_t> ctx;
    std::vector<unsigned char> state;  // READY, AT_BARRIER or DONE
    char* stacks = nullptr;
    size_t capacity = 0;
    ucontext_t scheduler;
    unsigned current = 0;
    void* body = nullptr;
    void reserve(unsigned nt) {
        ctx.resize(nt);
        state.resize(nt);
        if (capacity < nt) {
            delete[] stacks;  // not zeroed: untouched pages cost nothing
            stacks = new char[nt * FIBER_STACK];
            capacity = nt;
        }
    }
};
enum : unsigned char { READY, AT_BARRIER, DONE };
Fibers fibers;

template <class Body>
void fiber_entry() {
    (*static_cast<Body*>(fibers.body))();
    fibers.state[fibers.current] = DONE;  // returning resumes uc_link, the scheduler
}

inline void barrier_wait() {
    const unsigned t = fibers.current;
    fibers.state[t] = AT_BARRIER;
    swapcontext(&fibers.ctx[t], &fibers.scheduler);
}

template <class Body>
void run(dim3 grid, dim3 block, bool sync, Body body) {
    grid_dim = grid;
    block_dim = block;
    error.clear();
    if (!sync) {
        for (unsigned bz = 0; bz < grid.z; ++bz)
            for (unsigned by = 0; by < grid.y; ++by)
                for (unsigned bx = 0; bx < grid.x; ++bx) {
                    block_idx = dim3(bx, by, bz);
                    for (unsigned tz = 0; tz < block.z; ++tz)
                        for (unsigned ty = 0; ty < block.y; ++ty)
                            for (unsigned tx = 0; tx < block.x; ++tx) {
                                thread_idx = dim3(tx, ty, tz);
                                body();
                            }
                }
        return;
    }
    const unsigned nt = block.x * block.y * block.z;
    fibers.reserve(nt);
    fibers.body = &body;
    threaded = true;
    for (unsigned bz = 0; bz < grid.z && error.empty(); ++bz)
        for (unsigned by = 0; by < grid.y && error.empty(); ++by)
            for (unsigned bx = 0; bx < grid.x && error.empty(); ++bx) {
                block_idx = dim3(bx, by, bz);
                for (unsigned t = 0; t < nt; ++t) {
                    getcontext(&fibers.ctx[t]);
                    fibers.ctx[t].uc_stack.ss_sp = fibers.stacks + t * FIBER_STACK;
                    fibers.ctx[t].uc_stack.ss_size = FIBER_STACK;
                    fibers.ctx[t].uc_link = &fibers.scheduler;
                    makecontext(&fibers.ctx[t], fiber_entry<Body>, 0);
                    fibers.state[t] = READY;
                }
                for (;;) {  // one round: every ready thread runs to its next barrier or its end
                    unsigned waiting = 0, done = 0;
                    for (unsigned t = 0; t < nt; ++t) {
                        if (fibers.state[t] != READY) continue;
                        fibers.current = t;
                        thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        swapcontext(&fibers.scheduler, &fibers.ctx[t]);
                    }
                    for (unsigned t = 0; t < nt; ++t) (fibers.state[t] == DONE ? done : waiting) += 1;
                    if (waiting == 0) break;
                    if (done > 0) {  // CUDA leaves this undefined; a GPU may hang
                        fail("__syncthreads() reached by some threads of a block after others had returned");
                        break;
                    }
                    for (unsigned t = 0; t < nt; ++t) fibers.state[t] = READY;
                }
            }
    threaded = false;
}
}  // namespace fmsim

#define threadIdx fmsim::thread_idx
#define blockIdx fmsim::block_idx
#define blockDim fmsim::block_dim
#define gridDim fmsim::grid_dim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

inline void __syncthreads() {
    if (!fmsim::threaded) {
        fmsim::fail("__syncthreads() called in a kernel the simulator ran without threads "
                    "(its source analysis missed the barrier)");
        return;
    }
    fmsim::barrier_wait();
}

template <class T>
inline T atomicAdd(T* address, T value) { return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST); }

template <class F>
inline F atomic_add_float(F* address, F value) {
    F old, updated;
    __atomic_load(address, &old, __ATOMIC_SEQ_CST);
    do {
        updated = old + value;
    } while (!__atomic_compare_exchange(address, &old, &updated, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
inline float atomicAdd(float* address, float value) { return atomic_add_float(address, value); }
inline double atomicAdd(double* address, double value) { return atomic_add_float(address, value); }

template <class T>
inline T atomicMax(T* address, T value) {
    T old = __atomic_load_n(address, __ATOMIC_SEQ_CST);
    while (old < value && !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}

template <class T>
inline T atomicExch(T* address, T value) { return __atomic_exchange_n(address, value, __ATOMIC_SEQ_CST); }

template <class T>
inline T atomicCAS(T* address, T compare, T value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}

extern "C" __attribute__((visibility("default"))) const char* fmsim_error() { return fmsim::error.c_str(); }
