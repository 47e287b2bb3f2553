// Helpers shared by the test suites.
#pragma once
#include <cmath>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace t6::test {

inline std::string source_path(const std::string& rel) { return std::string(T6_SOURCE_DIR) + "/" + rel; }

// A fresh empty directory under the system temp dir, unique per test.
inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("t6_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The message of the exception f throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero).
template <class A, class B>
double rel_error(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); i++) {
    num += ((double)a[i] - (double)b[i]) * ((double)a[i] - (double)b[i]);
    den += (double)b[i] * (double)b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace t6::test
