#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "data/h5.h"

namespace t6 {

namespace fs = std::filesystem;

namespace {

const char* kGroups[] = {"params", "adam_m", "adam_v"};

}  // namespace

uint32_t crc32_of(const std::vector<float>& data, size_t offset, size_t count) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = reinterpret_cast<const Bytef*>(data.data() + offset);
  size_t left = count * sizeof(float);
  while (left > 0) {  // zlib takes uInt lengths
    const uInt n = (uInt)std::min<size_t>(left, 1u << 30);
    crc = crc32(crc, bytes, n);
    bytes += n;
    left -= n;
  }
  return (uint32_t)crc;
}

namespace {

// Makes a file's or directory's contents durable before it is renamed into place.
void fsync_path(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot open to sync ({})", p.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error(fmt::format("{}: fsync failed ({})", p.string(), std::strerror(err)));
}

int64_t iter_of(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (name.rfind("ckpt_", 0) != 0) return -1;
  try {
    size_t used = 0;
    const int64_t it = std::stoll(name.substr(5), &used);
    return used == name.size() - 5 ? it : -1;
  } catch (...) {
    return -1;
  }
}

void write_state_file(const std::string& path, const ParamLayout& layout, const TrainingState& state) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = create_in_memory(path);
  try {
    write_int_attr(file, "format_version", kCheckpointFormat);
    write_int_attr(file, "iter", state.iter);
    write_int_attr(file, "adam_steps", state.adam_steps);
    write_int_attr(file, "loader_position", (int64_t)state.loader.position);
    write_int_attr(file, "loader_seed", (int64_t)state.loader.seed);
    write_int_attr(file, "world_size", state.world_size);
    write_string_attr(file, "config", state.config_yaml);
    write_string_attr(file, "data_fingerprint", state.data_fingerprint);
    const std::vector<float>* sources[] = {&state.params, &state.adam_m, &state.adam_v};
    for (int g = 0; g < 3; g++) {
      hid_t group = H5_CHECK(H5Gcreate2(file, kGroups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      for (const ParamInfo& p : layout.params) {
        std::vector<hsize_t> dims(p.shape.begin(), p.shape.end());
        hid_t space = H5_CHECK(H5Screate_simple((int)dims.size(), dims.data(), nullptr));
        hid_t ds = H5_CHECK(H5Dcreate2(group, p.name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                       H5P_DEFAULT));
        H5_CHECK(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, sources[g]->data() + p.offset));
        write_int_attr(ds, "crc32", crc32_of(*sources[g], p.offset, p.size));
        H5_CHECK(H5Dclose(ds));
        H5_CHECK(H5Sclose(space));
      }
      H5_CHECK(H5Gclose(group));
    }
  } catch (...) {
    H5Fclose(file);
    throw;
  }
  write_image_and_close(file, path);  // fsynced
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    errno = 0;
    std::ofstream out(tmp);
    if (!out) throw std::runtime_error(fmt::format("{}: cannot create it: {}", tmp, std::strerror(errno)));
    out << text;
    if (!out.flush()) throw std::runtime_error(fmt::format("{}: write failed: {}", tmp, std::strerror(errno)));
  }
  fsync_path(tmp);
  fs::rename(tmp, path);
}

std::vector<std::string> list_checkpoints(const std::string& out_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (fs::is_directory(out_dir))
    for (const auto& e : fs::directory_iterator(out_dir))
      if (e.is_directory() && iter_of(e.path()) >= 0) found.push_back({iter_of(e.path()), e.path().string()});
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> dirs;
  for (auto& f : found) dirs.push_back(f.second);
  return dirs;
}

std::string save_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& state,
                            int keep) {
  const fs::path out(out_dir), final_dir = out / fmt::format("ckpt_{}", state.iter),
                                tmp_dir = out / fmt::format(".ckpt_{}.tmp", state.iter);
  try {
    fs::create_directories(out);
    fs::remove_all(tmp_dir);  // the remains of a save that crashed
    fs::create_directory(tmp_dir);
    write_state_file((tmp_dir / "state.h5").string(), layout, state);
    fsync_path(tmp_dir);
    fs::remove_all(final_dir);  // an older save of the same iteration (a resumed run repeating it)
    fs::rename(tmp_dir, final_dir);
    fsync_path(out);

    write_file_atomically((out / "latest").string(), final_dir.filename().string() + "\n");
    fsync_path(out);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(tmp_dir, ignored);
    throw std::runtime_error(fmt::format("saving checkpoint {} failed: {}", final_dir.string(), e.what()));
  }

  // Only now, with the new checkpoint complete, may old ones go.
  if (keep > 0) {
    const auto all = list_checkpoints(out_dir);
    for (size_t i = (size_t)keep; i < all.size(); i++) {
      std::error_code ignored;
      if (all[i] != final_dir.string()) fs::remove_all(all[i], ignored);
    }
  }
  for (const auto& e : fs::directory_iterator(out))  // stale temporaries of crashed saves
    if (e.path().filename().string().rfind(".ckpt_", 0) == 0) {
      std::error_code ignored;
      fs::remove_all(e.path(), ignored);
    }
  return final_dir.string();
}

static hid_t open_state(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(fmt::format("{}: missing (not a checkpoint directory?)", path));
  if (H5Fis_hdf5(path.c_str()) <= 0) throw std::runtime_error(fmt::format("{}: not an HDF5 file (truncated or corrupt)", path));
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_closing_everything());
  if (file < 0) throw std::runtime_error(fmt::format("{}: cannot open as HDF5 (truncated or corrupt)", path));
  return file;
}

std::string checkpoint_config(const std::string& dir) {
  const std::string path = dir + "/state.h5";
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = open_state(path);
  try {
    const int64_t version = read_int_attr(file, path, "format_version");
    if (version != kCheckpointFormat)
      throw std::runtime_error(fmt::format("{}: checkpoint format version {}, this build reads version {}", path,
                                           version, kCheckpointFormat));
    std::string config = read_string_attr(file, path, "config");
    H5Fclose(file);
    return config;
  } catch (...) {
    H5Fclose(file);
    throw;
  }
}

TrainingState load_checkpoint(const std::string& dir, const ParamLayout& layout) {
  TrainingState state;
  state.config_yaml = checkpoint_config(dir);  // also checks the format version
  const std::string path = dir + "/state.h5";
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = open_state(path);
  try {
    state.iter = read_int_attr(file, path, "iter");
    state.adam_steps = read_int_attr(file, path, "adam_steps");
    state.loader.position = (uint64_t)read_int_attr(file, path, "loader_position");
    state.loader.seed = (uint64_t)read_int_attr(file, path, "loader_seed");
    state.world_size = (int)read_int_attr(file, path, "world_size");
    if (H5Aexists(file, "data_fingerprint") > 0) state.data_fingerprint = read_string_attr(file, path, "data_fingerprint");
    std::vector<float>* targets[] = {&state.params, &state.adam_m, &state.adam_v};
    for (int g = 0; g < 3; g++) {
      targets[g]->assign(layout.total, 0.0f);
      for (const ParamInfo& p : layout.params) {
        const std::string name = std::string(kGroups[g]) + "/" + p.name;
        if (H5Lexists(file, kGroups[g], H5P_DEFAULT) <= 0 || H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0)
          throw std::runtime_error(fmt::format("{}: no dataset {} (a checkpoint of another model?)", path, name));
        hid_t ds = H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
        hid_t space = H5_CHECK(H5Dget_space(ds));
        std::vector<hsize_t> dims(H5_CHECK(H5Sget_simple_extent_ndims(space)));
        H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
        H5_CHECK(H5Sclose(space));
        if (std::vector<int64_t>(dims.begin(), dims.end()) != p.shape) {
          H5Dclose(ds);
          throw std::runtime_error(fmt::format("{}: dataset {} has another shape than the model's", path, name));
        }
        const herr_t read = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, targets[g]->data() + p.offset);
        int64_t stored = -1;
        if (read >= 0) stored = read_int_attr(ds, path, "crc32");
        H5_CHECK(H5Dclose(ds));
        if (read < 0) throw std::runtime_error(fmt::format("{}: reading {} failed (truncated or corrupt)", path, name));
        const uint32_t computed = crc32_of(*targets[g], p.offset, p.size);
        if ((uint32_t)stored != computed)
          throw std::runtime_error(fmt::format("{}: dataset {} fails its checksum (stored {:08x}, computed {:08x}): "
                                               "the file is corrupt", path, name, (uint32_t)stored, computed));
      }
    }
    H5_CHECK(H5Fclose(file));
  } catch (...) {
    H5Fclose(file);
    throw;
  }
  return state;
}

OutDirLock::OutDirLock(const std::string& out_dir) {
  fs::create_directories(out_dir);
  const std::string path = (fs::path(out_dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(fmt::format("{}: cannot create the run's lock: {}", path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[256] = {};
    const ssize_t n = ::pread(fd_, holder, sizeof(holder) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK)
      throw std::runtime_error(fmt::format("{}: cannot lock it: {}", path, std::strerror(err)));
    std::string who = n > 0 ? std::string(holder, (size_t)n) : "an unknown process";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    throw std::invalid_argument(fmt::format("{} is in use by another run ({}; lock {}): wait for it to end, or use "
                                            "another train.out_dir", out_dir, who, path));
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::string me = fmt::format("pid {} on {}\n", (long)getpid(), host);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != (ssize_t)me.size())
    throw std::runtime_error(fmt::format("{}: cannot write the run's lock: {}", path, std::strerror(errno)));
}

OutDirLock::~OutDirLock() {
  if (fd_ >= 0) ::close(fd_);  // (closing releases the flock)
}

}  // namespace t6
