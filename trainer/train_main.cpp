// t6-train: trains T6 as a config file says.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "trainer/args.h"
#include "trainer/config.h"
#include "trainer/runtime.h"
#include "trainer/train.h"

static const char* kUsage =
    "usage: t6-train --config FILE.yaml [--set section.key=value ...] [--resume auto|CKPT_DIR] [--benchmark N [--profile]]\n"
    "  --config FILE   the experiment (configs/README.md lists every key)\n"
    "  --set K=V       override one key, e.g. --set train.max_iters=100 --set optim.learning_rate=1e-3\n"
    "  --resume auto   continue from the newest valid checkpoint in train.out_dir (or start fresh)\n"
    "  --resume DIR    continue from that checkpoint (out_dir/ckpt_<iter>)\n"
    "  --benchmark N   time N steps on random tokens (no data read, nothing written) and print\n"
    "                  tokens/s, ms/step, MFU and memory (launch/bench.sh CONFIG wraps this)\n"
    "  --profile       with --benchmark on a GPU: also the device time of each op\n";

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // one log line at a time, also into files and pipes
  t6::Runtime rt;
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  t6::Benchmark benchmark;
  try {
    t6::init_runtime(rt, &argc, &argv);
    t6::Args args(argc, argv);
    while (args.next()) {
      if (args.help()) { fmt::print("{}", kUsage); return 0; }
      else if (args.is("--config")) config = args.value();
      else if (args.is("--set")) overrides.push_back(args.value());
      else if (args.is("--resume")) resume = args.value();
      else if (args.is("--profile")) benchmark.profile = true;
      else if (args.is("--benchmark")) benchmark.steps = args.integer(3, 1LL << 40);
      else args.unknown();
    }
    if (config.empty()) throw std::invalid_argument("--config FILE.yaml is required");
    if (benchmark.profile && benchmark.steps == 0) throw std::invalid_argument("--profile needs --benchmark N");
    if (benchmark.steps > 0 && !resume.empty())
      throw std::invalid_argument("--benchmark runs on random tokens from a fresh model; it cannot --resume");
    const t6::TrainResult r = t6::train(t6::load_config(config, overrides), resume, rt.comm.get(), benchmark);
    t6::finalize_runtime(rt);
    return r.gave_up ? 3 : 0;
  } catch (const std::exception& e) {
    // Any rank may fail; it names itself and ends the whole job, so no rank waits forever. A bad
    // argument or config (invalid_argument) is met by every rank alike and would be printed once
    // per rank: rank 0 reports it at once and its abort ends the others, which wait a moment
    // first. Any other error is reported at once: it may be this rank's alone, and waiting would
    // let another rank's watchdog end the job with a vaguer message first.
    const bool shared_error = dynamic_cast<const std::invalid_argument*>(&e) != nullptr;
    if (shared_error && rt.world > 1 && rt.rank != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
    if (rt.world > 1) fmt::print(stderr, "t6-train: error on rank {} of {}: {}\n", rt.rank, rt.world, e.what());
    else fmt::print(stderr, "t6-train: error: {}\n", e.what());
    if (config.empty() && rt.rank == 0) fmt::print(stderr, "{}", kUsage);
    std::fflush(stderr);
    t6::abort_job(rt, 1);
  }
}
