// libFuzzer: damaged module images through the loader, the disassembler and the analyser.
// Build: analysis/fuzz/build-fuzzer.sh (clang-16), or cmake -DCMAKE_CXX_COMPILER=clang++ -DIOREQ_FILTER_FUZZ=ON ...
// Run:   fuzz_module_loader -max_total_time=60 CORPUS_DIR   (seed it with a few real .ko files)
// The same entry point is built with GCC under ASan+UBSan into analysis_fuzz_replay (replay_main.cpp),
// which replays a committed corpus and seeded mutations in ctest without clang.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/policy_builder.h"

namespace iof::analysis::fuzz {

// The whole pipeline on one image; returns the loader's or disassembler's error, or "" if the image
// was analysed. An error that does not name the file first is a bug like a crash: abort so the
// fuzzer keeps the input.
std::string analyseImage(const std::uint8_t* data, std::size_t size, const std::string& path) {
  auto module = parseModule(std::vector<std::uint8_t>(data, data + size), path);
  auto unclear = [&](const Error& e) {
    const std::string m = e.message();
    if (e.what.empty() || !m.starts_with(path)) {
      std::fprintf(stderr, "unclear error for %s: '%s'\n", path.c_str(), m.c_str());
      std::abort();
    }
    return m;
  };
  if (!module) return unclear(module.error());
  auto dis = disassemble(*module);
  if (!dis) return unclear(dis.error());
  auto analysis = analyzeModule(*dis);
  (void)buildPolicy(analysis, PolicyOptions{});
  (void)formatCoverage(analysis);
  return "";
}

}  // namespace iof::analysis::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)iof::analysis::fuzz::analyseImage(data, size, "fuzz.ko");
  return 0;
}
