// Checkpoints: resuming gives bitwise the run that never stopped; crashes (kill -9) at any
// moment of a save never cost the previous checkpoint; damaged or foreign checkpoints are
// skipped or refused with a clear message; full or read-only disks leave the last one intact.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/h5.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/tools.h"
#include "trainer/config.h"
#include "trainer/train.h"

namespace t6 {
namespace {

namespace fs = std::filesystem;

// Fixed schedule length, so that runs of different max_iters share their learning rates.
std::vector<std::string> tiny_settings(const std::string& out, std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"optim.lr_decay_iters=40", "train.gradient_accumulation_steps=2",
                               "train.batch_size=4", "checkpoint.keep=0", "train.eval_interval=0",
                               "optim.warmup_iters=3"});
  return test::tiny_overrides(out, extra);
}

Config tiny(const std::string& out, std::vector<std::string> extra = {}) {
  return load_config(test::source_path("configs/demo.yaml"), tiny_settings(out, std::move(extra)));
}

// A training state of constant weights and moments for cfg's layout.
TrainingState constant_state(const ParamLayout& layout, const Config& cfg) {
  TrainingState s;
  s.params.assign(layout.total, 0.5f);
  s.adam_m.assign(layout.total, 0.25f);
  s.adam_v.assign(layout.total, 0.125f);
  s.config_yaml = cfg.to_yaml();
  return s;
}

std::vector<float> final_weights(const std::string& out_dir) { return test::flat_weights(out_dir + "/model.safetensors"); }

std::vector<double> metric_losses(const std::string& out_dir) {
  std::vector<double> losses;
  std::ifstream in(out_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) {
      EXPECT_EQ(j["step"].get<size_t>(), losses.size()) << "steps in order, each once";
      losses.push_back(j["loss"]);
    }
  }
  return losses;
}

// A write that cannot happen (here: a path through a regular file; read-only file systems and
// full disks alike) names the file and the system's reason.
TEST(CheckpointFiles, UnwritablePathsNameTheReason) {
  const std::string dir = test::temp_dir("ckpt_unwritable");
  test::write_file(dir + "/plain", "x");
  const std::string e = test::error_of([&] { write_file_atomically(dir + "/plain/config.yaml", "a: 1\n"); });
  EXPECT_NE(e.find(dir + "/plain/config.yaml.tmp: cannot create it: Not a directory"), std::string::npos) << e;
}

TEST(Resume, EqualsTheRunThatNeverStopped) {
  const std::string a = test::temp_dir("resume_straight"), b = test::temp_dir("resume_from_path"),
                    c = test::temp_dir("resume_auto");
  const TrainResult straight = train(tiny(a, {"train.max_iters=12", "checkpoint.interval=5"}));
  ASSERT_TRUE(fs::exists(a + "/ckpt_5") && fs::exists(a + "/ckpt_10") && fs::exists(a + "/ckpt_12"));

  // k steps + resume (from an explicit checkpoint, into another out_dir) + N−k steps.
  const TrainResult resumed = train(tiny(b, {"train.max_iters=12"}), a + "/ckpt_5");
  ASSERT_EQ(resumed.steps.size(), 7u);
  for (size_t i = 0; i < 7; i++) EXPECT_EQ(resumed.steps[i].loss, straight.steps[5 + i].loss) << "step " << 5 + i;
  EXPECT_EQ(final_weights(b), final_weights(a));  // bitwise

  // The same through --resume auto in one out_dir: a run stopped at 5, then continued.
  train(tiny(c, {"train.max_iters=5"}));
  train(tiny(c, {"train.max_iters=12"}), "auto");
  std::vector<double> want;
  for (const auto& s : straight.steps) want.push_back(s.loss);
  EXPECT_EQ(metric_losses(c), want);  // metrics.jsonl: every step once, same losses
  EXPECT_EQ(final_weights(c), final_weights(a));
}

// Resuming from an earlier checkpoint replaces the run that went on from it: its later
// checkpoints move to superseded/, so that a crash of the new run followed by --resume auto
// continues the new run, not the old one (which has the higher step numbers).
TEST(Resume, FromAnEarlierCheckpointSetsTheLaterOnesAside) {
  const std::string out = test::temp_dir("resume_replaces"), straight = test::temp_dir("resume_replaces_ref");
  train(tiny(out, {"train.max_iters=10", "checkpoint.interval=2", "optim.learning_rate=0.01"}));  // another run
  train(tiny(out, {"train.max_iters=7", "checkpoint.interval=1"}), out + "/ckpt_4");
  std::vector<std::string> names, aside;
  for (const auto& d : list_checkpoints(out)) names.push_back(fs::path(d).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt_7", "ckpt_6", "ckpt_5", "ckpt_4", "ckpt_2"}));
  for (const auto& d : list_checkpoints(out + "/superseded")) aside.push_back(fs::path(d).filename().string());
  EXPECT_EQ(aside, (std::vector<std::string>{"ckpt_10", "ckpt_8", "ckpt_6"}));
  std::string latest;
  std::ifstream(out + "/latest") >> latest;
  EXPECT_EQ(latest, "ckpt_7");
  // Continuing takes the new run's newest, and ends where the same steps from ckpt_4 end.
  const TrainResult continued = train(tiny(out, {"train.max_iters=9"}), "auto");
  ASSERT_FALSE(continued.steps.empty());
  EXPECT_EQ(continued.steps.front().step, 7);
  train(tiny(straight, {"train.max_iters=9"}), out + "/ckpt_4");
  EXPECT_EQ(final_weights(out), final_weights(straight));  // bitwise
}

// A run that gives up after skipped steps saves the state before the first of them, the very
// state a run without the fault saves at that step (weights, moments and data position), and
// continuing it repeats that run: with and without a checkpoint already due at that step.
TEST(Resume, GivingUpSavesTheStateBeforeTheSkippedSteps) {
  const std::string clean = test::temp_dir("giveup_clean");
  train(tiny(clean, {"train.max_iters=9", "checkpoint.interval=1"}));
  auto manifest = [](const std::string& dir) {
    auto j = nlohmann::json::parse(std::ifstream(dir + "/manifest.json"));
    for (const char* k : {"config", "world_size", "tensors"}) j.erase(k);
    return j;  // iter, adam_steps, loader position and seed, every shard's CRC-32s
  };
  for (const std::string interval : {"3", "1"}) {
    const std::string out = test::temp_dir("giveup_" + interval);
    setenv("T6_TEST_NAN_STEP", "5", 1);
    const TrainResult r = train(tiny(out, {"train.max_iters=9", "train.max_consecutive_skips=1",
                                           "checkpoint.interval=" + interval}));
    unsetenv("T6_TEST_NAN_STEP");
    ASSERT_TRUE(r.gave_up);
    EXPECT_EQ(r.last_checkpoint, out + "/ckpt_5") << "interval " << interval;
    EXPECT_EQ(manifest(out + "/ckpt_5"), manifest(clean + "/ckpt_5")) << "interval " << interval;
    EXPECT_EQ(train(tiny(out, {"train.max_iters=9"}), "auto").steps.front().step, 5);
    EXPECT_EQ(metric_losses(out), metric_losses(clean)) << "interval " << interval;
    EXPECT_EQ(final_weights(out), final_weights(clean)) << "interval " << interval;  // bitwise
  }
  // Three skipped steps in a row (5, 6, 7) with a save due during them (ckpt_6, past step 5's
  // batch): giving up moves it aside, so --resume auto takes the state before step 5.
  {
    const std::string out = test::temp_dir("giveup_streak");
    setenv("T6_TEST_NAN_STEP", "5", 1);
    setenv("T6_TEST_NAN_STEPS", "3", 1);
    const TrainResult r = train(tiny(out, {"train.max_iters=9", "train.max_consecutive_skips=3",
                                           "checkpoint.interval=2"}));
    unsetenv("T6_TEST_NAN_STEP");
    unsetenv("T6_TEST_NAN_STEPS");
    ASSERT_TRUE(r.gave_up);
    EXPECT_EQ(r.skipped, 3);
    EXPECT_EQ(manifest(out + "/ckpt_5"), manifest(clean + "/ckpt_5"));
    EXPECT_TRUE(fs::exists(out + "/superseded/ckpt_6"));
    std::string latest;
    std::ifstream(out + "/latest") >> latest;
    EXPECT_EQ(latest, "ckpt_5");
    EXPECT_EQ(train(tiny(out, {"train.max_iters=9"}), "auto").steps.front().step, 5);
    EXPECT_EQ(final_weights(out), final_weights(clean));  // bitwise
  }
  // Giving up at the first step after resuming saves that checkpoint's iteration again: the new
  // directory is swapped in for the old one, and nothing else is left behind.
  const std::string again = test::temp_dir("giveup_again");
  train(tiny(again, {"train.max_iters=5"}));
  setenv("T6_TEST_NAN_STEP", "5", 1);
  const TrainResult r = train(tiny(again, {"train.max_iters=9", "train.max_consecutive_skips=1"}), "auto");
  unsetenv("T6_TEST_NAN_STEP");
  ASSERT_TRUE(r.gave_up);
  EXPECT_EQ(manifest(again + "/ckpt_5"), manifest(clean + "/ckpt_5"));
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(again)) entries.push_back(e.path().filename().string());
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{".lock", "ckpt_5", "config.yaml", "latest", "metrics.jsonl",
                                               "model.safetensors"}));
}

// A run that fails before writing anything leaves no out_dir it made itself.
TEST(Resume, ABadResumePathLeavesNoNewOutDirBehind) {
  const std::string out = test::temp_dir("bad_resume") + "/run";
  const std::string e = test::error_of([&] { train(tiny(out, {"train.max_iters=2"}), "/no/such/ckpt_4"); });
  EXPECT_NE(e.find("/no/such/ckpt_4"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out));
}

TEST(Resume, AutoWithoutCheckpointsStartsFresh) {
  const std::string out = test::temp_dir("resume_fresh");
  const TrainResult r = train(tiny(out, {"train.max_iters=2"}), "auto");
  EXPECT_EQ(r.steps.front().step, 0);
}

pid_t spawn_trainer(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    std::string bin = T6_TRAIN_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    freopen(log.c_str(), "w", stdout);
    freopen(log.c_str(), "a", stderr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// The same run as tiny(out, extra), as t6-train's command line.
std::vector<std::string> cli_args(const std::string& out, std::vector<std::string> extra) {
  std::vector<std::string> args = {"--config", test::source_path("configs/demo.yaml")};
  for (const std::string& o : tiny_settings(out, std::move(extra))) {
    args.push_back("--set");
    args.push_back(o);
  }
  return args;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(Resume, SigtermSavesAndExitsCleanly) {
  const std::string out = test::temp_dir("sigterm"), straight = test::temp_dir("sigterm_straight");
  auto args = cli_args(out, {"train.max_iters=40", "checkpoint.interval=0"});
  const pid_t pid = spawn_trainer(args, out + ".log");
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (metric_losses(out).size() < 3) {  // fail, not hang, if the trainer dies or stalls
    ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "the trainer ended early:\n" << read_file(out + ".log");
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << read_file(out + ".log");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << read_file(out + ".log");
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(out + ".log");
  const std::string log = read_file(out + ".log");
  EXPECT_NE(log.find("stopped by SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("--resume auto"), std::string::npos) << log;
  const auto ckpts = list_checkpoints(out);
  ASSERT_EQ(ckpts.size(), 1u);
  const int64_t k = std::stoll(fs::path(ckpts[0]).filename().string().substr(5));
  EXPECT_GE(k, 3);

  // Continuing to k+2 steps equals a straight run of k+2 steps.
  const std::string n = "train.max_iters=" + std::to_string(k + 2);
  train(tiny(out, {n}), "auto");
  train(tiny(straight, {n}));
  EXPECT_EQ(final_weights(out), final_weights(straight));
}

TEST(Crash, KillNineDuringSavesNeverLosesTheLastCheckpoint) {
  const std::string out = test::temp_dir("kill9"), straight = test::temp_dir("kill9_straight");
  const auto args_base = cli_args(out, {"train.max_iters=200", "checkpoint.interval=1", "checkpoint.keep=2"});
  std::mt19937 rng(11);
  int kills = 0;
  for (int round = 0; round < 8; round++) {
    auto args = args_base;
    args.push_back("--resume");
    args.push_back("auto");
    const pid_t pid = spawn_trainer(args, out + ".log");
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 400));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    kills += WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;  // it was still running: a real crash
    // The newest complete checkpoint loads, and `latest` names an existing one.
    const auto ckpts = list_checkpoints(out);
    if (ckpts.empty()) continue;  // killed before the first save
    const Config cfg = tiny(out);
    EXPECT_NO_THROW(load_checkpoint(ckpts.front(), make_layout(cfg.model))) << "round " << round;
    if (fs::exists(out + "/latest")) {
      std::string name;
      std::ifstream(out + "/latest") >> name;
      EXPECT_TRUE(fs::exists(out + "/" + name)) << "latest -> " << name;
    }
  }
  EXPECT_GE(kills, 4);
  // Finishing the crashed run gives bitwise the run that never crashed.
  train(tiny(out, {"train.max_iters=200", "checkpoint.interval=1", "checkpoint.keep=2"}), "auto");
  train(tiny(straight, {"train.max_iters=200"}));
  EXPECT_EQ(final_weights(out), final_weights(straight));
  EXPECT_EQ(metric_losses(out), metric_losses(straight));
}

// Three checkpoints (2, 4, 6) of a short run, to damage.
std::string run_with_checkpoints(const std::string& name) {
  const std::string out = test::temp_dir(name);
  train(tiny(out, {"train.max_iters=6", "checkpoint.interval=2"}));
  return out;
}

std::string resume_error(const Config& cfg, const std::string& resume) {
  return test::error_of([&] { train(cfg, resume); });
}

TEST(Damaged, TruncatedCheckpointIsSkippedByAutoAndRefusedByPath) {
  const std::string out = run_with_checkpoints("truncated");
  const std::string shard = out + "/ckpt_6/shard_00000.bin";
  fs::resize_file(shard, fs::file_size(shard) / 2);
  testing::internal::CaptureStderr();
  const TrainResult r = train(tiny(out, {"train.max_iters=8", "checkpoint.interval=2"}), "auto");
  const std::string warnings = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.steps.front().step, 4);  // resumed from ckpt_4
  EXPECT_NE(warnings.find("skipping " + out + "/ckpt_6"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("truncated or corrupt"), std::string::npos) << warnings;

  const std::string again = run_with_checkpoints("truncated_path");
  fs::resize_file(again + "/ckpt_6/manifest.json", 100);
  const std::string err = resume_error(tiny(again, {"train.max_iters=8"}), again + "/ckpt_6");
  EXPECT_NE(err.find("ckpt_6/manifest.json"), std::string::npos) << err;
  EXPECT_NE(err.find("truncated or corrupt"), std::string::npos) << err;
}

TEST(Damaged, FlippedByteFailsTheChecksum) {
  const std::string out = run_with_checkpoints("flipped");
  const std::string file = out + "/ckpt_6/shard_00000.bin";
  {  // one bit of the second moments (the third array of the shard)
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    const std::streamoff at = (std::streamoff)(fs::file_size(file) / 3 * 2 + 101);
    io.seekg(at);
    char c;
    io.read(&c, 1);
    c ^= 0x10;
    io.seekp(at);
    io.write(&c, 1);
  }
  const Config cfg = tiny(out, {"train.max_iters=8"});
  const std::string err = test::error_of([&] { load_checkpoint(out + "/ckpt_6", make_layout(cfg.model)); });
  EXPECT_NE(err.find("shard_00000.bin: adam_v fails its checksum"), std::string::npos) << err;
  testing::internal::CaptureStderr();
  EXPECT_EQ(train(cfg, "auto").steps.front().step, 4);  // auto falls back to ckpt_4
  EXPECT_NE(testing::internal::GetCapturedStderr().find("fails its checksum"), std::string::npos);
}

TEST(Damaged, WrongFormatVersionIsRefused) {
  const std::string out = run_with_checkpoints("version");
  const std::string path = out + "/ckpt_6/manifest.json";
  std::string text;
  {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const size_t at = text.find("\"format_version\": 2");
  ASSERT_NE(at, std::string::npos) << text.substr(0, 200);
  text.replace(at, std::string("\"format_version\": 2").size(), "\"format_version\": 99");
  std::ofstream(path) << text;
  const std::string err = resume_error(tiny(out, {"train.max_iters=8"}), out + "/ckpt_6");
  EXPECT_NE(err.find("checkpoint format version 99, this build reads versions 1 and 2"), std::string::npos) << err;
}

// Checkpoints of format 1 (one state.h5, written before the sharded format) still load: a tiny
// run's checkpoint at its last step, made by commit f322761, against the weights it saved.
TEST(Formats, VersionOneCheckpointsStillLoad) {
  const std::string dir = test::source_path("tests/fixtures/ckpt_v1");
  const WeightsAndConfig w = load_weights_and_config(dir);
  EXPECT_EQ(w.config.model.n_embd, 16);
  const ParamLayout layout = make_layout(w.config.model);
  const TrainingState s = load_checkpoint(dir, layout);
  EXPECT_EQ(s.iter, 3);
  EXPECT_EQ(s.params, load_weights(test::source_path("tests/fixtures/ckpt_v1_weights.safetensors"), layout));
  EXPECT_EQ(s.adam_m.size(), layout.total);
  EXPECT_EQ(w.params, s.params);
}

// Checkpoints written before the layout had padding entries (their manifests list none, their
// arrays hold none) still load, by name, with the padding zero, whole or as a ZeRO rank's range
// of the moments; and resuming from one gives bitwise the run that never stopped. (q_rank 3:
// 140 q/k/v rows, so both kinds of padding are there.)
TEST(Formats, CheckpointsWithoutPaddingEntriesStillLoadAndResume) {
  const std::string a = test::temp_dir("pad_straight"), old = test::temp_dir("pad_old"),
                    b = test::temp_dir("pad_resumed");
  const std::vector<std::string> q3 = {"model.q_rank=3"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), q3.begin(), q3.end());
    return extra;
  };
  const TrainResult straight = train(tiny(a, with({"train.max_iters=6", "checkpoint.interval=3"})));
  const ParamLayout layout = make_layout(tiny(a, q3).model), packed = test::without_padding(layout);
  ASSERT_NE(layout.find(layer_param(0, "attn.qkv_padding")), nullptr);
  ASSERT_NE(layout.find(layer_param(0, "mlp.fc_padding")), nullptr);
  const TrainingState now = load_checkpoint(a + "/ckpt_3", layout);

  // ckpt_3 as a build before the padding entries wrote it.
  TrainingState before = now;
  before.params = test::without_padding(layout, now.params);
  before.adam_m = test::without_padding(layout, now.adam_m);
  before.adam_v = test::without_padding(layout, now.adam_v);
  const std::string dir = save_checkpoint(old, packed, before, 0);
  const auto manifest = nlohmann::json::parse(read_file(dir + "/manifest.json"));
  ASSERT_EQ(manifest["total"].get<size_t>(), packed.total);
  ASSERT_EQ(manifest["tensors"].size(), packed.params.size());
  ASSERT_LT(packed.total, layout.total);

  const TrainingState loaded = load_checkpoint(dir, layout);
  EXPECT_EQ(loaded.params, now.params);  // (the padding zero in both)
  EXPECT_EQ(loaded.adam_m, now.adam_m);
  EXPECT_EQ(loaded.adam_v, now.adam_v);
  const size_t begin = layout.total / 3, count = layout.total / 2;  // across several padding entries
  const TrainingState part = load_checkpoint(dir, layout, begin, count);
  EXPECT_EQ(part.adam_m, std::vector<float>(now.adam_m.begin() + begin, now.adam_m.begin() + begin + count));
  EXPECT_EQ(part.adam_v, std::vector<float>(now.adam_v.begin() + begin, now.adam_v.begin() + begin + count));

  const TrainResult resumed = train(tiny(b, with({"train.max_iters=6"})), dir);
  ASSERT_EQ(resumed.steps.size(), 3u);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(resumed.steps[i].loss, straight.steps[3 + i].loss) << "step " << 3 + i;
  EXPECT_EQ(final_weights(b), final_weights(a));  // bitwise
}

// A checkpoint's tensors are matched to the model's by name and shape: one it lacks is refused,
// naming it.
TEST(Damaged, CheckpointLackingATensorIsRefused) {
  const std::string out = test::temp_dir("lacking");
  const Config cfg = tiny(out);
  const ParamLayout layout = make_layout(cfg.model);
  TrainingState s = constant_state(layout, cfg);
  ParamLayout renamed = layout;
  renamed.params.clear();
  for (ParamInfo p : layout.params) {
    if (p.name == "transformer.h.0.attn.c_qkv.W_A_q.weight") p.name = "transformer.h.0.attn.c_qkv.W_A_z.weight";
    renamed.params.push_back(p);
  }
  const std::string dir = save_checkpoint(out, renamed, s, 0);
  const std::string err = test::error_of([&] { load_checkpoint(dir, layout); });
  EXPECT_NE(err.find("a checkpoint of another model (its tensors differ from the model's: it has "
                     "transformer.h.0.attn.c_qkv.W_A_z.weight, the model has not)"), std::string::npos) << err;
}

// Saves are written beside training: each is committed later (at a step boundary where its
// write is done, or at the next save), says how long training paused to queue its copy and how long
// the write took, and every one of them ends up complete and loadable.
TEST(Formats, SavesAreWrittenBesideTrainingAndAllComplete) {
  const std::string out = test::temp_dir("async_saves");
  testing::internal::CaptureStdout();
  train(tiny(out, {"train.max_iters=9", "checkpoint.interval=2"}));
  const std::string log = testing::internal::GetCapturedStdout();
  const ParamLayout layout = make_layout(tiny(out).model);
  for (int it : {2, 4, 6, 8, 9}) {
    const std::string dir = out + "/ckpt_" + std::to_string(it);
    EXPECT_NE(log.find("saved checkpoint " + dir + " (training paused "), std::string::npos) << log;
    EXPECT_EQ(load_checkpoint(dir, layout).iter, it);
  }
  EXPECT_NE(log.find("written beside it within"), std::string::npos) << log;
  EXPECT_LT(log.find("ckpt_2 (training"), log.find("ckpt_4 (training"));  // committed in order
}

// A ZeRO rank keeps only its shard of the moments when it loads (the whole state would not fit
// 8 ranks of a node for T6-xl), yet every byte is still checked: a flipped bit outside the kept
// range fails too.
TEST(Formats, PartialLoadsKeepOneRangeOfTheMomentsAndCheckEverything) {
  const std::string out = test::temp_dir("partial_load");
  train(tiny(out, {"train.max_iters=2"}));
  const ParamLayout layout = make_layout(tiny(out).model);
  const TrainingState full = load_checkpoint(out + "/ckpt_2", layout);
  const size_t begin = layout.total / 3, count = layout.total / 4;
  const TrainingState part = load_checkpoint(out + "/ckpt_2", layout, begin, count);
  EXPECT_EQ(part.params, full.params);
  EXPECT_EQ(part.moments_begin, begin);
  EXPECT_EQ(part.adam_m, std::vector<float>(full.adam_m.begin() + begin, full.adam_m.begin() + begin + count));
  EXPECT_EQ(part.adam_v, std::vector<float>(full.adam_v.begin() + begin, full.adam_v.begin() + begin + count));
  {  // the first moment of number 0, outside the kept range
    const std::string file = out + "/ckpt_2/shard_00000.bin";
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    const std::streamoff at = (std::streamoff)(layout.total * sizeof(float));
    char c;
    io.seekg(at);
    io.read(&c, 1);
    c ^= 0x01;
    io.seekp(at);
    io.write(&c, 1);
  }
  const std::string err = test::error_of([&] { load_checkpoint(out + "/ckpt_2", layout, begin, count); });
  EXPECT_NE(err.find("adam_m fails its checksum"), std::string::npos) << err;
}

TEST(Damaged, AnotherModelShapeIsRefusedListingTheKeys) {
  const std::string out = run_with_checkpoints("other_model");
  const std::string err = resume_error(tiny(out, {"train.max_iters=8", "model.n_layer=3", "model.n_head=2"}), "auto");
  EXPECT_NE(err.find("holds another model"), std::string::npos) << err;
  EXPECT_NE(err.find("model.n_layer: 2 → 3"), std::string::npos) << err;
  EXPECT_NE(err.find("model.n_head: 4 → 2"), std::string::npos) << err;
}

TEST(Damaged, MissingLatestDoesNotMatter) {
  const std::string out = run_with_checkpoints("no_latest");
  fs::remove(out + "/latest");
  EXPECT_EQ(train(tiny(out, {"train.max_iters=8", "checkpoint.interval=2"}), "auto").steps.front().step, 6);
}

TEST(Damaged, KeepDeletesOnlyOlderCheckpoints) {
  const std::string out = test::temp_dir("keep");
  train(tiny(out, {"train.max_iters=9", "checkpoint.interval=2", "checkpoint.keep=2"}));
  std::vector<std::string> names;
  for (const auto& d : list_checkpoints(out)) names.push_back(fs::path(d).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt_9", "ckpt_8"}));
  std::string latest;
  std::ifstream(out + "/latest") >> latest;
  EXPECT_EQ(latest, "ckpt_9");
}

// A small tmpfs stands in for a full or read-only disk (needs root; skipped otherwise).
TEST(Disk, FullOrReadOnlyFilesystemKeepsThePreviousCheckpoint) {
  const std::string mnt = test::temp_dir("smallfs");
  const Config cfg = tiny(mnt + "/out");
  const ParamLayout layout = make_layout(cfg.model);
  TrainingState s = constant_state(layout, cfg);
  const uint64_t bytes = layout.total * 12 + (64 << 10);  // about one checkpoint and a half, in 4 KB pages
  const std::string opts = "size=" + std::to_string((bytes * 3 / 2) / 4096 * 4096);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, opts.c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); needs root";
  struct Unmount {
    std::string dir;
    ~Unmount() { umount(dir.c_str()); }
  } unmount{mnt};
  s.iter = 1;
  ASSERT_NO_THROW(save_checkpoint(mnt + "/out", layout, s, 1));
  s.iter = 2;
  const std::string full = test::error_of([&] { save_checkpoint(mnt + "/out", layout, s, 1); });
  EXPECT_NE(full.find("saving checkpoint " + mnt + "/out/ckpt_2 failed"), std::string::npos) << full;
  EXPECT_NE(full.find("No space left on device"), std::string::npos) << full;
  EXPECT_EQ(list_checkpoints(mnt + "/out"), std::vector<std::string>{mnt + "/out/ckpt_1"});
  EXPECT_FALSE(fs::exists(mnt + "/out/.ckpt_2.tmp"));
  EXPECT_EQ(load_checkpoint(mnt + "/out/ckpt_1", layout).params, s.params);

  ASSERT_EQ(mount("tmpfs", mnt.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, opts.c_str()), 0) << std::strerror(errno);
  s.iter = 3;
  const std::string ro = test::error_of([&] { save_checkpoint(mnt + "/out", layout, s, 1); });
  EXPECT_NE(ro.find("Read-only file system"), std::string::npos) << ro;
  EXPECT_EQ(load_checkpoint(mnt + "/out/ckpt_1", layout).iter, 1);
}

TEST(Resume, AFreshRunRefusesAnOutDirWithCheckpoints) {
  const std::string out = run_with_checkpoints("fresh_over_old");
  const std::string err = test::error_of([&] { train(tiny(out, {"train.max_iters=8"})); });
  EXPECT_NE(err.find("already holds checkpoints of an earlier run (newest: " + out + "/ckpt_6)"), std::string::npos) << err;
  EXPECT_NE(err.find("--resume auto"), std::string::npos) << err;
  EXPECT_EQ(list_checkpoints(out).size(), 3u);  // untouched
}

TEST(Resume, ChangesThatWouldMisplaceTheDataStreamAreRefused) {
  const std::string out = run_with_checkpoints("stream_keys");
  const std::string err = resume_error(tiny(out, {"train.max_iters=8", "train.batch_size=8", "data.seed=9"}), "auto");
  EXPECT_NE(err.find("cannot continue its data stream"), std::string::npos) << err;
  EXPECT_NE(err.find("train.batch_size: 4 → 8"), std::string::npos) << err;
  EXPECT_NE(err.find("data.seed: 1337 → 9"), std::string::npos) << err;
}

}  // namespace
}  // namespace t6
