// TensorBoard event files (train.tensorboard: DIR), scalars only, written without TensorBoard's
// libraries: records framed as TFRecords (length, masked CRC-32C of it, the bytes, masked
// CRC-32C of them), each an `Event` protobuf {wall_time, step, summary {value {tag,
// simple_value}}}, after a first event naming the format ("brain.Event:2"). TensorBoard, and
// W&B's sync_tensorboard, read the directory while the run writes it.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace t6 {

class TensorBoardWriter {
 public:
  // Creates DIR (if needed) and DIR/events.out.tfevents.<seconds>.<host>.
  explicit TensorBoardWriter(const std::string& dir);
  void scalar(const std::string& tag, int64_t step, double value);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli), as TFRecords use it before masking; exposed for the tests.
uint32_t crc32c(const void* data, size_t n);

}  // namespace t6
