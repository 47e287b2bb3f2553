// NCCL between the GPUs of a job: one communicator per rank, its unique id broadcast over
// the host communicator (MPI). Gradient all-reduces started during backward run on a stream
// of their own, each ordered after the work already queued on the compute stream (an event),
// so they overlap the layers still to come; wait_all() makes the compute stream wait for them.
#include "trainer/nccl.h"

#include <fmt/format.h>
#include <nccl.h>

#include <stdexcept>

#include "kernels/cuda/state.h"

namespace t6 {

namespace {

#define NCCL_CHECK(call) nccl_check((call), #call, __FILE__, __LINE__)

void nccl_check(ncclResult_t r, const char* call, const char* file, int line) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  throw std::runtime_error(fmt::format("NCCL call {} failed at {}:{}: {} ({})", call, file, line,
                                       ncclGetErrorString(r), ncclGetLastError(nullptr)));
}

bool equal(const std::vector<size_t>& counts) {
  for (size_t c : counts)
    if (c != counts[0]) return false;
  return true;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& host, const Context& ctx) : host_(host), ctx_(ctx) {
    ncclUniqueId id{};
    if (host.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host.broadcast(&id, sizeof(id), 0);
    CUDA_CHECK(cudaSetDevice(ctx.cuda->device));
    NCCL_CHECK(ncclCommInitRank(&comm_, host.size(), id, host.rank()));
    CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclCommunicator() override {
    // Best effort: the job may be ending because of an error elsewhere.
    cudaStreamSynchronize(side_);
    ncclCommDestroy(comm_);
    cudaEventDestroy(ready_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(side_);
  }

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  int local_rank() const override { return host_.local_rank(); }

  // Device buffers, on the compute stream.
  void all_reduce_sum(float* data, size_t n) override {
    NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, compute()));
  }
  void start_all_reduce_sum(float* data, size_t n) override {
    CUDA_CHECK(cudaEventRecord(ready_, compute()));
    CUDA_CHECK(cudaStreamWaitEvent(side_, ready_, 0));
    NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, side_));
    pending_ = true;
  }
  void wait_all() override {
    if (!pending_) return;
    CUDA_CHECK(cudaEventRecord(done_, side_));
    CUDA_CHECK(cudaStreamWaitEvent(compute(), done_, 0));
    pending_ = false;
  }
  // Shards that differ in size (the flat buffer does not divide evenly) go as one reduce or
  // broadcast per rank inside a group.
  void reduce_scatter_sum(const float* in, float* out, const std::vector<size_t>& counts) override {
    if (equal(counts)) {
      NCCL_CHECK(ncclReduceScatter(in, out, counts[0], ncclFloat, ncclSum, comm_, compute()));
      return;
    }
    NCCL_CHECK(ncclGroupStart());
    size_t offset = 0;
    for (int r = 0; r < size(); r++) {
      NCCL_CHECK(ncclReduce(in + offset, out, counts[r], ncclFloat, ncclSum, r, comm_, compute()));
      offset += counts[r];
    }
    NCCL_CHECK(ncclGroupEnd());
  }
  void all_gather(const float* in, float* out, const std::vector<size_t>& counts) override {
    if (equal(counts)) {
      NCCL_CHECK(ncclAllGather(in, out, counts[0], ncclFloat, comm_, compute()));
      return;
    }
    NCCL_CHECK(ncclGroupStart());
    size_t offset = 0;
    for (int r = 0; r < size(); r++) {
      NCCL_CHECK(ncclBroadcast(in, out + offset, counts[r], ncclFloat, r, comm_, compute()));
      offset += counts[r];
    }
    NCCL_CHECK(ncclGroupEnd());
  }

  // Host values go over MPI.
  void all_reduce_sum(double* data, size_t n) override { host_.all_reduce_sum(data, n); }
  void all_reduce_max(double* data, size_t n) override { host_.all_reduce_max(data, n); }
  void broadcast(void* data, size_t bytes, int root) override { host_.broadcast(data, bytes, root); }
  void barrier() override { host_.barrier(); }

 private:
  cudaStream_t compute() const { return ctx_.cuda->stream; }

  Communicator& host_;
  const Context& ctx_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t side_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  bool pending_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host, const Context& ctx) {
  return std::make_unique<NcclCommunicator>(host, ctx);
}

}  // namespace t6
