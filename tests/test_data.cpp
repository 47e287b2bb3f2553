// Token shards and the loader: the exact shuffle:false order, shuffle coverage, wrapping,
// t6-prepare's byte tokenization, and a clear error for every kind of bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
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
    EXPECT_EQ(loader.epoch(), (int64_t)(i / loader.windows_per_epoch()));
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
  write_raw(dir + "/b.h5", "tokens", H5T_STD_U16LE, ok, 200);
  expect_error(load({dir + "/a.h5", dir + "/b.h5"}), {"shards disagree", "b.h5", "vocab_size 200"});

  expect_error(load({dir + "/a.h5"}, 256, 4, 32), {"100 tokens", "4×32 needs 129"});

  write_shard(dir + "/whole.h5", std::vector<uint32_t>(5000, 3), ShardMeta{0, 256, "byte", 0});
  std::filesystem::copy_file(dir + "/whole.h5", dir + "/cut.h5");
  std::filesystem::resize_file(dir + "/cut.h5", std::filesystem::file_size(dir + "/whole.h5") / 2);
  std::string err = load({dir + "/cut.h5"});
  expect_error(err, {"cut.h5", "truncated or corrupt"});

  std::ofstream(dir + "/text.h5") << "not hdf5";
  expect_error(load({dir + "/text.h5"}), {"text.h5", "not an HDF5 file"});
}

TEST(Prepare, ByteTokenizerWritesDocumentsWithEndOfText) {
  const std::string dir = test::temp_dir("prepare");
  std::ofstream(dir + "/a.txt") << "Hello";
  std::ofstream(dir + "/b.txt") << "caf\xc3\xa9!";
  std::ofstream(dir + "/c.txt") << "xyz";
  PrepareOptions opt;
  opt.out_dir = dir + "/shards";
  opt.inputs = {dir + "/a.txt", dir + "/b.txt", dir + "/c.txt"};
  opt.val_tokens = 3;  // a.txt (6 tokens with end-of-text) fills validation
  opt.shard_tokens = 5;
  const PrepareSummary s = prepare(opt);
  EXPECT_EQ(s.documents, 3u);
  EXPECT_EQ(s.val_tokens, 6u);
  EXPECT_EQ(s.train_tokens, 7u + 4u);
  EXPECT_EQ(s.train_shards, 3);  // 11 tokens in shards of 5
  EXPECT_EQ(s.val_shards, 2);

  DataLoader train(expand_shards({opt.out_dir + "/train_*.h5"}, "t"), 1, 10, false, 0, 256, "t");
  std::vector<int32_t> in(10), tgt(10);
  train.next(in.data(), tgt.data());
  EXPECT_EQ(in, (std::vector<int32_t>{'c', 'a', 'f', 0xc3, 0xa9, '!', 0, 'x', 'y', 'z'}));
  EXPECT_EQ(tgt.back(), 0);
  EXPECT_EQ(train.meta().tokenizer, "byte");
  EXPECT_EQ(train.meta().eot_token, 0);

  opt.val_tokens = 1000;
  EXPECT_NE(test::error_of([&] { prepare(opt); }).find("nothing to train on"), std::string::npos);
  opt.inputs = {dir + "/missing.txt"};
  EXPECT_NE(test::error_of([&] { prepare(opt); }).find("missing.txt: no such file"), std::string::npos);
}

}  // namespace
}  // namespace t6
