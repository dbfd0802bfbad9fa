// Sparse min-intersection for k-reciprocal Jaccard (the CUDA side of kernels/jaccard.py).
//
// For query rows r (CSR: q_indptr, q_cols, q_vals; rows numbered from 0) and gallery rows j, the kernel adds
//     s[r, j] += min(V[r, t], V[j, t])   for every t in row r and every gallery row j listed under column t
// in the inverted index (g_colptr, g_rows, g_vals). `s` is (n_query_rows, n_gallery), zero on entry.
// That is the contract of the NumPy twin `min_intersection_numpy` in jaccard.py, up to the order of the additions.
//
// One thread block per query row; its threads stride over each column's gallery list, so reads of the inverted
// index are coalesced. Within one column the gallery rows are distinct, so the atomics only collide across the
// columns a row visits.

template <typename T>
__device__ void accumulate_row(const long long* __restrict__ q_indptr, const long long* __restrict__ q_cols,
                               const T* __restrict__ q_vals, const long long* __restrict__ g_colptr,
                               const long long* __restrict__ g_rows, const T* __restrict__ g_vals,
                               T* __restrict__ s, long long n_gallery) {
    const long long r = blockIdx.x;
    T* s_row = s + r * n_gallery;
    for (long long e = q_indptr[r]; e < q_indptr[r + 1]; ++e) {
        const long long t = q_cols[e];
        const T v = q_vals[e];
        for (long long p = g_colptr[t] + threadIdx.x; p < g_colptr[t + 1]; p += blockDim.x) {
            const T w = g_vals[p];
            atomicAdd(s_row + g_rows[p], v < w ? v : w);
        }
    }
}

#define MIN_INTERSECTION_KERNEL(NAME, T)                                                                       \
    extern "C" __global__ void NAME(const long long* __restrict__ q_indptr, const long long* __restrict__ q_cols, \
                                    const T* __restrict__ q_vals, const long long* __restrict__ g_colptr,        \
                                    const long long* __restrict__ g_rows, const T* __restrict__ g_vals,          \
                                    T* __restrict__ s, long long n_gallery) {                                    \
        accumulate_row<T>(q_indptr, q_cols, q_vals, g_colptr, g_rows, g_vals, s, n_gallery);                     \
    }

MIN_INTERSECTION_KERNEL(min_intersection_f32, float)
MIN_INTERSECTION_KERNEL(min_intersection_f64, double)
