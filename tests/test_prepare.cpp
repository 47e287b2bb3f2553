// t6-prepare: text, JSONL and token files into shards that load back as exactly the expected
// token stream, independent of the thread count; and a clear error for every bad input, with
// nothing that looks like a dataset left behind.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "test_util.h"

namespace t6 {
namespace {

// Every token of the shards matching `pattern`, in stream order.
std::vector<uint32_t> read_all(const std::string& pattern) {
  std::vector<uint32_t> all;
  for (const std::string& f : expand_shards({pattern}, "test")) {
    ShardReader r(f);
    std::vector<int32_t> t(r.meta().num_tokens);
    r.read(0, t.size(), t.data());
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

using test::write_file;

PrepareOptions options(const std::string& dir, std::vector<std::string> inputs) {
  PrepareOptions opt;
  opt.out_dir = dir + "/out";
  opt.inputs = std::move(inputs);
  return opt;
}

TEST(Prepare, ByteTokenizerWritesDocumentsWithEndOfText) {
  const std::string dir = test::temp_dir("prepare_byte");
  write_file(dir + "/a.txt", "Hello");
  write_file(dir + "/b.txt", "caf\xc3\xa9!");
  write_file(dir + "/c.txt", "xyz");
  PrepareOptions opt = options(dir, {dir + "/a.txt", dir + "/b.txt", dir + "/c.txt"});
  opt.tokenizer = "byte";
  opt.val_tokens = 3;  // a.txt (6 tokens with end-of-text) fills validation: whole documents
  opt.shard_tokens = 5;
  const PrepareSummary s = prepare(opt);
  EXPECT_EQ(s.documents, 3u);
  EXPECT_EQ(s.val_tokens, 6u);
  EXPECT_EQ(s.train_tokens, 7u + 4u);
  EXPECT_EQ(s.train_shards, 3);  // 11 tokens in shards of 5
  EXPECT_EQ(s.val_shards, 2);
  EXPECT_EQ(read_all(opt.out_dir + "/val_*.h5"), (std::vector<uint32_t>{'H', 'e', 'l', 'l', 'o', 0}));
  EXPECT_EQ(read_all(opt.out_dir + "/train_*.h5"),
            (std::vector<uint32_t>{'c', 'a', 'f', 0xc3, 0xa9, '!', 0, 'x', 'y', 'z', 0}));
  ShardReader r(opt.out_dir + "/train_000000.h5");
  EXPECT_EQ(r.meta().tokenizer, "byte");
  EXPECT_EQ(r.meta().vocab_size, 256);
  EXPECT_EQ(r.meta().eot_token, 0);
}

// An input directory that also holds shards (this tool's own earlier output, written inside
// it) gives the same tokens as without them: HDF5 files are left out and counted, and one named
// explicitly is an error. Staging directories left by a killed run are removed.
TEST(Prepare, ShardsInTheInputAndStagingOfKilledRunsAreLeftOut) {
  const std::string dir = test::temp_dir("prepare_own_output");
  std::filesystem::create_directories(dir + "/in");
  write_file(dir + "/in/a.txt", "Hello");
  write_file(dir + "/in/b.txt", "world");
  PrepareOptions first = options(dir, {dir + "/in"});
  first.tokenizer = "byte";
  first.out_dir = dir + "/in/shards";  // inside the input directory
  const PrepareSummary s1 = prepare(first);
  EXPECT_EQ(s1.skipped_hdf5, 0);
  const pid_t child = fork();  // a pid that is surely gone: a child that has exited
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::filesystem::create_directories(fmt::format("{}/out/.t6-prepare-{}-{}", dir, host, child));
  std::filesystem::create_directories(dir + "/out/.t6-prepare-elsewhere-1");  // another machine's: left alone
  PrepareOptions second = options(dir, {dir + "/in"});
  second.tokenizer = "byte";
  const PrepareSummary s2 = prepare(second);
  EXPECT_EQ(s2.skipped_hdf5, s1.train_shards + s1.val_shards);
  EXPECT_EQ(s2.tokens, s1.tokens);
  EXPECT_EQ(s2.stale_staging, 1);
  EXPECT_FALSE(std::filesystem::exists(fmt::format("{}/out/.t6-prepare-{}-{}", dir, host, child)));
  EXPECT_TRUE(std::filesystem::exists(dir + "/out/.t6-prepare-elsewhere-1"));
  PrepareOptions named = options(dir + "/x", {dir + "/in/shards/train_000000.h5"});
  EXPECT_NE(test::error_of([&] { prepare(named); }).find("train_000000.h5: is an HDF5 file (a shard?), not text"),
            std::string::npos);
}

TEST(Prepare, Gpt2TextAndJsonlRoundTrip) {
  const std::string dir = test::temp_dir("prepare_gpt2");
  const std::vector<std::string> docs = {"The first document.\nIt has two lines.", "Second: naïve café, 42 items!",
                                         "{\"json\": \"inside a text file\"}", "Third from JSONL 🙂", "Fourth\ttab"};
  write_file(dir + "/1.txt", docs[0]);
  write_file(dir + "/2.txt", docs[1]);
  write_file(dir + "/3.txt", docs[2]);
  write_file(dir + "/4.jsonl", "{\"text\": \"Third from JSONL \\ud83d\\ude42\", \"id\": 1}\n\n{\"text\": \"Fourth\\ttab\"}\n");
  const auto tok = make_tokenizer("gpt2");
  std::vector<uint32_t> expected;
  for (const std::string& d : docs) {
    tok->encode(d, expected);
    expected.push_back(50256);
  }
  for (int threads : {1, 2}) {  // the output does not depend on the thread count
    omp_set_num_threads(threads);
    PrepareOptions opt = options(dir, {dir + "/*.txt", dir + "/4.jsonl"});
    opt.out_dir += std::to_string(threads);
    opt.shard_tokens = 7;
    const PrepareSummary s = prepare(opt);
    EXPECT_EQ(s.documents, 5u);
    EXPECT_EQ(read_all(opt.out_dir + "/train_*.h5"), expected);
    ShardReader r(opt.out_dir + "/train_000000.h5");
    EXPECT_EQ(r.meta().tokenizer, "gpt2");
    EXPECT_EQ(r.meta().vocab_size, 50257);
    EXPECT_EQ(r.meta().eot_token, 50256);
    // And the loader serves them as the training stream.
    DataLoader loader(expand_shards({opt.out_dir + "/train_*.h5"}, "t"), 1, 8, false, 0, 50304, "t");
    std::vector<int32_t> in(8), tgt(8);
    loader.next(in.data(), tgt.data());
    EXPECT_EQ(std::vector<uint32_t>(in.begin(), in.end()), std::vector<uint32_t>(expected.begin(), expected.begin() + 8));
  }
  omp_set_num_threads(omp_get_num_procs());
}

TEST(Prepare, JsonlFieldAndProgress) {
  const std::string dir = test::temp_dir("prepare_field");
  write_file(dir + "/d.jsonl", "{\"body\": \"abc\"}\n{\"body\": \"\"}\n{\"body\": \"de\"}\n");
  PrepareOptions opt = options(dir, {dir + "/d.jsonl"});
  opt.tokenizer = "byte";
  opt.jsonl_field = "body";
  std::vector<PrepareProgress> seen;
  const PrepareSummary s = prepare(opt, [&](const PrepareProgress& p) { seen.push_back(p); });
  EXPECT_EQ(s.documents, 2u);
  EXPECT_EQ(s.empty_documents, 1u);
  EXPECT_EQ(read_all(opt.out_dir + "/train_*.h5"), (std::vector<uint32_t>{'a', 'b', 'c', 0, 'd', 'e', 0}));
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().bytes_done, seen.back().bytes_total);
  EXPECT_EQ(seen.back().tokens, 7u);
}

void write_llmc_bin(const std::string& path, int version, const std::vector<uint32_t>& tokens, int64_t claim = -1) {
  int32_t header[256] = {0};
  header[0] = 20240520;
  header[1] = version;
  header[2] = claim >= 0 ? (int32_t)claim : (int32_t)tokens.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  for (uint32_t t : tokens) {
    if (version == 1) { uint16_t s = (uint16_t)t; out.write(reinterpret_cast<const char*>(&s), 2); }
    else out.write(reinterpret_cast<const char*>(&t), 4);
  }
}

TEST(Prepare, FromBinReadsLlmcAndNanoGptFiles) {
  const std::string dir = test::temp_dir("prepare_bin");
  const std::vector<uint32_t> a = {10, 11, 50256, 12, 13, 14, 50256, 15}, b = {16, 50256, 17};
  write_llmc_bin(dir + "/a_v1.bin", 1, a);
  write_llmc_bin(dir + "/b_v2.bin", 2, b);
  {
    std::ofstream raw(dir + "/c_raw.bin", std::ios::binary);  // nanoGPT: headerless uint16
    for (uint16_t t : {18, 19, 50256}) raw.write(reinterpret_cast<const char*>(&t), 2);
  }
  PrepareOptions opt = options(dir, {dir + "/*.bin"});
  opt.from_bin = true;
  opt.val_tokens = 4;  // extended to the end of the document in progress: 12 13 14 50256 ends at 7
  const PrepareSummary s = prepare(opt);
  EXPECT_EQ(read_all(opt.out_dir + "/val_*.h5"), (std::vector<uint32_t>{10, 11, 50256, 12, 13, 14, 50256}));
  EXPECT_EQ(read_all(opt.out_dir + "/train_*.h5"), (std::vector<uint32_t>{15, 16, 50256, 17, 18, 19, 50256}));
  EXPECT_EQ(s.documents, 4u);  // end-of-text tokens
}

TEST(PrepareErrors, EachNamesTheInputAndLeavesNoShards) {
  const std::string dir = test::temp_dir("prepare_errors");
  auto fails = [&](PrepareOptions opt, const std::string& part) {
    const std::string err = test::error_of([&] { prepare(opt); });
    EXPECT_NE(err.find(part), std::string::npos) << "'" << part << "' not in: " << err;
    // Nothing that looks like a dataset, and no staging directory, is left.
    if (std::filesystem::exists(opt.out_dir))
      for (const auto& e : std::filesystem::directory_iterator(opt.out_dir))
        ADD_FAILURE() << "left behind: " << e.path();
  };
  auto byte_opts = [&](std::vector<std::string> inputs) {
    PrepareOptions o = options(dir, std::move(inputs));
    o.tokenizer = "byte";
    return o;
  };
  write_file(dir + "/empty1.txt", "");
  write_file(dir + "/empty2.txt", "");
  fails(byte_opts({dir + "/empty1.txt", dir + "/empty2.txt"}), "empty input: the 2 input file(s) hold no documents");
  fails(byte_opts({dir + "/missing.txt"}), "missing.txt: no such file or directory");
  fails(byte_opts({dir + "/nomatch_*.txt"}), "nomatch_*.txt: pattern matches no file");
  write_file(dir + "/bad.jsonl", "{\"text\": \"ok\"}\nnot json at all\n");
  fails(byte_opts({dir + "/bad.jsonl"}), "bad.jsonl:2: not a JSON object");
  write_file(dir + "/nofield.jsonl", "{\"text\": \"ok\"}\n{\"content\": \"x\"}\n");
  fails(byte_opts({dir + "/nofield.jsonl"}), "nofield.jsonl:2: no field 'text'");
  write_file(dir + "/number.jsonl", "{\"text\": 5}\n");
  fails(byte_opts({dir + "/number.jsonl"}), "number.jsonl:1: field 'text' is not a string");
  write_file(dir + "/one.txt", "abc");
  PrepareOptions all_val = byte_opts({dir + "/one.txt"});
  all_val.val_tokens = 100;
  fails(all_val, "nothing is left to train on");
  PrepareOptions unknown = byte_opts({dir + "/one.txt"});
  unknown.tokenizer = "wordpiece";
  fails(unknown, "unknown tokenizer 'wordpiece'");

  PrepareOptions bin = options(dir, {dir + "/short.bin"});
  bin.from_bin = true;
  write_llmc_bin(dir + "/short.bin", 1, {1, 2, 3}, /*claim=*/10);
  fails(bin, "short.bin: the header says 10 tokens (20 bytes), the file holds 6 bytes after it (truncated?)");
  write_file(dir + "/empty.bin", "");
  bin.inputs = {dir + "/empty.bin"};
  fails(bin, "empty input: the 1 token file(s) hold no tokens");
  write_file(dir + "/odd.bin", "abc");
  bin.inputs = {dir + "/odd.bin"};
  fails(bin, "odd.bin: no llm.c header and an odd size (3 bytes)");
  write_llmc_bin(dir + "/big.bin", 2, {1, 60000, 3});
  bin.inputs = {dir + "/big.bin"};
  fails(bin, "big.bin: token 60000 at position 1 is not below vocab_size 50257");

  if (geteuid() != 0) {  // root reads any file, so only a normal user can see this error
    write_file(dir + "/locked.txt", "secret");
    std::filesystem::permissions(dir + "/locked.txt", std::filesystem::perms::none);
    fails(byte_opts({dir + "/locked.txt"}), "locked.txt: cannot read (Permission denied)");
  }

  // An out_dir that already holds shards is refused rather than mixed into.
  PrepareOptions first = byte_opts({dir + "/one.txt"});
  prepare(first);
  const std::string err = test::error_of([&] { prepare(first); });
  EXPECT_NE(err.find("already holds train_*.h5 / val_*.h5 shards"), std::string::npos) << err;
}

}  // namespace
}  // namespace t6
