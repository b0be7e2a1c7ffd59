// libFuzzer: damaged module and kernel images through the loaders, the disassembler and the analyser.
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
#include "ioreq_filter/analysis/kernel_image.h"
#include "ioreq_filter/analysis/policy_builder.h"

namespace iof::analysis::fuzz {

// An error that does not name the file first is a bug like a crash: abort so the fuzzer keeps the input.
static std::string clearOrAbort(const Error& e, const std::string& path) {
  const std::string m = e.message();
  if (e.what.empty() || !m.starts_with(path)) {
    std::fprintf(stderr, "unclear error for %s: '%s'\n", path.c_str(), m.c_str());
    std::abort();
  }
  return m;
}

// The whole pipeline on one image; returns the loader's or disassembler's error, or "" if the image
// was analysed.
std::string analyseImage(const std::uint8_t* data, std::size_t size, const std::string& path) {
  auto module = parseModule(std::vector<std::uint8_t>(data, data + size), path);
  if (!module) return clearOrAbort(module.error(), path);
  auto dis = disassemble(*module);
  if (!dis) return clearOrAbort(dis.error(), path);
  auto analysis = analyzeModule(*dis);
  (void)buildPolicy(analysis, PolicyOptions{});
  (void)formatCoverage(analysis);
  return "";
}

// A kernel image (bzImage or vmlinux) through the kernel loader, and every PCI fixup it holds through
// function recovery and the analyser as entry points of a one-instruction driver.
std::string analyseKernelImage(const std::uint8_t* data, std::size_t size, const std::string& path) {
  auto kernel = parseKernelImage(std::vector<std::uint8_t>(data, data + size), path);
  if (!kernel) return clearOrAbort(kernel.error(), path);
  // Unknown class, any vendor's fixups: the widest selection (a damaged table may hold anything).
  std::vector<PciFixup> fixups = kernel->pci_fixups;
  if (fixups.size() > 64) fixups.resize(64);
  Module driver = Module::synthetic("fuzz-driver", {0xc3}, "driver_fn", {}, {});
  auto entries = linkKernelFixups(driver, std::move(*kernel), fixups);
  if (!entries) return clearOrAbort(entries.error(), path);
  auto dis = disassemble(driver);
  if (!dis) return clearOrAbort(dis.error(), path);
  AnalysisOptions options;
  for (const auto& e : *entries) options.pci_fixup_roots.emplace_back(e.entry, e.why);
  auto analysis = analyzeModule(*dis, options);
  (void)buildPolicy(analysis, PolicyOptions{});
  (void)formatCoverage(analysis);
  return "";
}

// Inputs named like a kernel image (".vmlinux", ".vmlinuz") take the kernel loader's path.
std::string analyseInput(const std::uint8_t* data, std::size_t size, const std::string& path) {
  if (path.find(".vmlinu") != std::string::npos) return analyseKernelImage(data, size, path);
  return analyseImage(data, size, path);
}

}  // namespace iof::analysis::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)iof::analysis::fuzz::analyseImage(data, size, "fuzz.ko");
  (void)iof::analysis::fuzz::analyseKernelImage(data, size, "fuzz.vmlinuz");
  return 0;
}
