#include "data/h5.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <stdexcept>
#include <vector>

namespace t6 {

namespace {

// HDF5 prints its error stack to stderr by default; we collect the innermost message instead
// and put it into the exception, so errors reach the user once and in one place.
struct SilenceHdf5 {
  SilenceHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
} silence_hdf5;

herr_t collect_message(unsigned, const H5E_error2_t* err, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(err->desc ? err->desc : "");
  return 0;
}

}  // namespace

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

int64_t h5_check(int64_t status, const char* call, const char* file, int line) {
  if (status >= 0) return status;
  // The stack runs from the API call down to the cause (often the system's own message, such
  // as "No space left on device"); both ends matter to a reader.
  std::vector<std::string> stack;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &stack);
  H5Eclear2(H5E_DEFAULT);
  std::string message = stack.empty() ? "no details" : stack.front();
  if (stack.size() > 1) message += " (cause: " + stack.back() + ")";
  throw std::runtime_error(fmt::format("HDF5 call {} failed at {}:{}: {}", call, file, line, message));
}

hid_t file_access_closing_everything() {
  static const hid_t fapl = [] {
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(p, H5F_CLOSE_STRONG);
    return p;
  }();
  return fapl;
}

hid_t create_in_memory(const std::string& name) {
  hid_t fapl = H5_CHECK(H5Pcreate(H5P_FILE_ACCESS));
  hid_t file = -1;
  try {
    H5_CHECK(H5Pset_fapl_core(fapl, 64 << 20, /*backing_store=*/0));
    H5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
    file = H5_CHECK(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  } catch (...) {
    H5Pclose(fapl);
    throw;
  }
  H5_CHECK(H5Pclose(fapl));
  return file;
}

void write_image_and_close(hid_t file, const std::string& path) {
  std::vector<char> image;
  try {
    H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));
    const ssize_t size = H5_CHECK(H5Fget_file_image(file, nullptr, 0));
    image.resize((size_t)size);
    H5_CHECK(H5Fget_file_image(file, image.data(), image.size()));
  } catch (...) {
    H5Fclose(file);
    throw;
  }
  H5_CHECK(H5Fclose(file));
  write_file_atomically(path, image.data(), image.size());
}

namespace {

void write_file_synced(const std::string& path, const void* data, size_t bytes) {
  const char* bytes_at = static_cast<const char*>(data);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot create it: {}", path, std::strerror(errno)));
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::write(fd, bytes_at + done, std::min<size_t>(bytes - done, 1u << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error(fmt::format("{}: write failed: {}", path, std::strerror(err)));
    }
    done += (size_t)n;
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error(fmt::format("{}: fsync failed: {}", path, std::strerror(err)));
  }
  if (::close(fd) != 0) throw std::runtime_error(fmt::format("{}: close failed: {}", path, std::strerror(errno)));
}

}  // namespace

void write_file_atomically(const std::string& path, const void* data, size_t bytes) {
  const std::string tmp = path + ".tmp";
  try {
    write_file_synced(tmp, data, bytes);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot rename it to {}: {}", tmp, path, ec.message()));
  }
  sync_path(std::filesystem::absolute(path).parent_path());
}

void sync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot open it to sync: {}", path.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems (FUSE, some network ones) cannot sync a directory: its names are as
  // durable as they make them, and the files in it were synced on their own.
  if (rc != 0 && (err == EINVAL || err == ENOTSUP) && std::filesystem::is_directory(path)) return;
  if (rc != 0) throw std::runtime_error(fmt::format("{}: fsync failed: {}", path.string(), std::strerror(err)));
}

int64_t read_int_attr(hid_t file, const std::string& path, const char* name) {
  if (H5Aexists(file, name) <= 0)
    throw std::runtime_error(fmt::format("{}: missing attribute '{}' (see data/README.md)", path, name));
  hid_t attr = H5_CHECK(H5Aopen(file, name, H5P_DEFAULT));
  int64_t value = 0;
  herr_t status = H5Aread(attr, H5T_NATIVE_INT64, &value);
  H5_CHECK(H5Aclose(attr));
  if (status < 0) throw std::runtime_error(fmt::format("{}: attribute '{}' is not an integer", path, name));
  return value;
}

std::string read_string_attr(hid_t file, const std::string& path, const char* name) {
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

void write_int_attr(hid_t file, const char* name, int64_t value) {
  hid_t space = H5_CHECK(H5Screate(H5S_SCALAR));
  hid_t attr = H5_CHECK(H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT));
  H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &value));
  H5_CHECK(H5Aclose(attr));
  H5_CHECK(H5Sclose(space));
}

void write_string_attr(hid_t file, const char* name, const std::string& value) {
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

}  // namespace t6
