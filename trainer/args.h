// The command-line loop the tools share: options as `--flag value` or `--flag=value`, positional
// arguments, and numbers checked, every error naming the flag and what it expected.
//
//   t6::Args args(argc, argv);
//   while (args.next()) {
//     if (args.help()) ...
//     else if (args.is("--batch")) batch = (int)args.integer(1, 1 << 20);
//     else args.unknown();
//   }
#pragma once
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace t6 {

class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // Moves to the next argument; false after the last. A `--flag=value` whose value the tool did
  // not ask for is an error, not silently dropped.
  bool next() {
    if (inline_value_ && !value_taken_) throw std::invalid_argument(fmt::format("{} takes no value", arg_));
    if (++i_ >= argc_) return false;
    arg_ = argv_[i_];
    inline_value_ = false, value_taken_ = false;
    const size_t eq = arg_.find('=');
    if (arg_.rfind("--", 0) == 0 && eq != std::string::npos) {
      value_ = arg_.substr(eq + 1), arg_.resize(eq);
      inline_value_ = true;
    }
    return true;
  }

  const std::string& arg() const { return arg_; }
  bool is(std::string_view flag) const { return arg_ == flag; }
  bool help() const { return is("-h") || is("--help"); }
  // Not an option: anything that does not start with '-', and "-" itself.
  bool positional() const { return arg_.empty() || arg_[0] != '-' || arg_ == "-"; }

  std::string value() {
    value_taken_ = true;
    if (inline_value_) return value_;
    if (i_ + 1 >= argc_) throw std::invalid_argument(fmt::format("{} needs a value", arg_));
    return argv_[++i_];
  }

  long long integer(long long lo, long long hi) {
    const std::string v = value();
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < lo || x > hi)
      throw std::invalid_argument(fmt::format("{} {}: expected an integer from {} to {}", arg_, v, lo, hi));
    return x;
  }

  double real(double lo = -HUGE_VAL, double hi = HUGE_VAL) {
    const std::string v = value();
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || !(x >= lo && x <= hi))
      throw std::invalid_argument(lo == -HUGE_VAL && hi == HUGE_VAL
                                      ? fmt::format("{} {}: expected a number", arg_, v)
                                      : fmt::format("{} {}: expected a number from {} to {}", arg_, v, lo, hi));
    return x;
  }

  [[noreturn]] void unknown() const {
    throw std::invalid_argument(fmt::format("unknown {} '{}'", positional() ? "argument" : "option", arg_));
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string arg_, value_;
  bool inline_value_ = false, value_taken_ = false;
};

}  // namespace t6
