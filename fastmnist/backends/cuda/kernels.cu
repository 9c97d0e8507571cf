// CUDA kernels of the cupy backend (fastmnist/backends/cupy_backend.py loads this file with
// cupy.RawModule). Every kernel exists for float and double: KERNEL_f32 / KERNEL_f64.
// Index arithmetic is 64-bit: 60000x784 inputs already pass 2^31 elements in some products.
// Shapes follow the contract in fastmnist/backends/contract.py (NCHW).
//
// tests/test_cuda_sources.py compiles this file with nvcc where nvcc is installed, so a syntax
// error cannot land unseen on a machine without a GPU.

// Threads per block of the one-block reductions; the backend compiles with -DFASTMNIST_THREADS equal
// to the block size it launches (config.CUDA_THREADS, a power of two).
#ifndef FASTMNIST_THREADS
#define FASTMNIST_THREADS 256
#endif

typedef long long i64;
typedef unsigned long long u64;

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
                               i += (i64)blockDim.x * gridDim.x)

// ---- im2col / col2im ------------------------------------------------------------------------

// x (N, C, H, W) -> col (N*OH*OW, C*KH*KW): one thread per col element.
template <typename T>
__device__ void im2col_impl(const T* x, int N, int C, int H, int W, int KH, int KW, int stride, int pad,
                            int OH, int OW, T* col) {
    const i64 K = (i64)C * KH * KW;
    const i64 total = (i64)N * OH * OW * K;
    GRID_STRIDE(idx, total) {
        i64 row = idx / K;
        int k = (int)(idx % K);
        int c = k / (KH * KW), a = (k / KW) % KH, b = k % KW;
        int ow = (int)(row % OW), oh = (int)((row / OW) % OH);
        i64 n = row / ((i64)OH * OW);
        int h = oh * stride + a - pad, w = ow * stride + b - pad;
        col[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
    }
}

// col -> x: one thread per x element, gathering every window that covers it (no atomics).
template <typename T>
__device__ void col2im_impl(const T* col, int N, int C, int H, int W, int KH, int KW, int stride, int pad,
                            int OH, int OW, T* x) {
    const i64 K = (i64)C * KH * KW;
    const i64 total = (i64)N * C * H * W;
    GRID_STRIDE(idx, total) {
        int w = (int)(idx % W), h = (int)((idx / W) % H);
        int c = (int)((idx / ((i64)W * H)) % C);
        i64 n = idx / ((i64)W * H * C);
        T acc = 0;
        for (int a = 0; a < KH; ++a) {
            int ohs = h + pad - a;
            if (ohs < 0 || ohs % stride) continue;
            int oh = ohs / stride;
            if (oh >= OH) continue;
            for (int b = 0; b < KW; ++b) {
                int ows = w + pad - b;
                if (ows < 0 || ows % stride) continue;
                int ow = ows / stride;
                if (ow >= OW) continue;
                acc += col[((n * OH + oh) * OW + ow) * K + (c * KH + a) * KW + b];
            }
        }
        x[idx] = acc;
    }
}

// rows (N*P, F) + b -> out (N, F, P) (conv output back to NCHW).
template <typename T>
__device__ void rows_to_nchw_impl(const T* rows, const T* bias, i64 N, int F, i64 P, T* out) {
    GRID_STRIDE(idx, N * F * P) {
        i64 p = idx % P;
        int f = (int)((idx / P) % F);
        i64 n = idx / (P * F);
        out[idx] = rows[(n * P + p) * F + f] + bias[f];
    }
}

// dy (N, F, P) -> rows (N*P, F).
template <typename T>
__device__ void nchw_to_rows_impl(const T* dy, i64 N, int F, i64 P, T* rows) {
    GRID_STRIDE(idx, N * F * P) {
        int f = (int)(idx % F);
        i64 r = idx / F;
        i64 n = r / P, p = r % P;
        rows[idx] = dy[(n * F + f) * P + p];
    }
}

// ---- pooling ---------------------------------------------------------------------------------

// x (N, C, H, W) -> y, argmax (flat h*W+w) (N, C, OH, OW); the first maximum wins ties.
template <typename T>
__device__ void maxpool_impl(const T* x, i64 NC, int H, int W, int size, int stride, int OH, int OW, T* y,
                             i64* arg) {
    GRID_STRIDE(idx, NC * OH * OW) {
        int j = (int)(idx % OW), i = (int)((idx / OW) % OH);
        i64 plane = idx / ((i64)OH * OW);
        const T* src = x + plane * H * W;
        int h0 = i * stride, w0 = j * stride;
        T best = src[h0 * W + w0];
        int where = h0 * W + w0;
        for (int a = 0; a < size; ++a)
            for (int b = 0; b < size; ++b) {
                int k = (h0 + a) * W + w0 + b;
                if (src[k] > best) { best = src[k]; where = k; }
            }
        y[idx] = best;
        arg[idx] = where;
    }
}

// dx (N*C, H*W) zeroed; gradients routed to argmax (atomics: windows may overlap).
// Indices outside the plane are counted in *bad and skipped, never written.
template <typename T>
__device__ void maxpool_backward_impl(const T* dy, const i64* arg, i64 NC, i64 OHW, i64 HW, T* dx, int* bad) {
    GRID_STRIDE(idx, NC * OHW) {
        i64 k = arg[idx];
        if (k < 0 || k >= HW) { atomicAdd(bad, 1); continue; }
        atomicAdd(dx + (idx / OHW) * HW + k, dy[idx]);
    }
}

// rows (N*OH*OW, F) -> pooled y (N, F, PH, PW) with bias and ReLU, argmax int32 into OH*OW.
template <typename T>
__device__ void rows_pool_impl(const T* rows, const T* bias, i64 N, int F, int OH, int OW, int size, int stride,
                               int PH, int PW, T* y, int* arg) {
    GRID_STRIDE(idx, N * F * PH * PW) {
        int j = (int)(idx % PW), i = (int)((idx / PW) % PH);
        int f = (int)((idx / ((i64)PW * PH)) % F);
        i64 n = idx / ((i64)PW * PH * F);
        const T* base = rows + n * OH * OW * F + f;
        int h0 = i * stride, w0 = j * stride;
        int where = h0 * OW + w0;
        T best = base[(i64)where * F];
        for (int a = 0; a < size; ++a)
            for (int b = 0; b < size; ++b) {
                int k = (h0 + a) * OW + w0 + b;
                T v = base[(i64)k * F];
                if (v > best) { best = v; where = k; }
            }
        best += bias[f];
        y[idx] = best > (T)0 ? best : (T)0;
        arg[idx] = where;
    }
}

// pooled dy -> rows (N*OH*OW, F) zeroed: the ReLU mask (y > 0) and the pool's argmax together.
template <typename T>
__device__ void pool_to_rows_impl(const T* dy, const T* y, const int* arg, i64 N, int F, int PH, int PW, int OHW,
                                  T* rows) {
    GRID_STRIDE(idx, N * F * PH * PW) {
        if (y[idx] <= (T)0) continue;
        int f = (int)((idx / ((i64)PW * PH)) % F);
        i64 n = idx / ((i64)PW * PH * F);
        atomicAdd(rows + (n * OHW + arg[idx]) * F + f, dy[idx]);
    }
}

// ---- elementwise -----------------------------------------------------------------------------

template <typename T>
__device__ void bias_act_impl(T* y, const T* bias, i64 N, int M, int relu) {
    GRID_STRIDE(idx, N * M) {
        T v = y[idx] + bias[idx % M];
        y[idx] = (relu && v < (T)0) ? (T)0 : v;
    }
}

template <typename T>
__device__ void relu_impl(const T* x, i64 n, T* out) {
    GRID_STRIDE(i, n) { out[i] = x[i] > (T)0 ? x[i] : (T)0; }
}

template <typename T>
__device__ void relu_backward_impl(const T* dy, const T* x, i64 n, T* out) {
    GRID_STRIDE(i, n) { out[i] = x[i] > (T)0 ? dy[i] : (T)0; }
}

template <typename T>
__device__ void sigmoid_impl(const T* x, i64 n, T* out) {
    GRID_STRIDE(i, n) {
        T v = x[i];
        T e = exp(-fabs(v));  // never overflows
        out[i] = v >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
    }
}

template <typename T>
__device__ void sigmoid_backward_impl(const T* dy, const T* y, i64 n, T* out) {
    GRID_STRIDE(i, n) { out[i] = dy[i] * y[i] * ((T)1 - y[i]); }
}

template <typename T>
__device__ void mul_impl(const T* a, const T* b, i64 n, T* out) {
    GRID_STRIDE(i, n) { out[i] = a[i] * b[i]; }
}

// splitmix64 of seed*golden + i + 1, top 24 bits: the contract's counter-based uniform.
__device__ __forceinline__ double dropout_uniform(u64 seed, i64 i) {
    u64 z = seed * 0x9E3779B97F4A7C15ULL + (u64)(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 40) * (1.0 / 16777216.0);
}

template <typename T>
__device__ void dropout_impl(const T* x, i64 n, double p, double scale, u64 seed, T* y, T* mask) {
    GRID_STRIDE(i, n) {
        T m = dropout_uniform(seed, i) >= p ? (T)scale : (T)0;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

// The same with the seed read on the device (a CUDA graph replays the arguments of its capture):
// step s = counter[0] takes seeds[s*layers + layer], from a table of counter[1] steps uploaded
// before the graph runs; past its end, seed 0 (that step updates no weights: adam_many_rates).
template <typename T>
__device__ void dropout_at_impl(const T* x, i64 n, double p, double scale, const i64* seeds, const i64* counter,
                                i64 layers, i64 layer, T* y, T* mask) {
    const i64 s = counter[0];
    const u64 seed = (s >= 0 && s < counter[1]) ? (u64)seeds[s * layers + layer] : 0;
    dropout_impl(x, n, p, scale, seed, y, mask);
}

// ---- augmentation: each output pixel samples its sample's affine map, bilinear, zero outside ----
// bilinear_at: one plane sampled at (sx, sy), zero outside, double weights (affine and elastic warps).
template <typename T>
__device__ double bilinear_at(const T* plane, int H, int W, double sx, double sy) {
    const double fx0 = floor(sx), fy0 = floor(sy), fx = sx - fx0, fy = sy - fy0;
    const int x0 = (int)fx0, y0 = (int)fy0;
    double acc = 0;
    for (int dy = 0; dy < 2; ++dy) {
        const int yy = y0 + dy;
        if (yy < 0 || yy >= H) continue;
        const double wy = dy ? fy : 1.0 - fy;
        for (int dx = 0; dx < 2; ++dx) {
            const int xx = x0 + dx;
            if (xx >= 0 && xx < W) acc += wy * (dx ? fx : 1.0 - fx) * (double)plane[(i64)yy * W + xx];
        }
    }
    return acc;
}

// theta: (N, 2, 3) float64, about the image centre; coordinates in double as on every backend.
template <typename T>
__device__ void affine_warp_impl(const T* x, const double* theta, int N, int C, int H, int W, T* out) {
    const i64 total = (i64)N * H * W;
    const double cy = (H - 1) / 2.0, cx = (W - 1) / 2.0;
    GRID_STRIDE(idx, total) {
        const int col = (int)(idx % W), r = (int)((idx / W) % H), n = (int)(idx / ((i64)W * H));
        const double* t = theta + (i64)n * 6;
        const double u = col - cx, v = r - cy;
        const double sx = t[0] * u + t[1] * v + t[2] + cx, sy = t[3] * u + t[4] * v + t[5] + cy;
        for (int c = 0; c < C; ++c)
            out[((i64)n * C + c) * H * W + (i64)r * W + col] =
                (T)bilinear_at<T>(x + ((i64)n * C + c) * H * W, H, W, sx, sy);
    }
}

// ---- elastic warp: a displacement bilinear on each sample's grid (N, 2, GH, GW), corners on the
// image's, then the input there, bilinear, zero outside; coordinates in double as on every backend.
template <typename T>
__device__ void elastic_warp_impl(const T* x, const double* grid, int GH, int GW, int N, int C, int H, int W, T* out) {
    const i64 total = (i64)N * H * W;
    const double sy_ = (GH - 1) / (double)(H > 1 ? H - 1 : 1), sx_ = (GW - 1) / (double)(W > 1 ? W - 1 : 1);
    GRID_STRIDE(idx, total) {
        const int col = (int)(idx % W), r = (int)((idx / W) % H), n = (int)(idx / ((i64)W * H));
        const double* g = grid + (i64)n * 2 * GH * GW;
        const double gy = r * sy_, gx = col * sx_;
        const double sx = col + bilinear_at<double>(g, GH, GW, gx, gy);
        const double sy = r + bilinear_at<double>(g + (i64)GH * GW, GH, GW, gx, gy);
        for (int c = 0; c < C; ++c)
            out[((i64)n * C + c) * H * W + (i64)r * W + col] =
                (T)bilinear_at<T>(x + ((i64)n * C + c) * H * W, H, W, sx, sy);
    }
}

// ---- stroke width: toward each sample's 3x3 grey dilation (amount > 0) or erosion (< 0) -------
// s * (the max of s * x over the pixels of the window inside the image), s the sign: a min for s = -1.
template <typename T>
__device__ void stroke_width_impl(const T* x, const double* amount, int N, int C, int H, int W, T* out) {
    const i64 total = (i64)N * C * H * W;
    GRID_STRIDE(idx, total) {
        const int col = (int)(idx % W), r = (int)((idx / W) % H);
        const i64 plane = idx / ((i64)W * H);
        const double a = amount[plane / C];
        const T s = a > 0 ? (T)1 : (T)-1, t = (T)fabs(a);
        const T* p = x + plane * H * W;
        T best = s * p[(i64)r * W + col];
        const int i0 = r > 0 ? r - 1 : 0, i1 = r + 2 < H ? r + 2 : H;  // the window's rows and columns
        const int j0 = col > 0 ? col - 1 : 0, j1 = col + 2 < W ? col + 2 : W;  // inside the image
        for (int i = i0; i < i1; ++i)
            for (int j = j0; j < j1; ++j) {
                const T v = s * p[(i64)i * W + j];
                best = (v > best || v != v) ? v : best;  // a NaN wins, as in np.max
            }
        const T v = p[(i64)r * W + col];
        out[idx] = v + t * (s * best - v);
    }
}

// ---- gaussian blur: each sample's taps (N, 2R+1) along the rows, then the columns, zero outside --
template <typename T>
__device__ void gaussian_blur_impl(const T* x, const double* taps, int R, int N, int C, int H, int W, T* out) {
    const i64 total = (i64)N * C * H * W;
    GRID_STRIDE(idx, total) {
        const int col = (int)(idx % W), r = (int)((idx / W) % H);
        const i64 plane = idx / ((i64)W * H);
        const double* g = taps + (plane / C) * (2 * R + 1);
        const T* p = x + plane * H * W;
        T acc = 0;
        for (int k = 0; k <= 2 * R; ++k) {  // the column pass over the row pass's sums, k in order
            const int i = r + k - R;
            if (i < 0 || i >= H) continue;
            T across = 0;
            for (int m = 0; m <= 2 * R; ++m) {
                const int j = col + m - R;
                if (j >= 0 && j < W) across += (T)g[m] * p[(i64)i * W + j];
            }
            acc += (T)g[k] * across;
        }
        out[idx] = acc;
    }
}

// ---- losses: one block, rows over threads, a shared-memory sum; no host round trip -------------

template <typename T>
__device__ void softmax_ce_impl(const T* x, const i64* labels, int N, int M, T* d, T* loss, int* bad) {
    __shared__ double part[FASTMNIST_THREADS];
    double acc = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        const T* row = x + (i64)n * M;
        T* drow = d + (i64)n * M;
        i64 lab = labels[n];
        if (lab < 0 || lab >= M) { atomicAdd(bad, 1); for (int m = 0; m < M; ++m) drow[m] = 0; continue; }
        T top = row[0];
        for (int m = 1; m < M; ++m) top = row[m] > top ? row[m] : top;
        double s = 0;
        for (int m = 0; m < M; ++m) { T e = exp(row[m] - top); drow[m] = e; s += (double)e; }
        acc += log(s) - (double)(row[lab] - top);
        for (int m = 0; m < M; ++m) drow[m] = (T)((double)drow[m] / s / N);
        drow[lab] -= (T)(1.0 / N);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss[0] = (T)(part[0] / N);
}

template <typename T>
__device__ void softmax_impl(const T* x, int N, int M, T* out) {
    GRID_STRIDE(n, N) {
        const T* row = x + n * M;
        T* orow = out + n * M;
        T top = row[0];
        for (int m = 1; m < M; ++m) top = row[m] > top ? row[m] : top;
        T s = 0;
        for (int m = 0; m < M; ++m) { orow[m] = exp(row[m] - top); s += orow[m]; }
        for (int m = 0; m < M; ++m) orow[m] /= s;
    }
}

template <typename T>
__device__ void mse_impl(const T* y, const T* t, i64 n, int N, T* d, T* loss) {
    __shared__ double part[FASTMNIST_THREADS];
    double acc = 0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        T diff = y[i] - t[i];
        acc += (double)diff * diff;
        d[i] = diff / (T)N;
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss[0] = (T)(0.5 * part[0] / N);
}

// Adds the number of rows whose argmax equals the label to *count (accumulates across calls).
template <typename T>
__device__ void count_correct_impl(const T* x, const i64* labels, int N, int M, i64* count) {
    GRID_STRIDE(n, N) {
        const T* row = x + n * M;
        int best = 0;
        for (int m = 1; m < M; ++m) if (row[m] > row[best]) best = m;
        if (best == labels[n]) atomicAdd((unsigned long long*)count, 1ULL);
    }
}

// ---- optimizers, in place --------------------------------------------------------------------

template <typename T>
__device__ void sgd_impl(T* p, const T* g, i64 n, T lr) {
    GRID_STRIDE(i, n) { p[i] -= lr * g[i]; }
}

template <typename T>
__device__ void momentum_impl(T* p, const T* g, T* v, i64 n, T lr, T mom) {
    GRID_STRIDE(i, n) { v[i] = mom * v[i] - lr * g[i]; p[i] += v[i]; }
}

template <typename T>
__device__ void adagrad_impl(T* p, const T* g, T* h, i64 n, T lr, T eps) {
    GRID_STRIDE(i, n) { h[i] += g[i] * g[i]; p[i] -= lr * g[i] / (sqrt(h[i]) + eps); }
}

// The same with the learning rate read on the device, for a CUDA graph: step s = counter[0] takes
// rates[2s] (its lr, as adam_many_rates takes its step size there); past the table, no update.
template <typename T>
__device__ __forceinline__ bool rate_at(const T* rates, const i64* counter, T* lr) {
    const i64 s = counter[0];
    if (s < 0 || s >= counter[1]) return false;
    *lr = rates[2 * s];
    return true;
}

template <typename T>
__device__ void sgd_at_impl(T* p, const T* g, i64 n, const T* rates, const i64* counter) {
    T lr;
    if (rate_at(rates, counter, &lr)) sgd_impl(p, g, n, lr);
}

template <typename T>
__device__ void momentum_at_impl(T* p, const T* g, T* v, i64 n, const T* rates, const i64* counter, T mom) {
    T lr;
    if (rate_at(rates, counter, &lr)) momentum_impl(p, g, v, n, lr, mom);
}

template <typename T>
__device__ void adagrad_at_impl(T* p, const T* g, T* h, i64 n, const T* rates, const i64* counter, T eps) {
    T lr;
    if (rate_at(rates, counter, &lr)) adagrad_impl(p, g, h, n, lr, eps);
}

template <typename T>
__device__ __forceinline__ void adam_one(T* p, const T* g, T* m, T* v, i64 i, T b1, T b2, T step, T sqrt_bc2, T eps) {
    T gi = g[i];
    m[i] = b1 * m[i] + ((T)1 - b1) * gi;
    v[i] = b2 * v[i] + ((T)1 - b2) * gi * gi;
    p[i] -= step * m[i] / (sqrt(v[i]) / sqrt_bc2 + eps);
}

template <typename T>
__device__ void adam_impl(T* p, const T* g, T* m, T* v, i64 n, T b1, T b2, T step, T sqrt_bc2, T eps) {
    GRID_STRIDE(i, n) { adam_one(p, g, m, v, i, b1, b2, step, sqrt_bc2, eps); }
}

// Every parameter of a model in one launch: tables of device pointers and an exclusive prefix
// sum of sizes (offsets[k] .. offsets[k+1]) over which the flat index runs.
template <typename T>
__device__ void adam_many_impl(T** p, T** g, T** m, T** v, const i64* offsets, int count, T b1, T b2, T step,
                               T sqrt_bc2, T eps) {
    GRID_STRIDE(i, offsets[count]) {
        int k = 0;
        while (i >= offsets[k + 1]) ++k;  // a handful of parameters: a linear scan is cheapest
        adam_one(p[k], g[k], m[k], v[k], i - offsets[k], b1, b2, step, sqrt_bc2, eps);
    }
}

// The same with Adam's per-step scalars read on the device (a CUDA graph replays the scalars of its
// capture): step s = counter[0] takes rates[2s] (lr / (1 - beta1^t)) and rates[2s + 1]
// (sqrt(1 - beta2^t)) from a table of counter[1] steps uploaded before the graph runs; past its
// end nothing is updated (the host checks the counter against the table, never a read out of bounds).
// advance_step moves the counter on, as a launch of its own after every reader of it.
template <typename T>
__device__ void adam_many_rates_impl(T** p, T** g, T** m, T** v, const i64* offsets, int count, T b1, T b2,
                                     const T* rates, const i64* counter, T eps) {
    const i64 s = counter[0];
    if (s < 0 || s >= counter[1]) return;
    adam_many_impl(p, g, m, v, offsets, count, b1, b2, rates[2 * s], rates[2 * s + 1], eps);
}

__device__ void advance_step_impl(i64* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] += 1;
}

// A captured step's batch: out row r = src row perm[s*batch + r] for r < rows, s = counter[0],
// rows of row_words 32-bit words (any dtype of 4 or 8 bytes); rows whose index passes n_perm are
// left alone (the host keeps the counter within the epoch).
__device__ void gather_rows_impl(const unsigned* src, const i64* perm, const i64* counter, i64 n_perm, i64 batch,
                                 i64 rows, i64 row_words, unsigned* out) {
    const i64 first = counter[0] * batch;
    GRID_STRIDE(i, rows * row_words) {
        const i64 r = i / row_words, k = first + r;
        if (k >= 0 && k < n_perm) out[i] = src[perm[k] * row_words + i % row_words];
    }
}

// A captured step's loss and accuracy, summed on the device into the epoch's ledger: row s
// (s = state[0], the step counter) = the row before it + (loss[0] * rows, correct[0]), stamped
// with the epoch's token state[3]; the row before step state[2] (the first step of this upload)
// is the base sums at state + 4 (two doubles: zero, or a resumed epoch's sums so far). The host
// reads the epoch's rows once: the last is the epoch's sums, each is a point of the loss curve,
// and a row without this epoch's stamp is a step that did not run. Past the table, nothing.
template <typename T>
__device__ void accumulate_step_impl(const T* loss, const i64* correct, i64 rows, const i64* state, double* ledger) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        const i64 s = state[0];
        if (s < 0 || s >= state[1] || s < state[2]) return;
        const double* before = s == state[2] ? (const double*)(state + 4) : ledger + 3 * (s - 1);
        ledger[3 * s] = before[0] + (double)loss[0] * (double)rows;
        ledger[3 * s + 1] = before[1] + (double)correct[0];
        ledger[3 * s + 2] = (double)state[3];
    }
}

// ---- matrix products without cuBLAS (capturable into a CUDA graph, no workspace) ------------
// C (M, N) = op(A) @ op(B), op(A) (M, K) being A as stored (ta = 0: A is (M, K) row-major) or its
// transpose (ta = 1: A is stored (K, M)); the same for B with (K, N) and tb. Epilogue: plus C when
// accumulate, plus bias[n] when has_bias, then ReLU when relu. A block of 16 x 16 threads computes
// a 32 x 32 tile, each thread 2 x 2 outputs, over 16-deep slices of K staged in shared memory; the
// loads follow the stored layout (consecutive threads read consecutive addresses either way).

#define GEMM_TILE 32
#define GEMM_DEPTH 16

template <typename T>
__device__ void gemm_impl(const T* A, const T* B, const T* bias, T* C, int M, int N, int K, int ta, int tb,
                          int has_bias, int relu, int accumulate) {
    __shared__ T As[GEMM_DEPTH][GEMM_TILE + 1];
    __shared__ T Bs[GEMM_DEPTH][GEMM_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int m0 = blockIdx.x * GEMM_TILE, n0 = blockIdx.y * GEMM_TILE;  // rows on x: up to 2^31 - 1 tiles
    T acc[2][2] = {{T(0), T(0)}, {T(0), T(0)}};
    for (int k0 = 0; k0 < K; k0 += GEMM_DEPTH) {
        for (int r = 0; r < 2; ++r) {
            if (ta) {  // A stored (K, M): m runs fastest
                int m = m0 + tx + 16 * r, k = k0 + ty;
                As[ty][tx + 16 * r] = (m < M && k < K) ? A[(i64)k * M + m] : T(0);
            } else {   // A stored (M, K): k runs fastest
                int m = m0 + ty + 16 * r, k = k0 + tx;
                As[tx][ty + 16 * r] = (m < M && k < K) ? A[(i64)m * K + k] : T(0);
            }
            if (tb) {  // B stored (N, K): k runs fastest
                int n = n0 + ty + 16 * r, k = k0 + tx;
                Bs[tx][ty + 16 * r] = (n < N && k < K) ? B[(i64)n * K + k] : T(0);
            } else {   // B stored (K, N): n runs fastest
                int n = n0 + tx + 16 * r, k = k0 + ty;
                Bs[ty][tx + 16 * r] = (n < N && k < K) ? B[(i64)k * N + n] : T(0);
            }
        }
        __syncthreads();
        for (int kk = 0; kk < GEMM_DEPTH; ++kk)
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 2; ++j) acc[i][j] += As[kk][ty + 16 * i] * Bs[kk][tx + 16 * j];
        __syncthreads();
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
            int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m >= M || n >= N) continue;
            T v = acc[i][j];
            if (accumulate) v += C[(i64)m * N + n];
            if (has_bias) v += bias[n];
            if (relu) v = v > T(0) ? v : T(0);
            C[(i64)m * N + n] = v;
        }
}

// out[n] = sum over m of x[m, n] (x (M, N)), in row order: a bias gradient without CuPy's sum.
template <typename T>
__device__ void colsum_impl(const T* x, int M, int N, T* out) {
    GRID_STRIDE(n, (i64)N) {
        T s = T(0);
        for (int m = 0; m < M; ++m) s += x[(i64)m * N + n];
        out[n] = s;
    }
}

// p[0:n] = 0, bytes: the zeros a CUDA graph can capture (CuPy's zeros is a fill kernel of its own,
// which the simulator runs eagerly and so refuses during capture); any element type.
__device__ void zero_bytes_impl(unsigned char* p, i64 n) {
    GRID_STRIDE(i, n) p[i] = 0;
}

// ---- extern "C" entry points, float and double ----------------------------------------------

#define INSTANTIATE(T, S)                                                                                         \
extern "C" __global__ void im2col_##S(const T* x, int N, int C, int H, int W, int KH, int KW, int s, int p,          \
    int OH, int OW, T* col) { im2col_impl<T>(x, N, C, H, W, KH, KW, s, p, OH, OW, col); }                         \
extern "C" __global__ void col2im_##S(const T* col, int N, int C, int H, int W, int KH, int KW, int s, int p,       \
    int OH, int OW, T* x) { col2im_impl<T>(col, N, C, H, W, KH, KW, s, p, OH, OW, x); }                           \
extern "C" __global__ void rows_to_nchw_##S(const T* r, const T* b, i64 N, int F, i64 P, T* o)                      \
    { rows_to_nchw_impl<T>(r, b, N, F, P, o); }                                                                     \
extern "C" __global__ void nchw_to_rows_##S(const T* dy, i64 N, int F, i64 P, T* r)                                 \
    { nchw_to_rows_impl<T>(dy, N, F, P, r); }                                                                       \
extern "C" __global__ void maxpool_##S(const T* x, i64 NC, int H, int W, int size, int s, int OH, int OW, T* y,     \
    i64* a) { maxpool_impl<T>(x, NC, H, W, size, s, OH, OW, y, a); }                                               \
extern "C" __global__ void maxpool_backward_##S(const T* dy, const i64* a, i64 NC, i64 OHW, i64 HW, T* dx,          \
    int* bad) { maxpool_backward_impl<T>(dy, a, NC, OHW, HW, dx, bad); }                                            \
extern "C" __global__ void rows_pool_##S(const T* r, const T* b, i64 N, int F, int OH, int OW, int size, int s,     \
    int PH, int PW, T* y, int* a) { rows_pool_impl<T>(r, b, N, F, OH, OW, size, s, PH, PW, y, a); }                 \
extern "C" __global__ void pool_to_rows_##S(const T* dy, const T* y, const int* a, i64 N, int F, int PH, int PW,    \
    int OHW, T* r) { pool_to_rows_impl<T>(dy, y, a, N, F, PH, PW, OHW, r); }                                        \
extern "C" __global__ void bias_act_##S(T* y, const T* b, i64 N, int M, int relu) { bias_act_impl<T>(y, b, N, M, relu); } \
extern "C" __global__ void relu_##S(const T* x, i64 n, T* o) { relu_impl<T>(x, n, o); }                            \
extern "C" __global__ void relu_backward_##S(const T* dy, const T* x, i64 n, T* o) { relu_backward_impl<T>(dy, x, n, o); } \
extern "C" __global__ void sigmoid_##S(const T* x, i64 n, T* o) { sigmoid_impl<T>(x, n, o); }                      \
extern "C" __global__ void sigmoid_backward_##S(const T* dy, const T* y, i64 n, T* o)                              \
    { sigmoid_backward_impl<T>(dy, y, n, o); }                                                                      \
extern "C" __global__ void affine_warp_##S(const T* x, const double* theta, int N, int C, int H, int W, T* o)     \
    { affine_warp_impl<T>(x, theta, N, C, H, W, o); }                                                               \
extern "C" __global__ void elastic_warp_##S(const T* x, const double* g, int GH, int GW, int N, int C, int H,   \
    int W, T* o) { elastic_warp_impl<T>(x, g, GH, GW, N, C, H, W, o); }                                             \
extern "C" __global__ void stroke_width_##S(const T* x, const double* a, int N, int C, int H, int W, T* o)         \
    { stroke_width_impl<T>(x, a, N, C, H, W, o); }                                                                  \
extern "C" __global__ void gaussian_blur_##S(const T* x, const double* g, int R, int N, int C, int H, int W, T* o) \
    { gaussian_blur_impl<T>(x, g, R, N, C, H, W, o); }                                                              \
extern "C" __global__ void mul_##S(const T* a, const T* b, i64 n, T* o) { mul_impl<T>(a, b, n, o); }                \
extern "C" __global__ void dropout_##S(const T* x, i64 n, double p, double scale, u64 seed, T* y, T* m)             \
    { dropout_impl<T>(x, n, p, scale, seed, y, m); }                                                                \
extern "C" __global__ void dropout_at_##S(const T* x, i64 n, double p, double scale, const i64* seeds,             \
                                         const i64* counter, i64 layers, i64 layer, T* y, T* m)                     \
    { dropout_at_impl<T>(x, n, p, scale, seeds, counter, layers, layer, y, m); }                                    \
extern "C" __global__ void softmax_ce_##S(const T* x, const i64* l, int N, int M, T* d, T* loss, int* bad)          \
    { softmax_ce_impl<T>(x, l, N, M, d, loss, bad); }                                                               \
extern "C" __global__ void softmax_##S(const T* x, int N, int M, T* o) { softmax_impl<T>(x, N, M, o); }             \
extern "C" __global__ void mse_##S(const T* y, const T* t, i64 n, int N, T* d, T* loss)                             \
    { mse_impl<T>(y, t, n, N, d, loss); }                                                                           \
extern "C" __global__ void count_correct_##S(const T* x, const i64* l, int N, int M, i64* c)                       \
    { count_correct_impl<T>(x, l, N, M, c); }                                                                       \
extern "C" __global__ void sgd_##S(T* p, const T* g, i64 n, T lr) { sgd_impl<T>(p, g, n, lr); }                     \
extern "C" __global__ void momentum_##S(T* p, const T* g, T* v, i64 n, T lr, T mom)                                 \
    { momentum_impl<T>(p, g, v, n, lr, mom); }                                                                      \
extern "C" __global__ void adagrad_##S(T* p, const T* g, T* h, i64 n, T lr, T eps)                                  \
    { adagrad_impl<T>(p, g, h, n, lr, eps); }                                                                       \
extern "C" __global__ void sgd_at_##S(T* p, const T* g, i64 n, const T* rates, const i64* counter)                  \
    { sgd_at_impl<T>(p, g, n, rates, counter); }                                                                    \
extern "C" __global__ void momentum_at_##S(T* p, const T* g, T* v, i64 n, const T* rates, const i64* counter, T mom) \
    { momentum_at_impl<T>(p, g, v, n, rates, counter, mom); }                                                       \
extern "C" __global__ void adagrad_at_##S(T* p, const T* g, T* h, i64 n, const T* rates, const i64* counter, T eps)  \
    { adagrad_at_impl<T>(p, g, h, n, rates, counter, eps); }                                                        \
extern "C" __global__ void adam_##S(T* p, const T* g, T* m, T* v, i64 n, T b1, T b2, T step, T sb2, T eps)          \
    { adam_impl<T>(p, g, m, v, n, b1, b2, step, sb2, eps); }                                                        \
extern "C" __global__ void adam_many_##S(T** p, T** g, T** m, T** v, const i64* off, int count, T b1, T b2,        \
    T step, T sb2, T eps) { adam_many_impl<T>(p, g, m, v, off, count, b1, b2, step, sb2, eps); }                  \
extern "C" __global__ void gemm_##S(const T* A, const T* B, const T* bias, T* C, int M, int N, int K, int ta,      \
    int tb, int has_bias, int relu, int accumulate)                                                                 \
    { gemm_impl<T>(A, B, bias, C, M, N, K, ta, tb, has_bias, relu, accumulate); }                                 \
extern "C" __global__ void colsum_##S(const T* x, int M, int N, T* out) { colsum_impl<T>(x, M, N, out); }      \
extern "C" __global__ void zero_bytes_##S(unsigned char* p, i64 n) { zero_bytes_impl(p, n); }                   \
extern "C" __global__ void adam_many_rates_##S(T** p, T** g, T** m, T** v, const i64* off, int count, T b1, T b2,  \
    const T* rates, const i64* counter, T eps)                                                                      \
    { adam_many_rates_impl<T>(p, g, m, v, off, count, b1, b2, rates, counter, eps); }                               \
extern "C" __global__ void advance_step_##S(i64* counter) { advance_step_impl(counter); }                            \
extern "C" __global__ void gather_rows_##S(const unsigned* src, const i64* perm, const i64* counter, i64 n_perm,  \
    i64 batch, i64 rows, i64 row_words, unsigned* out)                                                              \
    { gather_rows_impl(src, perm, counter, n_perm, batch, rows, row_words, out); }                                  \
extern "C" __global__ void accumulate_step_##S(const T* loss, const i64* correct, i64 rows, const i64* state,      \
    double* ledger) { accumulate_step_impl<T>(loss, correct, rows, state, ledger); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
