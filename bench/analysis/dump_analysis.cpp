// Prints every field of the analyser's result (ModuleAnalysis) for a list of modules, one file per module,
// so that two builds of the analyser can be compared with `diff -r` (docs/PERFORMANCE.md, "Analyser").
// Policies show only what the policy builder keeps; a speed change must leave all of this identical.
//
// Usage: dump_analysis LIST OUTPUT_DIR
//   LIST: one line per analysis, `DRIVER.ko [DEPENDENCY.ko ...]` (dependencies are linked in, as `analyze` does)
//   e.g. find "$IOREQ_FILTER_KERNEL_MODULES" -name '*.ko' | sort > all.list
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"

namespace {

using namespace iof::analysis;

void printValue(std::ostream& o, const Value& x) {
  o << "{" << int(x.kind) << "," << int(x.known) << "," << x.id << "," << x.off << "," << int(x.alts) << ",";
  for (auto a : x.alt) o << a << ";";
  for (auto a : x.alt_base) o << a << ";";
  o << x.field << "," << x.stride << "," << x.count << "," << int(x.direction) << "}";
}

void printAnalysis(std::ostream& o, const ModuleAnalysis& a) {
  for (const auto& b : a.bases) {
    o << "base " << int(b.kind) << " " << b.bar << " " << b.cell << " [";
    for (auto c : b.cells) o << c << ",";
    o << "] " << b.name << " | " << b.origin << " " << b.bar_memory << "\n";
  }
  for (const auto& c : a.cells) {
    o << "cell " << c.section << " " << c.offset << " [";
    for (auto k : c.constants) o << k << ",";
    o << "] " << (c.base ? std::to_string(*c.base) : "-") << " ";
    if (c.alias) printValue(o, *c.alias);
    o << " " << c.alias_conflict << "\n";
  }
  for (const auto& x : a.accesses)
    o << "access " << int(x.form) << " " << x.insn << " " << x.function << " " << int(x.dir) << " " << int(x.size) << " "
      << x.repeated << " " << int(x.where) << " " << x.port << " " << x.base << " " << x.offset << " " << x.offset_exact << " "
      << x.index_stride << " " << int(x.index_direction) << " " << (x.value ? std::to_string(*x.value) : "-") << " "
      << x.why_unresolved << " " << x.position << "\n";
  for (auto [from, to] : a.edges) o << "edge " << from << " " << to << "\n";
  for (const auto& [edge, loops] : a.edge_loops) {
    o << "edge_loops " << edge.first << " " << edge.second << ":";
    for (auto l : loops) o << " " << l;
    o << "\n";
  }
  o << "break_entries";
  for (auto x : a.break_entries) o << " " << x;
  o << "\nbreak_exits";
  for (auto x : a.break_exits) o << " " << x;
  o << "\n";
  for (const auto& r : a.roots) {
    o << "root " << r.function << " " << r.why << " first";
    for (auto x : r.first) o << " " << x;
    o << " last";
    for (auto x : r.last) o << " " << x;
    o << " reached";
    for (auto x : r.reached) o << " " << x;
    o << "\n";
  }
  for (const auto& l : a.loops) o << "loop " << l.function << " " << l.header << " " << (l.bound ? std::to_string(*l.bound) : "-") << " " << l.why << "\n";
  const CoverageReport& c = a.coverage;
  o << "coverage " << c.loops << " " << c.loops_bounded << "\n";
  for (const auto& u : c.unbounded) o << "unbounded " << u << "\n";
  o << formatCoverage(a);
}

// The analysis of one line of the list, or the error that stopped it (printed too: errors must match).
std::string analyseLine(const std::vector<std::string>& paths) {
  std::ostringstream o;
  auto driver = loadModule(paths[0]);
  if (!driver) return "error: " + driver.error().message() + "\n";
  std::vector<Module> dependencies;
  for (std::size_t i = 1; i < paths.size(); ++i) {
    auto m = loadModule(paths[i]);
    if (!m) return "error: " + m.error().message() + "\n";
    dependencies.push_back(std::move(*m));
  }
  Module module = std::move(*driver);
  if (!dependencies.empty()) {
    auto linked = linkModules(std::move(module), std::move(dependencies));
    if (!linked) return "error: " + linked.error().message() + "\n";
    module = std::move(*linked);
  }
  auto d = disassemble(module);
  if (!d) return "error: " + d.error().message() + "\n";
  printAnalysis(o, analyzeModule(*d));
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LIST OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  std::ifstream list(argv[1]);
  if (!list) {
    std::fprintf(stderr, "%s: cannot read the list\n", argv[1]);
    return 1;
  }
  const std::filesystem::path out_dir = argv[2];
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  std::string line;
  int line_no = 0, written = 0;
  while (std::getline(list, line)) {
    ++line_no;
    std::istringstream words(line);
    std::vector<std::string> paths;
    for (std::string p; words >> p;) paths.push_back(p);
    if (paths.empty()) continue;
    // One file per line, named after the driver's path (and its dependencies' names when linked).
    std::string name = paths[0];
    for (std::size_t i = 1; i < paths.size(); ++i) name += "+" + std::filesystem::path(paths[i]).filename().string();
    for (auto& ch : name)
      if (ch == '/') ch = '_';
    const std::filesystem::path file = out_dir / name;
    const std::filesystem::path tmp = out_dir / (name + ".tmp");
    {
      std::ofstream f(tmp);
      f << analyseLine(paths);
      if (!f) {
        std::fprintf(stderr, "%s:%d: cannot write %s\n", argv[1], line_no, tmp.c_str());
        return 1;
      }
    }
    std::filesystem::rename(tmp, file, ec);
    if (ec) {
      std::fprintf(stderr, "%s:%d: cannot rename %s: %s\n", argv[1], line_no, tmp.c_str(), ec.message().c_str());
      return 1;
    }
    ++written;
  }
  std::printf("%d analyses written to %s\n", written, out_dir.c_str());
  return 0;
}
