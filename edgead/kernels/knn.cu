// Brute-force k nearest neighbours (edgead.ops.knn / group / nearest_distance) and patch gathering.
//
// Squared distances are float32 ((dx*dx + dy*dy) + dz*dz) without FMA contraction, as in numpy; neighbours are
// ordered by (squared distance, index), i.e. ties -> lowest index, as a stable argsort; returned distances are
// sqrtf of the squared ones.
//
// knn_small: one thread per query with its sorted top-k (k <= KNN_SMALL_MAX) in registers, reference points
//   streamed through shared memory in tiles. Used for nearest-neighbour scoring (k = 3 for every input point
//   against the reconstruction, eqs. 15-17) and small patches.
// knn_select: one block per query for large k (patch sizes up to 512 in the paper preset): an exact radix select
//   of the k-th smallest key over the 32 bits of the squared distance, a gather of the k winners (ties at the k-th
//   key taken in index order), and a bitonic sort of the k winners in shared memory.

#define KNN_SMALL_MAX 16
#define KNN_TILE 256
#define KNN_SELECT_MAX 1024
#define KNN_SELECT_THREADS 256

__device__ __forceinline__ float sqdist3(float ax, float ay, float az, float bx, float by, float bz) {
    float dx = __fsub_rn(ax, bx), dy = __fsub_rn(ay, by), dz = __fsub_rn(az, bz);
    return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

// query (m, 3), ref (n, 3) -> dist (m, k) float32, idx (m, k) int32. Launch with KNN_TILE threads per block.
extern "C" __global__ void knn_small(const float* __restrict__ query, int m, const float* __restrict__ ref, int n,
                                     int k, float* __restrict__ out_dist, int* __restrict__ out_idx) {
    __shared__ float tile[KNN_TILE * 3];
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    float qx = 0.f, qy = 0.f, qz = 0.f;
    if (q < m) { qx = query[3 * q]; qy = query[3 * q + 1]; qz = query[3 * q + 2]; }
    float bd[KNN_SMALL_MAX];
    int bi[KNN_SMALL_MAX];
#pragma unroll
    for (int i = 0; i < KNN_SMALL_MAX; ++i) { bd[i] = __int_as_float(0x7f800000); bi[i] = -1; }
    float worst = __int_as_float(0x7f800000);
    for (int base = 0; base < n; base += KNN_TILE) {
        int cnt = min(KNN_TILE, n - base);
        __syncthreads();
        for (int t = threadIdx.x; t < 3 * cnt; t += blockDim.x) tile[t] = ref[3 * base + t];
        __syncthreads();
        if (q >= m) continue;
        for (int t = 0; t < cnt; ++t) {
            float d = sqdist3(qx, qy, qz, tile[3 * t], tile[3 * t + 1], tile[3 * t + 2]);
            if (!(d < worst)) continue;  // equal distance: the earlier (lower) index stays ahead
            int j = base + t;
#pragma unroll
            for (int i = KNN_SMALL_MAX - 1; i >= 0; --i) {
                if (i >= k) continue;  // no break: fully unrolled, the lists stay in registers
                if (i > 0 && bd[i - 1] > d) { bd[i] = bd[i - 1]; bi[i] = bi[i - 1]; }
                else if (bd[i] > d) { bd[i] = d; bi[i] = j; }
            }
#pragma unroll
            for (int i = 0; i < KNN_SMALL_MAX; ++i) if (i == k - 1) worst = bd[i];
        }
    }
    if (q >= m) return;
#pragma unroll
    for (int i = 0; i < KNN_SMALL_MAX; ++i)
        if (i < k) { out_dist[(long long)q * k + i] = sqrtf(bd[i]); out_idx[(long long)q * k + i] = bi[i]; }
}

// One block (KNN_SELECT_THREADS threads) per query; k <= KNN_SELECT_MAX. Same outputs as knn_small.
extern "C" __global__ void knn_select(const float* __restrict__ query, const float* __restrict__ ref, int n, int k,
                                      float* __restrict__ out_dist, int* __restrict__ out_idx) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int skey[KNN_SELECT_MAX];
    __shared__ int sidx[KNN_SELECT_MAX];
    __shared__ unsigned int s_prefix, s_rank, s_less, s_taken;
    __shared__ unsigned int warp_cnt[KNN_SELECT_THREADS / 32];
    int q = blockIdx.x, tid = threadIdx.x;
    float qx = query[3 * q], qy = query[3 * q + 1], qz = query[3 * q + 2];
#define KEY(j) __float_as_uint(sqdist3(qx, qy, qz, ref[3 * (j)], ref[3 * (j) + 1], ref[3 * (j) + 2]))
    // Radix select, 8 bits at a time from the top: non-negative floats order like their bit patterns.
    unsigned int prefix = 0, mask = 0, rank = k;  // find the rank-th smallest key (1-based) among those matching
    for (int shift = 24; shift >= 0; shift -= 8) {
        hist[tid] = 0;  // KNN_SELECT_THREADS == 256 bins
        __syncthreads();
        for (int j = tid; j < n; j += blockDim.x) {
            unsigned int key = KEY(j);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            unsigned int b = 0, acc = 0;
            while (acc + hist[b] < rank) acc += hist[b++];
            s_prefix = prefix | (b << shift);
            s_rank = rank - acc;
        }
        __syncthreads();
        prefix = s_prefix; rank = s_rank; mask |= 255u << shift;
    }
    unsigned int kth = prefix;  // the k-th smallest key; `rank` of the keys equal to it are taken, lowest index first
    if (tid == 0) { s_less = 0; s_taken = 0; }
    __syncthreads();
    for (int j = tid; j < n; j += blockDim.x) {
        unsigned int key = KEY(j);
        if (key < kth) { unsigned int p = atomicAdd(&s_less, 1u); skey[p] = key; sidx[p] = j; }
    }
    __syncthreads();
    unsigned int less = s_less;  // == k - rank
    int lane = tid & 31, warp = tid >> 5;
    for (int base = 0; base < n; base += blockDim.x) {  // ties at kth in index order: a block-wide ordered count
        int j = base + tid;
        bool eq = j < n && KEY(j) == kth;
        unsigned int ballot = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_cnt[warp] = __popc(ballot);
        __syncthreads();
        unsigned int before = s_taken;
        for (int w = 0; w < warp; ++w) before += warp_cnt[w];
        before += __popc(ballot & ((1u << lane) - 1u));
        if (eq && before < rank) { skey[less + before] = kth; sidx[less + before] = j; }
        __syncthreads();
        if (tid == 0) for (int w = 0; w < KNN_SELECT_THREADS / 32; ++w) s_taken += warp_cnt[w];
        __syncthreads();
        if (s_taken >= rank) break;
    }
#undef KEY
    int size = 1;
    while (size < k) size <<= 1;
    for (int t = k + tid; t < size; t += blockDim.x) { skey[t] = 0xffffffffu; sidx[t] = 0x7fffffff; }
    __syncthreads();
    for (int len = 2; len <= size; len <<= 1) {  // bitonic sort by (key, index)
        for (int stride = len >> 1; stride > 0; stride >>= 1) {
            for (int t = tid; t < size; t += blockDim.x) {
                int u = t ^ stride;
                if (u > t) {
                    bool up = (t & len) == 0;
                    bool gt = skey[t] > skey[u] || (skey[t] == skey[u] && sidx[t] > sidx[u]);
                    if (gt == up) {
                        unsigned int tk = skey[t]; skey[t] = skey[u]; skey[u] = tk;
                        int ti = sidx[t]; sidx[t] = sidx[u]; sidx[u] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
    for (int t = tid; t < k; t += blockDim.x) {
        out_dist[(long long)q * k + t] = sqrtf(__uint_as_float(skey[t]));
        out_idx[(long long)q * k + t] = sidx[t];
    }
}

// patches[g, j] = points[idx[g, j]] - centers[g]: (G, k, 3) float32 from idx (G, k) int32.
extern "C" __global__ void gather_patches(const float* __restrict__ points, const float* __restrict__ centers,
                                          const int* __restrict__ idx, int g, int k, float* __restrict__ patches) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)g * k * 3) return;
    long long gj = t / 3;
    int c = (int)(t % 3), gi = (int)(gj / k);
    patches[t] = __fsub_rn(points[3 * (long long)idx[gj] + c], centers[3 * gi + c]);
}
