// What the C++ side of the kernels library calls on a CUDA context without including CUDA
// headers: memory, and the fp32 ops that exist on both backends (the optimizer's). Defined in
// kernels/cuda/*.cu, or by kernels/cuda/none.cpp (which throws) in a build without CUDA.
#pragma once
#include <cstddef>

#include "kernels/context.h"

namespace t6::cuda {

void* alloc(const Context&, size_t bytes);
void release(const Context&, void* ptr);
void to_host(const Context&, void* dst, const void* src, size_t bytes);
void from_host(const Context&, void* dst, const void* src, size_t bytes);
void zero(const Context&, void* ptr, size_t bytes);
void copy(const Context&, void* dst, const void* src, size_t bytes);
void synchronize(const Context&);
void* alloc_pinned(const Context&, size_t bytes);
void release_pinned(const Context&, void* ptr);
void snapshot_to_host(const Context&, void* dst, const void* src, size_t bytes);
void snapshot_fence(const Context&);
void snapshot_wait(const Context&);
void range_push(const char* name);  // NVTX
void range_pop();

void scale(const Context&, float* x, double s, size_t n);
void add_from_pitch(const Context&, float* dst, const float* src, int rows, int cols, int pitch);
double sum(const Context&, const float* x, size_t n);
double sum_squares(const Context&, const float* x, size_t n);
void adamw_update(const Context&, float* params, const float* grads, float* m, float* v, size_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, double bias1, double bias2,
                  double grad_scale, bf16* weights);

}  // namespace t6::cuda
