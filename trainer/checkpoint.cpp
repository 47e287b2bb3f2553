#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>  // renameat2
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "data/h5.h"
#include <nlohmann/json.hpp>

namespace t6 {

namespace fs = std::filesystem;

namespace {

const char* kGroups[] = {"params", "adam_m", "adam_v"};

uint32_t crc32_span(const float* data, size_t count) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* bytes = reinterpret_cast<const Bytef*>(data);
  for (size_t left = count * sizeof(float); left > 0;) {  // zlib takes uInt lengths
    const uInt n = (uInt)std::min<size_t>(left, 1u << 30);
    crc = crc32(crc, bytes, n);
    bytes += n;
    left -= n;
  }
  return (uint32_t)crc;
}

}  // namespace

uint32_t crc32_of(const std::vector<float>& data, size_t offset, size_t count) {
  return crc32_span(data.data() + offset, count);
}

namespace {

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

}  // namespace

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

std::vector<std::string> set_aside_later_checkpoints(const std::string& out_dir, int64_t iter) {
  const fs::path aside = fs::path(out_dir) / "superseded";
  std::vector<std::string> moved;
  for (const std::string& dir : list_checkpoints(out_dir)) {
    if (iter_of(dir) <= iter) continue;
    fs::create_directories(aside);
    fs::path to = aside / fs::path(dir).filename();
    for (int n = 1; fs::exists(to); n++) to = aside / fmt::format("{}.{}", fs::path(dir).filename().string(), n);
    fs::rename(dir, to);
    moved.push_back(to.string());
  }
  if (moved.empty()) return moved;
  // `latest` names the newest checkpoint left, or goes with the last of them.
  const auto left = list_checkpoints(out_dir);
  const fs::path latest = fs::path(out_dir) / "latest";
  if (left.empty()) {
    fs::remove(latest);
    sync_path(out_dir);
  } else {
    write_file_atomically(latest.string(), fs::path(left.front()).filename().string() + "\n");  // (syncs out_dir)
  }
  sync_path(aside);
  return moved;
}

namespace {

fs::path temp_dir_of(const std::string& out_dir, int64_t iter) {
  return fs::path(out_dir) / fmt::format(".ckpt_{}.tmp", iter);
}
std::string shard_name(int rank) { return fmt::format("shard_{:05d}.bin", rank); }


void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(bytes, 1u << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(fmt::format("{}: write failed ({})", path, std::strerror(errno)));
    p += n;
    bytes -= (size_t)n;
  }
}

}  // namespace

// A checkpoint directory goes out of the way under a temporary name first, so that a crash while
// its files are being deleted never leaves a half-deleted ckpt_<iter> that looks complete (the
// sweep of stale temporaries removes the rest).
void retire(const fs::path& dir) {
  if (!fs::exists(dir)) return;
  const fs::path old = dir.parent_path() / fmt::format(".{}.old", dir.filename().string());
  std::error_code ignored;
  fs::remove_all(old, ignored);
  fs::rename(dir, old);
  fs::remove_all(old, ignored);
}

// Puts the complete checkpoint `from` in place as `to`. Where `to` exists (a resumed run saving
// an iteration again), the two are swapped in one step where the file system can (Linux's
// RENAME_EXCHANGE), so that a crash leaves one complete checkpoint under the name; elsewhere the
// old one goes first.
void put_in_place(const fs::path& from, const fs::path& to) {
  if (fs::exists(to)) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
      retire(from);  // (now the old one)
      return;
    }
    // Only a file system without the exchange falls back to deleting first; any other failure
    // (permissions, I/O) would fail the rename below too, after the old checkpoint was gone.
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
      throw std::runtime_error(fmt::format("{}: cannot put it in place of {}: {}", from.string(), to.string(),
                                           std::strerror(errno)));
  }
  retire(to);
  fs::rename(from, to);
}

void begin_checkpoint(const std::string& out_dir, int64_t iter) {
  const fs::path tmp = temp_dir_of(out_dir, iter);
  fs::create_directories(out_dir);
  fs::remove_all(tmp);  // the remains of a save that crashed
  fs::create_directory(tmp);
}

SliceSums write_checkpoint_slice(const std::string& out_dir, int64_t iter, int rank, const StateSlice& slice) {
  const std::string path = (temp_dir_of(out_dir, iter) / shard_name(rank)).string();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot create it ({})", path, std::strerror(errno)));
  try {
    for (const float* a : {slice.params, slice.adam_m, slice.adam_v}) write_all(fd, a, slice.count * sizeof(float), path);
    if (::fsync(fd) != 0) throw std::runtime_error(fmt::format("{}: fsync failed ({})", path, std::strerror(errno)));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw std::runtime_error(fmt::format("{}: write failed ({})", path, std::strerror(errno)));
  return {crc32_span(slice.params, slice.count), crc32_span(slice.adam_m, slice.count), crc32_span(slice.adam_v, slice.count)};
}

std::string commit_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& meta,
                              const std::vector<size_t>& counts, const std::vector<SliceSums>& sums, int keep) {
  const fs::path out(out_dir), final_dir = out / fmt::format("ckpt_{}", meta.iter), tmp_dir = temp_dir_of(out_dir, meta.iter);
  try {
    nlohmann::json tensors = nlohmann::json::array(), shards = nlohmann::json::array();
    for (const ParamInfo& p : layout.params) tensors.push_back({p.name, p.shape, p.offset});
    size_t begin = 0;
    for (size_t r = 0; r < counts.size(); r++) {
      shards.push_back({{"file", shard_name((int)r)}, {"begin", begin}, {"count", counts[r]},
                        {"crc32", {sums[r].params, sums[r].adam_m, sums[r].adam_v}}});
      begin += counts[r];
    }
    if (begin != layout.total)
      throw std::logic_error(fmt::format("the shards cover {} of {} numbers", begin, layout.total));
    const nlohmann::json manifest = {{"format_version", kCheckpointFormat},
                                     {"iter", meta.iter},
                                     {"adam_steps", meta.adam_steps},
                                     {"loader_position", meta.loader.position},
                                     {"loader_seed", meta.loader.seed},
                                     {"world_size", meta.world_size},
                                     {"total", layout.total},
                                     {"arrays", {"params", "adam_m", "adam_v"}},
                                     {"shards", shards},
                                     {"tensors", tensors},
                                     {"config", meta.config_yaml},
                                     {"data_fingerprint", meta.data_fingerprint}};
    write_file_atomically((tmp_dir / "manifest.json").string(), manifest.dump(1) + "\n");  // (syncs tmp_dir)
    put_in_place(tmp_dir, final_dir);
    sync_path(out);
    write_file_atomically((out / "latest").string(), final_dir.filename().string() + "\n");
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(tmp_dir, ignored);
    throw std::runtime_error(fmt::format("saving checkpoint {} failed: {}", final_dir.string(), e.what()));
  }

  // Only now, with the new checkpoint complete, may old ones go.
  if (keep > 0) {
    const auto all = list_checkpoints(out_dir);
    for (size_t i = (size_t)keep; i < all.size(); i++) {
      if (all[i] == final_dir.string()) continue;
      try {
        retire(all[i]);
      } catch (const fs::filesystem_error&) {  // (pruning is best effort; the new checkpoint stands)
      }
    }
  }
  for (const auto& e : fs::directory_iterator(out))  // stale temporaries of crashed saves
    if (e.path().filename().string().rfind(".ckpt_", 0) == 0) {
      std::error_code ignored;
      fs::remove_all(e.path(), ignored);
    }
  return final_dir.string();
}

std::string save_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& state,
                            int keep) {
  const fs::path final_dir = fs::path(out_dir) / fmt::format("ckpt_{}", state.iter);
  SliceSums sums;
  try {
    begin_checkpoint(out_dir, state.iter);
    sums = write_checkpoint_slice(out_dir, state.iter, 0,
                                  {0, layout.total, state.params.data(), state.adam_m.data(), state.adam_v.data()});
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove_all(temp_dir_of(out_dir, state.iter), ignored);
    throw std::runtime_error(fmt::format("saving checkpoint {} failed: {}", final_dir.string(), e.what()));
  }
  return commit_checkpoint(out_dir, layout, state, {layout.total}, {sums}, keep);
}

namespace {

hid_t open_state(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(fmt::format("{}: missing (not a checkpoint directory?)", path));
  if (H5Fis_hdf5(path.c_str()) <= 0) throw std::runtime_error(fmt::format("{}: not an HDF5 file (truncated or corrupt)", path));
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access_closing_everything());
  if (file < 0) throw std::runtime_error(fmt::format("{}: cannot open as HDF5 (truncated or corrupt)", path));
  return file;
}

}  // namespace

namespace {

nlohmann::json read_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  std::ifstream f(path);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot read it ({})", path, std::strerror(errno)));
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(f);
    const int64_t version = m.at("format_version").get<int64_t>();
    if (version != kCheckpointFormat)
      throw std::runtime_error(fmt::format("{}: checkpoint format version {}, this build reads versions 1 and {}",
                                           path, version, kCheckpointFormat));
    (void)m.at("config").get<std::string>();
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(fmt::format("{}: not a valid checkpoint manifest (truncated or corrupt)", path));
  }
  return m;
}

// Format 1: one state.h5 with a dataset per tensor and array (params/…, adam_m/…, adam_v/…).
std::string config_v1(const std::string& dir) {
  const std::string path = dir + "/state.h5";
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = open_state(path);
  try {
    const int64_t version = read_int_attr(file, path, "format_version");
    if (version != 1)
      throw std::runtime_error(fmt::format("{}: checkpoint format version {}, this build reads versions 1 and {}", path,
                                           version, kCheckpointFormat));
    std::string config = read_string_attr(file, path, "config");
    H5Fclose(file);
    return config;
  } catch (...) {
    H5Fclose(file);
    throw;
  }
}

TrainingState load_v1(const std::string& dir, const ParamLayout& layout) {
  TrainingState state;
  state.config_yaml = config_v1(dir);  // also checks the format version
  const std::string path = dir + "/state.h5";
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  hid_t file = open_state(path);
  try {
    state.iter = read_int_attr(file, path, "iter");
    state.adam_steps = read_int_attr(file, path, "adam_steps");
    state.loader.position = (uint64_t)read_int_attr(file, path, "loader_position");
    state.loader.seed = (uint64_t)read_int_attr(file, path, "loader_seed");
    state.world_size = (int)read_int_attr(file, path, "world_size");
    if (H5_CHECK(H5Aexists(file, "data_fingerprint")) > 0)  // (an error is not "absent")
      state.data_fingerprint = read_string_attr(file, path, "data_fingerprint");
    std::vector<float>* targets[] = {&state.params, &state.adam_m, &state.adam_v};
    for (int g = 0; g < 3; g++) {
      targets[g]->assign(layout.total, 0.0f);
      for (const ParamInfo& p : layout.params) {
        if (p.padding) continue;  // (format 1 predates the padding entries: it stays zero)
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

// A run of a checkpoint's flat arrays and where it goes in the model's.
struct Segment {
  size_t from, to, size;  // the checkpoint's offset, the model's, elements
};

// The checkpoint's tensors (the manifest's [name, shape, offset] of each) matched to the model's
// by name and shape, sorted by their place in the checkpoint: anything else is a checkpoint of
// another model. The model's padding entries may be absent (checkpoints written before the
// layout had them, whose arrays hold no padding): that padding stays zero. Tensors that are
// neighbours in both merge, so a checkpoint of the model's own layout is one segment.
std::vector<Segment> map_tensors(const nlohmann::json& tensors, size_t stored_total, const ParamLayout& layout,
                                 const std::string& where) {
  auto refuse = [&](const std::string& why) {
    return std::runtime_error(
        fmt::format("{}: a checkpoint of another model (its tensors differ from the model's: {})", where, why));
  };
  std::vector<Segment> segments;
  std::vector<bool> found(layout.params.size(), false);
  for (const auto& t : tensors) {
    const std::string name = t.at(0).get<std::string>();
    const auto shape = t.at(1).get<std::vector<int64_t>>();
    const size_t offset = t.at(2).get<size_t>();
    const ParamInfo* p = layout.find(name);
    if (!p) throw refuse(fmt::format("it has {}, the model has not", name));
    if (p->shape != shape) throw refuse(fmt::format("{} has shape {}, the model's {}", name, shape, p->shape));
    const size_t i = (size_t)(p - layout.params.data());
    if (found[i]) throw refuse(fmt::format("it lists {} twice", name));
    if (offset > stored_total || p->size > stored_total - offset)
      throw refuse(fmt::format("{} lies past the end of its {} numbers", name, stored_total));
    found[i] = true;
    segments.push_back({offset, p->offset, p->size});
  }
  for (size_t i = 0; i < layout.params.size(); i++)
    if (!found[i] && !layout.params[i].padding) throw refuse(fmt::format("it lacks {}", layout.params[i].name));
  std::sort(segments.begin(), segments.end(), [](const Segment& a, const Segment& b) { return a.from < b.from; });
  std::vector<Segment> merged;
  for (const Segment& s : segments) {
    if (!merged.empty() && merged.back().from + merged.back().size > s.from)
      throw refuse("two of its tensors overlap");
    if (!merged.empty() && merged.back().from + merged.back().size == s.from &&
        merged.back().to + merged.back().size == s.to)
      merged.back().size += s.size;
    else
      merged.push_back(s);
  }
  return merged;
}

// Copies piece, the checkpoint's numbers [at, at + piece.size()) of one array, to where the
// segments put them in the model's array, keeping only the model's range [keep, keep + out.size()).
void scatter(const std::vector<Segment>& segments, const std::vector<float>& piece, size_t at, size_t keep,
             std::vector<float>& out) {
  const size_t end = at + piece.size();
  // The first segment that ends past `at` (segments are sorted and do not overlap).
  auto s = std::upper_bound(segments.begin(), segments.end(), at,
                            [](size_t x, const Segment& seg) { return x < seg.from + seg.size; });
  for (; s != segments.end() && s->from < end; ++s) {
    const size_t lo = std::max(at, s->from), hi = std::min(end, s->from + s->size);  // the checkpoint's
    const size_t to_lo = std::max(s->to + (lo - s->from), keep),                      // the model's, kept
        to_hi = std::min(s->to + (hi - s->from), keep + out.size());
    if (to_lo >= to_hi) continue;
    const size_t src = to_lo - s->to + s->from - at;
    std::copy(piece.begin() + src, piece.begin() + src + (to_hi - to_lo), out.begin() + (to_lo - keep));
  }
}

TrainingState load_v2(const std::string& dir, const ParamLayout& layout, size_t mb, size_t mc) {
  const nlohmann::json m = read_manifest(dir);
  const std::string where = dir + "/manifest.json";
  TrainingState state;
  try {
    state.config_yaml = m.at("config").get<std::string>();
    state.iter = m.at("iter").get<int64_t>();
    state.adam_steps = m.at("adam_steps").get<int64_t>();
    state.loader.position = m.at("loader_position").get<uint64_t>();
    state.loader.seed = m.at("loader_seed").get<uint64_t>();
    state.world_size = m.at("world_size").get<int>();
    state.data_fingerprint = m.value("data_fingerprint", "");
    // The model's tensors, by name and shape, and where each lies in the checkpoint's arrays.
    const size_t stored_total = m.at("total").get<size_t>();
    const std::vector<Segment> segments = map_tensors(m.at("tensors"), stored_total, layout, where);
    // The parameters whole; the moments from mb, mc of them (the model's places).
    state.moments_begin = mb;
    state.params.assign(layout.total, 0.0f);
    state.adam_m.assign(mc, 0.0f);
    state.adam_v.assign(mc, 0.0f);
    std::vector<float>* targets[] = {&state.params, &state.adam_m, &state.adam_v};
    const size_t kept_begin[] = {0, mb, mb};
    std::vector<float> piece;
    size_t covered = 0;
    for (const auto& sh : m.at("shards")) {
      const std::string path = dir + "/" + sh.at("file").get<std::string>();
      const size_t begin = sh.at("begin").get<size_t>(), count = sh.at("count").get<size_t>();
      const auto crcs = sh.at("crc32").get<std::vector<uint32_t>>();
      if (begin != covered || begin + count > stored_total || crcs.size() != 3)
        throw std::runtime_error(fmt::format("{}: shard {} does not continue the ranges before it", where, path));
      std::ifstream f(path, std::ios::binary);
      if (!f) throw std::runtime_error(fmt::format("{}: missing ({})", path, std::strerror(errno)));
      for (int g = 0; g < 3; g++) {
        // In pieces: every byte into the checksum, only the kept range into the state.
        uLong crc = crc32(0L, Z_NULL, 0);
        for (size_t done = 0; done < count;) {
          const size_t n = std::min<size_t>(count - done, 1u << 24);
          piece.resize(n);
          if (!f.read(reinterpret_cast<char*>(piece.data()), (std::streamsize)(n * sizeof(float))))
            throw std::runtime_error(fmt::format("{}: shorter than its {} × 3 numbers (truncated or corrupt)", path, count));
          crc = crc32(crc, reinterpret_cast<const Bytef*>(piece.data()), (uInt)(n * sizeof(float)));
          scatter(segments, piece, begin + done, kept_begin[g], *targets[g]);
          done += n;
        }
        const uint32_t computed = (uint32_t)crc;
        if (computed != crcs[g])
          throw std::runtime_error(fmt::format("{}: {} fails its checksum (stored {:08x}, computed {:08x}): the file is "
                                               "corrupt", path, kGroups[g], crcs[g], computed));
      }
      covered = begin + count;
    }
    if (covered != stored_total)
      throw std::runtime_error(fmt::format("{}: the shards hold {} of the state's {} numbers", where, covered,
                                           stored_total));
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(fmt::format("{}: not a valid checkpoint manifest (truncated or corrupt)", where));
  }
  return state;
}

bool is_v1(const std::string& dir) { return !fs::exists(dir + "/manifest.json") && fs::exists(dir + "/state.h5"); }

}  // namespace

std::string checkpoint_config(const std::string& dir) {
  if (is_v1(dir)) return config_v1(dir);
  if (!fs::exists(dir + "/manifest.json"))
    throw std::runtime_error(fmt::format("{}/manifest.json: missing (not a checkpoint directory?)", dir));
  return read_manifest(dir).at("config").get<std::string>();
}

TrainingState load_checkpoint(const std::string& dir, const ParamLayout& layout, size_t moments_begin,
                              size_t moments_count) {
  moments_begin = std::min(moments_begin, layout.total);
  moments_count = std::min(moments_count, layout.total - moments_begin);
  if (is_v1(dir)) {
    TrainingState s = load_v1(dir, layout);
    for (auto* m : {&s.adam_m, &s.adam_v})
      *m = std::vector<float>(m->begin() + moments_begin, m->begin() + moments_begin + moments_count);
    s.moments_begin = moments_begin;
    return s;
  }
  checkpoint_config(dir);  // (the manifest's presence and version)
  return load_v2(dir, layout, moments_begin, moments_count);
}

OutDirLock::OutDirLock(const std::string& out_dir) : dir_(out_dir), created_(!fs::exists(out_dir)) {
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
    if (err == ENOSYS || err == EOPNOTSUPP || err == ENOLCK) {  // a filesystem without locks (some Lustre, NFS)
      fmt::print(stderr, "warning: {}: this filesystem does not support file locks ({}); nothing stops a second run "
                 "on the same out_dir\n", path, std::strerror(err));
      return;
    }
    if (err != EWOULDBLOCK)
      throw std::runtime_error(fmt::format("{}: cannot lock it: {}", path, std::strerror(err)));
    std::string who = n > 0 ? std::string(holder, (size_t)n) : "an unknown process";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    throw std::invalid_argument(fmt::format("{} is in use by another run ({}; lock {}): wait for it to end, or use "
                                            "another train.out_dir", out_dir, who, path));
  }
  // A run that made out_dir and left it empty removes the lock file on its way out; one that
  // opened the file just before would now hold a lock nobody else can see.
  struct stat held {}, at {};
  if (::fstat(fd_, &held) != 0 || ::stat(path.c_str(), &at) != 0 || held.st_ino != at.st_ino ||
      held.st_dev != at.st_dev) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error(fmt::format("{}: another run on this out_dir ended while this one took the lock; start "
                                         "again", path));
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::string me = fmt::format("pid {} on {}\n", (long)getpid(), host);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != (ssize_t)me.size())
    throw std::runtime_error(fmt::format("{}: cannot write the run's lock: {}", path, std::strerror(errno)));
}

OutDirLock::~OutDirLock() {
  if (fd_ < 0) return;
  // A run that made out_dir and stopped before writing anything in it (a bad --resume path, say)
  // leaves nothing behind.
  std::error_code ec;
  if (created_ && std::distance(fs::directory_iterator(dir_, ec), fs::directory_iterator()) == 1) {
    fs::remove(fs::path(dir_) / ".lock", ec);
    fs::remove(dir_, ec);
  }
  ::close(fd_);  // (closing releases the flock)
}

}  // namespace t6
