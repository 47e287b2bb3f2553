// Helpers of the suites that run under mpirun (test_mpi, test_cuda_mpi), and their main():
// every rank runs every test, rank 0 reports, and any rank's failure fails the job.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <memory>
#include <string>

#include "test_util.h"
#include "trainer/runtime.h"

namespace t6::test {

inline int world_rank() {
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int w;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

inline std::unique_ptr<Communicator> communicator(MPI_Comm c) {
  void* handle = nullptr;
  std::memcpy(&handle, &c, sizeof(c));
  return make_mpi_communicator(handle);
}

// One directory for all ranks: rank 0 makes it and tells the others.
inline std::string shared_dir(const std::string& name) {
  std::string dir = world_rank() == 0 ? temp_dir(name) : "";
  communicator(MPI_COMM_WORLD)->broadcast_string(dir, 0);
  return dir;
}

inline int mpi_test_main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (world_rank() != 0) {  // one rank reports; the others' failures still fail the job
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS(), any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}

}  // namespace t6::test
