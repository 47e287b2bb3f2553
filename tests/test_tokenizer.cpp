// The GPT-2 tokenizer against vectors made with a reference implementation (js-tiktoken's
// "gpt2" encoding; tests/tokenizer/make_vectors.mjs), and the byte tokenizer.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>

#include "data/tokenizer.h"
#include "test_util.h"

namespace t6 {
namespace {

std::string from_hex(const std::string& hex) {
  std::string s;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) s += (char)std::stoi(hex.substr(i, 2), nullptr, 16);
  return s;
}

TEST(Gpt2Tokenizer, MatchesTheReferenceOnEveryVector) {
  const auto tok = make_tokenizer("gpt2");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eot_token(), 50256);
  std::ifstream in(test::source_path("tests/tokenizer/gpt2_vectors.json"));
  const auto vectors = nlohmann::json::parse(in);
  ASSERT_GE(vectors.size(), 15u);
  for (const auto& v : vectors) {
    const std::string text = from_hex(v["hex"]);
    std::vector<uint32_t> ids;
    tok->encode(text, ids);
    EXPECT_EQ(ids, v["ids"].get<std::vector<uint32_t>>()) << v["name"];
    // Decoding gives the text back (after U+FFFD replacement of invalid UTF-8).
    EXPECT_EQ(tok->decode(ids), from_hex(v["decoded_hex"])) << v["name"];
    if (v["hex"] == v["decoded_hex"]) {
      EXPECT_EQ(tok->decode(ids), text) << v["name"];
    }
  }
}

TEST(Gpt2Tokenizer, KnownSmallCases) {
  const auto tok = make_tokenizer("gpt2");
  std::vector<uint32_t> ids;
  tok->encode("Hello world", ids);
  EXPECT_EQ(ids, (std::vector<uint32_t>{15496, 995}));
  EXPECT_EQ(tok->decode({50256}), "<|endoftext|>");
  EXPECT_NE(test::error_of([&] { tok->decode({50257}); }).find("token id 50257 is not below 50257"), std::string::npos);
}

TEST(Gpt2Tokenizer, EncodesEveryByteSequenceIntoValidIds) {
  // Random bytes, mostly invalid UTF-8: every id is in the vocabulary and decoding is stable.
  const auto tok = make_tokenizer("gpt2");
  std::mt19937 rng(5);
  std::string s;
  for (int i = 0; i < 5000; i++) s += (char)(rng() & 0xff);
  std::vector<uint32_t> ids, again;
  tok->encode(s, ids);
  for (uint32_t id : ids) ASSERT_LT(id, 50257u);
  const std::string clean = tok->decode(ids);
  tok->encode(clean, again);  // the replaced text is valid UTF-8 and encodes to the same ids
  EXPECT_EQ(again, ids);
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  const auto tok = make_tokenizer("byte");
  const std::string s("\x00\xff h\xc3\xa9", 6);
  std::vector<uint32_t> ids;
  tok->encode(s, ids);
  EXPECT_EQ(ids, (std::vector<uint32_t>{0, 255, ' ', 'h', 0xc3, 0xa9}));
  EXPECT_EQ(tok->decode(ids), s);
  EXPECT_EQ(tok->eot_token(), 0);
}

TEST(Tokenizers, ClearErrors) {
  EXPECT_NE(test::error_of([] { make_tokenizer("sentencepiece"); }).find("unknown tokenizer 'sentencepiece'"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { make_tokenizer("gpt2", "/nonexistent"); })
                .find("/nonexistent/encoder.json: cannot read the GPT-2 vocabulary"), std::string::npos);
}

}  // namespace
}  // namespace t6
