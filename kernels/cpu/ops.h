// The CPU backend's ops: kernels/op_list.inc in t6::cpu, defined in kernels/cpu/*.cpp for
// float and double (kernels/dispatch.cpp calls them for a CPU context).
#pragma once
#include "kernels/ops.h"

namespace t6::cpu {
#include "kernels/op_list.inc"
}  // namespace t6::cpu
