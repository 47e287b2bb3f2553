#include "trainer/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <stdexcept>

namespace t6 {

namespace fs = std::filesystem;

namespace {

// Where a value came from: errors name it, and relative paths resolve against base_dir.
struct Source {
  std::string where;  // "configs/demo.yaml" or "--set"
  std::string key;    // "train.batch_size"
  fs::path base_dir;
};

[[noreturn]] void fail(const Source& src, const std::string& msg) {
  throw std::invalid_argument(fmt::format("{}: {}: {}", src.where, src.key, msg));
}

std::string scalar(const YAML::Node& n, const Source& src, const char* expected) {
  if (!n.IsScalar()) fail(src, fmt::format("expected {}, got a {}", expected, n.IsSequence() ? "list" : n.IsMap() ? "mapping" : "null"));
  return n.Scalar();
}

int64_t parse_int(const YAML::Node& n, const Source& src) {
  const std::string s = scalar(n, src, "an integer");
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE) fail(src, fmt::format("{} is out of range (at most {})", s, INT64_MAX));
  if (s.empty() || errno || *end) fail(src, fmt::format("expected an integer, got '{}'", s));
  return v;
}

double parse_float(const YAML::Node& n, const Source& src) {
  const std::string s = scalar(n, src, "a number");
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || errno || *end) fail(src, fmt::format("expected a number, got '{}'", s));
  if (!std::isfinite(v)) fail(src, fmt::format("expected a finite number, got '{}'", s));
  return v;
}

bool parse_bool(const YAML::Node& n, const Source& src) {
  const std::string s = scalar(n, src, "true or false");
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  fail(src, fmt::format("expected true or false, got '{}'", s));
}

// Absolute, so that an effective config (out_dir/config.yaml, the copy in a checkpoint) means
// the same from any directory.
std::string resolve(const std::string& p, const Source& src) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return fs::absolute(src.base_dir / p).lexically_normal().string();
}

// One config key: how to read it from YAML into the Config, and how to write it back.
struct Key {
  std::string section, name;
  std::function<void(Config&, const YAML::Node&, const Source&)> set;
  std::function<void(const Config&, YAML::Emitter&)> emit;
};

template <class Ref>
Key integer(const char* section, const char* name, Ref ref, bool nullable = false) {
  return {section, name,
          [=](Config& c, const YAML::Node& n, const Source& s) {
            using V = std::remove_reference_t<decltype(ref(c))>;
            if (nullable && n.IsNull()) { ref(c) = 0; return; }
            int64_t v = parse_int(n, s);
            if (std::is_unsigned_v<V> && v < 0) fail(s, fmt::format("must not be negative, got {}", v));
            if (std::is_same_v<V, int> && (v > INT32_MAX || v < INT32_MIN))
              fail(s, fmt::format("{} is out of range (at most {})", v, INT32_MAX));
            ref(c) = (V)v;
          },
          [=](const Config& c, YAML::Emitter& e) {
            auto v = ref(const_cast<Config&>(c));
            if (nullable && v == 0) e << YAML::Null; else e << v;
          }};
}

template <class Ref>
Key number(const char* section, const char* name, Ref ref) {
  return {section, name, [=](Config& c, const YAML::Node& n, const Source& s) { ref(c) = parse_float(n, s); },
          [=](const Config& c, YAML::Emitter& e) { e << fmt::format("{}", ref(const_cast<Config&>(c))); }};
}

template <class Ref>
Key boolean(const char* section, const char* name, Ref ref) {
  return {section, name, [=](Config& c, const YAML::Node& n, const Source& s) { ref(c) = parse_bool(n, s); },
          [=](const Config& c, YAML::Emitter& e) { e << ref(const_cast<Config&>(c)); }};
}

// A string; with is_path, relative values resolve against the source's directory; null = "".
template <class Ref>
Key text(const char* section, const char* name, Ref ref, bool is_path = false) {
  return {section, name,
          [=](Config& c, const YAML::Node& n, const Source& s) {
            if (n.IsNull()) { ref(c).clear(); return; }
            std::string v = scalar(n, s, "a string");
            ref(c) = is_path ? resolve(v, s) : v;
          },
          [=](const Config& c, YAML::Emitter& e) {
            const std::string& v = ref(const_cast<Config&>(c));
            if (v.empty() && is_path) e << YAML::Null; else e << YAML::DoubleQuoted << v;
          }};
}

// One path/glob or a list of them.
template <class Ref>
Key paths(const char* section, const char* name, Ref ref) {
  return {section, name,
          [=](Config& c, const YAML::Node& n, const Source& s) {
            std::vector<std::string>& out = ref(c);
            out.clear();
            if (n.IsNull()) return;
            if (n.IsScalar()) { out.push_back(resolve(n.Scalar(), s)); return; }
            if (!n.IsSequence()) fail(s, "expected a path, a glob pattern, or a list of them");
            for (const auto& item : n) out.push_back(resolve(scalar(item, s, "a path string"), s));
          },
          [=](const Config& c, YAML::Emitter& e) {
            const auto& v = ref(const_cast<Config&>(c));
            if (v.empty()) e << YAML::Null;
            else if (v.size() == 1) e << v[0];
            else { e << YAML::Flow << YAML::BeginSeq; for (const auto& p : v) e << p; e << YAML::EndSeq; }
          }};
}

template <class E, class Ref>
Key choice(const char* section, const char* name, Ref ref, bool (*parse)(const std::string&, E*),
           const char* (*to_name)(E), const char* allowed) {
  return {section, name,
          [=](Config& c, const YAML::Node& n, const Source& s) {
            const std::string v = scalar(n, s, allowed);
            if (!parse(v, &ref(c))) fail(s, fmt::format("'{}' is not one of {}", v, allowed));
          },
          [=](const Config& c, YAML::Emitter& e) { e << to_name(ref(const_cast<Config&>(c))); }};
}

#define FIELD(expr) [](Config& c) -> auto& { return c.expr; }

}  // namespace

bool parse_device(const std::string& s, DeviceChoice* out) {
  if (s == "auto") *out = DeviceChoice::auto_;
  else if (s == "cpu") *out = DeviceChoice::cpu;
  else if (s == "cuda") *out = DeviceChoice::cuda;
  else return false;
  return true;
}

const char* device_name(DeviceChoice d) {
  return d == DeviceChoice::cpu ? "cpu" : d == DeviceChoice::cuda ? "cuda" : "auto";
}

namespace {

const std::vector<Key>& schema() {
  static const std::vector<Key> keys = {
      choice<Attention>("model", "attention", FIELD(model.attention), parse_attention, attention_name,
                        "tpa, tpa_kvonly, mha, gqa, mqa"),
      integer("model", "n_layer", FIELD(model.n_layer)),
      integer("model", "n_embd", FIELD(model.n_embd)),
      integer("model", "n_head", FIELD(model.n_head)),
      integer("model", "n_kv_head", FIELD(model.n_kv_head), true),
      integer("model", "head_dim", FIELD(model.head_dim)),
      integer("model", "q_rank", FIELD(model.q_rank)),
      integer("model", "rank", FIELD(model.rank)),
      integer("model", "k_rank", FIELD(model.k_rank), true),
      integer("model", "v_rank", FIELD(model.v_rank), true),
      integer("model", "vocab_size", FIELD(model.vocab_size)),
      integer("model", "block_size", FIELD(model.block_size)),
      text("model", "init_from", FIELD(model.init_from), true),
      integer("model", "seed", FIELD(model.seed)),

      paths("data", "train", FIELD(data.train)),
      paths("data", "val", FIELD(data.val)),
      boolean("data", "shuffle", FIELD(data.shuffle)),
      integer("data", "seed", FIELD(data.seed)),

      choice<DeviceChoice>("train", "device", FIELD(train.device), parse_device, device_name, "auto, cpu, cuda"),
      boolean("train", "recompute", FIELD(train.recompute)),
      boolean("train", "overlap_grad_reduce", FIELD(train.overlap_grad_reduce)),
      boolean("train", "deterministic", FIELD(train.deterministic)),
      integer("train", "batch_size", FIELD(train.batch_size)),
      integer("train", "gradient_accumulation_steps", FIELD(train.gradient_accumulation_steps)),
      integer("train", "max_iters", FIELD(train.max_iters)),
      integer("train", "eval_interval", FIELD(train.eval_interval)),
      integer("train", "eval_iters", FIELD(train.eval_iters)),
      text("train", "eval_mc", FIELD(train.eval_mc), true),
      text("train", "tensorboard", FIELD(train.tensorboard), true),
      integer("train", "log_interval", FIELD(train.log_interval)),
      text("train", "out_dir", FIELD(train.out_dir), true),
      integer("train", "consistency_interval", FIELD(train.consistency_interval)),
      number("train", "collective_timeout_s", FIELD(train.collective_timeout_s)),
      number("train", "skip_zscore_loss", FIELD(train.skip_zscore_loss)),
      number("train", "skip_zscore_grad", FIELD(train.skip_zscore_grad)),
      integer("train", "max_consecutive_skips", FIELD(train.max_consecutive_skips)),

      number("optim", "learning_rate", FIELD(optim.schedule.lr)),
      number("optim", "min_lr", FIELD(optim.schedule.min_lr)),
      choice<Schedule>("optim", "schedule", FIELD(optim.schedule.kind), parse_schedule, schedule_name,
                       "cosine, linear, constant, wsd"),
      integer("optim", "warmup_iters", FIELD(optim.schedule.warmup_iters)),
      integer("optim", "lr_decay_iters", FIELD(optim.schedule.decay_iters), true),
      number("optim", "wsd_decay_fraction", FIELD(optim.schedule.wsd_decay_fraction)),
      number("optim", "weight_decay", FIELD(optim.adamw.weight_decay)),
      number("optim", "beta1", FIELD(optim.adamw.beta1)),
      number("optim", "beta2", FIELD(optim.adamw.beta2)),
      number("optim", "eps", FIELD(optim.adamw.eps)),
      number("optim", "grad_clip", FIELD(optim.grad_clip)),
      integer("optim", "zero", FIELD(optim.zero)),

      integer("checkpoint", "interval", FIELD(checkpoint.interval)),
      integer("checkpoint", "keep", FIELD(checkpoint.keep)),

      text("sample", "prompt", FIELD(sample.prompt)),
      integer("sample", "max_new_tokens", FIELD(sample.max_new_tokens)),
      number("sample", "temperature", FIELD(sample.temperature)),
      integer("sample", "top_k", FIELD(sample.top_k)),
      integer("sample", "seed", FIELD(sample.seed)),
  };
  return keys;
}

#undef FIELD

const std::vector<std::string> kSections = {"model", "data", "train", "optim", "checkpoint", "sample"};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) prev[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); j++)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// "did you mean 'train.batch_size'?" — the closest key anywhere, preferring the same section.
std::string suggest(const std::string& section, const std::string& name) {
  const Key* best = nullptr;
  size_t best_d = SIZE_MAX;
  for (const Key& k : schema()) {
    size_t d = edit_distance(name, k.name) * 2 + (k.section != section);
    if (d < best_d) { best_d = d; best = &k; }
  }
  if (best && best_d / 2 <= std::max<size_t>(2, name.size() / 3))
    return fmt::format("; did you mean '{}.{}'?", best->section, best->name);
  std::string valid;
  for (const Key& k : schema())
    if (k.section == section) valid += (valid.empty() ? "" : ", ") + k.name;
  return valid.empty() ? "" : fmt::format("; valid keys of '{}': {}", section, valid);
}

const Key& find_key(const std::string& section, const std::string& name, const std::string& where) {
  if (std::find(kSections.begin(), kSections.end(), section) == kSections.end()) {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& s : kSections)
      if (edit_distance(section, s) < best_d) { best_d = edit_distance(section, s); best = s; }
    throw std::invalid_argument(fmt::format("{}: unknown section '{}'{}", where, section,
                                            best_d <= 2 ? fmt::format("; did you mean '{}'?", best)
                                                        : "; sections are model, data, train, optim, checkpoint, sample"));
  }
  for (const Key& k : schema())
    if (k.section == section && k.name == name) return k;
  throw std::invalid_argument(fmt::format("{}: unknown key '{}.{}'{}", where, section, name, suggest(section, name)));
}

// Errors name where the value came from: the file, or the --set that gave it.
void validate(const Config& c, const std::vector<std::string>& overrides) {
  auto origin = [&](const std::string& key) {
    for (auto o = overrides.rbegin(); o != overrides.rend(); ++o)  // (the last one given wins)
      if (o->rfind(key + "=", 0) == 0) return "--set " + *o;
    return c.path;
  };
  auto check = [&](bool ok, const char* key, const std::string& msg) {
    if (!ok) throw std::invalid_argument(fmt::format("{}: {}: {}", origin(key), key, msg));
  };
  try {
    c.model.validate();
  } catch (const std::invalid_argument& e) {  // ("model.<key>: ...")
    const std::string what = e.what();
    throw std::invalid_argument(fmt::format("{}: {}", origin(what.substr(0, what.find(':'))), what));
  }
  const TrainConfig& t = c.train;
  check(t.batch_size > 0, "train.batch_size", fmt::format("must be positive, got {}", t.batch_size));
  check((int64_t)t.batch_size * c.model.block_size <= INT32_MAX, "train.batch_size",
        fmt::format("{} sequences of model.block_size {} tokens are more than a micro-batch can hold ({} tokens)",
                    t.batch_size, c.model.block_size, INT32_MAX));
  check(t.gradient_accumulation_steps > 0, "train.gradient_accumulation_steps",
        fmt::format("must be positive, got {}", t.gradient_accumulation_steps));
  check(t.max_iters >= 0, "train.max_iters", fmt::format("must not be negative, got {}", t.max_iters));
  check(t.eval_interval >= 0, "train.eval_interval", fmt::format("must not be negative, got {}", t.eval_interval));
  check(t.eval_iters > 0, "train.eval_iters", fmt::format("must be positive, got {}", t.eval_iters));
  check(t.log_interval > 0, "train.log_interval", fmt::format("must be positive, got {}", t.log_interval));
  const LrSchedule& s = c.optim.schedule;
  check(s.lr > 0, "optim.learning_rate", fmt::format("must be positive, got {}", s.lr));
  check(s.min_lr >= 0 && s.min_lr <= s.lr, "optim.min_lr",
        fmt::format("must be between 0 and optim.learning_rate ({}), got {}", s.lr, s.min_lr));
  check(s.warmup_iters >= 0, "optim.warmup_iters", fmt::format("must not be negative, got {}", s.warmup_iters));
  check(s.decay_iters >= s.warmup_iters, "optim.lr_decay_iters",
        fmt::format("must be at least optim.warmup_iters ({}), got {}", s.warmup_iters, s.decay_iters));
  check(s.wsd_decay_fraction > 0 && s.wsd_decay_fraction <= 1, "optim.wsd_decay_fraction",
        fmt::format("must be in (0, 1], got {}", s.wsd_decay_fraction));
  const AdamWConfig& a = c.optim.adamw;
  check(a.beta1 >= 0 && a.beta1 < 1, "optim.beta1", fmt::format("must be in [0, 1), got {}", a.beta1));
  check(a.beta2 >= 0 && a.beta2 < 1, "optim.beta2", fmt::format("must be in [0, 1), got {}", a.beta2));
  check(a.eps > 0, "optim.eps", fmt::format("must be positive, got {}", a.eps));
  check(a.weight_decay >= 0, "optim.weight_decay", fmt::format("must not be negative, got {}", a.weight_decay));
  check(c.optim.grad_clip >= 0, "optim.grad_clip", fmt::format("must not be negative (0 = off), got {}", c.optim.grad_clip));
  check(c.optim.zero == 0 || c.optim.zero == 1, "optim.zero", fmt::format("must be 0 or 1 (ZeRO-1), got {}", c.optim.zero));
  check(c.train.consistency_interval >= 0, "train.consistency_interval", "must not be negative (0 = never)");
  check(c.train.collective_timeout_s >= 0, "train.collective_timeout_s", "must not be negative (0 = never)");
  check(c.train.skip_zscore_loss >= 0, "train.skip_zscore_loss", "must not be negative (0 = off)");
  check(c.train.skip_zscore_grad >= 0, "train.skip_zscore_grad", "must not be negative (0 = off)");
  check(c.train.max_consecutive_skips > 0, "train.max_consecutive_skips", "must be positive");
  check(c.checkpoint.interval >= 0, "checkpoint.interval", "must not be negative (0 = only at the end)");
  check(c.checkpoint.keep >= 0, "checkpoint.keep", "must not be negative (0 = keep all)");
  check(c.sample.max_new_tokens >= 0, "sample.max_new_tokens", "must not be negative");
  check(c.sample.temperature > 0, "sample.temperature", fmt::format("must be positive, got {}", c.sample.temperature));
  check(c.sample.top_k >= 0, "sample.top_k", "must not be negative (0 = whole vocabulary)");
}

}  // namespace

namespace {

Config parse_config(const YAML::Node& root, const std::string& path, const std::vector<std::string>& overrides) {
  Config c;
  c.path = path;
  const fs::path file_dir = fs::path(path).parent_path();
  bool lr_decay_set = false;

  if (!root.IsNull() && !root.IsMap())
    throw std::invalid_argument(fmt::format("{}: expected a mapping of sections (model, data, train, optim, sample)", path));
  // YAML parsers keep one of two equal keys without a word; a config that says a thing twice is
  // an error (line numbers are 1-based for people).
  std::map<std::string, int> seen;
  auto once = [&](const std::string& name, const YAML::Node& key) {
    const auto [it, fresh] = seen.emplace(name, key.Mark().line + 1);
    if (!fresh)
      throw std::invalid_argument(fmt::format("{}: '{}' appears twice (lines {} and {}); keep one", path, name,
                                              it->second, key.Mark().line + 1));
  };
  auto name_of = [&](const YAML::Node& key) {
    if (!key.IsScalar())
      throw std::invalid_argument(fmt::format("{}: line {}: a key must be a plain name, not a list or mapping", path,
                                              key.Mark().line + 1));
    return key.Scalar();
  };
  for (const auto& section : root) {
    const std::string sname = name_of(section.first);
    once(sname, section.first);
    if (std::find(kSections.begin(), kSections.end(), sname) == kSections.end()) find_key(sname, "", path);
    if (section.second.IsNull()) continue;
    if (!section.second.IsMap())
      throw std::invalid_argument(fmt::format("{}: {}: expected a mapping of keys, e.g. '{}:\n  key: value'", path,
                                              sname, sname));
    for (const auto& kv : section.second) {
      const std::string kname = name_of(kv.first);
      once(sname + "." + kname, kv.first);
      const Key& key = find_key(sname, kname, path);
      key.set(c, kv.second, Source{path, sname + "." + kname, file_dir});
      lr_decay_set |= key.name == "lr_decay_iters" && !kv.second.IsNull();
    }
  }
  for (const std::string& o : overrides) {
    const size_t eq = o.find('='), dot = o.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq)
      throw std::invalid_argument(fmt::format("--set {}: expected section.key=value, e.g. train.max_iters=100", o));
    const std::string sname = o.substr(0, dot), kname = o.substr(dot + 1, eq - dot - 1);
    const Key& key = find_key(sname, kname, "--set");
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw std::invalid_argument(fmt::format("--set {}: the value is not valid YAML: {}", o, e.what()));
    }
    key.set(c, value, Source{"--set " + o, sname + "." + kname, fs::current_path()});
    lr_decay_set |= key.name == "lr_decay_iters" && !value.IsNull();
  }
  if (!lr_decay_set || c.optim.schedule.decay_iters == 0)
    c.optim.schedule.decay_iters = std::max(c.train.max_iters, c.optim.schedule.warmup_iters);
  // Absolute, so the effective config written beside the outputs means the same from anywhere.
  if (c.train.out_dir.empty()) c.train.out_dir = (fs::current_path() / "out" / fs::path(path).stem()).string();
  validate(c, overrides);
  return c;
}

std::string emit_value(const Key& k, const Config& c) {
  YAML::Emitter e;
  k.emit(c, e);
  return e.c_str();
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (fs::is_directory(path))
    throw std::invalid_argument(fmt::format("{}: is a directory; expected a YAML config file (e.g. configs/demo.yaml)",
                                            path));
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw std::invalid_argument(fmt::format("{}: cannot read config file", path));
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(fmt::format("{}: not valid YAML: {}", path, e.what()));
  }
  return parse_config(root, path, overrides);
}

Config load_config_text(const std::string& yaml, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(fmt::format("{}: not valid YAML: {}", where, e.what()));
  }
  return parse_config(root, where, {});
}

std::vector<std::string> config_differences(const Config& a, const Config& b) {
  std::vector<std::string> out;
  for (const Key& k : schema()) {
    const std::string va = emit_value(k, a), vb = emit_value(k, b);
    if (va != vb) out.push_back(fmt::format("{}.{}: {} → {}", k.section, k.name, va, vb));
  }
  return out;
}

std::string Config::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap;
  for (const std::string& section : kSections) {
    e << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (const Key& k : schema()) {
      if (k.section != section) continue;
      e << YAML::Key << k.name << YAML::Value;
      k.emit(*this, e);
    }
    e << YAML::EndMap;
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace t6
