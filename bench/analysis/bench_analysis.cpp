// Full analysis (load + CFG + data flow + policy) of floppy.ko and e1000.ko, and of every module of
// the kernel package. The module tree is given by IOREQ_FILTER_KERNEL_MODULES (DIR/lib/modules/VER/kernel),
// e.g. `source scripts/lib/common.sh; read d v < <(fetch_kernel); export IOREQ_FILTER_KERNEL_MODULES=$d/lib/modules/$v/kernel`.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/policy_builder.h"

namespace {

std::string modulesDir() {
  const char* d = std::getenv("IOREQ_FILTER_KERNEL_MODULES");
  return d ? d : "";
}

bool analyseOne(const std::string& path) {
  using namespace iof::analysis;
  auto m = loadModule(path);
  if (!m) return false;
  auto d = disassemble(*m);
  if (!d) return false;
  auto a = analyzeModule(*d);
  benchmark::DoNotOptimize(a.accesses.size());
  return true;
}

void analyseModule(benchmark::State& state, const char* relative) {
  const std::string path = modulesDir() + "/" + relative;
  if (modulesDir().empty() || !analyseOne(path)) {
    state.SkipWithError("set IOREQ_FILTER_KERNEL_MODULES to the kernel package's lib/modules/VER/kernel");
    return;
  }
  for (auto _ : state) analyseOne(path);
}
BENCHMARK_CAPTURE(analyseModule, floppy, "drivers/block/floppy.ko")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(analyseModule, e1000, "drivers/net/ethernet/intel/e1000/e1000.ko")->Unit(benchmark::kMillisecond);

void analyseAllModules(benchmark::State& state) {
  std::vector<std::string> files;
  if (!modulesDir().empty())
    for (auto& e : std::filesystem::recursive_directory_iterator(modulesDir()))
      if (e.is_regular_file() && e.path().extension() == ".ko") files.push_back(e.path().string());
  if (files.empty()) {
    state.SkipWithError("set IOREQ_FILTER_KERNEL_MODULES to the kernel package's lib/modules/VER/kernel");
    return;
  }
  for (auto _ : state)
    for (const auto& f : files) analyseOne(f);
  state.counters["modules"] = double(files.size());
}
BENCHMARK(analyseAllModules)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace
