#include "trainer/runtime.h"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <thread>

namespace t6 {

#define MPI_CHECK(call) mpi_check((call), #call, __FILE__, __LINE__)

static void mpi_check(int code, const char* call, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  char message[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, message, &len);
  throw std::runtime_error(fmt::format("MPI call {} failed at {}:{}: {}", call, file, line, std::string(message, len)));
}

void Communicator::broadcast_string(std::string& s, int root) {
  uint64_t n = s.size();
  broadcast(&n, sizeof(n), root);
  s.resize(n);
  if (n) broadcast(s.data(), n, root);
}

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void all_reduce_max(double*, size_t) override {}
  void start_all_reduce_sum(float*, size_t) override {}
  void wait_all() override {}
  void reduce_scatter_sum(const float* in, float* out, const std::vector<size_t>& counts) override {
    if (out != in) std::memmove(out, in, counts[0] * sizeof(float));
  }
  void all_gather(const float* in, float* out, const std::vector<size_t>& counts) override {
    if (out != in) std::memmove(out, in, counts[0] * sizeof(float));
  }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
};

// MPI counts are ints: large buffers go in pieces of at most 1 Gi elements (fewer with the
// test hook T6_TEST_MPI_MAX_COUNT, so the piecewise paths run in the tests on small buffers).
size_t max_count() {
  static const size_t n = std::getenv("T6_TEST_MPI_MAX_COUNT") ? std::strtoull(std::getenv("T6_TEST_MPI_MAX_COUNT"), nullptr, 10)
                                                              : size_t{1} << 30;
  return std::max<size_t>(n, 1);
}

// Ends the job when this rank has waited too long inside one collective: a peer that stopped
// (SIGSTOP, a hung device) or died without MPI noticing would otherwise leave every other rank
// waiting forever. A thread of its own looks twice a second; the collectives only set and
// clear a start time. Exiting (not MPI_Abort, which only the main thread may call here) makes
// mpirun end the other ranks.
class CollectiveWatchdog {
 public:
  CollectiveWatchdog(int rank, int size) : rank_(rank), size_(size) {}
  ~CollectiveWatchdog() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  void set_timeout(double seconds) {
    timeout_ns_ = (int64_t)(seconds * 1e9);
    if (seconds > 0 && !thread_.joinable()) thread_ = std::thread([this] { watch(); });
  }
  // While one lives, this rank is inside collective `what`.
  struct Inside {
    Inside(CollectiveWatchdog& w, const char* what) : w(w) {
      w.what_ = what;
      w.since_ns_ = now_ns();
    }
    ~Inside() { w.since_ns_ = 0; }
    CollectiveWatchdog& w;
  };

 private:
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const int64_t since = since_ns_, timeout = timeout_ns_;
      if (since == 0 || timeout <= 0 || now_ns() - since < timeout) continue;
      print_watchdog_verdict(rank_, size_,
                             fmt::format("no progress for {:.0f} s inside {} (train.collective_timeout_s): another "
                                         "rank has stopped, died or hangs", (now_ns() - since) / 1e9, what_.load()));
      std::_Exit(1);
    }
  }
  const int rank_, size_;
  std::atomic<int64_t> since_ns_{0}, timeout_ns_{0};
  std::atomic<const char*> what_{""};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

void print_watchdog_verdict(int rank, int size, const std::string& why) {
  fmt::print(stderr, "t6-train: error on rank {} of {}: {}; ending the job so that it can be restarted with --resume "
                     "auto\n", rank, size, why);
  std::fflush(stderr);
  std::fflush(stdout);
}

namespace {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));  // errors come back to MPI_CHECK
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    MPI_CHECK(MPI_Comm_free(&node));
    watchdog_ = std::make_unique<CollectiveWatchdog>(rank_, size_);
  }
  void set_collective_timeout(double seconds) override { watchdog_->set_timeout(seconds); }
  int local_rank() const override { return local_rank_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, size_t n) override { reduce(data, n, MPI_FLOAT, MPI_SUM); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE, MPI_SUM); }
  void all_reduce_max(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE, MPI_MAX); }
  void start_all_reduce_sum(float* data, size_t n) override {
    for (size_t done = 0; done < n; done += max_count()) {
      MPI_Request req;
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data + done, (int)std::min(max_count(), n - done), MPI_FLOAT, MPI_SUM,
                               comm_, &req));
      pending_.push_back(req);
    }
  }
  void wait_all() override {
    if (pending_.empty()) return;
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Waitall (the gradients' all-reduce)");
    MPI_CHECK(MPI_Waitall((int)pending_.size(), pending_.data(), MPI_STATUSES_IGNORE));
    pending_.clear();
  }
  // One collective while the whole buffer's counts and displacements fit MPI's int (every
  // training step); past that (T6-xl's AdamW moments, gathered for a checkpoint, come close)
  // each shard is reduced to, or broadcast from, its rank in pieces.
  void reduce_scatter_sum(const float* in, float* out, const std::vector<size_t>& counts) override {
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Reduce_scatter");
    if (fits_int(counts)) {
      std::vector<int> c(counts.begin(), counts.end());
      MPI_CHECK(MPI_Reduce_scatter(in, out, c.data(), MPI_FLOAT, MPI_SUM, comm_));
      return;
    }
    size_t offset = 0;
    for (int r = 0; r < size_; r++) {
      for (size_t done = 0; done < counts[r]; done += max_count())
        MPI_CHECK(MPI_Reduce(in + offset + done, r == rank_ ? out + done : nullptr,
                             (int)std::min(max_count(), counts[r] - done), MPI_FLOAT, MPI_SUM, r, comm_));
      offset += counts[r];
    }
  }
  void all_gather(const float* in, float* out, const std::vector<size_t>& counts) override {
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Allgatherv");
    if (fits_int(counts)) {
      std::vector<int> c(counts.begin(), counts.end()), displs(counts.size(), 0);
      for (size_t r = 1; r < counts.size(); r++) displs[r] = displs[r - 1] + c[r - 1];
      const void* send = in == out + displs[rank_] ? MPI_IN_PLACE : in;  // the shard already sits in place
      MPI_CHECK(MPI_Allgatherv(send, c[rank_], MPI_FLOAT, out, c.data(), displs.data(), MPI_FLOAT, comm_));
      return;
    }
    size_t offset = 0;
    for (int r = 0; r < size_; r++) {
      if (r == rank_ && in != out + offset) std::memmove(out + offset, in, counts[r] * sizeof(float));
      broadcast(out + offset, counts[r] * sizeof(float), r);
      offset += counts[r];
    }
  }
  void broadcast(void* data, size_t bytes, int root) override {
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Bcast");
    for (size_t done = 0; done < bytes; done += max_count())
      MPI_CHECK(MPI_Bcast(static_cast<char*>(data) + done, (int)std::min(max_count(), bytes - done), MPI_BYTE, root, comm_));
  }
  void barrier() override {
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Barrier");
    MPI_CHECK(MPI_Barrier(comm_));
  }

 private:
  static bool fits_int(const std::vector<size_t>& counts) {
    return std::accumulate(counts.begin(), counts.end(), size_t{0}) <= std::min<size_t>(INT_MAX, max_count());
  }
  void reduce(void* data, size_t n, MPI_Datatype type, MPI_Op op) {
    const CollectiveWatchdog::Inside inside(*watchdog_, "MPI_Allreduce");
    const size_t width = type == MPI_DOUBLE ? 8 : 4;
    for (size_t done = 0; done < n; done += max_count())
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + done * width, (int)std::min(max_count(), n - done),
                              type, op, comm_));
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  std::vector<MPI_Request> pending_;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

std::unique_ptr<Communicator> make_mpi_communicator(void* handle) {
  MPI_Comm comm;
  std::memcpy(&comm, &handle, sizeof(comm));
  return std::make_unique<MpiCommunicator>(comm);
}

static bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"})
    if (std::getenv(v)) return true;
  return false;
}

void init_runtime(Runtime& rt, int* argc, char*** argv) {
  if (!launched_by_mpi()) {
    rt.comm = make_local_communicator();
    return;
  }
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));  // only the main thread calls MPI
  rt.mpi = true;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rt.rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &rt.world));
  if (provided < MPI_THREAD_FUNNELED)  // (a library built without thread support)
    throw std::runtime_error(fmt::format(
        "this MPI library gives thread support level {} (MPI_THREAD_SINGLE); t6-train needs MPI_THREAD_FUNNELED: "
        "only its main thread calls MPI, but OpenMP and the checkpoint writer run threads beside it",
        provided));
  MPI_Comm world = MPI_COMM_WORLD;
  void* handle = nullptr;
  std::memcpy(&handle, &world, sizeof(world));
  rt.comm = make_mpi_communicator(handle);
}

void finalize_runtime(Runtime& rt) {
  rt.comm.reset();
  if (rt.mpi) MPI_Finalize();
}

void abort_job(const Runtime& rt, int code) {
  if (rt.mpi && rt.world > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace t6
