// Token shards and the loader: the exact shuffle:false order, shuffle coverage, wrapping,
// t6-prepare's byte tokenization, and a clear error for every kind of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "data/loader.h"
#include "data/prepare.h"
#include "test_util.h"

namespace t6 {
namespace {

uint32_t token_at(uint64_t i) { return (uint32_t)((i * 7) % 251); }

// Three shards of uneven sizes holding token_at(0 … 336) in order.
std::vector<std::string> write_stream(const std::string& dir) {
  const uint64_t sizes[] = {100, 37, 200};
  std::vector<std::string> files;
  uint64_t next = 0;
  for (int s = 0; s < 3; s++) {
    std::vector<uint32_t> tokens;
    for (uint64_t i = 0; i < sizes[s]; i++) tokens.push_back(token_at(next++));
    files.push_back(fmt::format("{}/train_{:06d}.h5", dir, s));
    write_shard(files.back(), tokens, ShardMeta{0, 256, "byte", 0});
  }
  return files;
}

TEST(Loader, SequentialOrderIsExactlyAsSpecified) {
  const std::string dir = test::temp_dir("loader_order");
  const auto files = write_stream(dir);
  const int B = 2, T = 8;
  DataLoader loader(expand_shards({dir + "/train_*.h5"}, "data.train"), B, T, false, 0, 256, "data.train");
  EXPECT_EQ(loader.total_tokens(), 337u);
  EXPECT_EQ(loader.windows_per_epoch(), (337u - 1) / 16);
  std::vector<int32_t> in(B * T), tgt(B * T);
  for (uint64_t i = 0; i < 2 * loader.windows_per_epoch(); i++) {
    loader.next(in.data(), tgt.data());
    const uint64_t w = i % loader.windows_per_epoch(), start = w * B * T;  // wraps after the last window
    for (int j = 0; j < B * T; j++) {
      ASSERT_EQ(in[j], (int32_t)token_at(start + j)) << "window " << i << " position " << j;
      ASSERT_EQ(tgt[j], (int32_t)token_at(start + j + 1)) << "window " << i << " position " << j;
    }
    EXPECT_EQ(loader.epoch(), (int64_t)((i + 1) / loader.windows_per_epoch()));  // the next window's epoch
  }
}

std::vector<int32_t> epoch_starts(DataLoader& loader, int n) {
  std::vector<int32_t> in(n), tgt(n), starts;
  for (uint64_t i = 0; i < loader.windows_per_epoch(); i++) {
    loader.next(in.data(), tgt.data());
    starts.push_back(in[0]);
  }
  return starts;
}

TEST(Loader, ShuffleCoversEveryWindowOncePerEpoch) {
  const std::string dir = test::temp_dir("loader_shuffle");
  const auto files = write_stream(dir);
  const int B = 1, T = 8;  // 42 windows
  DataLoader loader(files, B, T, true, 1234, 256, "data.train");
  std::set<int32_t> all;
  for (uint64_t w = 0; w < loader.windows_per_epoch(); w++) all.insert((int32_t)token_at(w * B * T));
  ASSERT_EQ(all.size(), loader.windows_per_epoch());  // first tokens identify windows here

  const auto e0 = epoch_starts(loader, B * T), e1 = epoch_starts(loader, B * T);
  EXPECT_EQ(std::set<int32_t>(e0.begin(), e0.end()), all);
  EXPECT_EQ(std::set<int32_t>(e1.begin(), e1.end()), all);
  EXPECT_NE(e0, e1);  // a new permutation each epoch
  std::vector<int32_t> sequential(loader.windows_per_epoch());
  for (uint64_t w = 0; w < sequential.size(); w++) sequential[w] = (int32_t)token_at(w * B * T);
  EXPECT_NE(e0, sequential);

  DataLoader same(files, B, T, true, 1234, 256, "data.train"), other(files, B, T, true, 99, 256, "data.train");
  EXPECT_EQ(epoch_starts(same, B * T), e0);  // a pure function of the seed
  EXPECT_NE(epoch_starts(other, B * T), e0);
}

TEST(Shards, NarrowDtypeWhenTheVocabularyFits) {
  const std::string dir = test::temp_dir("shard_dtype");
  write_shard(dir + "/small.h5", {1, 2, 3}, ShardMeta{0, 50304, "gpt2", 50256});
  write_shard(dir + "/wide.h5", {1, 70000, 3}, ShardMeta{0, 100000, "other", 0});
  for (const char* name : {"small.h5", "wide.h5"}) {
    hid_t f = H5Fopen((dir + "/" + name).c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hid_t t = H5Dget_type(d);
    EXPECT_EQ(H5Tget_size(t), std::string(name) == "small.h5" ? 2u : 4u) << name;
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);
  }
  ShardReader wide(dir + "/wide.h5");
  std::vector<int32_t> out(3);
  wide.read(0, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 70000, 3}));
  EXPECT_EQ(wide.meta().tokenizer, "other");
  EXPECT_NE(test::error_of([&] { write_shard(dir + "/bad.h5", {5, 300}, ShardMeta{0, 256, "byte", 0}); })
                .find("token 300 at position 1 is not below vocab_size 256"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad.h5"));
}

// Writes a file with any dataset name and type, to build malformed shards.
void write_raw(const std::string& path, const char* dataset, hid_t type, const std::vector<int32_t>& values,
               int64_t vocab) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t n[1] = {values.size()};
  hid_t space = H5Screate_simple(1, n, nullptr);
  hid_t d = H5Dcreate2(f, dataset, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  hid_t scalar = H5Screate(H5S_SCALAR);
  for (auto [name, v] : {std::pair<const char*, int64_t>{"vocab_size", vocab}, {"eot_token", 0}}) {
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
  }
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, 5);
  hid_t a = H5Acreate2(f, "tokenizer", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, str, "byte");
  H5Aclose(a);
  H5Tclose(str);
  H5Sclose(scalar);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
}

TEST(LoaderErrors, EachNamesTheFileAndTheProblem) {
  const std::string dir = test::temp_dir("loader_errors");
  const std::vector<int32_t> ok(100, 7);
  auto load = [&](const std::vector<std::string>& patterns, int64_t vocab = 256, int B = 2, int T = 8) {
    return test::error_of([&] {  // token ids are checked as windows are read, so read one
      DataLoader loader(expand_shards(patterns, "data.train"), B, T, false, 0, vocab, "data.train");
      std::vector<int32_t> in(B * T), tgt(B * T);
      loader.next(in.data(), tgt.data());
    });
  };
  auto expect_error = [](const std::string& err, std::initializer_list<std::string> parts) {
    EXPECT_FALSE(err.empty());
    for (const auto& p : parts) EXPECT_NE(err.find(p), std::string::npos) << "'" << p << "' not in: " << err;
  };

  expect_error(load({dir + "/nothing.h5"}), {"data.train", "nothing.h5", "does not exist"});
  expect_error(load({dir + "/none_*.h5"}), {"data.train", "none_*.h5", "matches no file"});

  write_raw(dir + "/int32.h5", "tokens", H5T_STD_I32LE, ok, 256);
  expect_error(load({dir + "/int32.h5"}), {"int32.h5", "must be uint16 or uint32"});

  write_raw(dir + "/named.h5", "ids", H5T_STD_U16LE, ok, 256);
  expect_error(load({dir + "/named.h5"}), {"named.h5", "no dataset named 'tokens'"});

  std::vector<int32_t> big = ok;
  big[60] = 300;
  write_raw(dir + "/big.h5", "tokens", H5T_STD_U16LE, big, 256);
  expect_error(load({dir + "/big.h5"}, 256, 4, 16), {"big.h5", "token id 300 at position 60", "vocab_size 256"});

  write_raw(dir + "/vocab.h5", "tokens", H5T_STD_U16LE, ok, 50257);
  expect_error(load({dir + "/vocab.h5"}), {"vocab.h5", "vocab_size 50257", "larger than model.vocab_size 256"});

  write_raw(dir + "/a.h5", "tokens", H5T_STD_U16LE, ok, 256);
  write_raw(dir + "/b.h5", "tokens", H5T_STD_U16LE, ok, 300);
  expect_error(load({dir + "/a.h5", dir + "/b.h5"}), {"shards disagree", "b.h5", "vocab_size 300"});

  // Attributes that cannot describe the data: an empty vocabulary, an end-of-text id outside
  // it, a gpt2 shard whose vocab_size would let GPT-2 ids index past a small model.
  write_raw(dir + "/empty_vocab.h5", "tokens", H5T_STD_U16LE, ok, 0);
  expect_error(load({dir + "/empty_vocab.h5"}), {"empty_vocab.h5", "vocab_size 0 (attribute): expected 1 to 2^32"});
  write_shard(dir + "/eot.h5", std::vector<uint32_t>(100, 3), ShardMeta{0, 256, "byte", 300});
  expect_error(load({dir + "/eot.h5"}), {"eot.h5", "eot_token 300 (attribute) is not below vocab_size 256"});
  write_shard(dir + "/small_gpt2.h5", std::vector<uint32_t>(100, 3), ShardMeta{0, 256, "gpt2", 0});
  expect_error(load({dir + "/small_gpt2.h5"}), {"small_gpt2.h5", "tokenizer 'gpt2' has 50257 ids, but vocab_size"});

  expect_error(load({dir + "/a.h5"}, 256, 4, 32), {"100 tokens", "4×32 needs 129"});
  expect_error(load({dir + "/a.h5"}, 256, 0, 32), {"data.train", "positive sizes, got 0×32"});

  write_shard(dir + "/whole.h5", std::vector<uint32_t>(5000, 3), ShardMeta{0, 256, "byte", 0});
  std::filesystem::copy_file(dir + "/whole.h5", dir + "/cut.h5");
  std::filesystem::resize_file(dir + "/cut.h5", std::filesystem::file_size(dir + "/whole.h5") / 2);
  std::string err = load({dir + "/cut.h5"});
  expect_error(err, {"cut.h5", "truncated or corrupt"});

  std::ofstream(dir + "/text.h5") << "not hdf5";
  expect_error(load({dir + "/text.h5"}), {"text.h5", "not an HDF5 file"});
}

// W ranks together read exactly the single-process stream: rank r gets global indices
// r, r+W, …; so interleaving their batches rebuilds it, and each window comes once per epoch.
TEST(Loader, RanksPartitionTheSingleProcessStream) {
  const std::string dir = test::temp_dir("loader_ranks");
  const auto files = write_stream(dir);
  const int B = 1, T = 8, n = B * T;
  for (bool shuffle : {false, true}) {
    DataLoader single(files, B, T, shuffle, 5, 256, "data.train");
    const uint64_t total = 3 * single.windows_per_epoch() + 2;  // across epoch boundaries
    std::vector<std::vector<int32_t>> reference;
    std::vector<int32_t> in(n), tgt(n);
    for (uint64_t i = 0; i < total; i++) {
      single.next(in.data(), tgt.data());
      reference.push_back(in);
    }
    for (int W : {1, 2, 3}) {
      std::vector<std::unique_ptr<DataLoader>> ranks;
      for (int r = 0; r < W; r++)
        ranks.push_back(std::make_unique<DataLoader>(files, B, T, shuffle, 5, 256, "data.train", r, W));
      for (uint64_t i = 0; i < total; i++) {
        ranks[i % W]->next(in.data(), tgt.data());
        ASSERT_EQ(in, reference[i]) << "W " << W << " shuffle " << shuffle << " index " << i;
        if (i % W == (uint64_t)W - 1) {  // after each step, every rank holds the same state
          for (int r = 0; r < W; r++) ASSERT_EQ(ranks[r]->state().position, i + 1);
        }
      }
    }
  }
}

TEST(Loader, StateContinuesTheStreamAlsoOnAnotherWorldSize) {
  const std::string dir = test::temp_dir("loader_state");
  const auto files = write_stream(dir);
  const int B = 1, T = 8, n = B * T;
  std::vector<int32_t> in(n), tgt(n);
  DataLoader single(files, B, T, true, 77, 256, "data.train");
  std::vector<std::vector<int32_t>> reference;
  for (int i = 0; i < 120; i++) {
    single.next(in.data(), tgt.data());
    reference.push_back(in);
  }
  // Two ranks consume 2×25 indices, save; three ranks resume from that state.
  LoaderState saved;
  {
    DataLoader r0(files, B, T, true, 77, 256, "data.train", 0, 2), r1(files, B, T, true, 77, 256, "data.train", 1, 2);
    for (int step = 0; step < 25; step++) {
      r0.next(in.data(), tgt.data());
      r1.next(in.data(), tgt.data());
    }
    saved = r0.state();
    EXPECT_EQ(saved.position, 50u);
  }
  std::vector<std::unique_ptr<DataLoader>> three;
  for (int r = 0; r < 3; r++) {
    // A different configured seed: the saved state's seed wins, so the stream is the same.
    three.push_back(std::make_unique<DataLoader>(files, B, T, true, 12345, 256, "data.train", r, 3, /*prefetch=*/2));
    three.back()->restore(saved);
  }
  for (int i = 50; i < 120; i++) {
    three[(i - 50) % 3]->next(in.data(), tgt.data());
    ASSERT_EQ(in, reference[i]) << "index " << i;
  }
}

TEST(Loader, PrefetchingDoesNotChangeTheStream) {
  const std::string dir = test::temp_dir("loader_prefetch");
  const auto files = write_stream(dir);
  DataLoader plain(files, 2, 8, true, 3, 256, "data.train"), ahead(files, 2, 8, true, 3, 256, "data.train", 0, 1, 4);
  std::vector<int32_t> a(16), at(16), b(16), bt(16);
  for (int i = 0; i < 100; i++) {
    plain.next(a.data(), at.data());
    ahead.next(b.data(), bt.data());
    ASSERT_EQ(a, b) << i;
    ASSERT_EQ(at, bt) << i;
  }
  ahead.reset();  // restarts the prefetcher at the beginning
  plain.reset();
  plain.next(a.data(), at.data());
  ahead.next(b.data(), bt.data());
  EXPECT_EQ(a, b);
}

TEST(Loader, PrefetchDeliversReadErrorsInOrder) {
  // A shard whose attribute says vocab 100 but that holds token 200 at position 50.
  const std::string dir = test::temp_dir("loader_prefetch_error");
  std::vector<uint32_t> tokens(100, 5);
  tokens[50] = 200;
  write_shard(dir + "/t.h5", tokens, ShardMeta{0, 256, "custom", 0});  // (a byte shard must have 256)
  hid_t f = H5Fopen((dir + "/t.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t a = H5Aopen(f, "vocab_size", H5P_DEFAULT);
  const int64_t vocab = 100;
  H5Awrite(a, H5T_NATIVE_INT64, &vocab);
  H5Aclose(a);
  H5Fclose(f);

  DataLoader loader({dir + "/t.h5"}, 1, 16, false, 0, 100, "data.train", 0, 1, /*prefetch=*/2);
  std::vector<int32_t> in(16), tgt(16);
  for (int i = 0; i < 3; i++) loader.next(in.data(), tgt.data());  // windows 0-2: tokens 0-48, all fine
  const std::string err = test::error_of([&] { loader.next(in.data(), tgt.data()); });
  EXPECT_NE(err.find("t.h5 holds token id 200 at position 50, not below vocab_size 100"), std::string::npos) << err;
}

}  // namespace
}  // namespace t6
