#include "data/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace t6 {

const char* const kDefaultVocabDir = T6_VOCAB_DIR;

namespace {

struct CodeRange {
  uint32_t lo, hi;
};
#include "data/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&ranges)[N], uint32_t cp) {
  const CodeRange* it = std::upper_bound(ranges, ranges + N, cp, [](uint32_t c, const CodeRange& r) { return c < r.lo; });
  return it != ranges && cp <= (it - 1)->hi;
}

enum CharClass : uint8_t { kOther, kLetter, kNumber, kSpace };

CharClass classify(uint32_t cp) {
  static const auto ascii = [] {
    std::array<CharClass, 128> t{};
    for (uint32_t c = 0; c < 128; c++)
      t[c] = in_ranges(kLetterRanges, c) ? kLetter : in_ranges(kNumberRanges, c) ? kNumber
                                                   : in_ranges(kSpaceRanges, c)  ? kSpace : kOther;
    return t;
  }();
  if (cp < 128) return ascii[cp];
  if (in_ranges(kLetterRanges, cp)) return kLetter;
  if (in_ranges(kNumberRanges, cp)) return kNumber;
  if (in_ranges(kSpaceRanges, cp)) return kSpace;
  return kOther;
}

// UTF-8 → code points, replacing each maximal invalid subpart with U+FFFD (the Unicode
// recommendation, which WHATWG's TextDecoder and Python's errors="replace" follow).
void decode_utf8(std::string_view s, std::vector<uint32_t>& cps) {
  cps.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) { cps.push_back(c); i++; continue; }
    int len;
    uint32_t cp;
    unsigned char lo = 0x80, hi = 0xbf;  // the valid range of the second byte
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
    else { cps.push_back(0xfffd); i++; continue; }
    int k = 1;
    for (; k < len && i + k < n; k++) {
      const unsigned char b = p[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) break;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (k == len) { cps.push_back(cp); i += len; }
    else { cps.push_back(0xfffd); i += k; }  // the bytes read so far form one maximal subpart
  }
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) out += (char)cp;
  else if (cp < 0x800) { out += (char)(0xc0 | (cp >> 6)); out += (char)(0x80 | (cp & 0x3f)); }
  else if (cp < 0x10000) {
    out += (char)(0xe0 | (cp >> 12)); out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
  } else {
    out += (char)(0xf0 | (cp >> 18)); out += (char)(0x80 | ((cp >> 12) & 0x3f));
    out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
  }
}

// Splits code points [0, n) into GPT-2's pre-tokens, calling emit(begin, end) for each. This
// is the pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// evaluated by hand, alternative by alternative.
template <class Emit>
void pretokenize(const std::vector<uint32_t>& cps, const std::vector<CharClass>& cls, Emit emit) {
  const size_t n = cps.size();
  size_t i = 0;
  while (i < n) {
    if (cps[i] == '\'' && i + 1 < n) {
      const uint32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      else if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) len = 3;
      if (len) { emit(i, i + len); i += len; continue; }
    }
    // " ?X+" for X in letters, numbers, other: an optional leading space joins the run.
    const size_t start = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;
    const CharClass c = cls[start];
    if (c != kSpace && (start == i || cls[i] == kSpace)) {
      size_t end = start + 1;
      while (end < n && cls[end] == c) end++;
      emit(i, end);
      i = end;
      continue;
    }
    // \s+(?!\S) then \s+: a whitespace run, leaving its last character to the word after it.
    size_t end = i + 1;
    while (end < n && cls[end] == kSpace) end++;
    if (end < n && end - i >= 2) end--;
    emit(i, end);
    i = end;
  }
}

class ByteTokenizer final : public Tokenizer {
 public:
  const char* name() const override { return "byte"; }
  int vocab_size() const override { return 256; }
  int eot_token() const override { return 0; }
  void encode(std::string_view text, std::vector<uint32_t>& out) const override {
    for (unsigned char c : text) out.push_back(c);
  }
  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string s;
    for (uint32_t id : ids) {
      if (id > 255) throw std::invalid_argument(fmt::format("byte tokenizer: token id {} is not a byte", id));
      s += (char)id;
    }
    return s;
  }
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::string& dir);
  const char* name() const override { return "gpt2"; }
  int vocab_size() const override { return (int)id_bytes_.size(); }
  int eot_token() const override { return eot_; }
  void encode(std::string_view text, std::vector<uint32_t>& out) const override;
  std::string decode(const std::vector<uint32_t>& ids) const override;

 private:
  void bpe(std::string_view piece, std::vector<uint32_t>& out) const;

  std::vector<std::string> id_bytes_;                  // id → the bytes it stands for
  uint32_t byte_id_[256];                              // single byte → its token
  std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> merges_;  // (left, right) → (rank, merged id)
  int eot_ = 0;
};

// GPT-2's vocabulary files spell bytes as printable characters: bytes that are printable
// Latin-1 stand for themselves, the other 68 are shifted to U+0100 and up.
std::array<uint32_t, 256> byte_to_char() {
  std::array<uint32_t, 256> m{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; b++) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m[b] = printable ? b : next++;
  }
  return m;
}

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir) {
  const std::string encoder_path = dir + "/encoder.json", merges_path = dir + "/vocab.bpe";
  std::ifstream ef(encoder_path);
  if (!ef) throw std::runtime_error(fmt::format("{}: cannot read the GPT-2 vocabulary", encoder_path));
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(ef);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("{}: not valid JSON: {}", encoder_path, e.what()));
  }
  const auto b2c = byte_to_char();
  std::unordered_map<uint32_t, unsigned char> c2b;
  for (int b = 0; b < 256; b++) c2b[b2c[b]] = (unsigned char)b;

  std::unordered_map<std::string, uint32_t> by_text;  // vocabulary spelling → id
  id_bytes_.resize(encoder.size());
  std::vector<uint32_t> cps;
  for (auto& [text, id_json] : encoder.items()) {
    const uint32_t id = id_json.get<uint32_t>();
    if (id >= id_bytes_.size()) throw std::runtime_error(fmt::format("{}: id {} out of range", encoder_path, id));
    by_text[text] = id;
    decode_utf8(text, cps);
    std::string bytes;
    for (uint32_t cp : cps) {
      auto it = c2b.find(cp);
      bytes += it == c2b.end() ? '?' : (char)it->second;  // only special tokens hold other characters
    }
    id_bytes_[id] = text == "<|endoftext|>" ? text : bytes;
    if (text == "<|endoftext|>") eot_ = (int)id;
  }
  for (int b = 0; b < 256; b++) {
    std::string spelled;
    append_utf8(b2c[b], spelled);
    byte_id_[b] = by_text.at(spelled);
  }

  std::ifstream mf(merges_path);
  if (!mf) throw std::runtime_error(fmt::format("{}: cannot read the GPT-2 merges", merges_path));
  std::string line;
  uint32_t rank = 0;
  while (std::getline(mf, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos) throw std::runtime_error(fmt::format("{}: bad merge line '{}'", merges_path, line));
    const std::string a = line.substr(0, space), b = line.substr(space + 1);
    const auto ia = by_text.find(a), ib = by_text.find(b), im = by_text.find(a + b);
    if (ia == by_text.end() || ib == by_text.end() || im == by_text.end())
      throw std::runtime_error(fmt::format("{}: merge '{}' uses tokens missing from encoder.json", merges_path, line));
    merges_[((uint64_t)ia->second << 32) | ib->second] = {rank++, im->second};
  }
}

// Merges the lowest-ranked adjacent pair (leftmost on ties) until no pair is mergeable.
void Gpt2Tokenizer::bpe(std::string_view piece, std::vector<uint32_t>& out) const {
  thread_local std::unordered_map<std::string, std::vector<uint32_t>> cache;
  if (auto it = cache.find(std::string(piece)); it != cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<uint32_t> parts;
  for (unsigned char c : piece) parts.push_back(byte_id_[c]);
  while (parts.size() > 1) {
    uint32_t best_rank = std::numeric_limits<uint32_t>::max(), merged = 0;
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); i++) {
      auto it = merges_.find(((uint64_t)parts[i] << 32) | parts[i + 1]);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        best = i;
      }
    }
    if (best_rank == std::numeric_limits<uint32_t>::max()) break;
    parts[best] = merged;
    parts.erase(parts.begin() + best + 1);
  }
  out.insert(out.end(), parts.begin(), parts.end());
  if (cache.size() > 200000) cache.clear();  // bounded memory on endless vocabularies of rare words
  cache.emplace(piece, std::move(parts));
}

void Gpt2Tokenizer::encode(std::string_view text, std::vector<uint32_t>& out) const {
  thread_local std::vector<uint32_t> cps;
  thread_local std::vector<CharClass> cls;
  thread_local std::vector<size_t> offsets;
  thread_local std::string clean;
  decode_utf8(text, cps);
  cls.resize(cps.size());
  offsets.resize(cps.size() + 1);
  clean.clear();
  for (size_t i = 0; i < cps.size(); i++) {
    cls[i] = classify(cps[i]);
    offsets[i] = clean.size();
    append_utf8(cps[i], clean);
  }
  offsets[cps.size()] = clean.size();
  pretokenize(cps, cls, [&](size_t b, size_t e) {
    bpe(std::string_view(clean).substr(offsets[b], offsets[e] - offsets[b]), out);
  });
}

std::string Gpt2Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::string s;
  for (uint32_t id : ids) {
    if (id >= id_bytes_.size())
      throw std::invalid_argument(fmt::format("gpt2 tokenizer: token id {} is not below {}", id, id_bytes_.size()));
    s += id_bytes_[id];
  }
  return s;
}

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& vocab_dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(vocab_dir);
  throw std::invalid_argument(fmt::format("unknown tokenizer '{}' (available: byte, gpt2)", name));
}

}  // namespace t6
