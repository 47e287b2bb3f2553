// What the C++ side of the kernels library calls on a CUDA context without including CUDA
// headers: memory, and the CUDA backend's ops (kernels/op_list.inc in t6::cuda, specialized in
// kernels/cuda/*.cu for bf16 activations with fp32 statistics, and for fp32 where the optimizer
// needs them). Defined in kernels/cuda/*.cu, or by kernels/cuda/none.cpp (which throws) in a
// build without CUDA.
#pragma once
#include <cstddef>

#include "kernels/ops.h"

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
// Replay (kernels/context.h): a recording of what `work` queues, or null where it could not be
// recorded; its workspace generation in *epoch.
bool can_record(const Context&);  // not while profiling: the per-op timers would be captured
void* record(const Context&, const std::function<void()>& work, uint64_t* epoch);
void run_recording(const Context&, void* exec);
void release_recording(void* exec);
uint64_t workspace_epoch(const Context&);

#include "kernels/op_list.inc"

// What this backend implements, declared where the dispatcher calls it (an explicit
// specialization must be visible wherever it is used): bf16 activations with fp32 statistics,
// and fp32 for the optimizer's ops (kernels/cuda/*.cu).
template <> void adamw_update<float>(const Context& ctx, float* params, const float* grads, float* m, float* v,
    size_t n, double lr, double beta1, double beta2, double eps, double weight_decay, double bias1, double bias2,
    double grad_scale, bf16* weights);
template <> void attention_forward<bf16, float>(const Context& ctx, bf16* out, float* lse, const bf16* q,
    const bf16* k, const bf16* v, int B, int T, int H, int Hkv, int D);
template <> void attention_backward<bf16, float>(const Context& ctx, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
    const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse, int B, int T, int H, int Hkv,
    int D);
template <> void attention_decode<bf16>(const Context& ctx, bf16* out, const bf16* q, const bf16* k_cache,
    const bf16* v_cache, const QkvLayout& L, int B, int len, int context, const int* at);
template <> void classifier_forward_backward<bf16, float>(const Context& ctx, bf16* logits, float* losses,
    const int32_t* targets, int N, int V, int n_valid, double dloss);
template <> void scale<float>(const Context& ctx, float* x, double s, size_t n);
template <> double sum<float>(const Context& ctx, const float* x, size_t n);
template <> double sum_squares<float>(const Context& ctx, const float* x, size_t n);
template <> void embedding_forward<bf16>(const Context& ctx, bf16* out, const int32_t* tokens, const bf16* wte, int N,
    int C);
template <> void embedding_backward<bf16, float>(const Context& ctx, float* dwte, const bf16* dout,
    const int32_t* tokens, int N, int C, int V);
template <> void matmul_forward<bf16>(const Context& ctx, bf16* out, const bf16* inp, const bf16* weight, int M, int K,
    int N, int ld_in, int ld_out);
template <> void matmul_backward_input<bf16>(const Context& ctx, bf16* dinp, const bf16* dout, const bf16* weight,
    int M, int K, int N, int ld_in, int ld_out, bool accumulate);
template <> void matmul_backward_weight<bf16, float>(const Context& ctx, float* dweight, const bf16* dout,
    const bf16* inp, int M, int K, int N, int ld_in, int ld_out);
template <> void copy_to_pitch<bf16, float>(const Context& ctx, bf16* dst, const float* src, int rows, int cols,
    int pitch);
template <> void add_from_pitch<float>(const Context& ctx, float* dst, const float* src, int rows, int cols, int pitch);
template <> void qkv_forward<bf16>(const Context& ctx, bf16* q, bf16* k, bf16* v, const bf16* proj, const QkvLayout& L,
    int B, int T, int t0, const int* at);
template <> void qkv_backward<bf16>(const Context& ctx, bf16* dproj, const bf16* dq, const bf16* dk, const bf16* dv,
    const bf16* proj, const QkvLayout& L, int B, int T);
template <> void kv_cache_store<bf16>(const Context& ctx, bf16* k_cache, bf16* v_cache, const bf16* proj,
    const QkvLayout& L, int B, int T, int t0, int context, const int* at);
template <> void rmsnorm_forward<bf16, float>(const Context& ctx, bf16* out, float* rstd, const bf16* inp, int N,
    int C, double eps);
template <> void residual_rmsnorm_forward<bf16, float>(const Context& ctx, bf16* x_out, bf16* out, float* rstd,
    const bf16* x, const bf16* branch, int N, int C, double eps);
template <> void rmsnorm_backward<bf16, float>(const Context& ctx, bf16* dinp, const bf16* dout, const bf16* inp,
    const float* rstd, int N, int C);
template <> void swiglu_forward<bf16>(const Context& ctx, bf16* out, const bf16* fc, int N, int F, int ld_fc,
    int ld_out);
template <> void swiglu_backward<bf16>(const Context& ctx, bf16* dfc, const bf16* dout, const bf16* fc, int N, int F,
    int ld_fc, int ld_out);

}  // namespace t6::cuda
