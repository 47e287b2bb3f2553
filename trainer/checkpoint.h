// Checkpoints (README.md, "Checkpoints"): out_dir/ckpt_<iter>/ holds everything a run needs to
// continue exactly. Format 2: every rank writes its slice of the flat state (fp32 parameters and
// AdamW's two moments) as shard_<rank>.bin, with no rank holding more than its slice; rank 0
// then writes manifest.json (the run's metadata, the layout, each shard's range and CRC-32s).
// All of it goes into .ckpt_<iter>.tmp/, fsynced, renamed into place last, so a crash at any
// moment never damages an existing checkpoint. Format 1 (one state.h5) is still read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/layout.h"

namespace t6 {

constexpr int64_t kCheckpointFormat = 2;

struct TrainingState {
  int64_t iter = 0;             // optimizer steps completed
  std::vector<float> params;    // layout order, fp32
  std::vector<float> adam_m, adam_v;  // from moments_begin on (the whole arrays unless a range was asked for)
  size_t moments_begin = 0;
  int64_t adam_steps = 0;
  LoaderState loader;
  int world_size = 1;
  std::string config_yaml;      // the effective config of the run that saved it
  std::string data_fingerprint; // DataLoader::fingerprint() of its training data ("" in older checkpoints)
};

// One rank's part of a save: [begin, begin + count) of each of the three flat arrays.
struct StateSlice {
  size_t begin = 0, count = 0;
  const float *params = nullptr, *adam_m = nullptr, *adam_v = nullptr;
};
struct SliceSums {
  uint32_t params = 0, adam_m = 0, adam_v = 0;
};
// A save by W ranks: rank 0 calls begin_checkpoint (the temporary directory) before any rank
// writes; each rank writes its slice (any thread: no MPI, no HDF5); rank 0, given every rank's
// sums, commits: the manifest, the rename, `latest`, then the pruning beyond `keep` (0: keep all).
// `meta` supplies everything but the arrays. Returns the checkpoint's directory.
void begin_checkpoint(const std::string& out_dir, int64_t iter);
SliceSums write_checkpoint_slice(const std::string& out_dir, int64_t iter, int rank, const StateSlice& slice);
std::string commit_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& meta,
                              const std::vector<size_t>& counts, const std::vector<SliceSums>& sums, int keep);
// The three steps for one process holding the whole state.
std::string save_checkpoint(const std::string& out_dir, const ParamLayout& layout, const TrainingState& state, int keep);

// CRC-32 of data[offset, offset + count), any size.
uint32_t crc32_of(const std::vector<float>& data, size_t offset, size_t count);

// Reads and verifies (format version, the model's tensors, checksums) a checkpoint directory of
// either format, assembling the whole state from its shards (so it resumes on any world size).
// With a range, only [moments_begin, moments_begin + moments_count) of the moments is kept (a
// ZeRO rank's shard; every byte is still read and checksummed, in pieces).
TrainingState load_checkpoint(const std::string& dir, const ParamLayout& layout, size_t moments_begin = 0,
                              size_t moments_count = SIZE_MAX);

// The effective config stored in a checkpoint, without reading the tensors.
std::string checkpoint_config(const std::string& dir);

// The checkpoint directories in out_dir (complete ones: ckpt_<iter>), newest first.
std::vector<std::string> list_checkpoints(const std::string& out_dir);

// A run resumed at `iter` replaces whatever came after it: out_dir's checkpoints past iter move
// to out_dir/superseded/ (kept, not deleted), so that `--resume auto` and the pruning beyond
// `keep` see only the new run's. Returns the moved directories' new paths.
std::vector<std::string> set_aside_later_checkpoints(const std::string& out_dir, int64_t iter);

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
  std::string dir_;
  bool created_ = false;  // out_dir did not exist before: removed again if the run left it empty
  int fd_ = -1;
};

}  // namespace t6
