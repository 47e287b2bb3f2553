// Every op of kernels/op_list.inc, once: the context's backend chooses the implementation
// (kernels/cpu/ for a CPU context, kernels/cuda/ for a CUDA one); the element types are the
// op's parameters. The CPU backend computes in float or double (statistics in the same type);
// the CUDA backend in bf16 with fp32 statistics, and in fp32 for the optimizer's ops. Any
// other pair is an error that names the op, the backend and the type; there is no fp32 model
// on the GPU (README, "On GPUs": the GPU tests localise a bf16 error op by op against the CPU
// in double instead).
#include <fmt/format.h>

#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/dispatch.h"

namespace t6 {

namespace {

template <class T> constexpr bool kCpuType = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T> constexpr bool kGpuType = std::is_same_v<T, bf16>;

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : std::is_same_v<T, double> ? "double" : "bf16";
}

template <class T>
[[noreturn]] void unsupported(const Context& ctx, const char* op) {
  // (A logic_error: a caller's bug, never bad input; the GPU tests read invalid_argument from an
  // op as "this kernel version is not available here".)
  throw std::logic_error(fmt::format("{}: the {} backend has no {} version (CPU: float or double; CUDA: bf16 "
                                     "activations with fp32 statistics)",
                                     op, ctx.device == Device::cuda ? "CUDA" : "CPU", type_name<T>()));
}

}  // namespace

// Ops whose activations are A (P, where it appears, follows: A on the CPU, float on CUDA).
#define T6_DISPATCH(A, op, ...)                                                  \
  do {                                                                           \
    if (ctx.device == Device::cpu) {                                             \
      if constexpr (kCpuType<A>) return cpu::op(ctx, __VA_ARGS__);               \
    } else {                                                                     \
      if constexpr (kGpuType<A>) return cuda::op(ctx, __VA_ARGS__);              \
    }                                                                            \
    unsupported<A>(ctx, #op);                                                    \
  } while (0)

// The optimizer's fp32 ops, on either backend (double on the CPU too).
#define T6_DISPATCH_FP32(T, op, ...)                                             \
  do {                                                                           \
    if (ctx.device == Device::cpu) {                                             \
      if constexpr (kCpuType<T>) return cpu::op(ctx, __VA_ARGS__);               \
    } else {                                                                     \
      if constexpr (std::is_same_v<T, float>) return cuda::op(ctx, __VA_ARGS__); \
    }                                                                            \
    unsupported<T>(ctx, #op);                                                    \
  } while (0)

template <class A>
void embedding_forward(const Context& ctx, A* out, const int32_t* tokens, const A* wte, int N, int C) {
  T6_DISPATCH(A, embedding_forward, out, tokens, wte, N, C);
}
template <class A, class P>
void embedding_backward(const Context& ctx, P* dwte, const A* dout, const int32_t* tokens, int N, int C, int V) {
  T6_DISPATCH(A, embedding_backward, dwte, dout, tokens, N, C, V);
}

template <class A, class P>
void rmsnorm_forward(const Context& ctx, A* out, P* rstd, const A* inp, int N, int C, double eps) {
  T6_DISPATCH(A, rmsnorm_forward, out, rstd, inp, N, C, eps);
}
template <class A, class P>
void residual_rmsnorm_forward(const Context& ctx, A* x_out, A* out, P* rstd, const A* x, const A* branch, int N, int C,
                              double eps) {
  T6_DISPATCH(A, residual_rmsnorm_forward, x_out, out, rstd, x, branch, N, C, eps);
}
template <class A, class P>
void rmsnorm_backward(const Context& ctx, A* dinp, const A* dout, const A* inp, const P* rstd, int N, int C) {
  T6_DISPATCH(A, rmsnorm_backward, dinp, dout, inp, rstd, N, C);
}

template <class A>
void matmul_forward(const Context& ctx, A* out, const A* inp, const A* weight, int M, int K, int N, int ld_in,
                    int ld_out) {
  T6_DISPATCH(A, matmul_forward, out, inp, weight, M, K, N, ld_in, ld_out);
}
template <class A>
void matmul_backward_input(const Context& ctx, A* dinp, const A* dout, const A* weight, int M, int K, int N, int ld_in,
                           int ld_out, bool accumulate) {
  T6_DISPATCH(A, matmul_backward_input, dinp, dout, weight, M, K, N, ld_in, ld_out, accumulate);
}
template <class A, class P>
void matmul_backward_weight(const Context& ctx, P* dweight, const A* dout, const A* inp, int M, int K, int N, int ld_in,
                            int ld_out) {
  T6_DISPATCH(A, matmul_backward_weight, dweight, dout, inp, M, K, N, ld_in, ld_out);
}
template <class A, class P>
void copy_to_pitch(const Context& ctx, A* dst, const P* src, int rows, int cols, int pitch) {
  T6_DISPATCH(A, copy_to_pitch, dst, src, rows, cols, pitch);
}
template <class P>
void add_from_pitch(const Context& ctx, P* dst, const P* src, int rows, int cols, int pitch) {
  T6_DISPATCH_FP32(P, add_from_pitch, dst, src, rows, cols, pitch);
}

template <class A>
void qkv_forward(const Context& ctx, A* q, A* k, A* v, const A* proj, const QkvLayout& L, int B, int T, int t0,
                 const int* at) {
  T6_DISPATCH(A, qkv_forward, q, k, v, proj, L, B, T, t0, at);
}
template <class A>
void qkv_backward(const Context& ctx, A* dproj, const A* dq, const A* dk, const A* dv, const A* proj,
                  const QkvLayout& L, int B, int T) {
  T6_DISPATCH(A, qkv_backward, dproj, dq, dk, dv, proj, L, B, T);
}

template <class A, class P>
void attention_forward(const Context& ctx, A* out, P* lse, const A* q, const A* k, const A* v, int B, int T, int H,
                       int Hkv, int D) {
  T6_DISPATCH(A, attention_forward, out, lse, q, k, v, B, T, H, Hkv, D);
}
template <class A, class P>
void attention_backward(const Context& ctx, A* dq, A* dk, A* dv, const A* dout, const A* q, const A* k, const A* v,
                        const A* out, const P* lse, int B, int T, int H, int Hkv, int D) {
  T6_DISPATCH(A, attention_backward, dq, dk, dv, dout, q, k, v, out, lse, B, T, H, Hkv, D);
}

template <class A>
void kv_cache_store(const Context& ctx, A* k_cache, A* v_cache, const A* proj, const QkvLayout& L, int B, int T,
                    int t0, int context, const int* at) {
  T6_DISPATCH(A, kv_cache_store, k_cache, v_cache, proj, L, B, T, t0, context, at);
}
template <class A>
void attention_decode(const Context& ctx, A* out, const A* q, const A* k_cache, const A* v_cache, const QkvLayout& L,
                      int B, int len, int context, const int* at) {
  T6_DISPATCH(A, attention_decode, out, q, k_cache, v_cache, L, B, len, context, at);
}

template <class A>
void swiglu_forward(const Context& ctx, A* out, const A* fc, int N, int F, int ld_fc, int ld_out) {
  T6_DISPATCH(A, swiglu_forward, out, fc, N, F, ld_fc, ld_out);
}
template <class A>
void swiglu_backward(const Context& ctx, A* dfc, const A* dout, const A* fc, int N, int F, int ld_fc, int ld_out) {
  T6_DISPATCH(A, swiglu_backward, dfc, dout, fc, N, F, ld_fc, ld_out);
}

template <class A, class P>
void classifier_forward_backward(const Context& ctx, A* logits, P* losses, const int32_t* targets, int N, int V,
                                 int n_valid, double dloss) {
  T6_DISPATCH(A, classifier_forward_backward, logits, losses, targets, N, V, n_valid, dloss);
}

template <class T>
void scale(const Context& ctx, T* x, double s, size_t n) {
  T6_DISPATCH_FP32(T, scale, x, s, n);
}
template <class T>
double sum(const Context& ctx, const T* x, size_t n) {
  T6_DISPATCH_FP32(T, sum, x, n);
}
template <class T>
double sum_squares(const Context& ctx, const T* x, size_t n) {
  T6_DISPATCH_FP32(T, sum_squares, x, n);
}
template <class T>
void adamw_update(const Context& ctx, T* params, const T* grads, T* m, T* v, size_t n, double lr, double beta1,
                  double beta2, double eps, double weight_decay, double bias1, double bias2, double grad_scale,
                  bf16* weights) {
  T6_DISPATCH_FP32(T, adamw_update, params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, bias1, bias2,
                   grad_scale, weights);
}

#undef T6_DISPATCH
#undef T6_DISPATCH_FP32

// The element types the model and the optimizer use: (A, P) = (float, float) and (double,
// double) on the CPU, (bf16, float) on CUDA; fp32 and double for the optimizer's ops.
#define T6_INSTANTIATE(A, P)                                                                                          \
  template void embedding_forward<A>(const Context&, A*, const int32_t*, const A*, int, int);                        \
  template void embedding_backward<A, P>(const Context&, P*, const A*, const int32_t*, int, int, int);               \
  template void rmsnorm_forward<A, P>(const Context&, A*, P*, const A*, int, int, double);                           \
  template void residual_rmsnorm_forward<A, P>(const Context&, A*, A*, P*, const A*, const A*, int, int, double);    \
  template void rmsnorm_backward<A, P>(const Context&, A*, const A*, const A*, const P*, int, int);                  \
  template void matmul_forward<A>(const Context&, A*, const A*, const A*, int, int, int, int, int);                  \
  template void matmul_backward_input<A>(const Context&, A*, const A*, const A*, int, int, int, int, int, bool);     \
  template void matmul_backward_weight<A, P>(const Context&, P*, const A*, const A*, int, int, int, int, int);       \
  template void copy_to_pitch<A, P>(const Context&, A*, const P*, int, int, int);                                   \
  template void qkv_forward<A>(const Context&, A*, A*, A*, const A*, const QkvLayout&, int, int, int, const int*);   \
  template void qkv_backward<A>(const Context&, A*, const A*, const A*, const A*, const A*, const QkvLayout&, int,   \
                                int);                                                                                \
  template void attention_forward<A, P>(const Context&, A*, P*, const A*, const A*, const A*, int, int, int, int,    \
                                        int);                                                                        \
  template void attention_backward<A, P>(const Context&, A*, A*, A*, const A*, const A*, const A*, const A*,         \
                                         const A*, const P*, int, int, int, int, int);                               \
  template void kv_cache_store<A>(const Context&, A*, A*, const A*, const QkvLayout&, int, int, int, int,            \
                                  const int*);                                                                       \
  template void attention_decode<A>(const Context&, A*, const A*, const A*, const A*, const QkvLayout&, int, int,    \
                                    int, const int*);                                                                \
  template void swiglu_forward<A>(const Context&, A*, const A*, int, int, int, int);                                 \
  template void swiglu_backward<A>(const Context&, A*, const A*, const A*, int, int, int, int);                      \
  template void classifier_forward_backward<A, P>(const Context&, A*, P*, const int32_t*, int, int, int, double);
#define T6_INSTANTIATE_FP32(T)                                                                                        \
  template void add_from_pitch<T>(const Context&, T*, const T*, int, int, int);                                      \
  template void scale<T>(const Context&, T*, double, size_t);                                                        \
  template double sum<T>(const Context&, const T*, size_t);                                                          \
  template double sum_squares<T>(const Context&, const T*, size_t);                                                  \
  template void adamw_update<T>(const Context&, T*, const T*, T*, T*, size_t, double, double, double, double, double, \
                                double, double, double, bf16*);
T6_INSTANTIATE(float, float)
T6_INSTANTIATE(double, double)
T6_INSTANTIATE_FP32(float)
T6_INSTANTIATE_FP32(double)
#ifdef T6_WITH_CUDA
T6_INSTANTIATE(bf16, float)
#endif

}  // namespace t6
