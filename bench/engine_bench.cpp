// The engine on recorded real guest traces (tests/data/traces), one benchmark per filtered device.
//
// Each iteration replays the whole trace through a fresh engine (config cycles included, since BARs
// follow them) but counts as items only the requests that reached the device being measured, so
// traffic to unfiltered ports (port 0x80 io_delay, ISA DMA, the PIC) cannot flatter the figure.
// allocs_per_request counts heap allocations inside the timed region (global operator new).
#include <benchmark/benchmark.h>

// Counting operator new replaces the global one; GCC cannot see that the pair matches.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <algorithm>
#include <atomic>
#include <map>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <new>

#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/policy/policy_json.h"
#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/trace/trace.h"

namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace iof;

struct Workload {
  std::vector<IoRequest> requests;  // the whole trace
  std::vector<BoundDevice> devices;
};

void runDevice(benchmark::State& state, const Workload* w, std::size_t device) {
  std::uint64_t device_requests = 0, refused = 0, allocations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto engine = Engine::create(w->devices);
    if (!engine) {
      state.SkipWithError(engine.error().message().c_str());
      return;
    }
    Engine& e = **engine;
    const auto before = g_allocations.load(std::memory_order_relaxed);
    state.ResumeTiming();
    for (const auto& r : w->requests) {
      const Verdict v = e.onRequest(r);
      benchmark::DoNotOptimize(v);
    }
    state.PauseTiming();
    allocations += g_allocations.load(std::memory_order_relaxed) - before;
    device_requests += e.counters(device).forwarded + e.counters(device).refused_order + e.counters(device).refused_value +
                       e.counters(device).refused_count + e.counters(device).refused_stopgap +
                       e.counters(device).refused_malformed;
    refused += e.counters(device).refused_order + e.counters(device).refused_value + e.counters(device).refused_count;
    engine->reset();  // destroy outside the timed region
    state.ResumeTiming();
  }
  state.SetItemsProcessed(std::int64_t(device_requests));
  const double iterations = double(state.iterations());
  state.counters["device_requests_per_pass"] = double(device_requests) / iterations;
  state.counters["all_requests_per_pass"] = double(w->requests.size());
  state.counters["refused_per_pass"] = double(refused) / iterations;
  state.counters["allocs_per_request"] = device_requests ? double(allocations) / double(device_requests) : 0.0;
}

// Keeps workloads alive for the registered benchmarks.
std::vector<std::unique_ptr<Workload>> g_workloads;

// The transition cache must not change a single verdict: checked here on every real trace and policy
// set (the CI smoke run of this benchmark included), not only on the unit tests' random policies.
bool sameVerdictsWithoutCache(const Workload& w, const std::string& what) {
  EngineOptions uncached;
  uncached.transition_cache = 0;
  auto a = Engine::create(w.devices), b = Engine::create(w.devices, uncached);
  if (!a || !b) return false;
  for (std::size_t i = 0; i < w.requests.size(); ++i) {
    const Verdict x = (*a)->onRequest(w.requests[i]), y = (*b)->onRequest(w.requests[i]);
    if (x.action != y.action || x.reason != y.reason || x.device != y.device || x.graph != y.graph || x.node != y.node ||
        x.rule != y.rule) {
      std::cerr << "bench: " << what << ": request " << i << " (" << describe(w.requests[i])
                << "): the transition cache changed the verdict\n";
      return false;
    }
  }
  return true;
}

int registerSet(const std::string& set) {
  const std::string root = IOREQ_FILTER_SOURCE_DIR;
  auto policies = loadPolicyDir(root + "/" + set);
  if (!policies) {
    std::cerr << "bench: " << policies.error().message() << "\n";
    return 1;
  }
  const std::string set_name = std::filesystem::path(set).filename().string();
  std::vector<std::string> traces;
  for (const auto& entry : std::filesystem::directory_iterator(root + "/tests/data/traces"))
    if (entry.path().extension() == ".qtest") traces.push_back(entry.path().string());
  std::sort(traces.begin(), traces.end());
  for (const auto& path : traces) {
    auto trace = loadTrace(path);
    if (!trace) {
      std::cerr << "bench: " << trace.error().message() << "\n";
      return 1;
    }
    // One QEMU discovery per machine, shared by the policy sets.
    static std::map<std::vector<std::string>, std::vector<DeviceInstance>> machines;
    auto known = machines.find(trace->qemu_argv);
    if (known == machines.end()) {
      auto devices = qemu::discoverMachine(trace->qemu_argv);
      if (!devices) {
        std::cerr << "bench: " << path << ": " << devices.error().message() << "\n";
        return 1;
      }
      known = machines.emplace(trace->qemu_argv, std::move(*devices)).first;
    }
    auto bound = bindPolicies(known->second, *policies);
    if (!bound) {
      std::cerr << "bench: " << path << ": " << bound.error().message() << "\n";
      return 1;
    }
    if (bound->empty()) continue;  // no shipped policy for this trace's devices yet
    auto w = std::make_unique<Workload>();
    for (const auto& c : trace->commands)
      if (auto r = toIoRequest(c)) w->requests.push_back(*r);
    w->devices = std::move(*bound);
    const auto name = set_name + "/" + std::filesystem::path(path).stem().string();
    if (!sameVerdictsWithoutCache(*w, name)) return 1;
    // A dry run finds the devices this trace actually drives (every machine has a floppy controller).
    auto dry = Engine::create(w->devices);
    if (!dry) {
      std::cerr << "bench: " << path << ": " << dry.error().message() << "\n";
      return 1;
    }
    std::vector<std::uint64_t> hits(w->devices.size(), 0);
    for (const auto& r : w->requests)
      if (const auto v = (*dry)->onRequest(r); v.device >= 0) ++hits[std::size_t(v.device)];
    for (std::size_t d = 0; d < w->devices.size(); ++d)
      if (hits[d] > 0)
        benchmark::RegisterBenchmark(("engine/" + name + "/" + (*dry)->device(d).policy.name +
                                      ((*dry)->setCount() > 1 ? "@" + (*dry)->device(d).set_name : std::string()))
                                         .c_str(),
                                     runDevice, w.get(), d)
          ->Unit(benchmark::kMillisecond);
    g_workloads.push_back(std::move(w));
  }
  return 0;
}

// IOREQ_FILTER_BENCH_POLICIES: comma-separated policy directories (relative to the source tree); by
// default the specification baseline and the binary-derived set.
int registerTraces() {
  const char* env = std::getenv("IOREQ_FILTER_BENCH_POLICIES");
  std::string sets = env && *env ? env : "policies/datasheet,policies/linux-6.1";
  for (std::size_t start = 0; start <= sets.size();) {
    const auto comma = std::min(sets.find(',', start), sets.size());
    const auto set = sets.substr(start, comma - start);
    if (!set.empty() && registerSet(set) != 0) return 1;
    start = comma + 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (registerTraces() != 0) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
