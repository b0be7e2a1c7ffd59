// libFuzzer: damaged module images through the loader, the disassembler and the analyser.
// Build: cmake -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DIOREQ_FILTER_FUZZ=ON ...
// Run:   fuzz_module_loader -max_total_time=60 CORPUS_DIR   (seed it with a few real .ko files)
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/policy_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace iof::analysis;
  auto module = parseModule(std::vector<std::uint8_t>(data, data + size), "fuzz.ko");
  if (!module) return 0;
  auto dis = disassemble(*module);
  if (!dis) return 0;
  auto analysis = analyzeModule(*dis);
  (void)buildPolicy(analysis, PolicyOptions{});
  (void)formatCoverage(analysis);
  return 0;
}
