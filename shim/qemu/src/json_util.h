// Lenient accessors for QEMU's JSON: a member of the wrong type reads as absent instead of throwing,
// so malformed QMP turns into a clear Error at the caller rather than an exception.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace iof::qemu {

inline std::string jsonString(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

inline bool jsonBool(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace iof::qemu
