#include "data/mc_eval.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/h5.h"

namespace t6 {

namespace {

using json = nlohmann::json;

// Each non-empty line of a JSON Lines file, parsed, with its 1-based line number.
template <class F>
void for_each_json_line(const std::string& path, const F& f) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(fmt::format("{}: cannot read it", path));
  std::string line;
  for (int n = 1; std::getline(in, line); n++) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw std::invalid_argument(fmt::format("{}:{}: not JSON ({})", path, n, e.what()));
    }
    try {
      f(j, n);
    } catch (const json::exception& e) {  // a field of the wrong type
      throw std::invalid_argument(fmt::format("{}:{}: {}", path, n, e.what()));
    }
  }
}

}  // namespace

std::vector<McExample> hellaswag_examples(const std::string& path, const Tokenizer& tokenizer) {
  std::vector<McExample> out;
  for_each_json_line(path, [&](const json& j, int n) {
    for (const char* key : {"ctx", "endings", "label"})
      if (!j.contains(key))
        throw std::invalid_argument(fmt::format("{}:{}: no field '{}' (HellaSwag's lines have ctx, endings, label)",
                                                path, n, key));
    const auto endings = j.at("endings").get<std::vector<std::string>>();
    int label = -1;
    if (j.at("label").is_string()) {  // HellaSwag's files spell it as a string
      const std::string s = j.at("label").get<std::string>();
      size_t used = 0;
      try {
        label = std::stoi(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (s.empty() || used != s.size())
        throw std::invalid_argument(fmt::format("{}:{}: label '{}' is not an integer", path, n, s));
    } else {
      label = j.at("label").get<int>();
    }
    if (endings.size() < 2)
      throw std::invalid_argument(fmt::format("{}:{}: {} ending(s); a choice needs at least 2", path, n, endings.size()));
    if (label < 0 || label >= (int)endings.size())
      throw std::invalid_argument(
          fmt::format("{}:{}: label {} is not the index of one of its {} endings", path, n, label, endings.size()));
    McExample ex;
    const std::vector<int32_t> context = token_ids(tokenizer, j.at("ctx").get<std::string>());
    if (context.empty()) throw std::invalid_argument(fmt::format("{}:{}: the context is empty", path, n));
    for (const std::string& ending : endings) {
      std::vector<int32_t> cand = context, tail = token_ids(tokenizer, " " + ending);
      cand.insert(cand.end(), tail.begin(), tail.end());
      ex.candidates.push_back(cand);
      ex.completion_start.push_back((int)context.size());
    }
    ex.label = label;
    out.push_back(std::move(ex));
  });
  if (out.empty()) throw std::invalid_argument(fmt::format("{}: no examples", path));
  return out;
}

void write_mc_file(const std::string& path, const std::vector<McExample>& examples, const std::string& tokenizer) {
  std::string text = json{{"format", "t6-multiple-choice"}, {"version", 1}, {"tokenizer", tokenizer}}.dump() + "\n";
  for (const McExample& ex : examples)
    text += json{{"candidates", ex.candidates}, {"completion_start", ex.completion_start}, {"label", ex.label}}.dump() +
            "\n";
  write_file_atomically(path, text);
}

std::vector<McExample> read_mc_file(const std::string& path, int vocab_size, const std::string& tokenizer) {
  std::vector<McExample> out;
  bool header = false;
  for_each_json_line(path, [&](const json& j, int n) {
    if (!header) {
      if (j.value("format", "") != "t6-multiple-choice")
        throw std::invalid_argument(fmt::format(
            "{}:{}: not a multiple-choice file (make one with t6-prepare --eval hellaswag FILE.jsonl)", path, n));
      const std::string made_with = j.value("tokenizer", "");
      if (!tokenizer.empty() && made_with != tokenizer)
        throw std::invalid_argument(fmt::format("{}: made with the {} tokenizer, but the model reads {} tokens: make it "
                                                "again with t6-prepare --eval … --tokenizer {}",
                                                path, made_with, tokenizer, tokenizer));
      header = true;
      return;
    }
    McExample ex;
    ex.candidates = j.at("candidates").get<std::vector<std::vector<int32_t>>>();
    ex.completion_start = j.at("completion_start").get<std::vector<int>>();
    ex.label = j.at("label").get<int>();
    const int k = (int)ex.candidates.size();
    if (k < 2 || (int)ex.completion_start.size() != k || ex.label < 0 || ex.label >= k)
      throw std::invalid_argument(fmt::format("{}:{}: expected 2 or more candidates, as many completion starts, and a "
                                              "label among them",
                                              path, n));
    for (int c = 0; c < k; c++) {
      const int len = (int)ex.candidates[c].size(), start = ex.completion_start[c];
      if (start < 1 || start >= len)
        throw std::invalid_argument(fmt::format("{}:{}: candidate {}'s completion starts at {}, outside 1 … {}", path,
                                                n, c, start, len - 1));
      for (int32_t t : ex.candidates[c])
        if (t < 0 || (vocab_size > 0 && t >= vocab_size))
          throw std::invalid_argument(
              fmt::format("{}:{}: token {} is outside the model's vocabulary of {}", path, n, t, vocab_size));
    }
    out.push_back(std::move(ex));
  });
  if (out.empty()) throw std::invalid_argument(fmt::format("{}: no examples", path));
  return out;
}

}  // namespace t6
