// Data flow and sequence extraction over a disassembled module.
//
// Values are tracked per register and stack slot with a small abstract domain (constant, address of a
// global, value loaded from a global "cell", device base returned by pci_iomap & co., stack pointer).
// Functions are analysed per calling context (argument values), so `output_byte(fdc, 0x10)` yields a
// write of exactly 0x10 while a loop over a command buffer yields "any value". Every I/O form is an
// access: in/out/ins/outs, ioread*/iowrite*(_rep) calls, and movs through an ioremapped base.
//
// Sequences: writes to the device are the positions of a Glushkov-style automaton built over the
// CFG and composed across direct calls (first/last/nullable per function and context). A read the
// driver polls in a loop (a status handshake, result bytes) is a position too: its value cannot be
// constrained, but where it stands orders the accesses it gates. Other reads are stateless accesses.
// A path that returns an errno without touching the device is the driver giving up, not a way past. An indirect call (function pointer, retpoline) is a
// point where control may leave for another entry point: what came before may end a sequence, and
// what follows may begin one.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/core/io_request.h"
#include "ioreq_filter/core/policy.h"

namespace iof::analysis {

struct Value {
  // Holder: a pointer to a structure whose field at +off holds device base `id` (e1000's adapter after
  // `adapter->hw.hw_addr = pci_ioremap_bar(...)`; `&adapter->hw` is the same holder with a smaller off).
  // Ptr: an otherwise unknown pointer with an identity (id: the call that returned it), so that what is
  // stored through one copy (probe's `adapter->hw.hw_addr = ...`) is found through another.
  // FieldVal: a value loaded from a structure field at displacement `field` (+ off); a Base with
  // `field` set is base + such a value (e1000's `writel(i, hw_addr + tx_ring->tdt)`).
  // PciDev: the struct pci_dev the PCI core hands the driver's probe (its first argument); loading
  // `pdev->resource[bar].start` from it (pci_resource_start, inline in 6.1) gives a device base.
  // IomapTable: the array pcim_iomap_table(pdev) returns, one mapped cookie per BAR (`off` bytes in);
  // an 8-byte load at 8*N from it is BAR N's base (libata's `host->iomap[bar]`, ahci's mmio).
  enum Kind : std::uint8_t { Top, Const, GlobalAddr, Cell, Base, Stack, Holder, Ptr, FieldVal, PciDev, IomapTable };
  Kind kind = Top;
  std::uint8_t known = 8;   // Const: how many low bytes are known
  std::uint32_t id = 0;     // GlobalAddr: section; Cell: cell index; Base: base index
  std::int64_t off = 0;     // Const: value; others: added offset
  // Alternatives to `off`: up to three where paths merge (a tail-merged `out` for DOR or DSR), up to
  // seven for the offsets a counted loop's index reaches.
  std::uint8_t alts = 0;
  std::array<std::int64_t, 7> alt{};
  // Base: alternative i is an offset from base alt_base[i] - 1 instead of `id` (0: the same base). One
  // struct field may hold either of several bases, one per instance: libata's `ap->ioaddr.status_addr`
  // is the primary channel's BAR 0 + 7 for one port and the secondary's BAR 2 + 7 for the other.
  std::array<std::uint32_t, 7> alt_base{};
  static constexpr std::int64_t kNoField = INT64_MIN;
  std::int64_t field = kNoField;
  // Const or Base: every value off + k*stride for k < count (count >= 2), for each alternative: a loop
  // counter and what is computed from it (index_range.h).
  std::uint32_t stride = 0, count = 0;
  std::int8_t direction = 0;  // a range's order as its loop walks it: +1 up, -1 down, 0 either
  friend bool operator==(const Value&, const Value&) = default;
  template <typename F>
  void forEach(F&& f) const {
    f(off);
    for (int i = 0; i < alts; ++i) f(alt[std::size_t(i)]);
  }
  static Value top() { return {}; }
  static Value constant(std::uint64_t v, std::uint8_t known = 8) { return {Const, known, 0, std::int64_t(v)}; }
};

// Where device registers start: a symbolic base the driver computes at run time.
struct DeviceBase {
  enum Kind : std::uint8_t {
    PortCell,       // an I/O port base kept in a global (ISA: floppy's fdc_state[].address)
    PciIomap,       // pci_iomap/pcim_iomap/pci_iomap_range(pdev, bar, ...): port or memory per the BAR
    PciIoremapBar,  // pci_ioremap_bar(pdev, bar): memory
    Ioremap,        // ioremap*(phys, size): memory, physical address unknown statically
    PciResource,    // pci_resource_start(pdev, bar) used as a port: the BAR's I/O space
  };
  Kind kind = PortCell;
  int bar = -1;
  std::uint32_t cell = 0;  // PortCell: a key for the object holding the base
  std::vector<std::uint32_t> cells;  // PortCell: the cells (array elements) the base was loaded from
  std::string name;        // "fdc_state+0x8", "pci_iomap(bar 0)"
  std::string origin;      // where the base was produced, for provenance
  // PciIomap: the probe refuses the device unless this BAR is memory (it tests IORESOURCE_MEM in
  // pci_resource_flags(pdev, bar) and only IORESOURCE_MEM), so ioread*/iowrite* through it reach MMIO.
  bool bar_memory = false;
  // PciIomap: the driver reads or writes through the cookie itself with a plain mov (readl/writel
  // inlined, snd-hda-core's `bus->remap_addr + reg`). On x86 an I/O BAR's cookie is a token below
  // 0x20000 that only ioread*/iowrite* decode, so a dereferenced cookie is a memory BAR's mapping.
  // A driver that also hands the cookie to ioread*/iowrite* treats it as either kind (libata's BMDMA
  // cookies): there a "dereference" is a structure pointer the field rules mistook for the base.
  bool dereferenced = false;
  bool through_ioread = false;

  bool memory() const noexcept {
    return kind == PciIoremapBar || kind == Ioremap || (kind == PciIomap && dereferenced && !through_ioread);
  }
};

struct Access {
  enum class Form : std::uint8_t { PortInsn, PortString, IoreadCall, IowriteCall, IoreadRepCall, IowriteRepCall, MmioMov };
  Form form = Form::PortInsn;
  CodeAddr insn = 0;
  std::uint32_t function = 0;  // index into Disassembly::functions()
  Dir dir = Dir::Write;
  std::uint8_t size = 0;       // bytes, 0 if unknown
  bool repeated = false;       // ins/outs, *_rep: many transfers per instruction
  // Address: a fixed port, an offset from a device base, or unresolved.
  enum class Where : std::uint8_t { Unresolved, FixedPort, BaseOffset } where = Where::Unresolved;
  std::uint64_t port = 0;      // FixedPort
  std::uint32_t base = 0;      // BaseOffset: index into ModuleAnalysis::bases
  std::int64_t offset = 0;     // BaseOffset
  bool offset_exact = true;    // false if an unknown index was added (array of registers)
  std::uint32_t index_stride = 0;  // an element of a register array indexed by a loop counter: its stride
  std::int8_t index_direction = 0; // and the way the counter walks the array (+1 up, -1 down, 0 either)
  std::optional<std::uint64_t> value;  // writes: the exact value when the code fixes it
  std::string why_unresolved;
  bool position = false;       // a sequence position (a write, or a polled read); else stateless
};

struct Cell {
  std::uint32_t section = 0;
  std::uint64_t offset = 0;
  std::set<std::uint64_t> constants;  // constants the module stores there
  std::optional<std::uint32_t> base;  // a device base the module stores there
  std::optional<Value> alias;         // another cell's value (+ offset) the module copies there
  bool alias_conflict = false;
};

struct RootSummary {
  std::uint32_t function = 0;
  std::string why;                  // "address taken in .data", "init_module", "not called"
  std::vector<std::uint32_t> first, last;  // access indices (positions)
  std::set<std::uint32_t> reached;  // every position reachable from this root (for channel grouping)
};

// A natural loop of a function's CFG that sequences device writes (directly or through calls).
struct LoopInfo {
  std::uint32_t function = 0;
  CodeAddr header = 0;                 // first instruction of the loop's header block
  std::optional<std::uint64_t> bound;  // iterations, when inferred
  std::string why;                     // how the bound was found, or why not
};

struct AnalysisOptions {
  // Constant ports that belong to the device (ISA devices addressed without a base variable).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> device_ports;
  std::size_t max_contexts_per_function = 64;
  // struct pci_dev layout of the kernel build the modules come from (Debian 12, 6.1 x86-64):
  // offsetof(struct pci_dev, resource) and sizeof(struct resource). Read from the code itself:
  // ne2k_pci_init_one loads 0x3c8(pdev) and passes it to request_region(start, 0x20), and
  // pcnet32_probe_pci computes pci_resource_len as 0x3d0(pdev) - 0x3c8(pdev) (end - start).
  std::int64_t pci_dev_resource_offset = 0x3c8;
  std::int64_t pci_resource_size = 0x40;
  // offsetof(struct resource, flags): e100_probe's `testb $0x2, 0x3e1(pdev)` is
  // pci_resource_flags(pdev, 0) & IORESOURCE_MEM (0x200) at 0x3c8 + 0x18, second byte.
  std::int64_t pci_resource_flags_offset = 0x18;
  // The kernel's PCI fixups for the device (kernel_image.h: linkKernelFixups): more entry points of the
  // same graph, run by the PCI core before the driver binds, each called with the struct pci_dev.
  std::vector<std::pair<CodeAddr, std::string>> pci_fixup_roots;
};

struct CoverageReport {
  std::size_t functions = 0, instructions = 0, undecodable_bytes = 0;
  std::size_t io_sites = 0;            // instructions/calls that access I/O
  std::size_t sites_pinned = 0;        // address resolved to a fixed port or base+offset
  std::size_t sites_foreign = 0;       // fixed ports outside the device (ISA DMA, port 0x80, …)
  std::size_t writes = 0, writes_value_pinned = 0;
  std::size_t loops = 0, loops_bounded = 0;
  std::vector<std::string> unresolved;  // "0x1234 (fn): why"
  std::vector<std::string> unbounded;   // loops without an inferred bound
};

struct ModuleAnalysis {
  const Disassembly* disassembly = nullptr;
  std::vector<DeviceBase> bases;
  std::vector<Cell> cells;
  std::vector<Access> accesses;  // one per (instruction, resolved address, value)
  std::set<std::pair<std::uint32_t, std::uint32_t>> edges;  // position -> position
  // For each edge: the CFG loops (indices into `loops`) whose body created it; no entry = straight-line.
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::set<std::uint32_t>> edge_loops;
  std::set<std::uint32_t> break_entries, break_exits;        // around indirect calls
  std::vector<RootSummary> roots;
  std::vector<LoopInfo> loops;  // CFG loops that created sequence edges
  CoverageReport coverage;

  std::string describeAccess(const Access& a) const;
  std::string where(CodeAddr a) const;  // "floppy.ko .text+0x1804 (output_byte)"
};

ModuleAnalysis analyzeModule(const Disassembly& disassembly, const AnalysisOptions& options = {});

std::string formatCoverage(const ModuleAnalysis& analysis);

}  // namespace iof::analysis
