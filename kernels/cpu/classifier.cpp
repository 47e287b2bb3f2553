// Log-softmax cross-entropy fused with its gradient: one pass over the logits computes the
// loss and overwrites them with dlogits, so the (N, V) matrix exists once.
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace t6::cpu {

template <class T, class P>
void classifier_forward_backward(const Context&, T* logits, P* losses, const int32_t* targets, int N, int V,
                                 int n_valid, double dloss) {
  const double g = n_valid > 0 ? dloss / n_valid : 0.0;
#pragma omp parallel for if ((size_t)N * V >= kParallelWork)
  for (int n = 0; n < N; n++) {
    T* row = logits + (size_t)n * V;
    const int target = targets[n];
    if (target < 0) {
      losses[n] = 0;
      if (dloss != 0)
        for (int i = 0; i < V; i++) row[i] = 0;
      continue;
    }
    T maxv = row[0];
    for (int i = 1; i < V; i++) maxv = row[i] > maxv ? row[i] : maxv;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += std::exp((double)(row[i] - maxv));
    const double logsum = std::log(sum);
    losses[n] = P(logsum - (double)(row[target] - maxv));
    if (dloss == 0) continue;
    for (int i = 0; i < V; i++) {
      double p = std::exp((double)(row[i] - maxv) - logsum);
      row[i] = T((p - (i == target ? 1.0 : 0.0)) * g);
    }
  }
}

#define INSTANTIATE(T)                                                                               \
  template void classifier_forward_backward<T, T>(const Context&, T*, T*, const int32_t*, int, int, int, double);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace t6::cpu
