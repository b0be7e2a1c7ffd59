// Control-plane errors: every one says what went wrong, where, and why.
// The data plane never produces these; it returns verdicts (see verdict.h).
#pragma once

#include <expected>
#include <string>
#include <utility>

namespace iof {

struct Error {
  std::string where;  // "file:line:col", "trace.qtest:12", "ioreq.size", "0x1234 in floppy.ko"
  std::string what;   // the complaint, e.g. "unknown value constraint kind 'foo'"

  std::string message() const { return where.empty() ? what : where + ": " + what; }
};

template <typename T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(std::string where, std::string what) {
  return std::unexpected<Error>(Error{std::move(where), std::move(what)});
}

}  // namespace iof
