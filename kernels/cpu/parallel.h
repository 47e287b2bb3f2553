#pragma once
#include <cstddef>

namespace t6 {

// Loops over fewer elements than this run on one thread: waking the OpenMP team costs more
// than it saves (tiny test models ran 20x slower with parallel regions everywhere).
constexpr size_t kParallelWork = 1 << 15;

}  // namespace t6
