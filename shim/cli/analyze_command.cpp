// ioreq-filter analyze: derive a device policy from the guest driver's own binary.
// requires: ioreq_analysis
#include <CLI/CLI.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "command.h"
#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/kernel_image.h"
#include "ioreq_filter/analysis/policy_builder.h"
#include "ioreq_filter/policy/policy_json.h"

namespace iof::cli {
namespace {

struct AnalyzeOptions {
  std::vector<std::string> modules;  // driver first, then dependencies
  std::string device, output, coverage, pci, guest_os, isa_kind, batch_dir, batch_out, kernel, pci_class;
  unsigned jobs = 0;  // --batch: 0 = one per hardware thread
};

Result<std::pair<std::uint16_t, std::uint16_t>> parsePciId(const std::string& text) {
  unsigned v = 0, d = 0;
  char extra = 0;
  if (std::sscanf(text.c_str(), "%x:%x%c", &v, &d, &extra) != 2 || v > 0xffff || d > 0xffff)
    return fail("--pci", "'" + text + "' is not VENDOR:DEVICE in hex (e.g. 8086:100e)");
  return std::pair{std::uint16_t(v), std::uint16_t(d)};
}

struct Analysed {
  analysis::Module module;
  analysis::Disassembly disassembly;
  analysis::ModuleAnalysis result;
};

// --kernel: the kernel image whose PCI fixups for the device join the driver's graph.
struct KernelFixupRequest {
  std::string image;
  std::optional<std::pair<std::uint16_t, std::uint16_t>> pci;  // --pci, else the id table's first entry
  std::optional<std::uint32_t> pci_class;                      // --pci-class, else what the id table requires
  std::vector<std::string> selected;                           // filled in: "8086:ffff class 0x200>>8 @0x..."
};

// The device the fixups run for: the id table entry the policy will match (the same choice as
// buildPolicy), with the class that entry requires.
Result<analysis::PciDeviceIdentity> fixupIdentity(const analysis::Module& m, const KernelFixupRequest& k) {
  analysis::PciDeviceIdentity id;
  const analysis::PciId* chosen = nullptr;
  for (const auto& e : m.pci_ids)
    if (!k.pci || ((e.vendor == analysis::kPciAnyId || e.vendor == k.pci->first) && (e.device == analysis::kPciAnyId || e.device == k.pci->second))) {
      chosen = &e;
      break;
    }
  if (k.pci_class) {
    id.class_code = *k.pci_class, id.class_mask = 0xffffff;
  } else if (chosen) {
    id.class_code = chosen->class_code & 0xffffff;
    id.class_mask = chosen->class_mask & 0xffffff;
  }
  if (k.pci) {
    id.vendor = k.pci->first, id.device = k.pci->second;
  } else if (chosen && chosen->vendor != analysis::kPciAnyId && chosen->device != analysis::kPciAnyId) {
    id.vendor = std::uint16_t(chosen->vendor), id.device = std::uint16_t(chosen->device);
  } else {
    return fail(m.path, "--kernel needs the PCI device the fixups run for: give --pci VENDOR:DEVICE (the driver's id table names none)");
  }
  return id;
}

// The driver, linked with its dependencies (their exports become direct calls), disassembled and analysed;
// with a kernel image, the kernel's PCI fixups for the device are more entry points of the same graph.
Result<std::unique_ptr<Analysed>> analyseFile(const std::string& path, const std::vector<std::string>& dependencies = {},
                                              KernelFixupRequest* kernel = nullptr) {
  auto mod = analysis::loadModule(path);
  if (!mod) return std::unexpected(mod.error());
  auto a = std::make_unique<Analysed>();
  a->module = std::move(*mod);
  if (!dependencies.empty()) {
    std::vector<analysis::Module> deps;
    for (const auto& d : dependencies) {
      auto dep = analysis::loadModule(d);
      if (!dep) return std::unexpected(dep.error());
      deps.push_back(std::move(*dep));
    }
    auto linked = analysis::linkModules(std::move(a->module), std::move(deps));
    if (!linked) return std::unexpected(linked.error());
    a->module = std::move(*linked);
  }
  analysis::AnalysisOptions options;
  if (kernel && !kernel->image.empty()) {
    auto id = fixupIdentity(a->module, *kernel);
    if (!id) return std::unexpected(id.error());
    auto image = analysis::loadKernelImage(kernel->image);
    if (!image) return std::unexpected(image.error());
    const auto fixups = analysis::fixupsFor(*image, *id);
    for (const auto& f : fixups) {
      char text[96];
      std::snprintf(text, sizeof text, "%04x:%04x class %#x>>%u @%#llx", unsigned(f.vendor), unsigned(f.device), unsigned(f.class_code),
                    unsigned(f.class_shift), static_cast<unsigned long long>(f.hook));
      kernel->selected.push_back(text);
    }
    auto entries = analysis::linkKernelFixups(a->module, std::move(*image), fixups);
    if (!entries) return std::unexpected(entries.error());
    for (const auto& e : *entries) options.pci_fixup_roots.emplace_back(e.entry, e.why);
  }
  auto dis = analysis::disassemble(a->module);
  if (!dis) return std::unexpected(dis.error());
  a->disassembly = std::move(*dis);
  a->result = analysis::analyzeModule(a->disassembly, options);
  return a;
}

// What a batch worker keeps of one module: the counts and the policy, not the module itself.
struct BatchResult {
  bool failed = false;
  std::string error;
  std::size_t instructions = 0, io_sites = 0;
  bool pinned = false;
  std::optional<DevicePolicy> policy;
  double seconds = 0;
};

BatchResult analyseForBatch(const std::string& path, const AnalyzeOptions& o) {
  BatchResult r;
  const auto t0 = std::chrono::steady_clock::now();
  auto a = analyseFile(path);
  if (!a) {
    r.failed = true;
    r.error = a.error().message();
  } else {
    r.instructions = (*a)->result.coverage.instructions;
    r.io_sites = (*a)->result.coverage.io_sites;
    r.pinned = (*a)->result.coverage.sites_pinned != 0;
    if (r.pinned && !o.batch_out.empty()) {
      analysis::PolicyOptions po;
      po.guest_os = o.guest_os;
      if (auto policy = analysis::buildPolicy((*a)->result, po)) r.policy = std::move(*policy);
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

double cpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Modules are analysed by `jobs` threads; results are consumed in file order, so messages, progress and
// policy files come out the same whatever the number of jobs.
int runBatch(const AnalyzeOptions& o) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(o.batch_dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() && it->path().extension() == ".ko") files.push_back(it->path().string());
  if (ec) {
    std::cerr << "ioreq-filter analyze: " << o.batch_dir << ": " << ec.message() << "\n";
    return kExitBadInput;
  }
  std::sort(files.begin(), files.end());
  const unsigned jobs = o.jobs ? o.jobs : std::max(1u, std::thread::hardware_concurrency());
  const bool tty = isatty(2);
  std::size_t failed = 0, with_io = 0, written = 0, insns = 0, sites = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = cpuSeconds();
  std::vector<std::pair<double, std::string>> slowest;
  std::vector<std::optional<BatchResult>> results(files.size());
  std::mutex mutex;
  std::condition_variable done;
  std::atomic<std::size_t> next{0};
  std::vector<std::jthread> workers;
  for (unsigned w = 0; w < std::min<std::size_t>(jobs, files.size()); ++w)
    workers.emplace_back([&] {
      for (std::size_t i; (i = next.fetch_add(1)) < files.size();) {
        BatchResult r = analyseForBatch(files[i], o);
        std::lock_guard lock(mutex);
        results[i] = std::move(r);
        done.notify_all();
      }
    });
  for (std::size_t i = 0; i < files.size(); ++i) {
    BatchResult r;
    {
      std::unique_lock lock(mutex);
      done.wait(lock, [&] { return results[i].has_value(); });
      r = std::move(*results[i]);
      results[i].reset();
    }
    if (tty && (i % 16 == 0 || i + 1 == files.size())) {
      const int width = 40, filled = int(width * (i + 1) / files.size());
      std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu", filled, "########################################", width - filled, "", i + 1, files.size());
    }
    slowest.emplace_back(r.seconds, files[i]);
    if (r.failed) {
      ++failed;
      std::cerr << (tty ? "\n" : "") << "skipped: " << r.error << "\n";
      continue;
    }
    insns += r.instructions;
    sites += r.io_sites;
    if (!r.pinned) continue;
    ++with_io;
    if (o.batch_out.empty() || !r.policy) continue;
    fs::create_directories(o.batch_out, ec);
    if (auto saved = savePolicyFile(*r.policy, o.batch_out + "/" + r.policy->name + ".json"); saved) ++written;
  }
  workers.clear();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "%s%zu modules in %.1f s (CPU %.1f s user+sys, %u jobs): %zu instructions, %zu I/O sites, %zu with pinned device accesses, %zu policies written, %zu failed\n",
               tty ? "\n" : "", files.size(), secs, cpuSeconds() - cpu0, jobs, insns, sites, with_io, written, failed);
  std::sort(slowest.begin(), slowest.end(), std::greater<>());
  for (std::size_t i = 0; i < slowest.size() && i < 5; ++i) std::fprintf(stderr, "  slowest: %.3f s %s\n", slowest[i].first, slowest[i].second.c_str());
  return kExitOk;
}

int run(const AnalyzeOptions& o) {
  if (!o.batch_dir.empty()) return runBatch(o);
  if (o.modules.empty()) {
    std::cerr << "ioreq-filter analyze: no module given\n";
    return kExitBadInput;
  }
  analysis::PolicyOptions po;
  po.device_name = o.device;
  po.guest_os = o.guest_os;
  po.isa_kind = o.isa_kind;
  if (!o.pci.empty()) {
    auto id = parsePciId(o.pci);
    if (!id) {
      std::cerr << "ioreq-filter analyze: " << id.error().message() << "\n";
      return kExitBadInput;
    }
    po.pci_vendor = id->first;
    po.pci_device = id->second;
  }
  const std::vector<std::string> dependencies(o.modules.begin() + 1, o.modules.end());
  KernelFixupRequest kernel{o.kernel, {}, {}, {}};
  if (po.pci_vendor && po.pci_device) kernel.pci = std::pair{*po.pci_vendor, *po.pci_device};
  if (!o.pci_class.empty()) {
    unsigned c = 0;
    char extra = 0;
    if (std::sscanf(o.pci_class.c_str(), "%x%c", &c, &extra) != 1 || c > 0xffffff) {
      std::cerr << "ioreq-filter analyze: --pci-class: '" << o.pci_class << "' is not a 24-bit class code in hex (e.g. 020000)\n";
      return kExitBadInput;
    }
    kernel.pci_class = c;
  }
  auto a = analyseFile(o.modules.front(), dependencies, &kernel);
  if (!a) {
    std::cerr << "ioreq-filter analyze: " << a.error().message() << "\n";
    return kExitBadInput;
  }
  for (const auto& f : kernel.selected) std::cerr << "pci fixup of " << o.kernel << ": " << f << "\n";
  for (std::size_t s = 0; s < (*a)->module.section_origin.size(); ++s) {
    const std::string& origin = (*a)->module.section_origin[s];
    if (!origin.empty() && (*a)->module.sections[s].address) {
      // Kernel code (linked at fixed addresses): its PCI fixups for the device, named by the image.
      const std::string dep = std::filesystem::path(o.kernel).filename().string() + " pci fixups";
      if (std::find(po.dependencies.begin(), po.dependencies.end(), dep) == po.dependencies.end()) po.dependencies.push_back(dep);
      continue;
    }
    const std::string dep = origin + ".ko";
    if (!origin.empty() && std::find(po.dependencies.begin(), po.dependencies.end(), dep) == po.dependencies.end())
      po.dependencies.push_back(dep);
  }
  auto policy = analysis::buildPolicy((*a)->result, po);
  const std::string report = analysis::formatCoverage((*a)->result);
  if (!o.coverage.empty()) {
    if (o.coverage == "-") {
      std::cout << report;
    } else if (auto w = writeFileAtomically(o.coverage, report); !w) {
      std::cerr << "ioreq-filter analyze: " << w.error().message() << "\n";
      return kExitInternal;
    }
  }
  if (!policy) {
    std::cerr << "ioreq-filter analyze: " << policy.error().message() << "\n";
    return kExitBadInput;
  }
  if (!o.output.empty()) {
    if (auto saved = savePolicyFile(*policy, o.output); !saved) {
      std::cerr << "ioreq-filter analyze: " << saved.error().message() << "\n";
      return kExitInternal;
    }
  }
  std::size_t nodes = 0, loops = 0;
  for (const auto& g : policy->graphs)
    for (const auto& c : g.channels) nodes += c.nodes.size(), loops += c.loops.size();
  std::cerr << policy->name << ": " << policy->regions.size() << " region(s), " << policy->graphs.front().channels.size()
            << " channel(s), " << nodes << " sequence node(s), " << policy->graphs.front().anywhere.size() << " stateless node(s), "
            << loops << " loop(s)" << (o.output.empty() ? "" : " -> " + o.output) << "\n";
  return kExitOk;
}

RunFn setup(CLI::App& app) {
  auto o = std::make_shared<AnalyzeOptions>();
  auto* sub = app.add_subcommand("analyze", "derive I/O sequence graphs from a Linux driver module (.ko) and write a policy");
  sub->add_option("modules", o->modules, "DRIVER.ko [DEPENDENCY.ko ...]");
  sub->add_option("--device", o->device, "policy (device) name; default: the module name");
  sub->add_option("-o,--output", o->output, "write the policy JSON here");
  sub->add_option("--coverage", o->coverage, "write the coverage report here ('-' for stdout)");
  sub->add_option("--pci", o->pci, "VENDOR:DEVICE: which of the driver's PCI ids the policy matches (default: the first)");
  sub->add_option("--isa-kind", o->isa_kind, "ISA drivers: the QOM device kind to match (default: known per driver)");
  sub->add_option("--guest-os", o->guest_os, "recorded as derived_from.guest_os");
  sub->add_option("--pci-class", o->pci_class, "with --kernel: the device's class code (hex, 24 bits) when the driver's id table does not fix it; without it every class-specific fixup of the vendor/device is analysed");
  sub->add_option("--kernel", o->kernel, "the guest's kernel image (/boot/vmlinuz-VER, xz bzImage, or a vmlinux): its PCI fixups for the device join the graph");
  sub->add_option("--batch", o->batch_dir, "analyse every .ko under this directory (progress on stderr)");
  sub->add_option("--batch-output", o->batch_out, "with --batch: write one policy per module with device accesses here");
  sub->add_option("-j,--jobs", o->jobs, "with --batch: modules analysed in parallel (default: one per hardware thread; output order and files do not depend on it)");
  return [o] { return run(*o); };
}

IOF_REGISTER_COMMAND(setup);

}  // namespace
}  // namespace iof::cli
