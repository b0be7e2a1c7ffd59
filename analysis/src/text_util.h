// Small formatting helpers (GCC 12 has no <format>).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace iof::analysis {

inline std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return v == 0 ? std::string("0x0") : std::string(buf);
}
inline std::string dec(std::uint64_t v) { return std::to_string(v); }

}  // namespace iof::analysis
