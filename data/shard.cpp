#include "data/shard.h"

#include "data/h5.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace t6 {

namespace {

// The attributes must describe a usable vocabulary: ids below vocab_size, the end-of-text id
// among them, and the named tokenizers' own sizes (a `gpt2` shard with a small vocab_size would
// let GPT-2 ids index past the model's embedding).
void check_meta(const ShardMeta& m, const std::string& path) {
  if (m.vocab_size < 1 || m.vocab_size > (int64_t)UINT32_MAX + 1)
    throw std::runtime_error(fmt::format("{}: vocab_size {} (attribute): expected 1 to 2^32", path, m.vocab_size));
  if (m.eot_token < 0 || m.eot_token >= m.vocab_size)
    throw std::runtime_error(fmt::format("{}: eot_token {} (attribute) is not below vocab_size {}", path, m.eot_token,
                                         m.vocab_size));
  if (m.tokenizer == "gpt2" && m.vocab_size < 50257)
    throw std::runtime_error(fmt::format("{}: tokenizer 'gpt2' has 50257 ids, but vocab_size (attribute) is {}", path,
                                         m.vocab_size));
  if (m.tokenizer == "byte" && m.vocab_size < 256)
    throw std::runtime_error(fmt::format("{}: tokenizer 'byte' has 256 ids, but vocab_size (attribute) is {}", path,
                                         m.vocab_size));
}

}  // namespace

ShardReader::ShardReader(const std::string& path) : path_(path) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (!std::filesystem::exists(path)) throw std::runtime_error(fmt::format("{}: no such shard file", path));
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw std::runtime_error(fmt::format("{}: not an HDF5 file (truncated or corrupt?)", path));
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_closing_everything());
  if (file_ < 0) throw std::runtime_error(fmt::format("{}: cannot open as HDF5 (truncated or corrupt?)", path));
  try {
    if (H5Lexists(file_, "tokens", H5P_DEFAULT) <= 0)
      throw std::runtime_error(fmt::format("{}: no dataset named 'tokens' (see data/README.md)", path));
    dataset_ = H5_CHECK(H5Dopen2(file_, "tokens", H5P_DEFAULT));
    hid_t type = H5_CHECK(H5Dget_type(dataset_));
    const bool is_uint = H5Tget_class(type) == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE;
    const size_t width = H5Tget_size(type);
    H5_CHECK(H5Tclose(type));
    if (!is_uint || (width != 2 && width != 4))
      throw std::runtime_error(fmt::format("{}: dataset 'tokens' must be uint16 or uint32", path));
    hid_t space = H5_CHECK(H5Dget_space(dataset_));
    const int rank = (int)H5_CHECK(H5Sget_simple_extent_ndims(space));
    hsize_t dims[1] = {0};
    if (rank == 1) H5_CHECK(H5Sget_simple_extent_dims(space, dims, nullptr));
    H5_CHECK(H5Sclose(space));
    if (rank != 1) throw std::runtime_error(fmt::format("{}: dataset 'tokens' must be 1-D, it has {} dims", path, rank));
    meta_.num_tokens = dims[0];
    meta_.vocab_size = read_int_attr(file_, path, "vocab_size");
    meta_.eot_token = read_int_attr(file_, path, "eot_token");
    meta_.tokenizer = read_string_attr(file_, path, "tokenizer");
    check_meta(meta_, path);
  } catch (...) {
    if (dataset_ >= 0) H5Dclose(dataset_);
    H5Fclose(file_);
    throw;
  }
}

ShardReader::ShardReader(ShardReader&& o) noexcept : path_(std::move(o.path_)), meta_(std::move(o.meta_)) {
  file_ = o.file_;
  dataset_ = o.dataset_;
  o.file_ = o.dataset_ = -1;
}

ShardReader::~ShardReader() {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (dataset_ >= 0) H5Dclose(dataset_);
  if (file_ >= 0) H5Fclose(file_);
}

void ShardReader::read(uint64_t start, uint64_t count, int32_t* out) const {
  if (count == 0) return;
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (start + count > meta_.num_tokens)
    throw std::out_of_range(fmt::format("{}: read of tokens [{}, {}) past the end ({})", path_, start, start + count,
                                        meta_.num_tokens));
  hid_t file_space = H5_CHECK(H5Dget_space(dataset_));
  hsize_t offset[1] = {start}, n[1] = {count};
  hid_t mem_space = -1;
  try {
    H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, offset, nullptr, n, nullptr));
    mem_space = H5_CHECK(H5Screate_simple(1, n, nullptr));
    // HDF5 converts uint16/uint32 on disk to int32 in memory.
    if (H5Dread(dataset_, H5T_NATIVE_INT32, mem_space, file_space, H5P_DEFAULT, out) < 0)
      throw std::runtime_error(fmt::format("{}: reading tokens [{}, {}) failed (truncated or corrupt file?)", path_,
                                           start, start + count));
  } catch (...) {
    if (mem_space >= 0) H5Sclose(mem_space);
    H5Sclose(file_space);
    throw;
  }
  H5_CHECK(H5Sclose(mem_space));
  H5_CHECK(H5Sclose(file_space));
}

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, const ShardMeta& meta, bool compress) {
  for (size_t i = 0; i < tokens.size(); i++)
    if (tokens[i] >= (uint64_t)meta.vocab_size)
      throw std::invalid_argument(
          fmt::format("{}: token {} at position {} is not below vocab_size {}", path, tokens[i], i, meta.vocab_size));
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = create_in_memory(path);
  try {
    const bool narrow = meta.vocab_size <= 65536;
    hsize_t dims[1] = {tokens.size()};
    hid_t space = H5_CHECK(H5Screate_simple(1, dims, nullptr));
    hid_t props = H5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
    if (compress && !tokens.empty()) {
      hsize_t chunk[1] = {std::min<hsize_t>(tokens.size(), 1 << 16)};
      H5_CHECK(H5Pset_chunk(props, 1, chunk));
      H5_CHECK(H5Pset_deflate(props, 6));
    }
    hid_t dataset = H5_CHECK(H5Dcreate2(file, "tokens", narrow ? H5T_STD_U16LE : H5T_STD_U32LE, space, H5P_DEFAULT,
                                        props, H5P_DEFAULT));
    H5_CHECK(H5Pclose(props));
    if (!tokens.empty()) H5_CHECK(H5Dwrite(dataset, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data()));
    H5_CHECK(H5Dclose(dataset));
    H5_CHECK(H5Sclose(space));
    write_int_attr(file, "vocab_size", meta.vocab_size);
    write_string_attr(file, "tokenizer", meta.tokenizer);
    write_int_attr(file, "eot_token", meta.eot_token);
  } catch (...) {
    H5Fclose(file);
    throw;
  }
  write_image_and_close(file, path);
}

}  // namespace t6
