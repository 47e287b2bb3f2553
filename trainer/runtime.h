// The process's place in a job: rank and world size, and the Communicator that moves
// gradients and parameters between ranks. MPI over host buffers now; the interface is the one
// an NCCL communicator over device buffers implements too (trainer/nccl.h).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace t6 {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const { return 0; }  // rank among the processes on this machine
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  virtual void all_reduce_max(double* data, size_t n) = 0;
  // Starts a sum all-reduce of data[0, n) in place; wait_all() completes every started one.
  virtual void start_all_reduce_sum(float* data, size_t n) = 0;
  virtual void wait_all() = 0;
  // in: the whole buffer; out: this rank's range (counts[r] elements per rank, in rank order), summed.
  virtual void reduce_scatter_sum(const float* in, float* out, const std::vector<size_t>& counts) = 0;
  // in: this rank's range; out: the whole buffer, ranges in rank order.
  virtual void all_gather(const float* in, float* out, const std::vector<size_t>& counts) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // A rank that waits longer than this in one collective ends the job, saying where it waited
  // (0: never). MPI's and NCCL's communicators watch (NCCL's passes it on to its host one).
  virtual void set_collective_timeout(double /*seconds*/) {}

  void broadcast_string(std::string& s, int root);
};

// A world of one: every collective is the identity. Used when not launched by mpirun.
std::unique_ptr<Communicator> make_local_communicator();

// Ranks of an MPI communicator (an MPI_Comm handle, passed as its integer/pointer value).
std::unique_ptr<Communicator> make_mpi_communicator(void* mpi_comm_handle);

struct Runtime {
  int rank = 0, world = 1;  // (the rank on its machine, for the GPU: Communicator::local_rank)
  bool mpi = false;
  std::unique_ptr<Communicator> comm;
};

// MPI when launched by mpirun/srun (its environment variables are set), else a world of one.
// Fills rt as it goes, so that after an error part-way (MPI started) abort_job still ends the
// job through MPI and names the rank.
void init_runtime(Runtime& rt, int* argc, char*** argv);
void finalize_runtime(Runtime& rt);
// Ends the whole job after an error on this rank: no other rank is left waiting.
[[noreturn]] void abort_job(const Runtime& rt, int code);
// A collective watchdog's verdict (MPI's in runtime.cpp, NCCL's in nccl.cpp), on stderr and
// flushed, just before that watchdog's thread ends the process.
void print_watchdog_verdict(int rank, int size, const std::string& why);

}  // namespace t6
