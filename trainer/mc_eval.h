// Multiple-choice accuracy of a model on a tokenized set (data/mc_eval.h), as llm.c scores
// HellaSwag: each completion by the loss of its own tokens given the context; acc picks the
// lowest summed loss, acc_norm the lowest mean per token. A trend signal while training: the
// figures differ from lm-eval's (prompt format, length normalisation).
#pragma once
#include <cstdint>
#include <vector>

#include "data/mc_eval.h"
#include "trainer/runtime.h"

namespace t6 {

struct McScore {
  double acc = 0, acc_norm = 0;
  int64_t examples = 0;
};

// Model: a T6 on either backend; its batch × seq shape is used as it is (candidates longer
// than seq + 1 tokens keep their last seq + 1). With comm, this rank scores examples rank,
// rank + W, … and the counts are summed across ranks.
template <class Model>
McScore score_multiple_choice(Model& model, const std::vector<McExample>& examples, Communicator* comm = nullptr);

}  // namespace t6
