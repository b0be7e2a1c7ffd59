// The engine: policies compiled into flat tables (RE2 style) plus a small cursor per device
// instance. onRequest() is noexcept, allocation-free and lock-free; everything is preallocated by
// create(). One Engine serves one domain and is driven from one thread (the backend serialises the
// vCPUs' requests); that is what makes the cursors lock-free. docs/architecture.md states the semantics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ioreq_filter/core/bus.h"
#include "ioreq_filter/core/device.h"
#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/policy.h"
#include "ioreq_filter/core/request_filter.h"

namespace iof {

enum class Mode : std::uint8_t {
  Enforce,  // refuse what the policy refuses
  Monitor,  // forward everything, count and report what would have been refused
  Learn,    // like monitor, and record the missing transitions as a policy delta
};
const char* toString(Mode m) noexcept;

// Where cursors start.
enum class StartState : std::uint8_t {
  Boot,            // the domain is starting: every channel idle, sequences begin at entry nodes
  Unsynchronised,  // attaching to a running domain, after a daemon restart or a restore: every node
                   // possible, narrowed by the requests that follow (see docs/architecture.md)
};

struct BoundDevice {
  DeviceInstance instance;
  DevicePolicy policy;  // already merged if several files matched
  // Policy set (docs/policy-format.md): the engine judges each set on its own (its own bus, cursors,
  // counters) and forwards a request only if no set refuses it. Set 0 is the union of the union
  // policies; bindPolicies() numbers intersect sets from 1. One instance appears once per set.
  std::uint32_t set = 0;
  std::string set_name = "union";
};

struct EngineOptions {
  Mode mode = Mode::Enforce;
  StartState start = StartState::Boot;
  std::size_t learn_capacity = 4096;  // events kept for learn mode before counting overflow
  // Per device: configurations the transition cache may intern (and as many remembered transitions).
  // 0 turns the cache off: every request walks the node bitsets. Verdicts are the same either way.
  std::size_t transition_cache = 4096;
};

// Envoy-style stats: a struct of named counters, per device.
struct DeviceCounters {
  std::uint64_t forwarded = 0;
  std::uint64_t refused_order = 0;
  std::uint64_t refused_value = 0;
  std::uint64_t refused_count = 0;
  std::uint64_t refused_stopgap = 0;
  std::uint64_t refused_malformed = 0;  // e.g. access crossing the end of a region
  std::uint64_t needs_data = 0;
  std::uint64_t refused_uncovered = 0;  // a BAR the policy has no region for
  std::uint64_t passed = 0;             // to a region the policy declares pass (forwarded unfiltered)
  std::uint64_t monitored = 0;          // would have been refused; forwarded by monitor/learn mode
  std::uint64_t resyncs = 0;            // reset nodes and monitor-mode resynchronisations
  std::uint64_t graph_deaths = 0;       // a union member stopped following the device
};

struct EngineCounters {
  std::uint64_t requests = 0;
  std::uint64_t unclaimed = 0;
  std::uint64_t malformed = 0;
  std::uint64_t learn_overflow = 0;
  std::uint64_t transition_cache_hits = 0;    // graph steps replayed from the transition cache
  std::uint64_t transition_cache_misses = 0;  // graph steps that walked the node bitsets
};

// One access learn mode saw refused, with the nodes the channel stood at.
struct LearnEvent {
  std::int32_t device = -1;
  std::int32_t graph = -1;
  std::int32_t channel = -1;  // -1: no channel owns the register
  std::uint32_t region = 0;
  std::uint64_t offset = 0;
  std::uint8_t size = 0;
  Dir dir = Dir::Write;
  std::uint64_t value = 0;
  std::int32_t previous_node = -1;  // a node the channel stood at (-1: idle or unsynchronised)
};

class Engine final : public RequestFilter {
 public:
  // Devices are reordered by policy set (stable); device(i) and verdicts use the new order.
  static Result<std::unique_ptr<Engine>> create(std::vector<BoundDevice> devices, EngineOptions options = {});
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Verdict onRequest(const IoRequest& request) noexcept override;

  void setMode(Mode mode) noexcept { mode_.store(mode, std::memory_order_relaxed); }
  Mode mode() const noexcept { return mode_.load(std::memory_order_relaxed); }
  // Puts every cursor in the unsynchronised state (daemon restart, restore, monitor-mode refusals).
  void resynchronise() noexcept;

  std::size_t deviceCount() const noexcept;
  const BoundDevice& device(std::size_t index) const noexcept;
  const DeviceCounters& counters(std::size_t device) const noexcept;
  const EngineCounters& counters() const noexcept { return engine_counters_; }
  const DeviceBus& bus() const noexcept;  // the first policy set's
  // Policy sets (BoundDevice::set) the devices came in; each has its own bus.
  std::size_t setCount() const noexcept;
  // Every set's unbound regions, with device indices as device() numbers them.
  std::vector<DeviceBus::UnboundRegion> unboundRegions() const;
  // The bus of `device`'s policy set and the device's index on it (control plane: region reports).
  struct BusSlot {
    const DeviceBus* bus = nullptr;
    std::size_t index = 0;
  };
  BusSlot busOf(std::size_t device) const noexcept;

  // Control plane: explanations for humans (check output, logs).
  std::string graphName(std::size_t device, std::int32_t graph) const;
  std::string nodeName(std::size_t device, std::int32_t graph, std::int32_t node) const;  // "graph:channel/node"
  // What the device's live graphs would accept next (before the next request), e.g.
  // "floppy-datasheet: fdc/msr-poll, fdc/result-read".
  std::string expectedNext(std::size_t device, std::size_t limit = 8) const;
  // Learn mode: drains the recorded events.
  std::vector<LearnEvent> takeLearnEvents();

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl, EngineOptions options);
  // onRequest() without its fast path: every request the fast path does not finish.
  Verdict decide(const IoRequest& request) noexcept;
  // One policy set's verdict: `bus` is the set's, whose device k is device(first + k).
  Verdict judge(const IoRequest& request, DeviceBus& bus, std::size_t first) noexcept;
  std::unique_ptr<Impl> impl_;
  std::atomic<Mode> mode_;
  bool layered_ = false;  // more than one policy set: intersect their verdicts (decide())
  EngineCounters engine_counters_;
};

}  // namespace iof
