// NCCL between the GPUs of a job: one communicator per rank, its unique id broadcast over
// the host communicator (MPI). Gradient all-reduces started during backward run on a stream
// of their own, each ordered after the work already queued on the compute stream (an event),
// so they overlap the layers still to come; wait_all() makes the compute stream wait for them.
// A watchdog thread ends the job when a collective makes no progress or NCCL reports an error.
#include "trainer/nccl.h"

#include <fmt/format.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

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

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// NCCL's collectives run on the GPU: a peer that stopped (SIGSTOP, a hung GPU, a lost link)
// leaves this rank's collective kernel waiting, and the host blocked in whatever waits for the
// stream next, with no error ever returned. The watchdog's thread looks twice a second: at
// NCCL's asynchronous error state, and at the newest collective, timed from the start of its
// call (a blocking communicator may wait on the host too, connecting to a peer) until an event
// recorded after it completes. Past train.collective_timeout_s, or on an error, it says where
// this rank waited, aborts the communicator and exits, so that mpirun ends the other ranks.
class NcclWatchdog {
 public:
  NcclWatchdog(ncclComm_t comm, int device, int rank, int size) : comm_(comm), device_(device), rank_(rank), size_(size) {
    CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    thread_ = std::thread([this] { watch(); });
  }
  ~NcclWatchdog() {
    stop_ = true;
    thread_.join();
    cudaEventDestroy(event_);
  }
  void set_timeout(double seconds) { timeout_ns_ = (int64_t)(seconds * 1e9); }
  // Around each NCCL call: started before it, enqueued (with its stream) after it.
  void started(const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    what_ = what, since_ns_ = now_ns(), recorded_ = false;
  }
  void enqueued(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    CUDA_CHECK(cudaEventRecord(event_, stream));
    recorded_ = true;
  }
  // A call that failed (its error propagates): nothing of it is in flight to time.
  void failed() {
    std::lock_guard<std::mutex> lock(mutex_);
    since_ns_ = 0;
  }

 private:
  void watch() {
    if (cudaSetDevice(device_) != cudaSuccess) return;  // (the trainer's own calls will say why)
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess && state != ncclInProgress)
        fail(fmt::format("NCCL reported an error: {} ({})", ncclGetErrorString(state), ncclGetLastError(comm_)));
      std::lock_guard<std::mutex> lock(mutex_);
      if (since_ns_ == 0) continue;
      if (recorded_) {
        const cudaError_t q = cudaEventQuery(event_);
        if (q == cudaSuccess) {
          since_ns_ = 0;
          continue;
        }
        if (q != cudaErrorNotReady) fail(fmt::format("the GPU failed: {}", cudaGetErrorString(q)));
      }
      const int64_t waited = now_ns() - since_ns_, timeout = timeout_ns_;
      if (timeout > 0 && waited >= timeout)
        fail(fmt::format("no progress for {:.0f} s inside NCCL {} (train.collective_timeout_s): another rank has "
                         "stopped, died or hangs, or a GPU hangs", waited / 1e9, what_));
    }
  }
  [[noreturn]] void fail(const std::string& why) {
    print_watchdog_verdict(rank_, size_, why);
    // Aborting releases the collective kernels and NCCL's threads; should it hang itself, the
    // process ends anyway.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::seconds(10));
      std::_Exit(1);
    }).detach();
    ncclCommAbort(comm_);
    std::_Exit(1);
  }

  const ncclComm_t comm_;
  const int device_, rank_, size_;
  cudaEvent_t event_ = nullptr;
  std::mutex mutex_;  // guards what follows and the event's record and query
  const char* what_ = "";
  int64_t since_ns_ = 0;  // the newest collective's start; 0 once it completed
  bool recorded_ = false;
  std::atomic<int64_t> timeout_ns_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Test hook (tests/gpu_nccl_hang.sh): on rank T6_TEST_FAULT_RANK, the T6_TEST_NCCL_STALL_CALL-th
// collective finds its stream held for two minutes, as behind a hung kernel.
int stall_call(int rank) {
  const char* call = std::getenv("T6_TEST_NCCL_STALL_CALL");
  const char* fault_rank = std::getenv("T6_TEST_FAULT_RANK");
  return call && fault_rank && std::atoi(fault_rank) == rank ? std::atoi(call) : 0;
}
void CUDART_CB hold_stream(void*) { std::this_thread::sleep_for(std::chrono::seconds(120)); }

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
    watchdog_ = std::make_unique<NcclWatchdog>(comm_, ctx.cuda->device, host.rank(), host.size());
    stall_call_ = stall_call(host.rank());
  }
  ~NcclCommunicator() override {
    // Best effort. While an error propagates, a collective may still wait for a peer that is
    // gone, and finishing it (or destroying the communicator, which waits for it) would hang:
    // abort instead.
    watchdog_.reset();
    if (std::uncaught_exceptions() > 0) {
      ncclCommAbort(comm_);
    } else {
      cudaStreamSynchronize(side_);
      ncclCommDestroy(comm_);
    }
    cudaEventDestroy(ready_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(side_);
  }

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  int local_rank() const override { return host_.local_rank(); }

  void set_collective_timeout(double seconds) override {
    watchdog_->set_timeout(seconds);
    host_.set_collective_timeout(seconds);
  }

  // Device buffers, on the compute stream.
  void all_reduce_sum(float* data, size_t n) override {
    watched("all-reduce", compute(),
            [&] { NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, compute())); });
  }
  void start_all_reduce_sum(float* data, size_t n) override {
    CUDA_CHECK(cudaEventRecord(ready_, compute()));
    CUDA_CHECK(cudaStreamWaitEvent(side_, ready_, 0));
    watched("all-reduce of the gradients", side_,
            [&] { NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, side_)); });
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
    watched("reduce-scatter", compute(), [&] { reduce_scatter(in, out, counts); });
  }
  void all_gather(const float* in, float* out, const std::vector<size_t>& counts) override {
    watched("all-gather", compute(), [&] { gather(in, out, counts); });
  }

  // Host values go over MPI.
  void all_reduce_sum(double* data, size_t n) override { host_.all_reduce_sum(data, n); }
  void all_reduce_max(double* data, size_t n) override { host_.all_reduce_max(data, n); }
  void broadcast(void* data, size_t bytes, int root) override { host_.broadcast(data, bytes, root); }
  void barrier() override { host_.barrier(); }

 private:
  cudaStream_t compute() const { return ctx_.cuda->stream; }
  // Runs a collective's NCCL calls inside the watchdog's clock, which stops at an event queued
  // after them (the test hook may hold the stream first).
  template <class Calls>
  void watched(const char* what, cudaStream_t stream, const Calls& calls) {
    if (stall_call_ > 0 && ++calls_ == stall_call_) CUDA_CHECK(cudaLaunchHostFunc(stream, hold_stream, nullptr));
    watchdog_->started(what);
    try {
      calls();
    } catch (...) {
      watchdog_->failed();
      throw;
    }
    watchdog_->enqueued(stream);
  }

  void reduce_scatter(const float* in, float* out, const std::vector<size_t>& counts) {
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
  void gather(const float* in, float* out, const std::vector<size_t>& counts) {
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

  Communicator& host_;
  const Context& ctx_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t side_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  bool pending_ = false;
  std::unique_ptr<NcclWatchdog> watchdog_;
  int stall_call_ = 0, calls_ = 0;  // the test hook's
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host, const Context& ctx) {
  return std::make_unique<NcclCommunicator>(host, ctx);
}

}  // namespace t6
