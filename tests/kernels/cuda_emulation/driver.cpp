// Runs kernels/topk.cu and kernels/jaccard.cu under emulation.h on raw little-endian arrays written by
// tests/kernels/test_cuda_emulated.py, and writes the results back.
//
//   driver topk    f32|f64 n_rows n_cols k row_start col_start n_state  block values indices bound
//                  (values and indices are updated in place)
//   driver jaccard f32|f64 n_query n_gallery n_entries n_cols n_index  q_indptr q_cols q_vals g_colptr g_rows
//                  g_vals out

#include "emulation.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "topk.cu"
#include "jaccard.cu"

template <typename T>
static std::vector<T> read_array(const char* path, long long count) {
    std::vector<T> data(static_cast<size_t>(count));
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(T)));
    if (!in) {
        std::fprintf(stderr, "cannot read %lld items from %s\n", count, path);
        std::exit(2);
    }
    return data;
}

template <typename T>
static void write_array(const char* path, const std::vector<T>& data) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(T)));
}

template <typename T, typename Kernel>
static void run_topk(char** argv, Kernel kernel) {
    const long long n_rows = std::atoll(argv[3]), n_cols = std::atoll(argv[4]), k = std::atoll(argv[5]);
    const long long row_start = std::atoll(argv[6]), col_start = std::atoll(argv[7]), n_state = std::atoll(argv[8]);
    auto block = read_array<T>(argv[9], n_rows * n_cols);
    auto values = read_array<T>(argv[10], n_state * k);
    auto indices = read_array<long long>(argv[11], n_state * k);
    auto bound = read_array<T>(argv[12], n_state);
    emulated_launch(static_cast<unsigned>(n_rows), TOPK_THREADS, [&] {
        kernel(block.data(), n_cols, static_cast<int>(n_cols), col_start, values.data(), indices.data(), row_start,
               static_cast<int>(k), bound.data());
    });
    write_array(argv[10], values);
    write_array(argv[11], indices);
}

template <typename T, typename Kernel>
static void run_jaccard(char** argv, Kernel kernel) {
    const long long n_query = std::atoll(argv[3]), n_gallery = std::atoll(argv[4]);
    const long long n_entries = std::atoll(argv[5]), n_cols = std::atoll(argv[6]), n_index = std::atoll(argv[7]);
    auto q_indptr = read_array<long long>(argv[8], n_query + 1);
    auto q_cols = read_array<long long>(argv[9], n_entries);
    auto q_vals = read_array<T>(argv[10], n_entries);
    auto g_colptr = read_array<long long>(argv[11], n_cols + 1);
    auto g_rows = read_array<long long>(argv[12], n_index);
    auto g_vals = read_array<T>(argv[13], n_index);
    std::vector<T> out(static_cast<size_t>(n_query * n_gallery), T(0));
    emulated_launch(static_cast<unsigned>(n_query), 128, [&] {
        kernel(q_indptr.data(), q_cols.data(), q_vals.data(), g_colptr.data(), g_rows.data(), g_vals.data(),
               out.data(), n_gallery);
    });
    write_array(argv[14], out);
}

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    const std::string mode = argv[1], type = argv[2];
    if (mode == "topk" && argc == 13) {
        if (type == "f32") run_topk<float>(argv, topk_merge_f32);
        else run_topk<double>(argv, topk_merge_f64);
        return 0;
    }
    if (mode == "jaccard" && argc == 15) {
        if (type == "f32") run_jaccard<float>(argv, min_intersection_f32);
        else run_jaccard<double>(argv, min_intersection_f64);
        return 0;
    }
    std::fprintf(stderr, "bad arguments\n");
    return 2;
}
