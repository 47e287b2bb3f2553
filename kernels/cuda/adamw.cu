// AdamW in one pass over the flat fp32 buffers, PyTorch's order of operations, writing the
// bf16 compute copy of each updated weight in the same pass.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/dispatch.h"

namespace t6 {

using namespace cuda;

namespace {

__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, bf* weights, size_t n, float decay,
                             float b1, float b2, float step_size, float bias2_sqrt, float eps, float grad_scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float g = grads[i] * grad_scale;
    float p = params[i] * decay;
    const float mi = b1 * m[i] + (1.f - b1) * g;
    const float vi = b2 * v[i] + (1.f - b2) * g * g;
    p -= step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = p;
    if (weights) weights[i] = __float2bfloat16(p);
  }
}

}  // namespace

template <>
void cuda::adamw_update<float>(const Context& ctx, float* params, const float* grads, float* m, float* v, size_t n, double lr,
                        double beta1, double beta2, double eps, double weight_decay, double bias1, double bias2,
                        double grad_scale, bf16* weights) {
  T6_TIMED(ctx, "adamw");
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, 256), 256, 0, stream(ctx)>>>(
      params, grads, m, v, reinterpret_cast<bf*>(weights), n, (float)(1.0 - lr * weight_decay), (float)beta1,
      (float)beta2, (float)(lr / bias1), (float)std::sqrt(bias2), (float)eps, (float)grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace t6
