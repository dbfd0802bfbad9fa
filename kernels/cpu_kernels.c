/* CPU twins of the hot loops of exact re-ranking (the C side of kernels/cpu_source.py).
 *
 * Each function has one contract with a NumPy twin and, where one exists, the CUDA kernel; the tests compare them
 * bit for bit. The NumPy twins must make several passes over a block (one per array operation); these make one,
 * which is what the CPU needs between two GEMM tiles.
 *
 * Exactness: every floating-point value is formed by the same operations, in the same order and precision, as the
 * NumPy twin (compiled with -ffp-contract=off, so no multiply-add is fused; C99 float arithmetic on x86-64 and
 * aarch64 has no excess precision). Maxima and top-k selections are exact whatever the order they are taken in.
 *
 * Top-k state: (values, indices) of shape (rows, k), each row ascending by the pair (value, index) compared
 * lexicographically, ties to the lower index; empty slots hold (+inf, -1), and -1 compared as unsigned sorts after
 * every real index. Merging keeps, for each row, the k smallest pairs of the row and its candidates.
 *
 * Functions are defined for float (suffix f32) and double (f64) by the DEFINE_KERNELS macro at the end.
 */

#include <math.h> /* INFINITY only: nothing here calls the math library */
#include <stdint.h>
#include <stdlib.h>

#define LANES 16 /* elements tested together before any branch: the compiler turns these loops into SIMD */

static void sort_columns(int64_t *a, int64_t n) { /* insertion sort: a row holds tens to hundreds */
    for (int64_t i = 1; i < n; ++i) {
        const int64_t x = a[i];
        int64_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            --j;
        }
        a[j] = x;
    }
}

#define DEFINE_KERNELS(T, S)                                                                                        \
                                                                                                                    \
    static int precedes_##S(T value_a, int64_t index_a, T value_b, int64_t index_b) {                               \
        return value_a < value_b || (value_a == value_b && (uint64_t)index_a < (uint64_t)index_b);                  \
    }                                                                                                               \
                                                                                                                    \
    /* Put (value, index) into a sorted row of k if it is among its k smallest; returns the row's new k-th. */      \
    static T insert_##S(T *values, int64_t *indices, int64_t k, T value, int64_t index) {                           \
        if (precedes_##S(value, index, values[k - 1], indices[k - 1])) {                                            \
            int64_t at = k - 1;                                                                                     \
            while (at > 0 && precedes_##S(value, index, values[at - 1], indices[at - 1])) {                         \
                values[at] = values[at - 1];                                                                        \
                indices[at] = indices[at - 1];                                                                      \
                --at;                                                                                               \
            }                                                                                                       \
            values[at] = value;                                                                                     \
            indices[at] = index;                                                                                    \
        }                                                                                                           \
        return values[k - 1];                                                                                       \
    }                                                                                                               \
                                                                                                                    \
    /* An upper bound on the k-th smallest of n values (at x[0], x[step], ...; n >= k): the largest of the minima \
     * of k disjoint segments, k distinct values at or below it. A row that is not full yet is bounded by it before \
     * its candidates are inserted, so that only about the smallest few percent are (not every value that beats a \
     * still loose k-th). */                                                                                        \
    static T segment_bound_##S(const T *x, int64_t n, int64_t step, int64_t k) {                                   \
        T bound = -(T)INFINITY;                                                                                     \
        for (int64_t s = 0; s < k; ++s) {                                                                           \
            const int64_t lo = s * n / k, hi = (s + 1) * n / k;                                                     \
            T low = x[lo * step];                                                                                   \
            for (int64_t j = lo + 1; j < hi; ++j) low = x[j * step] < low ? x[j * step] : low;                      \
            bound = low > bound ? low : bound;                                                                      \
        }                                                                                                           \
        return bound;                                                                                               \
    }                                                                                                               \
                                                                                                                    \
    /* `segment_bound` of every column of a block whose state row (state_start + j) is not full yet, folded into   \
     * thresholds[j]: the segments' minima for all columns at once, row by row (SIMD across columns). */           \
    static void bound_open_columns_##S(const T *block, int64_t rows, int64_t cols, int64_t stride,                \
                                       const T *values, int64_t k, int64_t state_start, T *thresholds) {           \
        int64_t open = 0;                                                                                           \
        for (int64_t j = 0; j < cols; ++j) open += values[(state_start + j) * k + k - 1] == (T)INFINITY;            \
        if (open == 0 || rows < k) return;                                                                          \
        T *low = (T *)malloc((size_t)cols * sizeof(T));                                                             \
        T *bound = (T *)malloc((size_t)cols * sizeof(T));                                                           \
        if (!low || !bound) { free(low); free(bound); return; } /* no bound: slower, the same result */            \
        for (int64_t j = 0; j < cols; ++j) bound[j] = -(T)INFINITY;                                                 \
        for (int64_t s = 0; s < k; ++s) {                                                                           \
            const int64_t lo = s * rows / k, hi = (s + 1) * rows / k;                                               \
            for (int64_t j = 0; j < cols; ++j) low[j] = block[lo * stride + j];                                     \
            for (int64_t i = lo + 1; i < hi; ++i) {                                                                 \
                const T *row = block + i * stride;                                                                  \
                for (int64_t j = 0; j < cols; ++j) low[j] = row[j] < low[j] ? row[j] : low[j];                      \
            }                                                                                                       \
            for (int64_t j = 0; j < cols; ++j) bound[j] = low[j] > bound[j] ? low[j] : bound[j];                    \
        }                                                                                                           \
        for (int64_t j = 0; j < cols; ++j)                                                                          \
            if (values[(state_start + j) * k + k - 1] == (T)INFINITY && bound[j] < thresholds[j])                   \
                thresholds[j] = bound[j];                                                                           \
        free(low);                                                                                                  \
        free(bound);                                                                                                \
    }                                                                                                               \
                                                                                                                    \
    /* Distances from dot products, in place: ((dot * -2) + row_sq[i]) + col_sq[j] (squared Euclidean) or         \
     * (dot * -1) + 1 (cosine), as kernels/distance.py forms them; and the tile's maxima: row_max[i] over its row  \
     * (skipped when row_max is NULL), col_max[j] over its column. */                                               \
    void finish_tile_##S(T *tile, int64_t rows, int64_t cols, const T *row_sq, const T *col_sq, int cosine,       \
                         T *row_max, T *col_max) {                                                                  \
        const T scale = cosine ? (T)-1 : (T)-2;                                                                     \
        for (int64_t j = 0; j < cols; ++j) col_max[j] = -(T)INFINITY;                                               \
        for (int64_t i = 0; i < rows; ++i) {                                                                        \
            T *row = tile + i * cols;                                                                               \
            const T add = cosine ? (T)1 : row_sq[i];                                                                \
            T lane_max[LANES];                                                                                      \
            for (int l = 0; l < LANES; ++l) lane_max[l] = -(T)INFINITY;                                             \
            int64_t j = 0;                                                                                          \
            for (; j + LANES <= cols; j += LANES) {                                                                 \
                for (int l = 0; l < LANES; ++l) {                                                                   \
                    T x = row[j + l] * scale;                                                                       \
                    x = x + add;                                                                                    \
                    if (!cosine) x = x + col_sq[j + l];                                                             \
                    row[j + l] = x;                                                                                 \
                    lane_max[l] = x > lane_max[l] ? x : lane_max[l];                                                \
                    col_max[j + l] = x > col_max[j + l] ? x : col_max[j + l];                                       \
                }                                                                                                   \
            }                                                                                                       \
            for (; j < cols; ++j) {                                                                                 \
                T x = row[j] * scale;                                                                               \
                x = x + add;                                                                                        \
                if (!cosine) x = x + col_sq[j];                                                                     \
                row[j] = x;                                                                                         \
                lane_max[0] = x > lane_max[0] ? x : lane_max[0];                                                    \
                col_max[j] = x > col_max[j] ? x : col_max[j];                                                       \
            }                                                                                                       \
            if (row_max) {                                                                                          \
                T m = lane_max[0];                                                                                  \
                for (int l = 1; l < LANES; ++l) m = lane_max[l] > m ? lane_max[l] : m;                              \
                row_max[i] = m;                                                                                     \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    /* Merge block rows into state rows row_start..: candidates (block[i, j], col_start + j) with block[i, j] <=   \
     * bound[row_start + i] (no bound when NULL). `stride`: elements between block rows. */                         \
    void merge_rows_##S(const T *block, int64_t rows, int64_t cols, int64_t stride, T *values, int64_t *indices,   \
                        int64_t k, int64_t row_start, int64_t col_start, const T *bound) {                         \
        for (int64_t i = 0; i < rows; ++i) {                                                                        \
            const T *row = block + i * stride;                                                                      \
            T *kept = values + (row_start + i) * k;                                                                 \
            int64_t *kept_index = indices + (row_start + i) * k;                                                    \
            const T limit = bound ? bound[row_start + i] : (T)INFINITY;                                             \
            T threshold = kept[k - 1] < limit ? kept[k - 1] : limit;                                                \
            if (kept[k - 1] == (T)INFINITY && cols >= k) { /* a row not full yet: bound it first */                 \
                const T first = segment_bound_##S(row, cols, 1, k);                                                 \
                threshold = first < threshold ? first : threshold;                                                  \
            }                                                                                                       \
            for (int64_t j0 = 0; j0 < cols; j0 += LANES) {                                                          \
                const int64_t j1 = j0 + LANES < cols ? j0 + LANES : cols;                                           \
                int any = 0;                                                                                        \
                for (int64_t j = j0; j < j1; ++j) any |= row[j] <= threshold;                                       \
                if (!any) continue;                                                                                 \
                for (int64_t j = j0; j < j1; ++j) {                                                                 \
                    if (row[j] <= threshold) {                                                                      \
                        const T kth = insert_##S(kept, kept_index, k, row[j], col_start + j);                       \
                        threshold = kth < limit ? kth : limit;                                                      \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    /* The transposed merge, reading the block in its own row order: candidates (block[i, j], index_start + i) go  \
     * to state row state_start + j, if block[i, j] <= bound[state_start + j] (no bound when NULL).                \
     * `thresholds`: scratch of `cols` elements. */                                                                 \
    void merge_columns_##S(const T *block, int64_t rows, int64_t cols, int64_t stride, T *values,                  \
                           int64_t *indices, int64_t k, int64_t state_start, int64_t index_start, const T *bound,  \
                           T *thresholds) {                                                                         \
        for (int64_t j = 0; j < cols; ++j) {                                                                        \
            const T kth = values[(state_start + j) * k + k - 1];                                                    \
            const T limit = bound ? bound[state_start + j] : (T)INFINITY;                                           \
            thresholds[j] = kth < limit ? kth : limit;                                                              \
        }                                                                                                           \
        bound_open_columns_##S(block, rows, cols, stride, values, k, state_start, thresholds);                      \
        for (int64_t i = 0; i < rows; ++i) {                                                                        \
            const T *row = block + i * stride;                                                                      \
            for (int64_t j0 = 0; j0 < cols; j0 += LANES) {                                                          \
                const int64_t j1 = j0 + LANES < cols ? j0 + LANES : cols;                                           \
                int any = 0;                                                                                        \
                for (int64_t j = j0; j < j1; ++j) any |= row[j] <= thresholds[j];                                   \
                if (!any) continue;                                                                                 \
                for (int64_t j = j0; j < j1; ++j) {                                                                 \
                    if (row[j] <= thresholds[j]) {                                                                  \
                        const int64_t r = state_start + j;                                                          \
                        const T kth = insert_##S(values + r * k, indices + r * k, k, row[j], index_start + i);      \
                        const T limit = bound ? bound[r] : (T)INFINITY;                                             \
                        thresholds[j] = kth < limit ? kth : limit;                                                  \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    /* Jaccard and blend of query rows (kernels/jaccard.py: shared_pairs + blend_pairs), in place on `dist`         \
     * (rows, g) with `stride` elements between rows:                                                               \
     *   s[i, j] = sum over the row's entries t, in order, of min(V[i, t], V[j, t]), in double from 0;               \
     *   dist[i, j] <- ((dist[i, j] / row_max[i]) * lam) + (((T)1 - s / ((T)2 - s)) * one_minus_lam), s as T.      \
     * `sums`: scratch of g doubles, all zero on entry and left all zero. */                                        \
    void jaccard_blend_##S(const int64_t *q_indptr, const int64_t *q_indices, const T *q_data, int64_t rows,       \
                           const int64_t *inv_indptr, const int64_t *inv_indices, const T *inv_data, T *dist,      \
                           int64_t stride, int64_t g, const T *row_max, T lam, T one_minus_lam, double *sums) {    \
        for (int64_t i = 0; i < rows; ++i) {                                                                        \
            for (int64_t e = q_indptr[i]; e < q_indptr[i + 1]; ++e) {                                               \
                const int64_t t = q_indices[e];                                                                     \
                const T v = q_data[e];                                                                              \
                for (int64_t p = inv_indptr[t]; p < inv_indptr[t + 1]; ++p) {                                       \
                    const T w = inv_data[p] < v ? inv_data[p] : v;                                                  \
                    sums[inv_indices[p]] += (double)w;                                                              \
                }                                                                                                   \
            }                                                                                                       \
            T *row = dist + i * stride;                                                                             \
            const T scale = row_max[i];                                                                             \
            /* Without a branch (so it runs as SIMD): where s = 0 the same expression gives the twin's          \
             * (1 - 0/2)·(1 - λ) = (1 - λ) exactly. */                                                              \
            for (int64_t j = 0; j < g; ++j) {                                                                       \
                const T s = (T)sums[j];                                                                             \
                T x = row[j] / scale;                                                                               \
                x = x * lam;                                                                                        \
                row[j] = x + ((T)1 - s / ((T)2 - s)) * one_minus_lam;                                              \
                sums[j] = 0.0;                                                                                      \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    /* Local query expansion (kernels/vmatrix.py): V_qe[i] = (sum of the V rows of rank[i, :k2], taken in          \
     * ascending row order, each column summed in double from 0) / k2, rounded to T, columns ascending; rows      \
     * first..last-1 written one after the other to out_indices / out_data (room for the sum of the neighbours'    \
     * row lengths), each row's count to lengths[r]. `sums`: n zero doubles and `touched`: n int64, scratch (sums  \
     * left zero). */                                                                                               \
    void query_expansion_##S(const int64_t *indptr, const int64_t *indices, const T *data, const int64_t *rank,   \
                             int64_t width, int64_t k2, int64_t first, int64_t last, int64_t *out_indices,        \
                             T *out_data, int64_t *lengths, double *sums, int64_t *touched) {                     \
        int64_t neighbours[64];                                                                                     \
        int64_t written = 0;                                                                                        \
        for (int64_t i = first; i < last; ++i) {                                                                    \
            for (int64_t t = 0; t < k2; ++t) neighbours[t] = rank[i * width + t];                                   \
            sort_columns(neighbours, k2);                                                                           \
            int64_t count = 0;                                                                                      \
            for (int64_t t = 0; t < k2; ++t) {                                                                      \
                const int64_t j = neighbours[t];                                                                    \
                for (int64_t e = indptr[j]; e < indptr[j + 1]; ++e) {                                              \
                    const int64_t column = indices[e];                                                              \
                    if (sums[column] == 0.0) touched[count++] = column;                                             \
                    sums[column] += (double)data[e];                                                                \
                }                                                                                                   \
            }                                                                                                       \
            sort_columns(touched, count);                                                                           \
            int64_t *row_indices = out_indices + written;                                                           \
            T *row_data = out_data + written;                                                                       \
            written += count;                                                                                       \
            for (int64_t e = 0; e < count; ++e) {                                                                   \
                row_indices[e] = touched[e];                                                                        \
                row_data[e] = (T)(sums[touched[e]] / (double)k2);                                                   \
                sums[touched[e]] = 0.0;                                                                             \
            }                                                                                                       \
            lengths[i - first] = count;                                                                             \
        }                                                                                                           \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)

/* Whether row i is among the first `length` entries of row c of `rank` (rows of `width` entries). */
static int lists_(const int64_t *rank, int64_t width, int64_t c, int64_t length, int64_t i) {
    const int64_t *list = rank + c * width;
    for (int64_t t = 0; t < length; ++t)
        if (list[t] == i) return 1;
    return 0;
}

/* mask[(i - first)·length + m] = whether row i is among the first `length` entries of row rank[i, m], for rows
 * first..last-1 (kernels/reciprocal.py: reciprocal_mask). */
void reciprocal_mask(const int64_t *rank, int64_t width, int64_t length, int64_t first, int64_t last,
                     uint8_t *mask) {
    for (int64_t i = first; i < last; ++i)
        for (int64_t m = 0; m < length; ++m)
            mask[(i - first) * length + m] = (uint8_t)lists_(rank, width, rank[i * width + m], length, i);
}

/* R*(i) of kernels/reciprocal.py for rows first..last-1 of `rank` (rows of `width` entries, the initial
 * ranking): R(i) = the first `full` (k1 + 1) entries c of row i whose own first `full` entries hold i; for each c
 * of R(i), R½(c) = the first `half` entries c' of row c with half_mask[c, t] (= whether c' lists c among its first
 * `half`: `reciprocal_mask` of all rows), added to the set when 3·|R½(c) ∩ R(i)| > 2·|R½(c)|. Row r's columns,
 * ascending and distinct, go to out[r·capacity ...] and their count to lengths[r] (capacity >= full·(half + 1));
 * a row without any reciprocal neighbour gets length -1. `marks`: one zero byte per row of `rank`, scratch, left
 * zero. Returns the number of rows without a reciprocal neighbour. */
int64_t reciprocal_sets(const int64_t *rank, const uint8_t *half_mask, int64_t width, int64_t full, int64_t half,
                        int64_t first, int64_t last, int64_t *lengths, int64_t *out, int64_t capacity,
                        uint8_t *marks) {
    int64_t lonely = 0;
    for (int64_t i = first; i < last; ++i) {
        int64_t *row = out + (i - first) * capacity;
        int64_t size = 0;
        for (int64_t m = 0; m < full; ++m) { /* R(i), marked 1 */
            const int64_t c = rank[i * width + m];
            if (lists_(rank, width, c, full, i)) {
                row[size++] = c;
                marks[c] = 1;
            }
        }
        const int64_t reciprocal = size;
        if (reciprocal == 0) {
            lengths[i - first] = -1;
            ++lonely;
            continue;
        }
        for (int64_t m = 0; m < reciprocal; ++m) {
            const int64_t c = row[m];
            const int64_t *members = rank + c * width;
            const uint8_t *valid = half_mask + c * half;
            int64_t count = 0, overlap = 0;
            for (int64_t t = 0; t < half; ++t) {
                count += valid[t];
                overlap += valid[t] && marks[members[t]] == 1;
            }
            if (3 * overlap > 2 * count) { /* accepted: its members join the set (marked 2 when new) */
                for (int64_t t = 0; t < half; ++t) {
                    if (valid[t] && !marks[members[t]]) {
                        row[size++] = members[t];
                        marks[members[t]] = 2;
                    }
                }
            }
        }
        for (int64_t m = 0; m < size; ++m) marks[row[m]] = 0;
        sort_columns(row, size);
        lengths[i - first] = size;
    }
    return lonely;
}
