// Grid lookups: the nearest-point grid of a fixed reference (edgead.ops.NearestGrid) and a per-frame uniform grid
// for exact k nearest neighbours among a few thousand points (a reconstruction, a subsample).
//
// grid_nearest: edgead.ops.grid_nearest, point for point. The cell of p is floor((p - origin) * inv_cell) per axis
//   in float32 (subtract, then multiply, clipped to [-1, cells]), its block (>> 2) and place in the block (& 3),
//   blocks[] -> a row of cells[] -> a candidate row (r > 0: candidates[r], k wide; r < 0: overflow[-r], 2k wide;
//   0: none, the answer is -1 and the caller asks a tree or knn_small). The nearest candidate by float32 squared
//   distance ((dx*dx + dy*dy) + dz*dz, dx = p - r, no FMA), the first of equals: the CPU's answer, bit for bit.
//
// Per-frame grid (grid_count, grid_scatter on the device, the cell starts by an exclusive scan between them):
//   the reference points bucketed by cell (any order inside a cell). grid_knn: one thread per query, its sorted
//   top-k (k <= GRID_KNN_MAX) in registers, searching rings of cells r = 0, 1, ... around the query's cell; a point
//   outside ring r is at least r * cell away, so the search stops once the k-th squared distance is below that
//   (with a float32 rounding margin) or the rings cover the grid. Neighbours are kept in (squared distance, index)
//   order whatever order the cells are visited in: edgead.ops.knn's order, exactly (knn_small's, too).

#define GRID_BLOCK 4
#define GRID_BLOCK_SHIFT 2
#define GRID_KNN_MAX 16
#define RING_MARGIN 0.99999f  // stop only when the k-th squared distance is clearly inside the searched rings

__device__ __forceinline__ float sqdist_g(float ax, float ay, float az, float bx, float by, float bz) {
    float dx = __fsub_rn(ax, bx), dy = __fsub_rn(ay, by), dz = __fsub_rn(az, bz);
    return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

// Cell coordinate of one axis as ops.grid_rows computes it: clip((x - o) * inv, -1, n) then floor.
__device__ __forceinline__ int cell_coord(float x, float o, float inv, int n) {
    float g = __fmul_rn(__fsub_rn(x, o), inv);
    g = fminf(fmaxf(g, -1.0f), (float)n);
    return (int)floorf(g);
}

// points (n, 3) -> out (n,) int64: the nearest reference index, -1 where the grid has no certified row.
// frame = {origin x, y, z, 1 / cell}; shape = block counts (BX, BY, BZ); cells (B + 1, 64); candidates (C + 1, k);
// overflow (O + 1, 2k); ref (R, 3).
extern "C" __global__ void grid_nearest(const float* __restrict__ points, int n, const float* __restrict__ frame,
                                        int bx, int by, int bz, const int* __restrict__ blocks,
                                        const int* __restrict__ cells, const int* __restrict__ candidates, int k,
                                        const int* __restrict__ overflow, const float* __restrict__ ref,
                                        long long* __restrict__ out) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    float px = points[3 * t], py = points[3 * t + 1], pz = points[3 * t + 2];
    int ix = cell_coord(px, frame[0], frame[3], bx * GRID_BLOCK);
    int iy = cell_coord(py, frame[1], frame[3], by * GRID_BLOCK);
    int iz = cell_coord(pz, frame[2], frame[3], bz * GRID_BLOCK);
    if (ix < 0 || iy < 0 || iz < 0 || ix >= bx * GRID_BLOCK || iy >= by * GRID_BLOCK || iz >= bz * GRID_BLOCK) {
        out[t] = -1;
        return;
    }
    long long block = ((long long)(ix >> GRID_BLOCK_SHIFT) * by + (iy >> GRID_BLOCK_SHIFT)) * bz
                      + (iz >> GRID_BLOCK_SHIFT);
    int local = ((ix & (GRID_BLOCK - 1)) * GRID_BLOCK + (iy & (GRID_BLOCK - 1))) * GRID_BLOCK + (iz & (GRID_BLOCK - 1));
    int row = cells[(long long)blocks[block] * GRID_BLOCK * GRID_BLOCK * GRID_BLOCK + local];
    if (row == 0) {
        out[t] = -1;
        return;
    }
    const int* cand = row > 0 ? candidates + (long long)row * k : overflow + (long long)(-row) * 2 * k;
    int width = row > 0 ? k : 2 * k;
    float best = __int_as_float(0x7f800000);
    long long arg = 0;
    for (int j = 0; j < width; ++j) {
        int r = cand[j];
        float d = sqdist_g(px, py, pz, ref[3 * r], ref[3 * r + 1], ref[3 * r + 2]);
        if (d < best) { best = d; arg = r; }
    }
    out[t] = arg;
}

// Per-frame grid over ref (n, 3): cell index of each point (origin, 1 / cell and dims as grid_knn takes them),
// counted per cell. counts (X * Y * Z,) zeroed before the launch; cell_of (n,) int32 out.
__device__ __forceinline__ int frame_cell(float x, float y, float z, const float* frame, int nx, int ny, int nz) {
    int ix = min(max(cell_coord(x, frame[0], frame[3], nx), 0), nx - 1);
    int iy = min(max(cell_coord(y, frame[1], frame[3], ny), 0), ny - 1);
    int iz = min(max(cell_coord(z, frame[2], frame[3], nz), 0), nz - 1);
    return (ix * ny + iy) * nz + iz;
}

extern "C" __global__ void grid_count(const float* __restrict__ ref, int n, const float* __restrict__ frame, int nx,
                                      int ny, int nz, int* __restrict__ cell_of, unsigned int* __restrict__ counts) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int c = frame_cell(ref[3 * t], ref[3 * t + 1], ref[3 * t + 2], frame, nx, ny, nz);
    cell_of[t] = c;
    atomicAdd(counts + c, 1u);
}

// starts (X * Y * Z + 1,): the exclusive scan of counts; cursor (X * Y * Z,) zeroed. order (n,) out: point indices
// grouped by cell.
extern "C" __global__ void grid_scatter(const int* __restrict__ cell_of, int n, const unsigned int* __restrict__ starts,
                                        unsigned int* __restrict__ cursor, int* __restrict__ order) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int c = cell_of[t];
    order[starts[c] + atomicAdd(cursor + c, 1u)] = t;
}

// query (m, 3) -> dist (m, k) float32 euclidean, idx (m, k) int32, in (squared distance, index) order; k <= 16,
// k <= n. frame = {origin x, y, z, 1 / cell, cell}; cells of the grid over ref as grid_count/grid_scatter left them.
// A query outside the grid's box starts from the nearest border cell: a point beyond ring r is then still at least
// r cells from it along some axis, so the stopping test holds there too.
extern "C" __global__ void grid_knn(const float* __restrict__ query, int m, const float* __restrict__ ref,
                                    const float* __restrict__ frame, int nx, int ny, int nz,
                                    const unsigned int* __restrict__ starts, const int* __restrict__ order, int k,
                                    float* __restrict__ out_dist, int* __restrict__ out_idx) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= m) return;
    float qx = query[3 * q], qy = query[3 * q + 1], qz = query[3 * q + 2];
    int cx = min(max(cell_coord(qx, frame[0], frame[3], nx), 0), nx - 1);
    int cy = min(max(cell_coord(qy, frame[1], frame[3], ny), 0), ny - 1);
    int cz = min(max(cell_coord(qz, frame[2], frame[3], nz), 0), nz - 1);
    float bd[GRID_KNN_MAX];
    int bi[GRID_KNN_MAX];
#pragma unroll
    for (int i = 0; i < GRID_KNN_MAX; ++i) { bd[i] = __int_as_float(0x7f800000); bi[i] = 0x7fffffff; }
    float worst = __int_as_float(0x7f800000);  // (worst, worst_i): the k-th entry
    int worst_i = 0x7fffffff;
    int reach = max(max(nx, ny), nz);
    float cell = frame[4];
    for (int r = 0; r <= reach; ++r) {
        // the cells of ring r: all (x, y) of the square, with every z where x or y is on the rim, else the two caps
        int cells = (2 * r + 1) * (2 * r + 1);
        for (int c2 = 0; c2 < cells; ++c2) {
            int ix = cx - r + c2 / (2 * r + 1), iy = cy - r + c2 % (2 * r + 1);
            if (ix < 0 || ix >= nx || iy < 0 || iy >= ny) continue;
            bool rim = abs(ix - cx) == r || abs(iy - cy) == r;
            int zstep = rim || r == 0 ? 1 : 2 * r;
            for (int iz = cz - r; iz <= cz + r; iz += zstep) {
                if (iz < 0 || iz >= nz) continue;
                int c = (ix * ny + iy) * nz + iz;
                for (unsigned int s = starts[c]; s < starts[c + 1]; ++s) {
                    int j = order[s];
                    float d = sqdist_g(qx, qy, qz, ref[3 * j], ref[3 * j + 1], ref[3 * j + 2]);
                    if (!(d < worst || (d == worst && j < worst_i))) continue;
#pragma unroll
                    for (int i = GRID_KNN_MAX - 1; i >= 0; --i) {  // insertion by (d, index), in registers
                        if (i >= k) continue;  // no break: fully unrolled, the lists stay in registers
                        if (i > 0 && (bd[i - 1] > d || (bd[i - 1] == d && bi[i - 1] > j))) {
                            bd[i] = bd[i - 1]; bi[i] = bi[i - 1];
                        } else if (bd[i] > d || (bd[i] == d && bi[i] > j)) {
                            bd[i] = d; bi[i] = j;
                        }
                    }
#pragma unroll
                    for (int i = 0; i < GRID_KNN_MAX; ++i) if (i == k - 1) { worst = bd[i]; worst_i = bi[i]; }
                }
            }
        }
        float rim_dist = __fmul_rn((float)r, cell);
        if (worst < __fmul_rn(__fmul_rn(rim_dist, rim_dist), RING_MARGIN)) break;
    }
#pragma unroll
    for (int i = 0; i < GRID_KNN_MAX; ++i)
        if (i < k) { out_dist[(long long)q * k + i] = sqrtf(bd[i]); out_idx[(long long)q * k + i] = bi[i]; }
}
