// HDF5 plumbing shared by shards and checkpoints: the error-check macro, the process-wide lock,
// and scalar attributes.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace t6 {

// Throws std::runtime_error with the call, file:line and HDF5's own message when a call fails.
#define H5_CHECK(call) ::t6::h5_check((int64_t)(call), #call, __FILE__, __LINE__)
int64_t h5_check(int64_t status, const char* call, const char* file, int line);

// Debian's and Ubuntu's HDF5 is not built thread-safe: every HDF5 call of ours holds this lock.
std::mutex& hdf5_mutex();

// File-access properties under which closing a file also closes every object still open in
// it, so an error path that closes the file releases it completely.
hid_t file_access_closing_everything();

// Writing: the file is built in memory and then written with plain POSIX calls, so that a
// full or read-only disk comes back as a clear errno message and never leaves HDF5 with a
// half-closed file (which crashes its exit handler). `name` only labels the in-memory file.
hid_t create_in_memory(const std::string& name);
// Closes `file` and writes its bytes to `path` (write_file_atomically).
void write_image_and_close(hid_t file, const std::string& path);
// Writes `bytes` bytes to path.tmp, fsyncs them, renames it to `path` and fsyncs the directory:
// readers see the old file or the whole new one, never a part, and a crash keeps one of them.
// Errors name the file and the system's reason.
void write_file_atomically(const std::string& path, const void* data, size_t bytes);
inline void write_file_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}
// fsyncs a file, or a directory: after a rename into it, so that a crash keeps the new name
// (where the file system can sync a directory at all).
void sync_path(const std::filesystem::path& path);

// Scalar attributes of an object (a file's root group, a dataset). Readers name `path` in errors.
int64_t read_int_attr(hid_t obj, const std::string& path, const char* name);
std::string read_string_attr(hid_t obj, const std::string& path, const char* name);
void write_int_attr(hid_t obj, const char* name, int64_t value);
void write_string_attr(hid_t obj, const char* name, const std::string& value);

}  // namespace t6
