// The T6 model: parameters and gradients in flat backend buffers (addressed by ParamLayout),
// activations in one arena planned at construction for a fixed micro-batch shape, and a
// forward and backward that are sequences of backend ops (kernels/ops.h).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/context.h"
#include "model/config.h"
#include "model/layout.h"

namespace t6 {

// rmsnorm's eps: float32 machine epsilon, what the reference's F.rms_norm uses (T6_SPEC.md).
constexpr double kRmsEps = 1.1920928955078125e-07;

template <class T>
class T6 {
 public:
  T6(const ModelConfig& cfg, const Context& ctx, int batch, int seq);

  // tokens and targets are host arrays of batch·seq ids; a target of −1 is ignored.
  // Returns the mean loss over valid targets and leaves what backward() needs to add
  // dloss·∂loss/∂θ into grads. With targets == nullptr it only computes the logits.
  double forward(const int32_t* tokens, const int32_t* targets, double dloss = 1.0);
  // grads_ready(offset, count), if given, is called as soon as a contiguous range of the
  // gradient buffer is final for this micro-batch (each layer, last to first, then the
  // embedding), so communication can overlap the rest of the backward pass.
  void backward(const std::function<void(size_t offset, size_t count)>& grads_ready = {});
  void zero_grads() { grads.zero(); }

  std::vector<float> logits_at(int n) const;  // after forward(tokens, nullptr)
  std::vector<float> params_to_host() const;
  void params_from_host(const std::vector<float>& host);
  std::vector<float> grads_to_host() const;

  int batch() const { return B_; }
  int seq() const { return T_; }

  const ModelConfig cfg;
  const ParamLayout layout;
  const Context& ctx;
  Buffer<T> params, grads;

 private:
  struct Layer {  // views into params or grads; null where the attention variant has no such tensor
    T *W_A_q = nullptr, *W_B_q = nullptr, *W_A_k = nullptr, *W_B_k = nullptr, *W_A_v = nullptr, *W_B_v = nullptr;
    T *c_q = nullptr, *c_k = nullptr, *c_v = nullptr, *attn_proj = nullptr;
    T *fc1 = nullptr, *fc2 = nullptr, *mlp_proj = nullptr;
  };
  struct Weights {
    T* wte = nullptr;
    std::vector<Layer> layers;
  };
  struct LayerActs {  // what backward reads, per layer
    T *x, *rstd1, *h1, *a_q, *b_q, *a_k, *b_k, *a_v, *b_v, *q, *k, *v, *att, *y, *x_mid, *rstd2, *h2, *fc1, *fc2, *g;
  };
  struct Scratch {  // gradients of activations, reused by every layer
    T *dx, *dh, *branch, *dy, *dq, *dk, *dv, *da_q, *db_q, *da_k, *db_k, *da_v, *db_v, *dfc1, *dfc2, *dg;
  };

  Weights views(T* base) const;
  void plan_memory();
  void project(T* out, T* a, T* b, const T* W_a, const T* W_b, const T* W_dense, const T* h, int heads, int R,
               bool rotate);
  void project_backward(T* dh, T* dW_a, T* dW_b, T* dW_dense, T* dout, T* da, T* db, const T* a, const T* b,
                        const T* W_a, const T* W_b, const T* W_dense, const T* h, int heads, int R, bool rotate,
                        bool accumulate);

  std::vector<std::pair<size_t, size_t>> layer_ranges_;  // (offset, count) of each layer's parameters
  int B_, T_, N_;
  Weights w_, g_;
  std::vector<LayerActs> acts_;
  T *x_final_, *rstd_final_, *h_final_, *logits_, *losses_;
  Scratch s_;
  Buffer<T> arena_;
  Buffer<int32_t> tokens_, targets_;
};

extern template class T6<float>;
extern template class T6<double>;

}  // namespace t6
