#include "data/shard.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace t6 {

namespace {

// HDF5 prints its error stack to stderr by default; we collect the innermost message instead
// and put it into the exception, so errors reach the user once and in one place.
struct SilenceHdf5 {
  SilenceHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
} silence_hdf5;

herr_t collect_message(unsigned n, const H5E_error2_t* err, void* data) {
  if (n == 0) *static_cast<std::string*>(data) = err->desc ? err->desc : "";
  return 0;
}

}  // namespace

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

int64_t h5_check(int64_t status, const char* call, const char* file, int line) {
  if (status >= 0) return status;
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &message);
  H5Eclear2(H5E_DEFAULT);
  throw std::runtime_error(fmt::format("HDF5 call {} failed at {}:{}: {}", call, file, line, message));
}

static int64_t read_int_attr(hid_t file, const std::string& path, const char* name) {
  if (H5Aexists(file, name) <= 0)
    throw std::runtime_error(fmt::format("{}: missing attribute '{}' (see data/README.md)", path, name));
  hid_t attr = H5_CHECK(H5Aopen(file, name, H5P_DEFAULT));
  int64_t value = 0;
  herr_t status = H5Aread(attr, H5T_NATIVE_INT64, &value);
  H5_CHECK(H5Aclose(attr));
  if (status < 0) throw std::runtime_error(fmt::format("{}: attribute '{}' is not an integer", path, name));
  return value;
}

static std::string read_string_attr(hid_t file, const std::string& path, const char* name) {
  if (H5Aexists(file, name) <= 0)
    throw std::runtime_error(fmt::format("{}: missing attribute '{}' (see data/README.md)", path, name));
  hid_t attr = H5_CHECK(H5Aopen(file, name, H5P_DEFAULT));
  hid_t type = H5_CHECK(H5Aget_type(attr));
  std::string value;
  if (H5Tget_class(type) != H5T_STRING) {
    H5Tclose(type);
    H5Aclose(attr);
    throw std::runtime_error(fmt::format("{}: attribute '{}' must be a string", path, name));
  }
  if (H5Tis_variable_str(type) > 0) {
    char* s = nullptr;
    hid_t mem = H5_CHECK(H5Tget_native_type(type, H5T_DIR_ASCEND));
    H5_CHECK(H5Aread(attr, mem, &s));
    value = s ? s : "";
    H5free_memory(s);
    H5_CHECK(H5Tclose(mem));
  } else {
    std::string buf(H5Tget_size(type), '\0');
    H5_CHECK(H5Aread(attr, type, buf.data()));
    value = buf.c_str();  // fixed-length strings may be NUL-padded
  }
  H5_CHECK(H5Tclose(type));
  H5_CHECK(H5Aclose(attr));
  return value;
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (!std::filesystem::exists(path)) throw std::runtime_error(fmt::format("{}: no such shard file", path));
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw std::runtime_error(fmt::format("{}: not an HDF5 file (truncated or corrupt?)", path));
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
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

static void write_int_attr(hid_t file, const char* name, int64_t value) {
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t attr = H5_CHECK(H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT));
  H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &value));
  H5_CHECK(H5Aclose(attr));
  H5_CHECK(H5Sclose(space));
}

static void write_string_attr(hid_t file, const char* name, const std::string& value) {
  hid_t type = H5_CHECK(H5Tcopy(H5T_C_S1));
  H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t attr = H5_CHECK(H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
  const char* s = value.c_str();
  H5_CHECK(H5Awrite(attr, type, &s));
  H5_CHECK(H5Aclose(attr));
  H5_CHECK(H5Sclose(space));
  H5_CHECK(H5Tclose(type));
}

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, const ShardMeta& meta, bool compress) {
  for (size_t i = 0; i < tokens.size(); i++)
    if (tokens[i] >= (uint64_t)meta.vocab_size)
      throw std::invalid_argument(
          fmt::format("{}: token {} at position {} is not below vocab_size {}", path, tokens[i], i, meta.vocab_size));
  const std::string tmp = path + ".tmp";
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) throw std::runtime_error(fmt::format("{}: cannot create file", tmp));
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
    H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));
    H5_CHECK(H5Fclose(file));
  } catch (...) {
    H5Fclose(file);
    std::remove(tmp.c_str());
    throw;
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace t6
