// The daemon's control protocol, client side: one JSON object per line over a UNIX stream socket,
// answered by one JSON object ({"ok":true,...} or {"ok":false,"error":"..."}). Used by the dom0 CLI
// and by the interposer inside QEMU.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "ioreq_filter/core/error.h"

namespace iof::daemon {

// "/run/ioreq-filter/dom<N>.sock" under run_dir.
std::string socketPath(const std::string& run_dir, unsigned domid);
std::string shadowPath(const std::string& run_dir, unsigned domid);
inline constexpr const char* kDefaultRunDir = "/run/ioreq-filter";

// Sends one request and waits (bounded) for its reply. An {"ok":false} reply becomes an Error.
Result<nlohmann::json> request(const std::string& socket, const nlohmann::json& message,
                               std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

}  // namespace iof::daemon
