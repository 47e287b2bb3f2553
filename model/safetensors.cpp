#include "model/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace t6 {

using json = nlohmann::json;

static float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float value;
  if (exp == 0) value = std::ldexp((float)mant, -24);  // subnormal or zero
  else if (exp == 31) value = mant ? NAN : INFINITY;
  else value = std::ldexp((float)(mant | 0x400), (int)exp - 25);
  return sign ? -value : value;
}

static float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Reads the JSON header; leaves `in` open and reports where the data starts and its size.
static json read_header(const std::string& path, std::ifstream& in, uint64_t& data_start, uint64_t& data_size) {
  in.open(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open safetensors file ({})", path, std::strerror(errno)));
  in.seekg(0, std::ios::end);
  const uint64_t file_size = (uint64_t)in.tellg();
  in.seekg(0);
  uint64_t header_len = 0;
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(&header_len), 8))
    throw std::runtime_error(fmt::format("{}: not a safetensors file ({} bytes, shorter than the header length)", path,
                                         file_size));
  if (header_len > file_size - 8) {
    // A header that starts like JSON but ends past the file is a cut copy; anything else is not safetensors.
    char first = 0;
    const bool json_like = file_size > 8 && in.read(&first, 1) && first == '{';
    throw std::runtime_error(
        json_like ? fmt::format("{}: truncated: its header claims {} bytes, but the file has {} after the length",
                                path, header_len, file_size - 8)
                  : fmt::format("{}: not a safetensors file (bad header length)", path));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  json meta;
  try {
    meta = json::parse(header);
  } catch (const json::exception&) {
    throw std::runtime_error(fmt::format("{}: the safetensors header ({} bytes) is not valid JSON", path, header_len));
  }
  if (!meta.is_object())
    throw std::runtime_error(fmt::format("{}: the safetensors header is not a JSON object of tensors", path));
  // Every entry but __metadata__ must be {"dtype": string, "shape": [n ≥ 0, …], "data_offsets": [begin, end]}.
  for (auto& [name, info] : meta.items()) {
    if (name == "__metadata__") continue;
    auto non_negative_ints = [](const json& a) {
      if (!a.is_array()) return false;
      for (const json& x : a)
        if (!x.is_number_integer() || x.get<int64_t>() < 0) return false;
      return true;
    };
    if (!info.is_object() || !info.contains("dtype") || !info["dtype"].is_string() || !info.contains("shape") ||
        !non_negative_ints(info["shape"]) || !info.contains("data_offsets") || !non_negative_ints(info["data_offsets"]) ||
        info["data_offsets"].size() != 2)
      throw std::runtime_error(fmt::format("{}: tensor '{}': malformed header entry (expected dtype, a shape of "
                                           "non-negative sizes and two data_offsets)", path, name));
  }
  data_start = 8 + header_len;
  data_size = file_size - data_start;
  return meta;
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  std::ifstream in;
  uint64_t start, size;
  const json meta = read_header(path, in, start, size);
  std::map<std::string, std::string> out;
  if (meta.contains("__metadata__") && meta["__metadata__"].is_object())
    for (auto& [k, v] : meta["__metadata__"].items())
      if (v.is_string()) out[k] = v.get<std::string>();
  return out;
}

std::map<std::string, HostTensor> read_safetensors(const std::string& path) {
  std::ifstream in;
  uint64_t data_start, data_size;
  const json meta = read_header(path, in, data_start, data_size);

  std::map<std::string, HostTensor> tensors;
  for (auto& [name, info] : meta.items()) {
    if (name == "__metadata__") continue;
    const std::string dtype = info.value("dtype", "");
    const int width = dtype == "F32" ? 4 : dtype == "F64" ? 8 : (dtype == "BF16" || dtype == "F16") ? 2 : 0;
    if (width == 0)
      throw std::runtime_error(
          fmt::format("{}: tensor {} has dtype '{}'; expected F32, F64, BF16 or F16", path, name, dtype));
    HostTensor t;
    t.shape = info.at("shape").get<std::vector<int64_t>>();
    const auto offsets = info.at("data_offsets").get<std::vector<uint64_t>>();
    size_t count = 1;
    for (int64_t d : t.shape) count *= (size_t)d;
    if (offsets.size() != 2 || offsets[1] < offsets[0] || offsets[1] > data_size ||
        offsets[1] - offsets[0] != count * width)
      throw std::runtime_error(fmt::format("{}: tensor {} has data_offsets that do not fit its shape {} and dtype {}",
                                           path, name, t.shape, dtype));
    std::vector<char> raw(count * width);
    in.seekg(data_start + offsets[0]);
    if (!in.read(raw.data(), raw.size())) throw std::runtime_error(fmt::format("{}: truncated at tensor {}", path, name));
    t.data.resize(count);
    for (size_t i = 0; i < count; i++) {
      const char* p = raw.data() + i * width;
      if (width == 4) { std::memcpy(&t.data[i], p, 4); }
      else if (width == 8) { double d; std::memcpy(&d, p, 8); t.data[i] = (float)d; }
      else { uint16_t h; std::memcpy(&h, p, 2); t.data[i] = dtype == "BF16" ? bf16_to_float(h) : half_to_float(h); }
    }
    tensors.emplace(name, std::move(t));
  }
  return tensors;
}

void save_weights(const std::string& path, const ParamLayout& layout, const std::vector<float>& flat,
                  const std::map<std::string, std::string>& metadata) {
  if (flat.size() != layout.total)
    throw std::invalid_argument(fmt::format("{}: {} numbers given for a layout of {}", path, flat.size(), layout.total));
  // The model's tensors back to back, in layout order; the layout's padding is no tensor.
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t at = 0;
  for (const ParamInfo& p : layout.params) {
    if (p.padding) continue;
    header[p.name] = {{"dtype", "F32"}, {"shape", p.shape}, {"data_offsets", {at * 4, (at + p.size) * 4}}};
    at += p.size;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the format allows space padding; keeps data 8-byte aligned
  const uint64_t len = text.size();

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(fmt::format("{}: cannot write ({})", tmp, std::strerror(errno)));
  bool ok = std::fwrite(&len, 8, 1, f) == 1 && std::fwrite(text.data(), 1, len, f) == len;
  for (const ParamInfo& p : layout.params)
    if (!p.padding) ok = ok && std::fwrite(flat.data() + p.offset, 4, p.size, f) == p.size;
  ok = std::fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: write failed ({})", path, std::strerror(errno)));
  }
  std::filesystem::rename(tmp, path);
}

std::vector<float> load_weights(const std::string& path, const ParamLayout& layout) {
  auto tensors = read_safetensors(path);
  const std::string wte = "transformer.wte.weight", head = "lm_head.weight";
  if (tensors.count(head)) {
    if (tensors.count(wte)) {
      if (tensors[head].shape != tensors[wte].shape || tensors[head].data != tensors[wte].data)
        throw std::runtime_error(fmt::format(
            "{}: {} and {} are both present but differ; T6 ties them, so they must be equal", path, wte, head));
    } else {
      tensors[wte] = tensors[head];
    }
    tensors.erase(head);
  }

  std::vector<std::string> problems;
  std::vector<float> flat(layout.total);  // (the padding stays zero)
  for (const ParamInfo& p : layout.params) {
    if (p.padding) continue;
    auto it = tensors.find(p.name);
    if (it == tensors.end()) {
      problems.push_back(fmt::format("missing     {} (expected shape {})", p.name, p.shape));
      continue;
    }
    if (it->second.shape != p.shape)
      problems.push_back(fmt::format("wrong shape {}: file has {}, model expects {}", p.name, it->second.shape, p.shape));
    else
      std::copy(it->second.data.begin(), it->second.data.end(), flat.begin() + p.offset);
    tensors.erase(it);
  }
  for (const auto& [name, t] : tensors) problems.push_back(fmt::format("unexpected  {} (shape {})", name, t.shape));
  if (!problems.empty())
    throw std::runtime_error(fmt::format("{}: the weights do not match the model config:\n  {}", path,
                                         fmt::join(problems, "\n  ")));
  return flat;
}

}  // namespace t6
