// Tokenizers: `byte` (one token per byte, vocabulary 256, end-of-text 0) and `gpt2` (GPT-2's
// byte-level BPE, equal to tiktoken's "gpt2" encoding; vocabulary 50257, end-of-text 50256).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace t6 {

// Where the shipped GPT-2 vocabulary lives (data/gpt2 of the source tree).
extern const char* const kDefaultVocabDir;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual const char* name() const = 0;
  virtual int vocab_size() const = 0;
  virtual int eot_token() const = 0;
  // Appends the tokens of `text` (any bytes; the gpt2 tokenizer reads invalid UTF-8 as U+FFFD).
  // Thread-safe.
  virtual void encode(std::string_view text, std::vector<uint32_t>& out) const = 0;
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
};

// The tokens of `text` as the model's input type.
inline std::vector<int32_t> token_ids(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<uint32_t> ids;
  tokenizer.encode(text, ids);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

// name: "byte" or "gpt2"; the gpt2 vocabulary (encoder.json, vocab.bpe) is read from vocab_dir.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir = kDefaultVocabDir);

}  // namespace t6
