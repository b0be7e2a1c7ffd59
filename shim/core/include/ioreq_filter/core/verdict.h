// What the engine says about one request. Trivially copyable; produced on the data plane.
#pragma once

#include <cstdint>
#include <type_traits>

#include "ioreq_filter/core/io_request.h"

namespace iof {

enum class Action : std::uint8_t {
  Forward,  // hand the request to the device model
  Refuse,   // complete it here: reads return all-ones, writes are dropped
};

// Every refusal names its mechanism.
enum class Reason : std::uint8_t {
  None,        // forwarded
  Unclaimed,   // no filtered device claims the address (forwarded: not ours to judge)
  Malformed,   // the request itself is invalid (see Malformation)
  Order,       // the access is not a successor of where the device's sequence stands
  Value,       // right register and order, but the written value is not one the driver writes
  Count,       // a repetition bound was exceeded (flood)
  StopGap,     // a hand-written stop-gap rule denied it
  NeedsData,   // data_is_ptr write whose values must be read from guest memory and checked per rep
  Uncovered,   // a BAR of a filtered device that its policy has no region for (RegionUse::Uncovered)
};

// What the policy asks the backend to do beyond refusing (the policy's "on_violation").
enum class Escalation : std::uint8_t { None, Pause, Crash };

struct Verdict {
  Action action = Action::Forward;
  Reason reason = Reason::None;
  Malformation malformation = Malformation::None;
  Escalation escalation = Escalation::None;
  bool monitored = false;       // refused by the policy but forwarded because of monitor/learn mode
  std::int32_t device = -1;     // index of the device instance on the bus, -1 if none
  std::int32_t graph = -1;      // index of the graph that accepted (or was last to refuse)
  std::int32_t node = -1;       // graph node that accepted, or -1
  std::int32_t rule = -1;       // stop-gap rule that refused, or -1

  constexpr bool forwarded() const noexcept { return action == Action::Forward; }
};
static_assert(std::is_trivially_copyable_v<Verdict>);

const char* toString(Action a) noexcept;
const char* toString(Reason r) noexcept;
const char* toString(Escalation e) noexcept;

}  // namespace iof
