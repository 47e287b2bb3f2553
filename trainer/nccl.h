// Data parallelism between GPUs: a Communicator whose float collectives run through NCCL on
// device buffers (one GPU per rank), bootstrapped over the host communicator (MPI), which
// also carries the host-side values (losses, norms, signals, broadcasts).
#pragma once
#include <memory>

#include "kernels/context.h"
#include "trainer/runtime.h"

namespace t6 {

#ifdef T6_WITH_CUDA
// Collective: every rank of `host` calls it with its own CUDA context. `host` must outlive
// the result. Gradient all-reduces started with start_all_reduce_sum run on a stream of their
// own, ordered after the work already queued on ctx's stream, so they overlap what follows.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host, const Context& ctx);
#endif

}  // namespace t6
