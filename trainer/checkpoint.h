// Checkpoints: out_dir/ckpt_<iter>/state.h5 holds everything a run needs to continue exactly
// (README.md, "Checkpoints"). Written under a temporary name, fsynced and renamed, so a crash
// mid-save never damages an existing checkpoint; every dataset carries a CRC-32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/layout.h"

namespace t6 {

constexpr int64_t kCheckpointFormat = 1;

struct TrainingState {
  int64_t iter = 0;             // optimizer steps completed
  std::vector<float> params;    // layout order, fp32
  std::vector<float> adam_m, adam_v;
  int64_t adam_steps = 0;
  LoaderState loader;
  int world_size = 1;
  std::string config_yaml;      // the effective config of the run that saved it
  std::string data_fingerprint; // DataLoader::fingerprint() of its training data ("" in older checkpoints)
};

// Writes `text` to path.tmp, fsyncs it and renames it to `path`: readers see the old file or
// the whole new one, never a part.
void write_file_atomically(const std::string& path, const std::string& text);

// CRC-32 of data[offset, offset + count), any size.
uint32_t crc32_of(const std::vector<float>& data, size_t offset, size_t count);

// Writes out_dir/ckpt_<iter>, then points out_dir/latest at it, then deletes the oldest
// checkpoints beyond `keep` (0 keeps all). Returns the checkpoint's directory.
std::string save_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& state, int keep);

// Reads and verifies (format version, shapes, checksums) a checkpoint directory.
TrainingState load_checkpoint(const std::string& dir, const ParamLayout& layout);

// The effective config stored in a checkpoint, without reading the tensors.
std::string checkpoint_config(const std::string& dir);

// The checkpoint directories in out_dir (complete ones: ckpt_<iter>), newest first.
std::vector<std::string> list_checkpoints(const std::string& out_dir);

// One run per out_dir: an exclusive lock on out_dir/.lock (flock, so a killed run leaves no
// stale lock), which records the holder's pid and host for the message a second run gets.
// Released when destroyed or when the process ends.
class OutDirLock {
 public:
  explicit OutDirLock(const std::string& out_dir);  // throws std::invalid_argument when held
  ~OutDirLock();
  OutDirLock(const OutDirLock&) = delete;
  OutDirLock& operator=(const OutDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace t6
