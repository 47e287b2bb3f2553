#include "trainer/mc_eval.h"

#include <algorithm>

#include "model/t6.h"

namespace t6 {

template <class Model>
McScore score_multiple_choice(Model& model, const std::vector<McExample>& examples, Communicator* comm) {
  const int B = model.batch(), T = model.seq(), W = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  // This rank's candidates, as (example, candidate) pairs, and their loss sums and counts.
  std::vector<std::pair<int, int>> mine;
  for (int e = rank; e < (int)examples.size(); e += W)
    for (int c = 0; c < (int)examples[e].candidates.size(); c++) mine.push_back({e, c});
  std::vector<double> sum(mine.size(), 0.0), count(mine.size(), 0.0);
  std::vector<int32_t> inputs((size_t)B * T), targets((size_t)B * T);
  for (size_t first = 0; first < mine.size(); first += B) {
    std::fill(inputs.begin(), inputs.end(), 0);
    std::fill(targets.begin(), targets.end(), -1);
    for (int r = 0; r < B && first + r < mine.size(); r++) {
      const McExample& ex = examples[mine[first + r].first];
      const int c = mine[first + r].second;
      const std::vector<int32_t>& cand = ex.candidates[c];
      // Too long for the window: its last T + 1 tokens.
      const int drop = std::max(0, (int)cand.size() - (T + 1)), len = (int)cand.size() - drop;
      const int start = std::max(1, ex.completion_start[c] - drop);
      for (int t = 0; t + 1 < len; t++) {
        inputs[(size_t)r * T + t] = cand[drop + t];
        if (t + 1 >= start) targets[(size_t)r * T + t] = cand[drop + t + 1];  // a completion token
      }
    }
    model.forward(inputs.data(), targets.data());
    const std::vector<double> losses = model.position_losses();
    for (int r = 0; r < B && first + r < mine.size(); r++)
      for (int t = 0; t < T; t++)
        if (targets[(size_t)r * T + t] >= 0) sum[first + r] += losses[(size_t)r * T + t], count[first + r] += 1;
  }
  // Per example: the lowest summed loss (acc) and the lowest mean (acc_norm), ties to the first.
  double tally[3] = {0, 0, 0};  // right by acc, right by acc_norm, examples
  for (size_t i = 0; i < mine.size();) {
    const int e = mine[i].first, k = (int)examples[e].candidates.size();
    int best = 0, best_norm = 0;
    for (int c = 1; c < k; c++) {
      if (sum[i + c] < sum[i + best]) best = c;
      if (sum[i + c] / std::max(count[i + c], 1.0) < sum[i + best_norm] / std::max(count[i + best_norm], 1.0))
        best_norm = c;
    }
    tally[0] += best == examples[e].label;
    tally[1] += best_norm == examples[e].label;
    tally[2] += 1;
    i += k;
  }
  if (comm) comm->all_reduce_sum(tally, 3);
  McScore s;
  s.examples = (int64_t)tally[2];
  if (tally[2] > 0) s.acc = tally[0] / tally[2], s.acc_norm = tally[1] / tally[2];
  return s;
}

template McScore score_multiple_choice(T6<float>&, const std::vector<McExample>&, Communicator*);
template McScore score_multiple_choice(T6<double>&, const std::vector<McExample>&, Communicator*);
#ifdef T6_WITH_CUDA
template McScore score_multiple_choice(T6<bf16, float>&, const std::vector<McExample>&, Communicator*);
#endif

}  // namespace t6
