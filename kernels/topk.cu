// Exact per-row top-k merge of a distance block into a running top-k state (the CUDA side of kernels/topk.py).
//
// State (values, indices): (n_rows_total, k), row-major; each row sorted ascending by the pair (value, index)
// compared lexicographically, so ties go to the lower index; empty slots hold (+inf, -1).
// For block row r (state row row_start + r) the kernel replaces the state row with the k smallest pairs of
//     state row  U  { (block[r, c], col_start + c) : block[r, c] <= bound[row_start + r] }.
// That is exactly the contract of the NumPy twin `merge_block_numpy` in topk.py, which the GPU tests compare
// against.
//
// One thread block of TOPK_THREADS threads per block row.
//   Phase 1: each thread scans a strided slice of the row and keeps its own k best candidates, sorted, in local
//            memory. Anything above the current k-th value (or the bound) is rejected by one comparison, which is
//            what happens to almost every element once the state is full.
//   Phase 2: k rounds of a block-wide argmin over the threads' list heads and the state row's head.

#define TOPK_MAX_K 128
#define TOPK_THREADS 128
#define TOPK_WARPS (TOPK_THREADS / 32)

// Larger than any real column index: marks an exhausted candidate list.
#define TOPK_NO_INDEX 0x7fffffffffffffffLL

template <typename T> __device__ __forceinline__ T positive_infinity();
template <> __device__ __forceinline__ float positive_infinity<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double positive_infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

// (value_a, index_a) < (value_b, index_b) lexicographically.
template <typename T>
__device__ __forceinline__ bool precedes(T value_a, long long index_a, T value_b, long long index_b) {
    return value_a < value_b || (value_a == value_b && index_a < index_b);
}

template <typename T>
__device__ void merge_row(const T* __restrict__ block_row, int n_cols, long long col_start,
                          T* __restrict__ state_values, long long* __restrict__ state_indices, int k, T bound) {
    __shared__ T merged_values[TOPK_MAX_K];
    __shared__ long long merged_indices[TOPK_MAX_K];
    __shared__ T warp_values[TOPK_WARPS];
    __shared__ long long warp_indices[TOPK_WARPS];
    __shared__ int warp_sources[TOPK_WARPS];
    __shared__ int winner;

    const T inf = positive_infinity<T>();
    T threshold = state_values[k - 1];
    if (bound < threshold) threshold = bound;

    // Phase 1: this thread's k best candidates, sorted by (value, index). Columns arrive in increasing index, so
    // an equal value never displaces an entry already kept.
    T own_values[TOPK_MAX_K];
    long long own_indices[TOPK_MAX_K];
    int own_count = 0;
    for (int c = threadIdx.x; c < n_cols; c += TOPK_THREADS) {
        const T value = block_row[c];
        if (!(value <= threshold)) continue;
        const long long index = col_start + c;
        if (own_count == k && !precedes(value, index, own_values[k - 1], own_indices[k - 1])) continue;
        int pos = own_count < k ? own_count : k - 1;  // when full, the last (worst) entry is dropped
        while (pos > 0 && precedes(value, index, own_values[pos - 1], own_indices[pos - 1])) {
            own_values[pos] = own_values[pos - 1];
            own_indices[pos] = own_indices[pos - 1];
            --pos;
        }
        own_values[pos] = value;
        own_indices[pos] = index;
        if (own_count < k) ++own_count;
    }
    if (__syncthreads_or(own_count > 0) == 0) return;  // nothing at or below the threshold: row unchanged

    // Phase 2: k rounds; each picks the smallest head among all threads and the state row.
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    int head = 0;        // next unused entry of this thread's list
    int state_head = 0;  // next unused entry of the state row (thread 0 only)
    for (int r = 0; r < k; ++r) {
        T value = head < own_count ? own_values[head] : inf;
        long long index = head < own_count ? own_indices[head] : TOPK_NO_INDEX;
        int source = threadIdx.x;
        for (int offset = 16; offset > 0; offset >>= 1) {
            const T other_value = __shfl_down_sync(0xffffffffu, value, offset);
            const long long other_index = __shfl_down_sync(0xffffffffu, index, offset);
            const int other_source = __shfl_down_sync(0xffffffffu, source, offset);
            if (precedes(other_value, other_index, value, index)) {
                value = other_value;
                index = other_index;
                source = other_source;
            }
        }
        if (lane == 0) {
            warp_values[warp] = value;
            warp_indices[warp] = index;
            warp_sources[warp] = source;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            T best_value = state_head < k ? state_values[state_head] : inf;
            long long best_index = state_head < k ? state_indices[state_head] : TOPK_NO_INDEX;
            int best_source = -1;  // -1: the state row
            for (int w = 0; w < TOPK_WARPS; ++w) {
                if (precedes(warp_values[w], warp_indices[w], best_value, best_index)) {
                    best_value = warp_values[w];
                    best_index = warp_indices[w];
                    best_source = warp_sources[w];
                }
            }
            merged_values[r] = best_value;
            merged_indices[r] = best_index;
            if (best_source < 0) ++state_head;
            winner = best_source;
        }
        __syncthreads();
        if (winner == (int)threadIdx.x) ++head;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < k; r += TOPK_THREADS) {
        state_values[r] = merged_values[r];
        state_indices[r] = merged_indices[r];
    }
}

// block: (gridDim.x, n_cols) with row stride ld (elements); values/indices: (n_rows_total, k); bound: (n_rows_total,).
#define TOPK_MERGE_KERNEL(NAME, T)                                                                            \
    extern "C" __global__ void NAME(const T* __restrict__ block, long long ld, int n_cols, long long col_start,  \
                                    T* __restrict__ values, long long* __restrict__ indices, long long row_start, \
                                    int k, const T* __restrict__ bound) {                                       \
        const long long row = row_start + (long long)blockIdx.x;                                                \
        merge_row<T>(block + (long long)blockIdx.x * ld, n_cols, col_start, values + row * k, indices + row * k, \
                     k, bound[row]);                                                                             \
    }

TOPK_MERGE_KERNEL(topk_merge_f32, float)
TOPK_MERGE_KERNEL(topk_merge_f64, double)
