// Config files: every key typed and checked, errors that name the key (with a suggestion for
// a misspelled one), --set overrides, path resolution and the effective-config round trip.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"
#include "trainer/args.h"
#include "trainer/config.h"

namespace t6 {
namespace {

const char* kMinimal = "data:\n  train: shards/train_*.h5\n";

std::string write_config(const std::string& name, const std::string& text) {
  const std::string dir = test::temp_dir("config_" + name);
  return test::write_file(dir + "/" + name + ".yaml", text);
}

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  const std::string path = write_config("err", text);
  try {
    load_config(path, overrides);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsAndPathResolution) {
  const std::string path = write_config("defaults", std::string(kMinimal) + "train:\n  max_iters: 77\n");
  const Config c = load_config(path);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  ASSERT_EQ(c.data.train.size(), 1u);
  EXPECT_EQ(c.data.train[0], dir + "/shards/train_*.h5");  // relative to the config file
  EXPECT_EQ(c.optim.schedule.decay_iters, 77);            // lr_decay_iters defaults to max_iters
  EXPECT_EQ(c.train.out_dir, (std::filesystem::current_path() / "out/defaults").string());  // cwd, not the file
  EXPECT_EQ(c.model.attention, Attention::tpa);            // T6-small TPA by default
  EXPECT_EQ(c.model.n_head, 34);
  EXPECT_EQ(c.optim.schedule.kind, Schedule::cosine);
}

TEST(Config, ShortRunsBelowTheWarmupAreValid) {
  // lr_decay_iters, when unset, is max(max_iters, warmup_iters): a 20-step try of a config with
  // 50 warmup steps is allowed (its learning rate just never reaches the peak).
  const Config c = load_config(test::source_path("configs/demo.yaml"), {"train.max_iters=20"});
  EXPECT_EQ(c.optim.schedule.decay_iters, 50);
}

TEST(Config, GoldenConfigReadsEveryKeyItSets) {
  const Config c = load_config(test::source_path("tests/golden/gqa/config.yaml"));
  EXPECT_EQ(c.model.attention, Attention::gqa);
  EXPECT_EQ(c.model.n_kv_head, 2);
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.model.init_from, test::source_path("tests/golden/gqa/init.safetensors"));
  EXPECT_EQ(c.train.gradient_accumulation_steps, 2);
  EXPECT_DOUBLE_EQ(c.optim.schedule.lr, 0.003);
  EXPECT_DOUBLE_EQ(c.optim.grad_clip, 0.5);
  EXPECT_EQ(c.optim.schedule.kind, Schedule::constant);
  EXPECT_FALSE(c.data.shuffle);
}

TEST(Config, OverridesApplyAfterTheFile) {
  const std::string path = write_config("over", std::string(kMinimal) + "train:\n  batch_size: 4\n");
  const Config c = load_config(path, {"train.batch_size=16", "model.attention=gqa", "model.n_kv_head=2",
                                      "data.val=[a.h5, b.h5]", "optim.learning_rate=1e-3"});
  EXPECT_EQ(c.train.batch_size, 16);
  EXPECT_EQ(c.model.attention, Attention::gqa);
  EXPECT_DOUBLE_EQ(c.optim.schedule.lr, 1e-3);
  ASSERT_EQ(c.data.val.size(), 2u);
  EXPECT_EQ(c.data.val[0], (std::filesystem::current_path() / "a.h5").string());  // --set paths: relative to cwd
}

TEST(Config, EffectiveConfigRoundTrips) {
  const std::string path = write_config("roundtrip", std::string(kMinimal) +
                                                         "model:\n  attention: tpa_kvonly\n  k_rank: 3\n"
                                                         "sample:\n  prompt: \"The \\\"quoted\\\"\\n\"\n"
                                                         "optim:\n  schedule: wsd\n  min_lr: 1.0e-5\n");
  const Config first = load_config(path);
  const std::string again = write_config("roundtrip2", first.to_yaml());
  const Config second = load_config(again);
  EXPECT_EQ(second.to_yaml(), first.to_yaml());
  EXPECT_EQ(second.sample.prompt, "The \"quoted\"\n");
  EXPECT_EQ(second.model.k_rank, 3);
  EXPECT_EQ(second.model.v_rank, 0);
}

TEST(ConfigErrors, UnknownKeysSuggestTheNearestValidKey) {
  std::string e = error_of(std::string(kMinimal) + "train:\n  batchsize: 8\n");
  EXPECT_NE(e.find("unknown key 'train.batchsize'; did you mean 'train.batch_size'?"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "optim:\n  batch_size: 8\n");  // right key, wrong section
  EXPECT_NE(e.find("did you mean 'train.batch_size'?"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "trian:\n  max_iters: 8\n");
  EXPECT_NE(e.find("unknown section 'trian'; did you mean 'train'?"), std::string::npos) << e;
  e = error_of(kMinimal, {"optim.learning_rte=1"});
  EXPECT_NE(e.find("--set: unknown key 'optim.learning_rte'; did you mean 'optim.learning_rate'?"), std::string::npos)
      << e;
}

// Saying a key twice is an error naming both lines (YAML parsers keep one silently); so is a
// directory given as the config; an integer too large says so instead of "expected an integer".
TEST(ConfigErrors, DuplicateKeysDirectoriesAndRanges) {
  std::string e = error_of(std::string(kMinimal) + "train:\n  max_iters: 8\n  batch_size: 2\n  max_iters: 9\n");
  EXPECT_NE(e.find("'train.max_iters' appears twice (lines 4 and 6); keep one"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "train:\n  max_iters: 8\ntrain:\n  batch_size: 2\n");
  EXPECT_NE(e.find("'train' appears twice (lines 3 and 5)"), std::string::npos) << e;
  const std::string dir = test::temp_dir("config_dir");
  EXPECT_NE(test::error_of([&] { load_config(dir); }).find(dir + ": is a directory; expected a YAML config file"),
            std::string::npos);
  e = error_of(std::string(kMinimal) + "train:\n  batch_size: 99999999999\n");
  EXPECT_NE(e.find("train.batch_size: 99999999999 is out of range (at most 2147483647)"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "train:\n  max_iters: 99999999999999999999999\n");
  EXPECT_NE(e.find("train.max_iters: 99999999999999999999999 is out of range"), std::string::npos) << e;
}

// A value given by --set is blamed on the --set, not on the file; absurd model sizes stop at
// the config instead of exhausting memory while the layout is built.
TEST(ConfigErrors, OverridesAreNamedAndSizesBounded) {
  std::string e = error_of(kMinimal, {"train.batch_size=-4"});
  EXPECT_EQ(e.rfind("--set train.batch_size=-4: train.batch_size: must be positive, got -4", 0), 0u) << e;
  e = error_of(kMinimal, {"model.attention=tpa", "model.rank=0"});
  EXPECT_EQ(e.rfind("--set model.rank=0: model.rank: must be a positive integer, got 0", 0), 0u) << e;
  e = error_of(std::string(kMinimal) + "model:\n  rank: 0\n");
  EXPECT_NE(e.find("err.yaml: model.rank: must be a positive integer"), std::string::npos) << e;
  e = error_of(kMinimal, {"model.n_layer=2000000000"});
  EXPECT_NE(e.find("model.n_layer: 2000000000 is beyond what this trainer supports (at most 100000)"), std::string::npos)
      << e;
  e = error_of(kMinimal, {"model.n_embd=300000000"});
  EXPECT_NE(e.find("model.n_embd: 300000000 is beyond"), std::string::npos) << e;
  e = error_of(kMinimal, {"train.batch_size=2000000000", "model.block_size=1024"});
  EXPECT_NE(e.find("train.batch_size: 2000000000 sequences of model.block_size 1024 tokens are more than a micro-batch"),
            std::string::npos) << e;
}

TEST(ConfigErrors, WrongTypesNameTheKey) {
  std::string e = error_of(std::string(kMinimal) + "train:\n  batch_size: abc\n");
  EXPECT_NE(e.find("train.batch_size: expected an integer, got 'abc'"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "train:\n  batch_size: 2.5\n");
  EXPECT_NE(e.find("train.batch_size: expected an integer, got '2.5'"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "optim:\n  learning_rate: [1, 2]\n");
  EXPECT_NE(e.find("optim.learning_rate: expected a number, got a list"), std::string::npos) << e;
  e = error_of(std::string(kMinimal) + "  shuffle: 3\n");  // (kMinimal ends inside data:)
  EXPECT_NE(e.find("data.shuffle: expected true or false, got '3'"), std::string::npos) << e;
  e = error_of(kMinimal, {"train.max_iters"});
  EXPECT_NE(e.find("expected section.key=value"), std::string::npos) << e;
}

TEST(ConfigErrors, InvalidValuesNameTheKeyAndTheRule) {
  auto expect = [](const std::string& yaml, const std::string& part) {
    const std::string e = error_of(std::string(kMinimal) + yaml);
    EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;
  };
  expect("train:\n  batch_size: 0\n", "train.batch_size: must be positive, got 0");
  expect("model:\n  attention: flash\n", "model.attention: 'flash' is not one of tpa, tpa_kvonly, mha, gqa, mqa");
  expect("model:\n  attention: gqa\n  n_head: 4\n", "model.n_kv_head: attention gqa needs the number of KV heads");
  expect("model:\n  attention: gqa\n  n_head: 6\n  n_kv_head: 4\n", "model.n_kv_head: 4 does not divide model.n_head = 6");
  expect("model:\n  head_dim: 63\n", "model.head_dim: RoPE rotates pairs");
  expect("optim:\n  learning_rate: 1.0e-4\n  min_lr: 1.0e-3\n", "optim.min_lr: must be between 0 and optim.learning_rate");
  expect("optim:\n  schedule: step\n", "optim.schedule: 'step' is not one of cosine, linear, constant, wsd");
  expect("optim:\n  beta2: 1.5\n", "optim.beta2: must be in [0, 1)");
  expect("  seed: -3\n", "data.seed: must not be negative");  // (kMinimal ends inside data:)
  expect("optim:\n  weight_decay: inf\n", "optim.weight_decay: expected a finite number, got 'inf'");
  expect("sample:\n  temperature: nan\n", "sample.temperature: expected a finite number, got 'nan'");
  // data.train is needed to train, not to describe a model (t6-generate --config, t6-eval, ...):
  // the trainer asks for it (tests/test_train.cpp).
  EXPECT_EQ(error_of("train:\n  max_iters: 5\n"), "");
  EXPECT_NE(error_of("model: [1, 2]\n").find("model: expected a mapping"), std::string::npos);
  EXPECT_NE(error_of("[a, b]: 1\n").find("err.yaml: line 1: a key must be a plain name"), std::string::npos);
  EXPECT_NE(error_of("model:\n  {x: 1}: 2\n").find("err.yaml: line 2: a key must be a plain name"), std::string::npos);
  EXPECT_NE(error_of("model:\n  n_layer: [\n").find("not valid YAML"), std::string::npos);
}

// The tools' shared argument loop: both option forms, positional arguments, numbers checked,
// and every error naming the flag.
struct Argv {
  std::vector<std::string> words;
  std::vector<char*> ptrs;
  explicit Argv(std::vector<std::string> w) : words(std::move(w)) {
    words.insert(words.begin(), "tool");
    for (std::string& s : words) ptrs.push_back(s.data());
  }
  Args args() { return Args((int)ptrs.size(), ptrs.data()); }
};

std::string args_error(std::vector<std::string> words, bool with_value = true) {
  Argv v(std::move(words));
  Args a = v.args();
  return test::error_of([&] {
    while (a.next()) {
      if (a.is("--n")) a.integer(1, 10);
      else if (a.is("--x")) a.real(0, 1);
      else if (a.is("--s")) {
        if (with_value) a.value();
      }
      else if (a.is("--flag")) {}
      else if (!a.positional()) a.unknown();
    }
  });
}

TEST(Args, ReadsBothOptionFormsFlagsAndPositionals) {
  Argv v({"--n", "7", "--x=0.25", "in.txt", "--s=a=b", "--flag", "-", "--s", "--not-a-flag"});
  Args a = v.args();
  long long n = 0;
  double x = 0;
  std::vector<std::string> positional, strings;
  bool flag = false;
  while (a.next()) {
    if (a.is("--n")) n = a.integer(1, 10);
    else if (a.is("--x")) x = a.real(0, 1);
    else if (a.is("--s")) strings.push_back(a.value());
    else if (a.is("--flag")) flag = true;
    else if (a.positional()) positional.push_back(a.arg());
    else a.unknown();
  }
  EXPECT_EQ(n, 7);
  EXPECT_EQ(x, 0.25);
  EXPECT_TRUE(flag);
  EXPECT_EQ(positional, (std::vector<std::string>{"in.txt", "-"}));
  EXPECT_EQ(strings, (std::vector<std::string>{"a=b", "--not-a-flag"}));  // a value may look like an option
}

TEST(Args, ErrorsNameTheFlagAndWhatItExpected) {
  EXPECT_EQ(args_error({"--n", "11"}), "--n 11: expected an integer from 1 to 10");
  EXPECT_EQ(args_error({"--n=3x"}), "--n 3x: expected an integer from 1 to 10");
  EXPECT_EQ(args_error({"--n", ""}), "--n : expected an integer from 1 to 10");
  EXPECT_EQ(args_error({"--n", "99999999999999999999"}), "--n 99999999999999999999: expected an integer from 1 to 10");
  EXPECT_EQ(args_error({"--x", "nan"}), "--x nan: expected a number from 0 to 1");
  EXPECT_EQ(args_error({"--x", "1.5"}), "--x 1.5: expected a number from 0 to 1");
  EXPECT_EQ(args_error({"--flag", "--s"}), "--s needs a value");
  EXPECT_EQ(args_error({"--flag=1"}), "--flag takes no value");
  EXPECT_EQ(args_error({"--s=v"}, false), "--s takes no value");  // a tool that reads no value for it
  EXPECT_EQ(args_error({"--bogus", "1"}), "unknown option '--bogus'");
  EXPECT_EQ(args_error({"--n", "10", "--x", "1", "--s", "v", "--flag", "file"}), "");
}

}  // namespace
}  // namespace t6
