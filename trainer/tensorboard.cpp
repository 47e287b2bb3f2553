#include "trainer/tensorboard.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace t6 {

namespace {

// Protobuf's wire format, the few pieces an Event needs.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) out += (char)(v | 0x80), v >>= 7;
  out += (char)v;
}
void key(std::string& out, int field, int wire_type) { varint(out, (uint64_t)field << 3 | wire_type); }
template <class T>
void fixed(std::string& out, T v) {  // little-endian, as protobuf's fixed32/fixed64
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& value) {
  key(out, field, 2);
  varint(out, value.size());
  out += value;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = ~0u;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  char host[256] = "host";
  gethostname(host, sizeof(host) - 1);
  path_ = (std::filesystem::path(dir) / fmt::format("events.out.tfevents.{}.{}", (int64_t)now_seconds(), host)).string();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw std::runtime_error(fmt::format("train.tensorboard: cannot create {}: {}", path_, std::strerror(errno)));
  std::string event;  // Event{wall_time = 1, file_version = 3}
  key(event, 1, 1);
  fixed(event, now_seconds());
  bytes_field(event, 3, "brain.Event:2");
  write_record(event);
  flush();
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value) {
  std::string v;  // Summary.Value{tag = 1, simple_value = 2 (float)}
  bytes_field(v, 1, tag);
  key(v, 2, 5);
  fixed(v, (float)value);
  std::string summary;  // Summary{value = 1}
  bytes_field(summary, 1, v);
  std::string event;  // Event{wall_time = 1, step = 2, summary = 5}
  key(event, 1, 1);
  fixed(event, now_seconds());
  key(event, 2, 0);
  varint(event, (uint64_t)step);
  bytes_field(event, 5, summary);
  write_record(event);
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string header;
  fixed(header, (uint64_t)data.size());
  std::string record = header;
  fixed(record, masked(crc32c(header.data(), header.size())));
  record += data;
  fixed(record, masked(crc32c(data.data(), data.size())));
  out_.write(record.data(), (std::streamsize)record.size());
  if (!out_) throw std::runtime_error(fmt::format("train.tensorboard: writing {} failed", path_));
}

void TensorBoardWriter::flush() {
  out_.flush();
  if (!out_) throw std::runtime_error(fmt::format("train.tensorboard: writing {} failed", path_));
}

}  // namespace t6
