// A CPU emulation of the few CUDA features kernels/*.cu use, so their logic can be checked where no GPU exists.
//
// Every CUDA thread of a block is one std::thread; blocks run one after another. __shared__ variables become
// function statics (shared by the block's threads, like shared memory), __syncthreads is a std::barrier over the
// block, warp shuffles exchange values through a per-warp buffer between two warp barriers, atomics use
// std::atomic_ref. This checks what the kernels compute (indexing, merging, synchronisation order), not how fast,
// and not CUDA's memory model beyond what barriers give.
#pragma once

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct EmulatedDim3 {
    unsigned x = 0, y = 0, z = 0;
};

inline thread_local EmulatedDim3 threadIdx, blockIdx;
inline EmulatedDim3 blockDim, gridDim;

struct EmulatedBlock {
    explicit EmulatedBlock(unsigned threads) : block_barrier(threads) {
        for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
            const unsigned lanes = threads - 32 * w < 32 ? threads - 32 * w : 32;
            warp_barriers.push_back(std::make_unique<std::barrier<>>(lanes));
            warp_buffers.emplace_back(32, 0);
        }
    }
    std::barrier<> block_barrier;
    std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
    std::vector<std::vector<std::uint64_t>> warp_buffers;
    std::atomic<int> or_flag{0};
};

inline thread_local EmulatedBlock* emulated_block = nullptr;

inline void __syncthreads() { emulated_block->block_barrier.arrive_and_wait(); }

inline int __syncthreads_or(int predicate) {
    EmulatedBlock& b = *emulated_block;
    b.block_barrier.arrive_and_wait();
    if (predicate) b.or_flag.store(1);
    b.block_barrier.arrive_and_wait();
    const int result = b.or_flag.load();
    b.block_barrier.arrive_and_wait();
    if (threadIdx.x == 0) b.or_flag.store(0);  // the next call starts with a barrier, after this reset
    return result;
}

template <typename T>
inline T __shfl_down_sync(unsigned /*mask*/, T value, int offset) {
    static_assert(sizeof(T) <= sizeof(std::uint64_t));
    EmulatedBlock& b = *emulated_block;
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    b.warp_buffers[warp][lane] = bits;
    b.warp_barriers[warp]->arrive_and_wait();
    T out = value;
    if (lane + offset < 32) std::memcpy(&out, &b.warp_buffers[warp][lane + offset], sizeof(T));
    b.warp_barriers[warp]->arrive_and_wait();
    return out;
}

inline float __int_as_float(int bits) {
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

inline double __longlong_as_double(long long bits) {
    double out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}

// kernel<<<grid, block>>>(): run `body` (a lambda calling the kernel) for every thread of every block.
template <typename Body>
void emulated_launch(unsigned grid, unsigned block, Body body) {
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        EmulatedBlock state(block);
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, t] {
                threadIdx = {t, 0, 0};
                blockIdx = {b, 0, 0};
                emulated_block = &state;
                body();
            });
        }
        for (auto& thread : threads) thread.join();
    }
}
