// Farthest point sampling of one cloud on the whole GPU.
//
// Definition (edgead.ops.farthest_point_sample): idx[0] = start; dist = +inf; for j = 1..m-1:
//   dist = min(dist, |p - p[idx[j-1]]|^2) in float32 as ((dx*dx + dy*dy) + dz*dz); idx[j] = argmax dist, ties -> highest
// index. The arithmetic uses __fmul_rn/__fadd_rn, which the compiler never contracts into FMAs, so every distance
// is bit-identical to numpy's.
//
// The usual kernels run one block per cloud and so one SM at batch 1. Here every step spreads the N points over a
// grid of blocks; each block leaves a partial (max, argmax); the next step's blocks each reduce those few hundred
// partials themselves (cheaper than another launch) to learn the point just selected. So one launch per selected
// point, plus fps_finish for the last one. fps_persistent does the same in a single launch with a software grid
// barrier (1.3-3.7x faster on an H200, docs/performance.md); it needs all its blocks resident at once (grid <= SM
// count). Where they are not (another process's kernels on the same SMs, say under MPS), a waiting block gives up
// after BARRIER_CYCLES and raises an abort flag, every block leaves, and the host runs the per-step kernels instead:
// slower, never a hang.

#define FPS_THREADS 256
#define FPS_MAX_BLOCKS 1024
#define BARRIER_CYCLES 2000000000LL  // ~1 s at GPU clocks: far beyond any real step, short of a watchdog

__device__ __forceinline__ float sqdist(const float* p, float qx, float qy, float qz) {
    float dx = __fsub_rn(p[0], qx), dy = __fsub_rn(p[1], qy), dz = __fsub_rn(p[2], qz);
    return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

// (a, ia) better than (b, ib): larger value, ties -> larger index.
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia > ib); }

// Block-wide argmax of (v, i); the result is valid in every thread.
__device__ void block_argmax(float& v, int& i) {
    __shared__ float sv[FPS_THREADS / 32];
    __shared__ int si[FPS_THREADS / 32];
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, v, off);
        int oi = __shfl_down_sync(0xffffffffu, i, off);
        if (better(ov, oi, v, i)) { v = ov; i = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // sv/si may still be read by a previous call
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    v = sv[0]; i = si[0];
    for (int w = 1; w < FPS_THREADS / 32; ++w)
        if (better(sv[w], si[w], v, i)) { v = sv[w]; i = si[w]; }
}

// Reduce nparts partials to the selected index (every block does this redundantly).
__device__ int reduce_partials(const float* pval, const int* pidx, int nparts) {
    float v = -1.0f;
    int i = -1;
    for (int b = threadIdx.x; b < nparts; b += blockDim.x)
    {  // __ldcg: read through L2, since other blocks wrote these (an L1 copy could be stale in fps_persistent)
        float pv = __ldcg(pval + b);
        int pi = __ldcg(pidx + b);
        if (better(pv, pi, v, i)) { v = pv; i = pi; }
    }
    block_argmax(v, i);
    return i;
}

// Update dist with the distances to point `last` over this block's slice of a grid-stride loop; return the block's
// partial argmax in (v, i).
__device__ void update(const float* pts, int n, float* dist, int last, bool first, float& v, int& i) {
    float qx = pts[3 * last], qy = pts[3 * last + 1], qz = pts[3 * last + 2];
    v = -1.0f; i = -1;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
        float d = sqdist(pts + 3 * p, qx, qy, qz);
        if (!first) d = fminf(dist[p], d);
        dist[p] = d;
        if (better(d, p, v, i)) { v = d; i = p; }
    }
    block_argmax(v, i);
}

// Step j (1 <= j < m): learn idx[j-1] from the partials of step j-1 (or start), write it, and leave this block's
// partial for idx[j] in buffer j & 1. Partials are (2, gridDim.x) arrays.
extern "C" __global__ void fps_step(const float* __restrict__ pts, int n, float* __restrict__ dist,
                                    float* __restrict__ pval, int* __restrict__ pidx, long long* __restrict__ out,
                                    int j, int start) {
    int nb = gridDim.x;
    int last = j == 1 ? start : reduce_partials(pval + ((j - 1) & 1) * nb, pidx + ((j - 1) & 1) * nb, nb);
    if (blockIdx.x == 0 && threadIdx.x == 0) out[j - 1] = last;
    float v;
    int i;
    update(pts, n, dist, last, j == 1, v, i);
    if (threadIdx.x == 0) { pval[(j & 1) * nb + blockIdx.x] = v; pidx[(j & 1) * nb + blockIdx.x] = i; }
}

// After step m-1: reduce its partials (nparts = grid of the steps) into out[m-1]. Launch with one block.
extern "C" __global__ void fps_finish(const float* __restrict__ pval, const int* __restrict__ pidx, int nparts,
                                      long long* __restrict__ out, int m) {
    int last = reduce_partials(pval + ((m - 1) & 1) * nparts, pidx + ((m - 1) & 1) * nparts, nparts);
    if (threadIdx.x == 0) out[m - 1] = last;
}

// Software grid barrier over sync = {count, generation, abort}, zeroed before the launch. Returns false once any
// block has given up waiting (the grid is not co-resident): the caller must then leave.
__device__ bool grid_barrier(unsigned int* sync) {
    volatile unsigned int* gen = sync + 1;
    volatile unsigned int* abort_flag = sync + 2;
    __shared__ bool ok;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int g = *gen;
        __threadfence();
        if (atomicAdd(sync, 1u) == gridDim.x - 1) {
            sync[0] = 0;
            __threadfence();
            atomicAdd((unsigned int*)gen, 1u);
        } else {
            long long t0 = clock64();
            while (*gen == g && *abort_flag == 0u) {
                if (clock64() - t0 > BARRIER_CYCLES) { atomicExch((unsigned int*)abort_flag, 1u); break; }
            }
        }
        __threadfence();
        ok = *abort_flag == 0u;
    }
    __syncthreads();
    return ok;
}

// All m-1 steps in one launch (sync holds three zeroed unsigned ints, sync[2] != 0 afterwards: aborted, out is
// invalid); same partial layout as fps_step.
extern "C" __global__ void fps_persistent(const float* __restrict__ pts, int n, float* __restrict__ dist,
                                          float* pval, int* pidx, long long* __restrict__ out, int m, int start,
                                          unsigned int* sync) {
    int nb = gridDim.x, last = start;
    for (int j = 1; j < m; ++j) {
        if (j > 1) last = reduce_partials(pval + ((j - 1) & 1) * nb, pidx + ((j - 1) & 1) * nb, nb);
        if (blockIdx.x == 0 && threadIdx.x == 0) out[j - 1] = last;
        float v;
        int i;
        update(pts, n, dist, last, j == 1, v, i);
        if (threadIdx.x == 0) {
            ((volatile float*)pval)[(j & 1) * nb + blockIdx.x] = v;
            ((volatile int*)pidx)[(j & 1) * nb + blockIdx.x] = i;
        }
        if (!grid_barrier(sync)) return;
    }
    if (m > 1) last = reduce_partials(pval + ((m - 1) & 1) * nb, pidx + ((m - 1) & 1) * nb, nb);
    if (blockIdx.x == 0 && threadIdx.x == 0) out[m - 1] = last;
}
