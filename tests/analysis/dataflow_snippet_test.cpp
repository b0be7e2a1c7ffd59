// Data-flow rules on byte-array snippets, the disassembly written beside each row (ddisasm style).
// Each snippet is one synthetic module: .text = the bytes, relocations as a real .ko would carry them.
#include <elf.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include "ioreq_filter/analysis/disassembly.h"
#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/analysis/io_analysis.h"
#include "ioreq_filter/analysis/policy_builder.h"

namespace iof::analysis {
namespace {

Symbol external(const char* name) { return Symbol{name, 0, 0, 0, STT_NOTYPE, STB_GLOBAL}; }
Symbol bssObject(const char* name, std::uint64_t at, std::uint64_t size) {
  return Symbol{name, at, size, Module::kBssSection, STT_OBJECT, STB_LOCAL};
}
Symbol function(const char* name, std::uint64_t at, std::uint64_t size) {
  return Symbol{name, at, size, Module::kTextSection, STT_FUNC, STB_LOCAL};
}
// Symbol indices: 0 null, 1 the snippet function, extras from 2.
Relocation pc32(std::uint64_t at, std::uint32_t symbol, std::int64_t addend) { return Relocation{at, R_X86_64_PC32, symbol, addend}; }
Relocation plt32(std::uint64_t at, std::uint32_t symbol) { return Relocation{at, R_X86_64_PLT32, symbol, -4}; }

struct Analysed {
  Module module;
  Disassembly dis;
  ModuleAnalysis result;
  std::vector<std::uint8_t> data_image;  // .data's bytes where a snippet needs them non-zero
};

std::unique_ptr<Analysed> analyse(std::vector<std::uint8_t> text, std::vector<Symbol> extra, std::vector<Relocation> relocs,
                                  AnalysisOptions options = {}) {
  auto a = std::make_unique<Analysed>();
  a->module = Module::synthetic("snippet", std::move(text), "snippet_fn", std::move(extra), std::move(relocs));
  auto d = disassemble(a->module);
  EXPECT_TRUE(d) << d.error().message();
  a->dis = std::move(*d);
  a->result = analyzeModule(a->dis, options);
  return a;
}

std::vector<const Access*> accessesAt(const ModuleAnalysis& r, std::uint64_t offset) {
  std::vector<const Access*> out;
  for (const auto& x : r.accesses)
    if (offsetOf(x.insn) == offset) out.push_back(&x);
  return out;
}

// The sequence ends at the one access at offset FIRST and restarts at the one at SECOND: no edge
// between them, the first a break exit, the second a break entry.
void expectSequenceBrokenBetween(const ModuleAnalysis& r, std::uint64_t first, std::uint64_t second) {
  auto w1 = accessesAt(r, first), w2 = accessesAt(r, second);
  ASSERT_EQ(w1.size(), 1u);
  ASSERT_EQ(w2.size(), 1u);
  const auto i1 = std::uint32_t(w1[0] - r.accesses.data()), i2 = std::uint32_t(w2[0] - r.accesses.data());
  EXPECT_FALSE(r.edges.count({i1, i2}));
  EXPECT_TRUE(r.break_exits.count(i1));
  EXPECT_TRUE(r.break_entries.count(i2));
}

TEST(DataFlow, ConstantPortAndValue) {
  auto a = analyse({
      0xb0, 0x0a,  // 0: mov al, 0xa
      0xe6, 0xf2,  // 2: out 0xf2, al
      0xb0, 0x07,  // 4: mov al, 7
      0xe4, 0xf4,  // 6: in al, 0xf4
      0xc3,        // 8: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  auto out = accessesAt(a->result, 2);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->where, Access::Where::FixedPort);
  EXPECT_EQ(out[0]->port, 0xf2u);
  EXPECT_EQ(out[0]->dir, Dir::Write);
  EXPECT_EQ(out[0]->size, 1);
  EXPECT_EQ(out[0]->value, 0x0au);
  EXPECT_TRUE(out[0]->position);
  auto in = accessesAt(a->result, 6);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0]->dir, Dir::Read);
  EXPECT_FALSE(in[0]->position);  // reads never move a sequence
}

TEST(DataFlow, FixedPortOutsideTheDeviceIsForeign) {
  auto a = analyse({
      0xb0, 0x00,  // 0: mov al, 0
      0xe6, 0x80,  // 2: out 0x80, al      (io_delay's port: not the device)
      0xc3,        // 4: ret
  }, {}, {});
  auto out = accessesAt(a->result, 2);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0]->position);
  EXPECT_EQ(a->result.coverage.sites_foreign, 1u);
}

TEST(DataFlow, IsaBaseHeldInAGlobalPlusOffset) {
  // floppy's idiom: init stores 0x3f0 into fdc_state[].address; accessors load it and add the register.
  auto a = analyse({
      0x48, 0xc7, 0x05, 0, 0, 0, 0, 0xf0, 0x03, 0, 0,  //  0: mov qword [rip+fdc_base], 0x3f0
      0x48, 0x8b, 0x15, 0, 0, 0, 0,                    // 11: mov rdx, [rip+fdc_base]
      0x83, 0xc2, 0x05,                                // 18: add edx, 5
      0xb0, 0x10,                                      // 21: mov al, 0x10
      0xee,                                            // 23: out dx, al
      0x83, 0xea, 0x01,                                // 24: sub edx, 1
      0xec,                                            // 27: in al, dx
      0xc3,                                            // 28: ret
  }, {bssObject("fdc_base", 0x10, 8)}, {pc32(3, 2, -8), pc32(14, 2, -4)});
  auto out = accessesAt(a->result, 23);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(out[0]->offset, 5);
  EXPECT_EQ(out[0]->value, 0x10u);
  EXPECT_EQ(a->result.bases[out[0]->base].name, "fdc_base");
  auto in = accessesAt(a->result, 27);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0]->offset, 4);
  // The policy places the region at the base the module stores.
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(policy->regions.size(), 1u);
  EXPECT_EQ(policy->regions[0].base, 0x3f0u);
  EXPECT_EQ(policy->regions[0].length, 8u);
  ASSERT_EQ(policy->graphs[0].channels.size(), 1u);
  EXPECT_EQ(policy->graphs[0].channels[0].nodes[0].offset, 5u);
  EXPECT_EQ(policy->graphs[0].channels[0].nodes[0].value.kind, ValueKind::Exact);
  ASSERT_EQ(policy->graphs[0].anywhere.size(), 1u);
  EXPECT_EQ(policy->graphs[0].anywhere[0].offset, 4u);
}

TEST(DataFlow, ArrayOfControllersIndexedByARegister) {
  // mov rdx, fdc_state[rax*8] after lea rax,[rbx+rbx*4]: the element stands for the array.
  auto a = analyse({
      0x48, 0x8d, 0x04, 0x9b,                    //  0: lea rax, [rbx+rbx*4]
      0x48, 0x8b, 0x14, 0xc5, 0, 0, 0, 0,        //  4: mov rdx, [rax*8 + fdc_state]   (R_X86_64_32S)
      0x83, 0xc2, 0x02,                          // 12: add edx, 2
      0x31, 0xc0,                                // 15: xor eax, eax
      0xee,                                      // 17: out dx, al
      0xc3,                                      // 18: ret
  }, {bssObject("fdc_state", 0x20, 80)}, {Relocation{8, R_X86_64_32S, 2, 0}});
  auto out = accessesAt(a->result, 17);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(out[0]->offset, 2);
  EXPECT_EQ(out[0]->value, 0u);
}

TEST(DataFlow, IowriteThroughPciIomap) {
  auto a = analyse({
      0xbe, 0x00, 0, 0, 0,      //  0: mov esi, 0            (bar 0)
      0xe8, 0, 0, 0, 0,         //  5: call pci_iomap
      0x48, 0x89, 0xc3,         // 10: mov rbx, rax
      0x48, 0x8d, 0x73, 0x10,   // 13: lea rsi, [rbx+0x10]
      0xbf, 0x01, 0, 0, 0,      // 17: mov edi, 1
      0xe8, 0, 0, 0, 0,         // 22: call iowrite8
      0x48, 0x8d, 0x7b, 0x14,   // 27: lea rdi, [rbx+0x14]
      0xe8, 0, 0, 0, 0,         // 31: call ioread32
      0xc3,                     // 36: ret
  }, {external("pci_iomap"), external("iowrite8"), external("ioread32")}, {plt32(6, 2), plt32(23, 3), plt32(32, 4)});
  auto w = accessesAt(a->result, 22);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[w[0]->base].kind, DeviceBase::PciIomap);
  EXPECT_EQ(a->result.bases[w[0]->base].bar, 0);
  EXPECT_EQ(w[0]->offset, 0x10);
  EXPECT_EQ(w[0]->size, 1);
  EXPECT_EQ(w[0]->value, 1u);
  auto r = accessesAt(a->result, 31);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->dir, Dir::Read);
  EXPECT_EQ(r[0]->size, 4);
  EXPECT_EQ(r[0]->offset, 0x14);
}

TEST(DataFlow, InlinedWritelThroughIoremappedBar) {
  auto a = analyse({
      0xbe, 0x01, 0, 0, 0,                  //  0: mov esi, 1           (bar 1)
      0xe8, 0, 0, 0, 0,                     //  5: call pci_ioremap_bar
      0xc7, 0x40, 0x38, 0x05, 0, 0, 0,      // 10: mov dword [rax+0x38], 5      (writel)
      0x8b, 0x48, 0x08,                     // 17: mov ecx, [rax+8]             (readl)
      0xc3,                                 // 20: ret
  }, {external("pci_ioremap_bar")}, {plt32(6, 2)});
  PolicyOptions pci;
  pci.pci_vendor = 0x1234;
  pci.pci_device = 0x5678;
  auto w = accessesAt(a->result, 10);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->form, Access::Form::MmioMov);
  EXPECT_EQ(w[0]->offset, 0x38);
  EXPECT_EQ(w[0]->size, 4);
  EXPECT_EQ(w[0]->value, 5u);
  auto r = accessesAt(a->result, 17);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]->dir, Dir::Read);
  EXPECT_EQ(r[0]->offset, 8);
  auto policy = buildPolicy(a->result, pci);
  ASSERT_TRUE(policy) << policy.error().message();
  EXPECT_EQ(policy->regions[0].space, RegionSpace::Mem);
  EXPECT_EQ(policy->regions[0].bar, 1);
}

TEST(DataFlow, BaseKeptInAStructFieldIsFollowed) {
  // probe: adapter->hw_addr = pci_ioremap_bar(pdev, 0); elsewhere: writel(v, adapter->hw_addr + 0x100)
  auto a = analyse({
      0x48, 0x89, 0xfb,                     //  0: mov rbx, rdi          (adapter)
      0x31, 0xf6,                           //  3: xor esi, esi
      0xe8, 0, 0, 0, 0,                     //  5: call pci_ioremap_bar
      0x48, 0x89, 0x43, 0x28,               // 10: mov [rbx+0x28], rax
      0xc3,                                 // 14: ret
      0x48, 0x8b, 0x47, 0x28,               // 15: mov rax, [rdi+0x28]   (other_fn)
      0xc7, 0x80, 0x00, 0x01, 0, 0, 0x02, 0, 0, 0,  // 19: mov dword [rax+0x100], 2
      0xc3,                                 // 29: ret
  }, {external("pci_ioremap_bar"), function("other_fn", 15, 15)}, {plt32(6, 2)});
  auto w = accessesAt(a->result, 19);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0x100);
  EXPECT_EQ(w[0]->value, 2u);
}

TEST(DataFlow, PointerToTheStructureHoldingTheBaseIsFollowedIntoCallees) {
  // adapter->hw.hw_addr = pci_ioremap_bar(pdev, 0); hw_fn(&adapter->hw) { writel(0x1c8, hw->hw_addr + 0x10); }
  auto a = analyse({
      0x48, 0x89, 0xfb,                          //  0: mov rbx, rdi                (adapter)
      0x31, 0xf6,                                //  3: xor esi, esi
      0xe8, 0, 0, 0, 0,                          //  5: call pci_ioremap_bar
      0x48, 0x89, 0x83, 0x08, 0x0e, 0, 0,        // 10: mov [rbx+0xe08], rax
      0x48, 0x8d, 0xbb, 0x08, 0x0e, 0, 0,        // 17: lea rdi, [rbx+0xe08]         (&adapter->hw)
      0xe8, 0x01, 0, 0, 0,                       // 24: call hw_fn (30)
      0xc3,                                      // 29: ret
      0x48, 0x8b, 0x07,                          // 30: mov rax, [rdi]               (hw_fn: hw->hw_addr)
      0xc7, 0x40, 0x10, 0xc8, 0x01, 0, 0,        // 33: mov dword [rax+0x10], 0x1c8
      0xc3,                                      // 40: ret
  }, {external("pci_ioremap_bar"), function("hw_fn", 30, 11)}, {plt32(6, 2)});
  auto w = accessesAt(a->result, 33);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0x10);
  EXPECT_EQ(w[0]->value, 0x1c8u);
}

TEST(DataFlow, ArgumentsAreFollowedPerCallingContext) {
  // output_byte(0x10); output_byte(0x20): two write nodes with exact values, in order.
  auto a = analyse({
      0xbf, 0x10, 0, 0, 0,      //  0: mov edi, 0x10
      0xe8, 0x0b, 0, 0, 0,      //  5: call helper (21)
      0xbf, 0x20, 0, 0, 0,      // 10: mov edi, 0x20
      0xe8, 0x01, 0, 0, 0,      // 15: call helper (21)
      0xc3,                     // 20: ret
      0x89, 0xf8,               // 21: mov eax, edi          (helper)
      0xba, 0xf5, 0x03, 0, 0,   // 23: mov edx, 0x3f5
      0xee,                     // 28: out dx, al
      0xc3,                     // 29: ret
  }, {function("helper", 21, 9)}, {}, AnalysisOptions{{{0x3f0, 0x3f7}}});
  auto out = accessesAt(a->result, 28);
  ASSERT_EQ(out.size(), 2u);
  std::uint32_t first = ~0u, second = ~0u;
  for (std::uint32_t i = 0; i < a->result.accesses.size(); ++i) {
    if (a->result.accesses[i].value == 0x10u) first = i;
    if (a->result.accesses[i].value == 0x20u) second = i;
  }
  ASSERT_NE(first, ~0u);
  ASSERT_NE(second, ~0u);
  EXPECT_TRUE(a->result.edges.count({first, second}));
  EXPECT_FALSE(a->result.edges.count({second, first}));
  // Only snippet_fn is an entry point (helper is called), so the sequence starts at 0x10, ends at 0x20.
  ASSERT_EQ(a->result.roots.size(), 1u);
  EXPECT_EQ(a->result.roots[0].first, std::vector<std::uint32_t>{first});
  EXPECT_EQ(a->result.roots[0].last, std::vector<std::uint32_t>{second});
}

TEST(DataFlow, KernelPrologueAndReturnThunk) {
  auto a = analyse({
      0xe8, 0, 0, 0, 0,     //  0: call __fentry__
      0xb0, 0x07,           //  5: mov al, 7
      0xe6, 0xf2,           //  7: out 0xf2, al
      0xe9, 0, 0, 0, 0,     //  9: jmp __x86_return_thunk
      0xcc,                 // 14: int3
  }, {external("__fentry__"), external("__x86_return_thunk")}, {plt32(1, 2), plt32(10, 3)}, AnalysisOptions{{{0xf0, 0xf7}}});
  const Function& f = a->dis.functions()[0];
  ASSERT_GE(f.insns.size(), 4u);
  EXPECT_EQ(f.insns[0].flow, Flow::Call);
  EXPECT_EQ(f.insns[3].flow, Flow::Return);
  auto out = accessesAt(a->result, 7);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->value, 7u);
  ASSERT_EQ(a->result.roots.size(), 1u);
  EXPECT_EQ(a->result.roots[0].last.size(), 1u);
}

TEST(DataFlow, IndirectCallEndsAndRestartsASequence) {
  auto a = analyse({
      0xb0, 0x01,           //  0: mov al, 1
      0xe6, 0xf2,           //  2: out 0xf2, al
      0xff, 0xd3,           //  4: call rbx             (a function pointer)
      0xb0, 0x02,           //  6: mov al, 2
      0xe6, 0xf2,           //  8: out 0xf2, al
      0xc3,                 // 10: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  expectSequenceBrokenBetween(a->result, 2, 8);
}

TEST(DataFlow, UnknownPortIsReportedUnresolved) {
  auto a = analyse({
      0x89, 0xfa,           //  0: mov edx, edi          (port from the caller: unknown here)
      0xee,                 //  2: out dx, al
      0xc3,                 //  3: ret
  }, {}, {});
  auto out = accessesAt(a->result, 2);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->where, Access::Where::Unresolved);
  ASSERT_EQ(a->result.coverage.unresolved.size(), 1u);
  EXPECT_NE(a->result.coverage.unresolved[0].find(".text+0x2"), std::string::npos);
}

TEST(DataFlow, DownCounterBoundsALoopOfWrites) {
  auto a = analyse({
      0xb9, 0x10, 0, 0, 0,  //  0: mov ecx, 16
      0xe6, 0xf5,           //  5: out 0xf5, al
      0x83, 0xe9, 0x01,     //  7: sub ecx, 1
      0x75, 0xf9,           // 10: jne 5
      0xc3,                 // 12: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(policy->graphs[0].channels.size(), 1u);
  const auto& ch = policy->graphs[0].channels[0];
  ASSERT_EQ(ch.loops.size(), 1u);
  EXPECT_FALSE(ch.loops[0].unbounded);
  EXPECT_EQ(ch.loops[0].max_iterations, 17u);  // 16 trips, plus one for the way in
  EXPECT_EQ(a->result.coverage.loops_bounded, 1u);
}

TEST(DataFlow, DownCounterOfALoopLaidOutBeforeItsHeaderBoundsIt) {
  // cp_get_ethtool_stats: `for (i = 1000; readl(regs + StatsAddr) & DumpStats; ) { udelay(10); if (!--i) break; }`
  // compiled with the body first and a jump to the poll: the step sits between the counter's
  // initial constant and the header.
  auto a = analyse({
      0xb9, 0xe8, 0x03, 0, 0,  //  0: mov ecx, 1000
      0xeb, 0x07,              //  5: jmp 14
      0xe6, 0xf5,              //  7: out 0xf5, al
      0x83, 0xe9, 0x01,        //  9: sub ecx, 1
      0x74, 0x06,              // 12: je 20
      0xe4, 0xf4,              // 14: in al, 0xf4
      0xa8, 0x08,              // 16: test al, 8
      0x75, 0xf3,              // 18: jne 7
      0xc3,                    // 20: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(a->result.loops.size(), 1u);
  EXPECT_EQ(a->result.loops[0].bound, 1000u);
  // The write and the poll that gates it: every loop the graph builds around them is bounded.
  for (const auto& loop : policy->graphs[0].channels[0].loops) EXPECT_FALSE(loop.unbounded);
  EXPECT_TRUE(a->result.coverage.unbounded.empty());
}

TEST(DataFlow, LoopUntilTheDeviceAnswersIsUnbounded) {
  // A status poll is not a counter: nothing in the code bounds how often the write repeats.
  auto a = analyse({
      0xe6, 0xf5,           //  0: out 0xf5, al
      0xe4, 0xf4,           //  2: in al, 0xf4
      0x84, 0xc0,           //  4: test al, al
      0x79, 0xf8,           //  6: jns 0
      0xc3,                 //  8: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  const auto& ch = policy->graphs[0].channels[0];
  ASSERT_EQ(ch.loops.size(), 1u);
  EXPECT_TRUE(ch.loops[0].unbounded);
  ASSERT_EQ(a->result.coverage.unbounded.size(), 1u);
  EXPECT_NE(a->result.coverage.unbounded[0].find("no exit test"), std::string::npos);
}

TEST(DataFlow, CounterComparedWithAConstantBoundsTheLoop) {
  auto a = analyse({
      0x31, 0xdb,           //  0: xor ebx, ebx
      0xe6, 0xf5,           //  2: out 0xf5, al
      0x83, 0xc3, 0x01,     //  4: add ebx, 1
      0x83, 0xfb, 0x08,     //  7: cmp ebx, 8
      0x75, 0xf6,           // 10: jne 2
      0xc3,                 // 12: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  ASSERT_EQ(a->result.loops.size(), 1u);
  EXPECT_EQ(a->result.loops[0].bound, 9u);
}

TEST(DataFlow, ChipRevisionSelectAddedToTheBaseGivesBothRegisters) {
  // e1000's E1000_WRITE_REG: `mac_type < e1000_82543 ? 82542 offset : offset`, compiled branchless.
  auto a = analyse({
      0xbe, 0, 0, 0, 0,                          //  0: mov esi, 0
      0xe8, 0, 0, 0, 0,                          //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc3,                          // 10: mov rbx, rax
      0x83, 0xff, 0x03,                          // 13: cmp edi, 3
      0x48, 0x19, 0xd2,                          // 16: sbb rdx, rdx              (0 or -1)
      0x48, 0x81, 0xe2, 0x08, 0xe0, 0xff, 0xff,  // 19: and rdx, -0x1ff8
      0x48, 0x81, 0xc2, 0x60, 0x21, 0, 0,        // 26: add rdx, 0x2160          (FCRTL or 82542's 0x168)
      0x48, 0x01, 0xda,                          // 33: add rdx, rbx
      0xc7, 0x02, 0, 0, 0, 0,                    // 36: mov dword [rdx], 0
      0xc3,                                      // 42: ret
  }, {external("pci_ioremap_bar")}, {plt32(6, 2)});
  std::set<std::int64_t> offsets;
  for (const Access* w : accessesAt(a->result, 36)) {
    EXPECT_EQ(w->where, Access::Where::BaseOffset);
    EXPECT_EQ(w->value, 0u);
    offsets.insert(w->offset);
  }
  EXPECT_EQ(offsets, (std::set<std::int64_t>{0x168, 0x2160}));
}

TEST(DataFlow, RegisterArrayIndexedByADownCounterGetsEveryElement) {
  // for (i = 127; i >= 0; i--) writel(0, hw_addr + MTA + i*4), strength-reduced to a byte offset.
  auto a = analyse({
      0xbe, 0, 0, 0, 0,                                      //  0: mov esi, 0
      0xe8, 0, 0, 0, 0,                                      //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc7,                                      // 10: mov rdi, rax
      0xb8, 0xfc, 0x01, 0, 0,                                // 13: mov eax, 0x1fc
      0xc7, 0x84, 0x07, 0x00, 0x52, 0, 0, 0, 0, 0, 0,        // 18: mov dword [rdi+rax+0x5200], 0
      0x48, 0x83, 0xe8, 0x04,                                // 29: sub rax, 4
      0x48, 0x83, 0xf8, 0xfc,                                // 33: cmp rax, -4
      0x75, 0xeb,                                            // 37: jne 18
      0xc3,                                                  // 39: ret
  }, {external("pci_ioremap_bar")}, {plt32(6, 2)});
  std::set<std::int64_t> offsets;
  for (const Access* w : accessesAt(a->result, 18)) {
    EXPECT_EQ(w->where, Access::Where::BaseOffset);
    EXPECT_TRUE(w->offset_exact);
    offsets.insert(w->offset);
  }
  ASSERT_EQ(offsets.size(), 128u);  // 0x5200..0x53fc: not 0x51fc, the value that ends the loop
  EXPECT_EQ(*offsets.begin(), 0x5200);
  EXPECT_EQ(*offsets.rbegin(), 0x53fc);
  for (auto o : offsets) EXPECT_EQ(o % 4, 0);
  // The loop that writes them is bounded by the same count.
  ASSERT_EQ(a->result.loops.size(), 1u);
  EXPECT_EQ(a->result.loops[0].bound, 128u);
}

TEST(DataFlow, LoopCounterPassedToACalleeIndexesItsArray) {
  // for (i = 1; i < 15; i++) rar_set(hw, i);  rar_set: writel(0, hw_addr + RA + i*8)
  auto a = analyse({
      0xbe, 0, 0, 0, 0,                                      //  0: mov esi, 0
      0xe8, 0, 0, 0, 0,                                      //  5: call pci_ioremap_bar
      0x49, 0x89, 0xc4,                                      // 10: mov r12, rax
      0xbb, 0x01, 0, 0, 0,                                   // 13: mov ebx, 1
      0x4c, 0x89, 0xe7,                                      // 18: mov rdi, r12
      0x89, 0xde,                                            // 21: mov esi, ebx
      0xe8, 0x0c, 0, 0, 0,                                   // 23: call rar_set (40)
      0x83, 0xc3, 0x01,                                      // 28: add ebx, 1
      0x83, 0xfb, 0x0f,                                      // 31: cmp ebx, 15
      0x75, 0xee,                                            // 34: jne 18
      0xc3,                                                  // 36: ret
      0x90, 0x90, 0x90,                                      // 37: nop (padding)
      0x8d, 0x04, 0xf5, 0, 0, 0, 0,                          // 40: lea eax, [rsi*8]      (rar_set)
      0xc7, 0x84, 0x07, 0x00, 0x54, 0, 0, 0, 0, 0, 0,        // 47: mov dword [rdi+rax+0x5400], 0
      0xc3,                                                  // 58: ret
  }, {external("pci_ioremap_bar"), function("rar_set", 40, 19)}, {plt32(6, 2)});
  std::set<std::int64_t> offsets;
  for (const Access* w : accessesAt(a->result, 47)) offsets.insert(w->offset);
  std::set<std::int64_t> expected;
  for (int i = 1; i < 15; ++i) expected.insert(0x5400 + i * 8);
  EXPECT_EQ(offsets, expected);
}

TEST(DataFlow, IndexWithoutABoundStaysUnknown) {
  // writel(0, hw_addr + 0x5200 + i*4) with i from the caller: no loop bounds it, so no offset is invented.
  auto a = analyse({
      0x48, 0x89, 0xf3,                                      //  0: mov rbx, rsi         (i)
      0xbe, 0, 0, 0, 0,                                      //  3: mov esi, 0
      0xe8, 0, 0, 0, 0,                                      //  8: call pci_ioremap_bar
      0xc7, 0x84, 0x98, 0x00, 0x52, 0, 0, 0, 0, 0, 0,        // 13: mov dword [rax+rbx*4+0x5200], 0
      0xc3,                                                  // 24: ret
  }, {external("pci_ioremap_bar")}, {plt32(9, 2)});
  auto w = accessesAt(a->result, 13);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_FALSE(w[0]->offset_exact);
}

TEST(DataFlow, DivisionKeepsTheRegistersItDoesNotWrite) {
  // e1000_watchdog computes the ITR with `div` between loading its adapter and writing the register.
  auto a = analyse({
      0xbe, 0, 0, 0, 0,                    //  0: mov esi, 0
      0xe8, 0, 0, 0, 0,                    //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc3,                    // 10: mov rbx, rax
      0x31, 0xd2,                          // 13: xor edx, edx
      0xb8, 0x64, 0, 0, 0,                 // 15: mov eax, 100
      0xb9, 0x07, 0, 0, 0,                 // 20: mov ecx, 7
      0xf7, 0xf1,                          // 25: div ecx            (writes edx:eax only)
      0x89, 0x83, 0xc4, 0, 0, 0,           // 27: mov [rbx+0xc4], eax
      0xc3,                                // 33: ret
  }, {external("pci_ioremap_bar")}, {plt32(6, 2)});
  auto w = accessesAt(a->result, 27);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0xc4);
  EXPECT_FALSE(w[0]->value.has_value());
}

TEST(DataFlow, AddressOfTheFieldHoldingTheBaseIsAHolder) {
  // probe: adapter->hw.hw_addr = pci_ioremap_bar(...) at +0x488; configure(adapter) passes &adapter->hw
  // (lea 0x488) to a helper that writes through hw->hw_addr.
  auto a = analyse({
      0x48, 0x89, 0xfb,                          //  0: mov rbx, rdi           (probe)
      0xbe, 0, 0, 0, 0,                          //  3: mov esi, 0
      0xe8, 0, 0, 0, 0,                          //  8: call pci_ioremap_bar
      0x48, 0x89, 0x83, 0x88, 0x04, 0, 0,        // 13: mov [rbx+0x488], rax
      0xc3,                                      // 20: ret
      0x48, 0x89, 0xfb,                          // 21: mov rbx, rdi           (configure)
      0x48, 0x8d, 0xbb, 0x88, 0x04, 0, 0,        // 24: lea rdi, [rbx+0x488]
      0xe8, 0x01, 0, 0, 0,                       // 31: call set_tctl (37)
      0xc3,                                      // 36: ret
      0x48, 0x8b, 0x07,                          // 37: mov rax, [rdi]         (set_tctl)
      0xc7, 0x80, 0x00, 0x04, 0, 0, 0x00, 0xf0, 0x03, 0x00,  // 40: mov dword [rax+0x400], 0x3f000
      0xc3,                                      // 50: ret
  }, {external("pci_ioremap_bar"), function("configure", 21, 16), function("set_tctl", 37, 14)}, {plt32(9, 2)});
  auto w = accessesAt(a->result, 40);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0x400);
  EXPECT_EQ(w[0]->value, 0x3f000u);
}

TEST(DataFlow, CalleesKnowledgeOfAParameterFlowsBackToTheCallersPointer) {
  // A work handler gets &adapter->watchdog_task and computes the adapter with container_of; passing
  // it to a helper known to take the adapter tells where the base is relative to the handler's own
  // pointer, so its direct load of the base (at -0xf0) is the base too.
  auto a = analyse({
      0x48, 0x89, 0xfb,                          //  0: mov rbx, rdi           (probe)
      0xbe, 0, 0, 0, 0,                          //  3: mov esi, 0
      0xe8, 0, 0, 0, 0,                          //  8: call pci_ioremap_bar
      0x48, 0x89, 0x43, 0x10,                    // 13: mov [rbx+0x10], rax
      0x48, 0x89, 0xdf,                          // 17: mov rdi, rbx
      0xe8, 0x01, 0, 0, 0,                       // 20: call helper (26)
      0xc3,                                      // 25: ret
      0x48, 0x8b, 0x47, 0x10,                    // 26: mov rax, [rdi+0x10]    (helper)
      0xc7, 0x40, 0x20, 0x01, 0, 0, 0,           // 30: mov dword [rax+0x20], 1
      0xc3,                                      // 37: ret
      0x48, 0x89, 0xfb,                          // 38: mov rbx, rdi           (worker)
      0x48, 0x8d, 0xbf, 0x00, 0xff, 0xff, 0xff,  // 41: lea rdi, [rdi-0x100]   (container_of)
      0xe8, 0xe5, 0xff, 0xff, 0xff,              // 48: call helper (26)
      0x48, 0x8b, 0x83, 0x10, 0xff, 0xff, 0xff,  // 53: mov rax, [rbx-0xf0]
      0xc7, 0x80, 0xc8, 0, 0, 0, 0x10, 0, 0, 0,  // 60: mov dword [rax+0xc8], 0x10
      0xc3,                                      // 70: ret
  }, {external("pci_ioremap_bar"), function("helper", 26, 12), function("worker", 38, 33)}, {plt32(9, 2)});
  auto w = accessesAt(a->result, 60);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0xc8);
  EXPECT_EQ(w[0]->value, 0x10u);
}

TEST(DataFlow, ArrayElementsAroundTheLoopFollowTheCounter) {
  // The MTA loop again: element 0x53fc is followed by 0x53f8, never by an element further away or above.
  auto a = analyse({
      0xbe, 0, 0, 0, 0,                                      //  0: mov esi, 0
      0xe8, 0, 0, 0, 0,                                      //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc7,                                      // 10: mov rdi, rax
      0xb8, 0xfc, 0x01, 0, 0,                                // 13: mov eax, 0x1fc
      0xc7, 0x84, 0x07, 0x00, 0x52, 0, 0, 0, 0, 0, 0,        // 18: mov dword [rdi+rax+0x5200], 0
      0x48, 0x83, 0xe8, 0x04,                                // 29: sub rax, 4
      0x48, 0x83, 0xf8, 0xfc,                                // 33: cmp rax, -4
      0x75, 0xeb,                                            // 37: jne 18
      0xc3,                                                  // 39: ret
  }, {external("pci_ioremap_bar")}, {plt32(6, 2)});
  std::size_t edges = 0;
  for (auto [from, to] : a->result.edges) {
    ++edges;
    EXPECT_EQ(a->result.accesses[from].offset, a->result.accesses[to].offset + 4);
  }
  EXPECT_EQ(edges, 127u);
  ASSERT_EQ(a->result.roots.size(), 1u);
  EXPECT_EQ(a->result.roots[0].first.size(), 128u);  // without the entry value's relation, any element may start
}

TEST(DataFlow, PolledReadIsAPositionAndASingleReadIsNot) {
  // output_byte's handshake: wait for the status register, then write the FIFO. The poll orders the
  // write (no FIFO byte without a status read before it); a one-off read (disk change) stays stateless.
  auto a = analyse({
      0xe4, 0xf4,           //  0: in al, 0xf4          (status, polled)
      0x84, 0xc0,           //  2: test al, al
      0x79, 0xfa,           //  4: jns 0
      0xe6, 0xf5,           //  6: out 0xf5, al         (FIFO)
      0xe4, 0xf7,           //  8: in al, 0xf7          (read once)
      0xc3,                 // 10: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  auto poll = accessesAt(a->result, 0), fifo = accessesAt(a->result, 6), once = accessesAt(a->result, 8);
  ASSERT_EQ(poll.size(), 1u);
  ASSERT_EQ(fifo.size(), 1u);
  ASSERT_EQ(once.size(), 1u);
  EXPECT_TRUE(poll[0]->position);
  EXPECT_TRUE(fifo[0]->position);
  EXPECT_FALSE(once[0]->position);
  const auto ip = std::uint32_t(poll[0] - a->result.accesses.data()), iw = std::uint32_t(fifo[0] - a->result.accesses.data());
  EXPECT_TRUE(a->result.edges.count({ip, ip}));
  EXPECT_TRUE(a->result.edges.count({ip, iw}));
  ASSERT_EQ(a->result.roots.size(), 1u);
  EXPECT_EQ(a->result.roots[0].first, std::vector<std::uint32_t>{ip});
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  const auto& ch = policy->graphs[0].channels[0];
  ASSERT_EQ(ch.nodes.size(), 2u);
  ASSERT_EQ(ch.entries.size(), 1u);
  EXPECT_EQ(ch.nodes[ch.entries[0]].dir, Dir::Read) << "the FIFO write cannot begin a sequence";
}

// wait(): returns -1 (or 0) without touching the device when a flag is set, else polls the status.
// snippet_fn: write A; if (wait() < 0) return; write B.
std::unique_ptr<Analysed> writeWaitWrite(std::uint8_t early_return_low_byte, std::uint8_t early_return_high_bytes) {
  const std::uint8_t lo = early_return_low_byte, hi = early_return_high_bytes;
  return analyse({
      0xb0, 0x01,                   //  0: mov al, 1
      0xe6, 0xf5,                   //  2: out 0xf5, al         (A)
      0xe8, 0x09, 0, 0, 0,          //  4: call wait (18)
      0x85, 0xc0,                   //  9: test eax, eax
      0x78, 0x04,                   // 11: js 17
      0xb0, 0x02,                   // 13: mov al, 2
      0xe6, 0xf5,                   // 15: out 0xf5, al         (B)
      0xc3,                         // 17: ret
      0x85, 0xff,                   // 18: test edi, edi        (wait)
      0x75, 0x07,                   // 20: jne 29
      0xe4, 0xf4,                   // 22: in al, 0xf4
      0x84, 0xc0,                   // 24: test al, al
      0x79, 0xfa,                   // 26: jns 22
      0xc3,                         // 28: ret
      0xb8, lo, hi, hi, hi,         // 29: mov eax, early value
      0xc3,                         // 34: ret
  }, {function("wait", 18, 17)}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
}

std::uint32_t writeOf(const ModuleAnalysis& r, std::uint64_t value) {
  for (std::uint32_t i = 0; i < r.accesses.size(); ++i)
    if (r.accesses[i].value == value) return i;
  return ~0u;
}

TEST(DataFlow, ErrnoReturnWithoutDeviceAccessIsNotAWayPast) {
  // wait() returning -1 untouched is the driver giving up: B still needs the status poll before it.
  auto a = writeWaitWrite(0xff, 0xff);
  const std::uint32_t wa = writeOf(a->result, 1), wb = writeOf(a->result, 2);
  ASSERT_NE(wa, ~0u);
  ASSERT_NE(wb, ~0u);
  auto poll = accessesAt(a->result, 22);
  ASSERT_EQ(poll.size(), 1u);
  const auto ip = std::uint32_t(poll[0] - a->result.accesses.data());
  EXPECT_TRUE(a->result.edges.count({wa, ip}));
  EXPECT_TRUE(a->result.edges.count({ip, wb}));
  EXPECT_FALSE(a->result.edges.count({wa, wb}));
}

TEST(DataFlow, SuccessReturnWithoutDeviceAccessIsAWayPast) {
  // The same early return with 0: a normal way through wait(), so B may follow A directly.
  auto a = writeWaitWrite(0x00, 0x00);
  const std::uint32_t wa = writeOf(a->result, 1), wb = writeOf(a->result, 2);
  ASSERT_NE(wa, ~0u);
  ASSERT_NE(wb, ~0u);
  EXPECT_TRUE(a->result.edges.count({wa, wb}));
}

TEST(DataFlow, WriteRepeatingThroughItsPollGetsItsOwnBound) {
  // for (n = 4; n; n--) { while (!(inb(status) & 0x80)); outb(fifo); }: the poll spins without bound,
  // but the write comes back to itself through it only as often as the counted loop runs.
  auto a = analyse({
      0xb9, 0x04, 0, 0, 0,  //  0: mov ecx, 4
      0x90,                 //  5: nop                   (outer loop header)
      0xe4, 0xf4,           //  6: in al, 0xf4           (poll)
      0xa8, 0x80,           //  8: test al, 0x80
      0x74, 0xfa,           // 10: je 6
      0xe6, 0xf5,           // 12: out 0xf5, al          (write)
      0x83, 0xe9, 0x01,     // 14: sub ecx, 1
      0x75, 0xf2,           // 17: jne 5
      0xc3,                 // 19: ret
  }, {}, {}, AnalysisOptions{{{0xf0, 0xf7}}});
  PolicyOptions isa;
  isa.isa_kind = "isa-test";
  auto policy = buildPolicy(a->result, isa);
  ASSERT_TRUE(policy) << policy.error().message();
  const auto& ch = policy->graphs[0].channels[0];
  ASSERT_EQ(ch.nodes.size(), 2u);
  const LoopSpec* burst = nullptr;
  for (const auto& l : ch.loops)
    if (ch.nodes[l.header].dir == Dir::Write) burst = &l;
  ASSERT_NE(burst, nullptr);
  EXPECT_FALSE(burst->unbounded);
  EXPECT_EQ(burst->members.size(), 2u);
  EXPECT_LE(burst->max_iterations, 8u);
  EXPECT_GE(burst->max_iterations, 4u);
}

// ---- Port-I/O PCI drivers (issue #4) ----

namespace pio {

// A PCI driver: .data holds struct pci_driver {list_head; name; id_table (+0x18) = the id table at
// .data+0x80; probe (+0x20) = the snippet function}, so the snippet's first argument is the pci_dev.
// Symbol 2 is the id table; a test's own extra symbols start at 3.
constexpr std::uint64_t kIdTable = 0x80;
std::unique_ptr<Analysed> analyseProbe(std::vector<std::uint8_t> text, std::vector<Symbol> extra = {},
                                       std::vector<Relocation> relocs = {}, bool read_only_data = false,
                                       std::vector<Relocation> data_extra = {},
                                       std::vector<std::pair<std::uint64_t, std::uint8_t>> data_bytes = {}) {
  std::vector<Symbol> symbols{Symbol{"__mod_pci__snippet_device_table", kIdTable, 0x28, Module::kDataSection, STT_OBJECT, STB_LOCAL}};
  for (auto& s : extra) symbols.push_back(std::move(s));
  std::vector<Relocation> data{{0x18, R_X86_64_64, 2, 0}, {0x20, R_X86_64_64, 1, 0}};
  data.insert(data.end(), data_extra.begin(), data_extra.end());
  auto a = std::make_unique<Analysed>();
  a->module = Module::synthetic("snippet", std::move(text), "snippet_probe", std::move(symbols), std::move(relocs), 0x100, 0x100,
                                std::move(data));
  a->module.pci_table_symbol = "__mod_pci__snippet_device_table";
  if (read_only_data) a->module.sections[Module::kDataSection].flags &= ~std::uint64_t(SHF_WRITE);
  if (!data_bytes.empty()) {
    Section& data_section = a->module.sections[Module::kDataSection];
    a->data_image.assign(data_section.bytes.begin(), data_section.bytes.end());
    for (auto [at, byte] : data_bytes) a->data_image.at(at) = byte;
    data_section.bytes = std::span<const std::uint8_t>(a->data_image);
  }
  auto d = disassemble(a->module);
  EXPECT_TRUE(d) << d.error().message();
  a->dis = std::move(*d);
  a->result = analyzeModule(a->dis);
  return a;
}

std::vector<std::pair<std::int64_t, std::optional<std::uint64_t>>> writesAt(const ModuleAnalysis& r, std::uint64_t offset) {
  std::vector<std::pair<std::int64_t, std::optional<std::uint64_t>>> out;
  for (const Access* x : accessesAt(r, offset))
    if (x->where == Access::Where::BaseOffset) out.emplace_back(x->offset, x->value);
  return out;
}

}  // namespace pio

TEST(DataFlow, PciResourceStartInTheProbeIsAPortBase) {
  // ne2k_pci_init_one: `ioaddr = pci_resource_start(pdev, 0)` is an inline load of pdev->resource[0].start.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0x97, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdx,QWORD PTR [rdi+0x3c8]   resource[0].start
      0x83, 0xc2, 0x07,                          //  7: add edx,0x7
      0xb0, 0xff,                                // 10: mov al,0xff
      0xee,                                      // 12: out dx,al
      0x48, 0x8b, 0x97, 0x08, 0x04, 0x00, 0x00,  // 13: mov rdx,QWORD PTR [rdi+0x408]   resource[1].start
      0xb0, 0x01,                                // 20: mov al,0x1
      0xee,                                      // 22: out dx,al
      0xc3,                                      // 23: ret
  });
  auto bar0 = accessesAt(a->result, 12);
  ASSERT_EQ(bar0.size(), 1u);
  ASSERT_EQ(bar0[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(bar0[0]->offset, 7);
  EXPECT_EQ(bar0[0]->value, 0xffu);
  EXPECT_EQ(a->result.bases[bar0[0]->base].kind, DeviceBase::PciResource);
  EXPECT_EQ(a->result.bases[bar0[0]->base].bar, 0);
  auto bar1 = accessesAt(a->result, 22);
  ASSERT_EQ(bar1.size(), 1u);
  EXPECT_EQ(a->result.bases[bar1[0]->base].bar, 1);
  PolicyOptions pci;
  pci.pci_vendor = 0x10ec;
  pci.pci_device = 0x8029;
  auto policy = buildPolicy(a->result, pci);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(policy->regions.size(), 2u);
  EXPECT_EQ(policy->regions[0].space, RegionSpace::Io);
  EXPECT_EQ(policy->regions[0].bar, 0);
}

TEST(DataFlow, ResourceLoadOutsideAProbeIsNoBase) {
  // Same bytes, no struct pci_driver naming the function: its first argument is not known to be a pci_dev.
  auto a = analyse({
      0x48, 0x8b, 0x97, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdx,QWORD PTR [rdi+0x3c8]
      0xb0, 0xff,                                //  7: mov al,0xff
      0xee,                                      //  9: out dx,al
      0xc3,                                      // 10: ret
  }, {}, {});
  auto out = accessesAt(a->result, 9);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]->where, Access::Where::Unresolved);
}

TEST(DataFlow, PortSpilledAsSixteenBitsSurvivesTheStack) {
  // 8390's ei_interrupt keeps `e8390_base + EN0_ISR` in a u16 on the stack; a byte stored next to it
  // must not erase it.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0x97, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdx,QWORD PTR [rdi+0x3c8]
      0x8d, 0x42, 0x07,                          //  7: lea eax,[rdx+0x7]
      0x66, 0x89, 0x44, 0x24, 0xee,              // 10: mov WORD PTR [rsp-0x12],ax
      0xc6, 0x44, 0x24, 0xf3, 0x00,              // 15: mov BYTE PTR [rsp-0xd],0x0
      0x0f, 0xb7, 0x54, 0x24, 0xee,              // 20: movzx edx,WORD PTR [rsp-0x12]
      0xec,                                      // 25: in al,dx
      0xc3,                                      // 26: ret
  });
  auto in = accessesAt(a->result, 25);
  ASSERT_EQ(in.size(), 1u);
  ASSERT_EQ(in[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(in[0]->offset, 7);
}

TEST(DataFlow, TableOfRegisterValuePairsOnTheStackIsUnrolledInOrder) {
  // ne2k_pci_init_one's program_seq[]: {value, register} byte pairs built with wide immediate stores
  // (the tail loaded from read-only data), written in a one-block loop up to the table's end.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xb7, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rsi,QWORD PTR [rdi+0x3c8]
      0x48, 0xb8, 0x21, 0x00, 0x49, 0x0e, 0x00,  //  7: movabs rax,0xb000a000e490021
      0x0a, 0x00, 0x0b,                          //     (cont.)
      0x48, 0x89, 0x44, 0x24, 0xe0,              // 17: mov QWORD PTR [rsp-0x20],rax
      0x0f, 0xb7, 0x05, 0x00, 0x00, 0x00, 0x00,  // 22: movzx eax,WORD PTR [rip+table_tail]
      0x66, 0x89, 0x44, 0x24, 0xe8,              // 29: mov WORD PTR [rsp-0x18],ax
      0x48, 0x8d, 0x4c, 0x24, 0xe0,              // 34: lea rcx,[rsp-0x20]
      0x4c, 0x8d, 0x4c, 0x24, 0xea,              // 39: lea r9,[rsp-0x16]
      0x0f, 0xb6, 0x51, 0x01,                    // 44: movzx edx,BYTE PTR [rcx+0x1]
      0x0f, 0xb6, 0x01,                          // 48: movzx eax,BYTE PTR [rcx]
      0x01, 0xf2,                                // 51: add edx,esi
      0xee,                                      // 53: out dx,al
      0x48, 0x83, 0xc1, 0x02,                    // 54: add rcx,0x2
      0x49, 0x39, 0xc9,                          // 58: cmp r9,rcx
      0x75, 0xed,                                // 61: jne 44
      0xc3,                                      // 63: ret
  }, {Symbol{"table_tail", 0x40, 2, Module::kDataSection, STT_OBJECT, STB_LOCAL}}, {pc32(25, 3, -4)}, /*read_only_data=*/true);
  using W = std::pair<std::int64_t, std::optional<std::uint64_t>>;
  auto writes = pio::writesAt(a->result, 53);
  std::sort(writes.begin(), writes.end());
  // (0x21 -> 0), (0x49 -> 0xe), (0 -> 0xa), (0 -> 0xb), and the zero pair read from .data.
  EXPECT_EQ(writes, (std::vector<W>{{0, 0x00}, {0, 0x21}, {0xa, 0}, {0xb, 0}, {0xe, 0x49}}));
  // In program order, each pair once: CR=0x21 first, then DCFG, RBCR0, RBCR1, CR=0.
  auto node = [&](std::int64_t off, std::uint64_t v) {
    for (std::uint32_t i = 0; i < a->result.accesses.size(); ++i)
      if (a->result.accesses[i].offset == off && a->result.accesses[i].value == v) return i;
    return ~0u;
  };
  EXPECT_TRUE(a->result.edges.count({node(0, 0x21), node(0xe, 0x49)}));
  EXPECT_TRUE(a->result.edges.count({node(0xb, 0), node(0, 0)}));
  EXPECT_FALSE(a->result.edges.count({node(0, 0), node(0, 0x21)})) << "the walk is unrolled, not a loop";
}

TEST(DataFlow, WritableDataIsNoConstant) {
  // The same load from a writable object: the module may change it, so the value stays unknown.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0x97, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdx,QWORD PTR [rdi+0x3c8]
      0x0f, 0xb7, 0x05, 0x00, 0x00, 0x00, 0x00,  //  7: movzx eax,WORD PTR [rip+table_tail]
      0xee,                                      // 14: out dx,al
      0xc3,                                      // 15: ret
  }, {Symbol{"table_tail", 0x40, 2, Module::kDataSection, STT_OBJECT, STB_LOCAL}}, {pc32(10, 3, -4)});
  auto out = accessesAt(a->result, 14);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0]->value.has_value());
}

TEST(DataFlow, CountedLoopIndexReachesEachRegisterOfTheArray) {
  // __NS8390_init: `for (i = 0; i < 6; i++) outb(dev_addr[i], e8390_base + EN1_PHYS_SHIFT(i))`.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xaf, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rbp,QWORD PTR [rdi+0x3c8]
      0x31, 0xdb,                                //  7: xor ebx,ebx
      0x8d, 0x54, 0x1d, 0x01,                    //  9: lea edx,[rbp+rbx*1+0x1]
      0xb0, 0x00,                                // 13: mov al,0x0
      0xee,                                      // 15: out dx,al
      0x48, 0x83, 0xc3, 0x01,                    // 16: add rbx,0x1
      0x48, 0x83, 0xfb, 0x06,                    // 20: cmp rbx,0x6
      0x75, 0xef,                                // 24: jne 9
      0xc3,                                      // 26: ret
  });
  std::set<std::int64_t> offsets;
  for (auto [off, v] : pio::writesAt(a->result, 15)) offsets.insert(off);
  EXPECT_EQ(offsets, (std::set<std::int64_t>{1, 2, 3, 4, 5, 6}));
  ASSERT_FALSE(a->result.loops.empty());
  EXPECT_EQ(a->result.loops[0].bound, 7u);
}

TEST(DataFlow, PointerWalkOverAStructArrayIsUnrolled) {
  // do_set_multicast_list: `for (i = 0; i < 8; i++) outb(ei_local->mcfilter[i], base + EN1_MULT_SHIFT(i))`
  // compiled to a pointer walk from &mcfilter[0] to &mcfilter[8] with port = (base + 8 - &mcfilter[0]) + p.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xaf, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rbp,QWORD PTR [rdi+0x3c8]
      0x48, 0x8d, 0x5e, 0x40,                    //  7: lea rbx,[rsi+0x40]
      0x4c, 0x8d, 0x46, 0x48,                    // 11: lea r8,[rsi+0x48]
      0x44, 0x8d, 0x55, 0x08,                    // 15: lea r10d,[rbp+0x8]
      0x48, 0x89, 0xd9,                          // 19: mov rcx,rbx
      0x41, 0x29, 0xda,                          // 22: sub r10d,ebx
      0x0f, 0xb6, 0x01,                          // 25: movzx eax,BYTE PTR [rcx]
      0x41, 0x8d, 0x14, 0x0a,                    // 28: lea edx,[r10+rcx*1]
      0xee,                                      // 32: out dx,al
      0x48, 0x83, 0xc1, 0x01,                    // 33: add rcx,0x1
      0x49, 0x39, 0xc8,                          // 37: cmp r8,rcx
      0x75, 0xef,                                // 40: jne 25
      0xc3,                                      // 42: ret
  });
  std::set<std::int64_t> offsets;
  for (auto [off, v] : pio::writesAt(a->result, 32)) offsets.insert(off);
  EXPECT_EQ(offsets, (std::set<std::int64_t>{8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST(DataFlow, PortBaseFieldLoadedAsSixteenBits) {
  // ne2k_pci_block_output: `outb(..., dev->base_addr + NE_DATAPORT)` loads only the low 16 bits.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0x97, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdx,QWORD PTR [rdi+0x3c8]
      0x48, 0x89, 0x56, 0x30,                    //  7: mov QWORD PTR [rsi+0x30],rdx    dev->base_addr = ioaddr
      0x0f, 0xb7, 0x53, 0x30,                    // 11: movzx edx,WORD PTR [rbx+0x30]
      0x83, 0xc2, 0x0e,                          // 15: add edx,0xe
      0xb0, 0x49,                                // 18: mov al,0x49
      0xee,                                      // 20: out dx,al
      0xc3,                                      // 21: ret
  });
  using W = std::pair<std::int64_t, std::optional<std::uint64_t>>;
  EXPECT_EQ(pio::writesAt(a->result, 20), (std::vector<W>{{0xe, 0x49}}));
}

TEST(DataFlow, CallThroughAConstFunctionTableIsDirectAndTypesTheParameter) {
  // pcnet32_probe1 calls `pcnet32_wio.read_csr(ioaddr, ...)` through the const table before keeping it;
  // elsewhere `lp->a->write_csr(ioaddr, ...)` reaches the same function through an unknown pointer.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xbf, 0xc8, 0x03, 0x00, 0x00,  //  0: mov rdi,QWORD PTR [rdi+0x3c8]
      0x48, 0x8b, 0x05, 0x00, 0x00, 0x00, 0x00,  //  7: mov rax,QWORD PTR [rip+ops_table]
      0xff, 0xd0,                                // 14: call rax
      0xc3,                                      // 16: ret
      0x8d, 0x57, 0x12,                          // 17: lea edx,[rdi+0x12]        (csr_write)
      0x89, 0xf0,                                // 20: mov eax,esi
      0x66, 0xef,                                // 22: out dx,ax
      0xc3,                                      // 24: ret
  }, {Symbol{"ops_table", 0x40, 8, Module::kDataSection, STT_OBJECT, STB_LOCAL}, function("csr_write", 17, 8)}, {pc32(10, 3, -4)},
     /*read_only_data=*/true, {{0x40, R_X86_64_64, 4, 0}});
  auto out = accessesAt(a->result, 22);
  ASSERT_FALSE(out.empty());
  for (const Access* x : out) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset) << "csr_write entered through the table pointer too";
    EXPECT_EQ(x->offset, 0x12);
    EXPECT_EQ(a->result.bases[x->base].kind, DeviceBase::PciResource);
  }
  // Two entry points: the probe, and csr_write (its address is in the table).
  EXPECT_EQ(a->result.roots.size(), 2u);
}

TEST(DataFlow, PointerWalkOverAStackBufferIsUnrolled) {
  // pcnet32_probe1: `for (i = 0; i < 6; i++) promaddr[i] = inb(ioaddr + i)` as a walk over the local
  // buffer with port = (ioaddr - &promaddr[0]) + p.
  auto a = pio::analyseProbe({
      0x4c, 0x8b, 0xaf, 0xc8, 0x03, 0x00, 0x00,  //  0: mov r13,QWORD PTR [rdi+0x3c8]
      0x48, 0x8d, 0x74, 0x24, 0xe0,              //  7: lea rsi,[rsp-0x20]
      0x4c, 0x8d, 0x7c, 0x24, 0xe6,              // 12: lea r15,[rsp-0x1a]
      0x48, 0x89, 0xf1,                          // 17: mov rcx,rsi
      0x41, 0x29, 0xf5,                          // 20: sub r13d,esi
      0x41, 0x8d, 0x54, 0x0d, 0x00,              // 23: lea edx,[r13+rcx*1+0x0]
      0xec,                                      // 28: in al,dx
      0x88, 0x01,                                // 29: mov BYTE PTR [rcx],al
      0x48, 0x83, 0xc1, 0x01,                    // 31: add rcx,0x1
      0x49, 0x39, 0xcf,                          // 35: cmp r15,rcx
      0x75, 0xef,                                // 38: jne 23
      0xc3,                                      // 40: ret
  });
  std::set<std::int64_t> offsets;
  for (const Access* x : accessesAt(a->result, 28)) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset);
    offsets.insert(x->offset);
  }
  EXPECT_EQ(offsets, (std::set<std::int64_t>{0, 1, 2, 3, 4, 5}));
}

TEST(DataFlow, IoremapOfAResourceStartMapsThatBar) {
  // 8139cp's cp_init_one: `regs = ioremap(pci_resource_start(pdev, 1), CP_REGS_SIZE)`.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xbf, 0x08, 0x04, 0x00, 0x00,  //  0: mov rdi,QWORD PTR [rdi+0x408]   resource[1].start
      0xbe, 0x00, 0x01, 0x00, 0x00,              //  7: mov esi,0x100
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 12: call ioremap
      0xc7, 0x40, 0x3c, 0xff, 0xff, 0x00, 0x00,  // 17: mov DWORD PTR [rax+0x3c],0xffff
      0xc3,                                      // 24: ret
  }, {external("ioremap")}, {plt32(13, 3)});
  auto out = accessesAt(a->result, 17);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(out[0]->offset, 0x3c);
  EXPECT_EQ(out[0]->value, 0xffffu);
  const DeviceBase& base = a->result.bases[out[0]->base];
  EXPECT_EQ(base.kind, DeviceBase::PciIoremapBar);
  EXPECT_EQ(base.bar, 1);
}

TEST(DataFlow, PciDevKeptInTheDriverStructureIsThePciDevWhereReloaded) {
  // vmxnet3_probe_device: `adapter->pdev = pdev` right after alloc_etherdev_mq, then the inlined
  // vmxnet3_alloc_pci_resources reloads it: `ioremap(pci_resource_start(adapter->pdev, 0), ..)`.
  // The same displacement read through another pointer is not that pci_dev.
  auto a = pio::analyseProbe({
      0x48, 0x89, 0xfb,                          //  0: mov rbx,rdi
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  3: call alloc_etherdev_mqs
      0x49, 0x89, 0xc7,                          //  8: mov r15,rax
      0x48, 0x89, 0x98, 0x20, 0x7e, 0x00, 0x00,  // 11: mov QWORD PTR [rax+0x7e20],rbx   adapter->pdev
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 18: call pci_set_master
      0x49, 0x8b, 0xaf, 0x20, 0x7e, 0x00, 0x00,  // 23: mov rbp,QWORD PTR [r15+0x7e20]
      0x48, 0x8b, 0xbd, 0xc8, 0x03, 0x00, 0x00,  // 30: mov rdi,QWORD PTR [rbp+0x3c8]   resource[0].start
      0xbe, 0x00, 0x10, 0x00, 0x00,              // 37: mov esi,0x1000
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 42: call ioremap
      0xc7, 0x40, 0x20, 0x00, 0x00, 0xfe, 0xca,  // 47: mov DWORD PTR [rax+0x20],0xcafe0000
      0x49, 0x8b, 0xae, 0x20, 0x7e, 0x00, 0x00,  // 54: mov rbp,QWORD PTR [r14+0x7e20]   another structure
      0x48, 0x8b, 0xbd, 0x08, 0x04, 0x00, 0x00,  // 61: mov rdi,QWORD PTR [rbp+0x408]
      0xbe, 0x00, 0x10, 0x00, 0x00,              // 68: mov esi,0x1000
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 73: call ioremap
      0xc7, 0x40, 0x20, 0x00, 0x00, 0xfe, 0xca,  // 78: mov DWORD PTR [rax+0x20],0xcafe0000
      0xc3,                                      // 85: ret
  }, {external("alloc_etherdev_mqs"), external("pci_set_master"), external("ioremap")},
     {plt32(4, 3), plt32(19, 4), plt32(43, 5), plt32(74, 5)});
  auto kept = accessesAt(a->result, 47);
  ASSERT_EQ(kept.size(), 1u);
  ASSERT_EQ(kept[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(kept[0]->offset, 0x20);
  EXPECT_EQ(a->result.bases[kept[0]->base].kind, DeviceBase::PciIoremapBar);
  EXPECT_EQ(a->result.bases[kept[0]->base].bar, 0);
  auto other = accessesAt(a->result, 78);
  ASSERT_EQ(other.size(), 1u);
  if (other[0]->where == Access::Where::BaseOffset) {
    EXPECT_NE(a->result.bases[other[0]->base].kind, DeviceBase::PciIoremapBar);
  }
}

TEST(DataFlow, ColdFragmentIsPartOfItsFunction) {
  // GCC's NAME.cold holds a function's unlikely paths (vmxnet3_probe_device's usual one among them),
  // entered by a conditional jump with the body's registers: rbx still holds the mapped BAR there.
  auto a = analyse({
      0xbe, 0x01, 0x00, 0x00, 0x00,              //  0: mov esi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc3,                          // 10: mov rbx,rax
      0x85, 0xd2,                                // 13: test edx,edx
      0x75, 0x01,                                // 15: jne 18 <snippet_fn.cold>
      0xc3,                                      // 17: ret
      0xc7, 0x43, 0x10, 0x01, 0x00, 0x00, 0x00,  // 18: mov DWORD PTR [rbx+0x10],0x1   (snippet_fn.cold)
      0xc3,                                      // 25: ret
  }, {external("pci_ioremap_bar"), function("snippet_fn.cold", 18, 8)}, {plt32(6, 2)});
  EXPECT_EQ(a->dis.functions().size(), 1u);
  auto w = accessesAt(a->result, 18);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 0x10);
  EXPECT_EQ(w[0]->value, 1u);
  EXPECT_EQ(a->result.bases[w[0]->base].bar, 1);
}

TEST(DataFlow, RegisteringTheNetDeviceEndsAndRestartsASequence) {
  // register_netdev runs the driver's callbacks (ndo_get_stats64) before it returns, as an indirect call would.
  auto a = analyse({
      0xbe, 0x01, 0x00, 0x00, 0x00,              //  0: mov esi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  5: call pci_ioremap_bar
      0x48, 0x89, 0xc3,                          // 10: mov rbx,rax
      0xc7, 0x43, 0x10, 0x01, 0x00, 0x00, 0x00,  // 13: mov DWORD PTR [rbx+0x10],0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 20: call register_netdev
      0xc7, 0x43, 0x20, 0x02, 0x00, 0x00, 0x00,  // 25: mov DWORD PTR [rbx+0x20],0x2
      0xc3,                                      // 32: ret
  }, {external("pci_ioremap_bar"), external("register_netdev")}, {plt32(6, 2), plt32(21, 3)});
  expectSequenceBrokenBetween(a->result, 13, 25);
}

TEST(DataFlow, FieldsAreFoundFromWhereTheStructureStarts) {
  // vmxnet3: the probe keeps both BARs in netdev_priv at netdev+0x7e28/+0x7e30 and passes
  // adapter = netdev+0x980; a callee reads hw_addr1 at adapter+0x74b0 (the parameter arrives holding
  // hw_addr0 at +0x74a8), and an entry point reached with nothing known uses the same displacement.
  auto a = pio::analyseProbe({
      0x48, 0x89, 0xfb,                          //  0: mov rbx,rdi
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  3: call alloc_etherdev_mqs
      0x49, 0x89, 0xc7,                          //  8: mov r15,rax
      0x48, 0x8b, 0xbb, 0xc8, 0x03, 0x00, 0x00,  // 11: mov rdi,QWORD PTR [rbx+0x3c8]   resource[0].start
      0xbe, 0x00, 0x10, 0x00, 0x00,              // 18: mov esi,0x1000
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 23: call ioremap
      0x49, 0x89, 0x87, 0x28, 0x7e, 0x00, 0x00,  // 28: mov QWORD PTR [r15+0x7e28],rax   hw_addr0
      0x48, 0x8b, 0xbb, 0x08, 0x04, 0x00, 0x00,  // 35: mov rdi,QWORD PTR [rbx+0x408]   resource[1].start
      0xbe, 0x00, 0x10, 0x00, 0x00,              // 42: mov esi,0x1000
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 47: call ioremap
      0x49, 0x89, 0x87, 0x30, 0x7e, 0x00, 0x00,  // 52: mov QWORD PTR [r15+0x7e30],rax   hw_addr1
      0x49, 0x8d, 0xbf, 0x80, 0x09, 0x00, 0x00,  // 59: lea rdi,[r15+0x980]              adapter
      0xe8, 0x01, 0x00, 0x00, 0x00,              // 66: call 72 <helper>
      0xc3,                                      // 71: ret
      0x48, 0x8b, 0x87, 0xb0, 0x74, 0x00, 0x00,  // 72: mov rax,QWORD PTR [rdi+0x74b0]   (helper)
      0xc7, 0x40, 0x20, 0x02, 0x00, 0x0d, 0xf0,  // 79: mov DWORD PTR [rax+0x20],0xf00d0002
      0xc3,                                      // 86: ret
      0x48, 0x8b, 0x87, 0xb0, 0x74, 0x00, 0x00,  // 87: mov rax,QWORD PTR [rdi+0x74b0]   (open_fn)
      0xc7, 0x40, 0x20, 0x00, 0x00, 0xfe, 0xca,  // 94: mov DWORD PTR [rax+0x20],0xcafe0000
      0xc3,                                      // 101: ret
  }, {external("alloc_etherdev_mqs"), external("ioremap"), function("helper", 72, 15), function("open_fn", 87, 15)},
     {plt32(4, 3), plt32(24, 4), plt32(48, 4)});
  for (std::uint64_t at : {79u, 94u}) {
    auto w = accessesAt(a->result, at);
    ASSERT_EQ(w.size(), 1u) << at;
    ASSERT_EQ(w[0]->where, Access::Where::BaseOffset) << at;
    EXPECT_EQ(w[0]->offset, 0x20) << at;
    EXPECT_EQ(a->result.bases[w[0]->base].kind, DeviceBase::PciIoremapBar) << at;
    EXPECT_EQ(a->result.bases[w[0]->base].bar, 1) << at;
  }
}

TEST(DataFlow, PcimIomapTableElementIsThatBar) {
  // libata's ata_pci_bmdma_init: `bmdma = pcim_iomap_table(pdev)[4]`; ata_pci_sff_init_host's
  // `ctl_addr = iomap[1] | ATA_PCI_CTL_OFS` on a 4-byte aligned I/O BAR is that BAR + 2.
  auto a = analyse({
      0x53,                          //  0: push rbx
      0xe8, 0, 0, 0, 0,              //  1: call pcim_iomap_table
      0x48, 0x89, 0xc3,              //  6: mov rbx,rax
      0x48, 0x8b, 0x73, 0x20,        //  9: mov rsi,QWORD PTR [rbx+0x20]     iomap[4]
      0x48, 0x83, 0xc6, 0x02,        // 13: add rsi,0x2
      0x31, 0xff,                    // 17: xor edi,edi
      0xe8, 0, 0, 0, 0,              // 19: call iowrite8
      0x48, 0x8b, 0x73, 0x08,        // 24: mov rsi,QWORD PTR [rbx+0x8]      iomap[1]
      0x48, 0x83, 0xce, 0x02,        // 28: or rsi,0x2
      0xbf, 0x08, 0, 0, 0,           // 32: mov edi,0x8
      0xe8, 0, 0, 0, 0,              // 37: call iowrite8
      0x5b,                          // 42: pop rbx
      0xc3,                          // 43: ret
  }, {external("pcim_iomap_table"), external("iowrite8")}, {plt32(2, 2), plt32(20, 3), plt32(38, 3)});
  auto bmdma = accessesAt(a->result, 19);
  ASSERT_EQ(bmdma.size(), 1u);
  ASSERT_EQ(bmdma[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[bmdma[0]->base].kind, DeviceBase::PciIomap);
  EXPECT_EQ(a->result.bases[bmdma[0]->base].bar, 4);
  EXPECT_EQ(bmdma[0]->offset, 2);
  EXPECT_EQ(bmdma[0]->value, 0u);
  auto ctl = accessesAt(a->result, 37);
  ASSERT_EQ(ctl.size(), 1u);
  ASSERT_EQ(ctl[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[ctl[0]->base].bar, 1);
  EXPECT_EQ(ctl[0]->offset, 2);
  EXPECT_EQ(ctl[0]->value, 8u);
}

TEST(DataFlow, IomapTableIndexedByAnUnknownRegisterIsNoBase) {
  auto a = analyse({
      0xe8, 0, 0, 0, 0,              //  0: call pcim_iomap_table
      0x48, 0x8b, 0x34, 0xc8,        //  5: mov rsi,QWORD PTR [rax+rcx*8]   (rcx unknown)
      0x31, 0xff,                    //  9: xor edi,edi
      0xe8, 0, 0, 0, 0,              // 11: call iowrite8
      0xc3,                          // 16: ret
  }, {external("pcim_iomap_table"), external("iowrite8")}, {plt32(1, 2), plt32(12, 3)});
  auto w = accessesAt(a->result, 11);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0]->where, Access::Where::Unresolved);
}

TEST(DataFlow, FieldHoldingDifferentBasesPerInstanceGivesEachRegister) {
  // ata_pci_sff_init_host stores each port's `status_addr = iomap[2 * i] + 7` at the same displacement
  // of its struct ata_port; ata_sff_check_status(ap) reaches it through an untyped argument, so the
  // read is either port's status register, each at its own offset.
  auto a = analyse({
      0x53,                          //  0: push rbx
      0x48, 0x89, 0xfb,              //  1: mov rbx,rdi                       (host)
      0xe8, 0, 0, 0, 0,              //  4: call pcim_iomap_table
      0x48, 0x8b, 0x4b, 0x70,        //  9: mov rcx,QWORD PTR [rbx+0x70]      (one port)
      0x48, 0x8b, 0x10,              // 13: mov rdx,QWORD PTR [rax]           iomap[0]
      0x48, 0x83, 0xc2, 0x07,        // 16: add rdx,0x7
      0x48, 0x89, 0x51, 0x78,        // 20: mov QWORD PTR [rcx+0x78],rdx
      0x48, 0x8b, 0x4b, 0x68,        // 24: mov rcx,QWORD PTR [rbx+0x68]      (another port)
      0x48, 0x8b, 0x50, 0x10,        // 28: mov rdx,QWORD PTR [rax+0x10]      iomap[2]
      0x48, 0x83, 0xc2, 0x07,        // 32: add rdx,0x7
      0x48, 0x89, 0x51, 0x78,        // 36: mov QWORD PTR [rcx+0x78],rdx
      0x5b,                          // 40: pop rbx
      0xc3,                          // 41: ret
      0x48, 0x8b, 0x7f, 0x78,        // 42: mov rdi,QWORD PTR [rdi+0x78]      (check_status: ap->ioaddr.status_addr)
      0xe8, 0, 0, 0, 0,              // 46: call ioread8
      0xc3,                          // 51: ret
  }, {external("pcim_iomap_table"), external("ioread8"), function("check_status", 42, 10)}, {plt32(5, 2), plt32(47, 3)});
  std::set<std::pair<int, std::int64_t>> seen;
  for (const Access* x : accessesAt(a->result, 46)) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset);
    seen.emplace(a->result.bases[x->base].bar, x->offset);
  }
  EXPECT_EQ(seen, (std::set<std::pair<int, std::int64_t>>{{0, 7}, {2, 7}}));
}

TEST(DataFlow, EachPassOfALoopOverInstancesStoresItsOwnIomapElement) {
  // ata_pci_sff_init_host: `for (i = 0; i < 2; i++) ap[i]->status_addr = iomap[2 * i] + 7`, compiled
  // with the offset in its own register and a flag ending the loop. Merged over the loop the offset is
  // unknown; walked path by path (the flag's test decided) it is iomap[0], then iomap[2].
  auto a = analyse({
      0x53,                                //  0: push rbx
      0x41, 0x54,                          //  1: push r12
      0x41, 0x55,                          //  3: push r13
      0x48, 0x89, 0xfb,                    //  5: mov rbx,rdi                  (host)
      0x45, 0x31, 0xe4,                    //  8: xor r12d,r12d                (i)
      0x45, 0x31, 0xed,                    // 11: xor r13d,r13d                (8 * 2 * i)
      0xe8, 0, 0, 0, 0,                    // 14: call pcim_iomap_table
      0x4a, 0x8b, 0x14, 0x28,              // 19: mov rdx,QWORD PTR [rax+r13*1]
      0x4a, 0x8b, 0x4c, 0xe3, 0x70,        // 23: mov rcx,QWORD PTR [rbx+r12*8+0x70]   host->ports[i]
      0x48, 0x83, 0xc2, 0x07,              // 28: add rdx,0x7
      0x48, 0x89, 0x51, 0x78,              // 32: mov QWORD PTR [rcx+0x78],rdx
      0x49, 0x83, 0xc5, 0x10,              // 36: add r13,0x10
      0x4d, 0x85, 0xe4,                    // 40: test r12,r12
      0x75, 0x08,                          // 43: jne 53
      0x41, 0xbc, 0x01, 0, 0, 0,           // 45: mov r12d,0x1
      0xeb, 0xde,                          // 51: jmp 19
      0x41, 0x5d,                          // 53: pop r13
      0x41, 0x5c,                          // 55: pop r12
      0x5b,                                // 57: pop rbx
      0xc3,                                // 58: ret
      0x48, 0x8b, 0x7f, 0x78,              // 59: mov rdi,QWORD PTR [rdi+0x78]   (check_status)
      0xe8, 0, 0, 0, 0,                    // 63: call ioread8
      0xc3,                                // 68: ret
  }, {external("pcim_iomap_table"), external("ioread8"), function("check_status", 59, 10)}, {plt32(15, 2), plt32(64, 3)});
  std::set<std::pair<int, std::int64_t>> seen;
  for (const Access* x : accessesAt(a->result, 63)) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset);
    seen.emplace(a->result.bases[x->base].bar, x->offset);
  }
  EXPECT_EQ(seen, (std::set<std::pair<int, std::int64_t>>{{0, 7}, {2, 7}})) << "not iomap[4] (a third pass) or any other";
}

TEST(DataFlow, DependencyExportsAreLinkedIntoTheCallGraph) {
  // ne2k-pci calls 8390's exported ei_* functions; linked, the call is followed like a local one.
  Module driver = Module::synthetic("drv", {
      0xe8, 0x00, 0x00, 0x00, 0x00,  //  0: call ei_fn
      0xc3,                          //  5: ret
  }, "drv_entry", {external("ei_fn")}, {plt32(1, 2)});
  std::vector<Module> deps;
  deps.push_back(Module::synthetic("dep", {
      0xba, 0xf5, 0x03, 0x00, 0x00,  //  0: mov edx,0x3f5
      0xb0, 0x01,                    //  5: mov al,0x1
      0xee,                          //  7: out dx,al
      0xc3,                          //  8: ret
  }, "ei_fn", {}, {}));
  auto linked = linkModules(std::move(driver), std::move(deps));
  ASSERT_TRUE(linked) << linked.error().message();
  EXPECT_EQ(linked->name, "drv");
  auto d = disassemble(*linked);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->functions().size(), 2u) << "the import is bound, not decoded again";
  auto r = analyzeModule(*d, AnalysisOptions{{{0x3f0, 0x3f7}}});
  ASSERT_EQ(r.accesses.size(), 1u);
  EXPECT_EQ(r.accesses[0].port, 0x3f5u);
  EXPECT_NE(r.where(r.accesses[0].insn).find("dep.ko .text"), std::string::npos) << r.where(r.accesses[0].insn);
  // Reached from the driver's entry; the dependency's export is not an entry point of its own.
  ASSERT_EQ(r.roots.size(), 1u);
  EXPECT_EQ(d->functions()[r.roots[0].function].name, "drv_entry");
  EXPECT_EQ(r.roots[0].first, std::vector<std::uint32_t>{0});
}

TEST(DataFlow, ASymbolExportedByTwoDependenciesIsAnError) {
  Module driver = Module::synthetic("drv", {0xc3}, "drv_entry", {}, {});
  std::vector<Module> deps;
  deps.push_back(Module::synthetic("dep1", {0xc3}, "ei_fn", {}, {}));
  deps.push_back(Module::synthetic("dep2", {0xc3}, "ei_fn", {}, {}));
  auto linked = linkModules(std::move(driver), std::move(deps));
  ASSERT_FALSE(linked);
  EXPECT_NE(linked.error().message().find("exported by both dep1.ko and dep2.ko"), std::string::npos) << linked.error().message();
}

TEST(DataFlow, TheModuleLoadersOwnSymbolsInTwoDependenciesAreNoExports) {
  // snd-hda-intel links snd-hda-codec and snd-hda-core: both define the global __this_module,
  // init_module and cleanup_module for the loader, and neither exports them.
  Module driver = Module::synthetic("drv", {0xc3}, "drv_entry", {}, {});
  std::vector<Module> deps;
  for (const char* name : {"dep1", "dep2"}) {
    Symbol this_module = bssObject("__this_module", 0, 0x40), cleanup = function("cleanup_module", 1, 1);
    this_module.bind = cleanup.bind = STB_GLOBAL;
    deps.push_back(Module::synthetic(name, {
        0xc3,  // 0: ret   (init_module)
        0xc3,  // 1: ret   (cleanup_module)
    }, "init_module", {cleanup, this_module}, {}));
  }
  auto linked = linkModules(std::move(driver), std::move(deps));
  ASSERT_TRUE(linked) << linked.error().message();
}

// netif_napi_add(dev, &cp->napi, cp_rx_poll) in the probe, regs kept at dev+0x980 and napi at
// dev+0x998; cp_rx_poll(napi, budget) reaches regs only as `napi - 0x18`.
std::vector<std::uint8_t> napiProbeAndPoll() {
  return {
      0x48, 0x89, 0xfd,                          //  0: mov rbp,rdi
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  3: call alloc_etherdev_mqs
      0x48, 0x89, 0xc3,                          //  8: mov rbx,rax
      0x48, 0x8b, 0xbd, 0x08, 0x04, 0x00, 0x00,  // 11: mov rdi,QWORD PTR [rbp+0x408]   resource[1].start
      0xbe, 0x00, 0x01, 0x00, 0x00,              // 18: mov esi,0x100
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 23: call ioremap
      0x48, 0x89, 0x83, 0x80, 0x09, 0x00, 0x00,  // 28: mov QWORD PTR [rbx+0x980],rax    cp->regs
      0x48, 0x8d, 0xb3, 0x98, 0x09, 0x00, 0x00,  // 35: lea rsi,[rbx+0x998]              &cp->napi
      0x48, 0xc7, 0xc2, 0x00, 0x00, 0x00, 0x00,  // 42: mov rdx,poll
      0x48, 0x89, 0xdf,                          // 49: mov rdi,rbx
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 52: call <registration API>
      0xc3,                                      // 57: ret
      0x48, 0x8b, 0x47, 0xe8,                    // 58: mov rax,QWORD PTR [rdi-0x18]     (poll)
      0xba, 0xff, 0x80, 0x00, 0x00,              // 62: mov edx,0x80ff
      0x66, 0x89, 0x50, 0x3c,                    // 67: mov WORD PTR [rax+0x3c],dx
      0xc3,                                      // 71: ret
  };
}

std::unique_ptr<Analysed> analyseNapiRegistration(const char* api) {
  return pio::analyseProbe(napiProbeAndPoll(),
                           {external("alloc_etherdev_mqs"), external("ioremap"), external(api), function("poll", 58, 14)},
                           {plt32(4, 3), plt32(24, 4), Relocation{45, R_X86_64_32S, 6, 0}, plt32(53, 5)});
}

TEST(DataFlow, NapiPollParameterIsThePointerRegisteredWithIt) {
  auto a = analyseNapiRegistration("netif_napi_add_weight");
  auto out = accessesAt(a->result, 67);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0]->where, Access::Where::BaseOffset) << "poll's napi - 0x18 is cp->regs";
  EXPECT_EQ(out[0]->offset, 0x3c);
  EXPECT_EQ(out[0]->value, 0x80ffu);
  EXPECT_EQ(a->result.bases[out[0]->base].kind, DeviceBase::PciIoremapBar);
  EXPECT_EQ(a->result.bases[out[0]->base].bar, 1);
}

TEST(DataFlow, FunctionPassedToAnUnknownApiGetsNoParameterType) {
  // Same bytes, an API whose calling convention for the function is not known: nothing is assumed.
  auto a = analyseNapiRegistration("some_subsystem_register");
  for (const Access* x : accessesAt(a->result, 67)) EXPECT_NE(x->where, Access::Where::BaseOffset);
}

// 8139cp's mdio_read: `readw(cp->regs + mii_2_8139_map[location])`, the map a u8[8] at data offset 0x40
// holding `map_bytes` (offset, value) pairs, in read-only data or not. The read is at offset 31.
static auto analyseMapIndexedRead(bool read_only, std::vector<std::pair<std::uint64_t, std::uint8_t>> map_bytes) {
  return pio::analyseProbe({
      0x48, 0x8b, 0xbf, 0x08, 0x04, 0x00, 0x00,  //  0: mov rdi,QWORD PTR [rdi+0x408]
      0xbe, 0x00, 0x01, 0x00, 0x00,              //  7: mov esi,0x100
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 12: call ioremap
      0x48, 0x63, 0xd2,                          // 17: movsxd rdx,edx
      0x48, 0x0f, 0xbe, 0x92, 0x00, 0x00, 0x00, 0x00,  // 20: movsx rdx,BYTE PTR [rdx+map]
      0x48, 0x01, 0xc2,                          // 28: add rdx,rax
      0x66, 0x8b, 0x02,                          // 31: mov ax,WORD PTR [rdx]
      0xc3,                                      // 34: ret
  }, {external("ioremap"), Symbol{"map", 0x40, 8, Module::kDataSection, STT_OBJECT, STB_LOCAL}},
     {plt32(13, 3), Relocation{24, R_X86_64_32S, 4, 0}}, read_only, {}, std::move(map_bytes));
}

TEST(DataFlow, RegisterPickedFromAReadOnlyByteTableIsEachOfItsValues) {
  // 8139cp's mdio_read: `readw(cp->regs + mii_2_8139_map[location])`, the map a static const u8[8].
  auto a = analyseMapIndexedRead(/*read_only=*/true, {{0x40, 0x62}, {0x41, 0x64}, {0x44, 0x66}, {0x45, 0x68}, {0x46, 0x6a}});
  std::set<std::int64_t> offsets;
  for (const Access* x : accessesAt(a->result, 31)) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset);
    EXPECT_EQ(x->dir, Dir::Read);
    offsets.insert(x->offset);
  }
  EXPECT_EQ(offsets, (std::set<std::int64_t>{0, 0x62, 0x64, 0x66, 0x68, 0x6a}));
}

TEST(DataFlow, TableEntryTestedAgainstZeroBeforeTheAccessIsNotZeroThere) {
  // mdio_read as compiled: `if (location < 8 && mii_2_8139_map[location]) readw(regs + map[location])`;
  // the map's 0 means "no such register" and the access is skipped for it.
  auto a = pio::analyseProbe({
      0x48, 0x8b, 0xbf, 0x08, 0x04, 0x00, 0x00,  //  0: mov rdi,QWORD PTR [rdi+0x408]
      0xbe, 0x00, 0x01, 0x00, 0x00,              //  7: mov esi,0x100
      0xe8, 0x00, 0x00, 0x00, 0x00,              // 12: call ioremap
      0x48, 0x63, 0xd2,                          // 17: movsxd rdx,edx
      0x48, 0x0f, 0xbe, 0x92, 0x00, 0x00, 0x00, 0x00,  // 20: movsx rdx,BYTE PTR [rdx+map]
      0x84, 0xd2,                                // 28: test dl,dl
      0x74, 0x06,                                // 30: je 38
      0x48, 0x01, 0xc2,                          // 32: add rdx,rax
      0x66, 0x8b, 0x02,                          // 35: mov ax,WORD PTR [rdx]
      0xc3,                                      // 38: ret
  }, {external("ioremap"), Symbol{"map", 0x40, 8, Module::kDataSection, STT_OBJECT, STB_LOCAL}},
     {plt32(13, 3), Relocation{24, R_X86_64_32S, 4, 0}}, /*read_only_data=*/true, {},
     {{0x40, 0x62}, {0x41, 0x64}, {0x44, 0x66}, {0x45, 0x68}, {0x46, 0x6a}});
  std::set<std::int64_t> offsets;
  for (const Access* x : accessesAt(a->result, 35)) {
    ASSERT_EQ(x->where, Access::Where::BaseOffset);
    offsets.insert(x->offset);
  }
  EXPECT_EQ(offsets, (std::set<std::int64_t>{0x62, 0x64, 0x66, 0x68, 0x6a}));
}

TEST(DataFlow, IndexedLoadFromAWritableTableStaysUnknown) {
  // The same lookup in a writable table: the module may change it, so the register is unknown.
  auto a = analyseMapIndexedRead(/*read_only=*/false, {{0x40, 0x62}, {0x41, 0x64}});
  for (const Access* x : accessesAt(a->result, 31)) EXPECT_NE(x->where, Access::Where::BaseOffset);
}

// ---- e100 (issue #4): the BAR pci_iomap maps, and what kind of BAR it is ----

TEST(DataFlow, SetccAfterATestOfAKnownValueIsExact) {
  // e100_probe: `pci_iomap(pdev, use_io ? 1 : 0, sizeof(struct csr))` with use_io known (0 here).
  auto a = analyse({
      0x31, 0xc0,                    //  0: xor eax,eax
      0x31, 0xf6,                    //  2: xor esi,esi
      0x85, 0xc0,                    //  4: test eax,eax
      0xba, 0x18, 0x00, 0x00, 0x00,  //  6: mov edx,0x18          (moves leave the flags)
      0x40, 0x0f, 0x95, 0xc6,        // 11: setne sil             -> 0
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 15: call pci_iomap
      0x48, 0x89, 0xc3,              // 20: mov rbx,rax
      0xb8, 0x05, 0x00, 0x00, 0x00,  // 23: mov eax,0x5
      0x31, 0xf6,                    // 28: xor esi,esi
      0x83, 0xf8, 0x05,              // 30: cmp eax,0x5
      0x40, 0x0f, 0x94, 0xc6,        // 33: sete sil              -> 1
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 37: call pci_iomap
      0x48, 0x8d, 0x73, 0x02,        // 42: lea rsi,[rbx+0x2]
      0x48, 0x89, 0xc5,              // 46: mov rbp,rax
      0xbf, 0x01, 0x00, 0x00, 0x00,  // 49: mov edi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 54: call iowrite8
      0x48, 0x8d, 0x75, 0x02,        // 59: lea rsi,[rbp+0x2]
      0xbf, 0x01, 0x00, 0x00, 0x00,  // 63: mov edi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 68: call iowrite8
      0xc3,                          // 73: ret
  }, {external("pci_iomap"), external("iowrite8")}, {plt32(16, 2), plt32(38, 2), plt32(55, 3), plt32(69, 3)});
  auto first = accessesAt(a->result, 54);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(first[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[first[0]->base].bar, 0) << "test eax,eax with eax = 0: setne gives 0";
  auto second = accessesAt(a->result, 68);
  ASSERT_EQ(second.size(), 1u);
  ASSERT_EQ(second[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[second[0]->base].bar, 1) << "cmp eax,5 with eax = 5: sete gives 1";
}

TEST(DataFlow, SetccOfAnUnknownTestLeavesTheBarUnknown) {
  auto a = analyse({
      0x8b, 0x47, 0x10,              //  0: mov eax,DWORD PTR [rdi+0x10]   (unknown)
      0x31, 0xf6,                    //  3: xor esi,esi
      0x85, 0xc0,                    //  5: test eax,eax
      0x40, 0x0f, 0x95, 0xc6,        //  7: setne sil             -> 0 or 1
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 11: call pci_iomap
      0x48, 0x8d, 0x70, 0x02,        // 16: lea rsi,[rax+0x2]
      0xbf, 0x01, 0x00, 0x00, 0x00,  // 20: mov edi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 25: call iowrite8
      0xc3,                          // 30: ret
  }, {external("pci_iomap"), external("iowrite8")}, {plt32(12, 2), plt32(26, 3)});
  auto w = accessesAt(a->result, 25);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(a->result.bases[w[0]->base].bar, -1);
}

// e100_probe: `if (!(pci_resource_flags(pdev, 0) & IORESOURCE_MEM)) return -ENODEV;` then
// `nic->csr = pci_iomap(pdev, 0, ...)`: ioread*/iowrite* through that cookie reach the memory BAR.
std::vector<std::uint8_t> flagsTestThenIomap(std::uint8_t flag_byte) {
  return {
      0xf6, 0x87, 0xe1, 0x03, 0x00, 0x00, flag_byte,  //  0: test BYTE PTR [rdi+0x3e1],flag   resource[0].flags >> 8
      0x31, 0xf6,                                     //  7: xor esi,esi
      0xba, 0x18, 0x00, 0x00, 0x00,                   //  9: mov edx,0x18
      0xe8, 0x00, 0x00, 0x00, 0x00,                   // 14: call pci_iomap
      0x48, 0x8d, 0x70, 0x03,                         // 19: lea rsi,[rax+0x3]
      0xbf, 0x01, 0x00, 0x00, 0x00,                   // 23: mov edi,0x1
      0xe8, 0x00, 0x00, 0x00, 0x00,                   // 28: call iowrite8
      0xc3,                                           // 33: ret
  };
}

// The access's base is pci_iomap's BAR 0 mapped as memory, and the policy for VENDOR:DEVICE has that
// one region, memory, on BAR 0.
void expectPciIomapBar0AsMemoryRegion(ModuleAnalysis& result, const Access& access, std::uint16_t vendor,
                                      std::uint16_t device) {
  const DeviceBase& base = result.bases[access.base];
  EXPECT_EQ(base.kind, DeviceBase::PciIomap);
  EXPECT_EQ(base.bar, 0);
  EXPECT_TRUE(base.bar_memory);
  PolicyOptions pci;
  pci.pci_vendor = vendor;
  pci.pci_device = device;
  auto policy = buildPolicy(result, pci);
  ASSERT_TRUE(policy) << policy.error().message();
  ASSERT_EQ(policy->regions.size(), 1u);
  EXPECT_EQ(policy->regions[0].space, RegionSpace::Mem);
  EXPECT_EQ(policy->regions[0].bar, 0);
}

TEST(DataFlow, ProbeRequiringAMemoryBarMakesTheIomapRegionMemory) {
  auto a = pio::analyseProbe(flagsTestThenIomap(0x02), {external("pci_iomap"), external("iowrite8")}, {plt32(15, 3), plt32(29, 4)});
  auto w = accessesAt(a->result, 28);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  expectPciIomapBar0AsMemoryRegion(a->result, *w[0], 0x8086, 0x1229);
}

TEST(DataFlow, ProbeTestingForAnIoBarKeepsTheIomapRegionIo) {
  auto a = pio::analyseProbe(flagsTestThenIomap(0x01), {external("pci_iomap"), external("iowrite8")}, {plt32(15, 3), plt32(29, 4)});
  auto w = accessesAt(a->result, 28);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_FALSE(a->result.bases[w[0]->base].bar_memory) << "IORESOURCE_IO (0x100) tested, not IORESOURCE_MEM";
}

// azx_probe_continue: `bus->remap_addr = pcim_iomap_table(pci)[0]`, then snd-hda-core's inlined
// `writel(val, bus->remap_addr + reg)`: a plain mov through the cookie, which only a memory BAR allows.
TEST(DataFlow, IomapCookieDereferencedByMovIsAMemoryBar) {
  auto a = analyse({
      0xe8, 0x00, 0x00, 0x00, 0x00,              //  0: call pcim_iomap_table
      0x48, 0x8b, 0x00,                          //  5: mov rax,QWORD PTR [rax]
      0xc7, 0x40, 0x08, 0x01, 0x00, 0x00, 0x00,  //  8: mov DWORD PTR [rax+0x8],0x1   GCTL = CRST
      0x8b, 0x50, 0x08,                          // 15: mov edx,DWORD PTR [rax+0x8]
      0xc3,                                      // 18: ret
  }, {external("pcim_iomap_table")}, {plt32(1, 2)});
  auto w = accessesAt(a->result, 8);
  ASSERT_EQ(w.size(), 1u);
  ASSERT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->form, Access::Form::MmioMov);
  EXPECT_EQ(w[0]->offset, 8);
  EXPECT_EQ(w[0]->value, 1u);
  ASSERT_EQ(accessesAt(a->result, 15).size(), 1u) << "the read through the same cookie";
  expectPciIomapBar0AsMemoryRegion(a->result, *w[0], 0x8086, 0x2668);
}

// snd-hda-codec's list_del (`prev->next = next`, displacement 0) once met a base through a mistaken
// pointer; generalised, every first-field load in the module (azx_dev->bus, list heads) became the BAR.
TEST(DataFlow, BaseStoredAtDisplacementZeroIsNotEveryFirstField) {
  auto stored_at = [](std::uint8_t disp) {
    return analyse({
        0x31, 0xf6,                                //  0: xor esi,esi
        0xe8, 0x00, 0x00, 0x00, 0x00,              //  2: call pci_ioremap_bar
        0x48, 0x89, 0x43, disp,                    //  7: mov QWORD PTR [rbx+disp],rax
        0xc3,                                      // 11: ret
        0x48, 0x8b, 0x47, disp,                    // 12: mov rax,QWORD PTR [rdi+disp]   (other_fn, untyped rdi)
        0xc7, 0x40, 0x08, 0x01, 0x00, 0x00, 0x00,  // 16: mov DWORD PTR [rax+0x8],0x1
        0xc3,                                      // 23: ret
    }, {external("pci_ioremap_bar"), function("other_fn", 12, 12)}, {plt32(3, 2)});
  };
  auto first = stored_at(0x00);
  for (const Access* x : accessesAt(first->result, 16)) EXPECT_NE(x->where, Access::Where::BaseOffset);
  auto later = stored_at(0x48);
  auto w = accessesAt(later->result, 16);
  ASSERT_EQ(w.size(), 1u) << "a base kept at +0x48 is still that field's everywhere";
  EXPECT_EQ(w[0]->where, Access::Where::BaseOffset);
  EXPECT_EQ(w[0]->offset, 8);
}

TEST(DataFlow, IomapCookieOnlyPassedToIoreadStaysAnIoBar) {
  auto a = analyse({
      0xe8, 0x00, 0x00, 0x00, 0x00,  //  0: call pcim_iomap_table
      0x48, 0x8b, 0x38,              //  5: mov rdi,QWORD PTR [rax]
      0x48, 0x83, 0xc7, 0x08,        //  8: add rdi,0x8
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 12: call ioread32
      0xc3,                          // 17: ret
  }, {external("pcim_iomap_table"), external("ioread32")}, {plt32(1, 2), plt32(13, 3)});
  auto r = accessesAt(a->result, 12);
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0]->where, Access::Where::BaseOffset);
  EXPECT_FALSE(a->result.bases[r[0]->base].bar_memory);
  EXPECT_FALSE(a->result.bases[r[0]->base].memory());
}

// libata hands its BMDMA cookies to ioread*/iowrite* and, through pointers the field rules take for the
// base, seems to dereference them too: that must not turn the I/O BAR into memory.
TEST(DataFlow, IomapCookieAlsoPassedToIoreadStaysAnIoBar) {
  auto a = analyse({
      0xe8, 0x00, 0x00, 0x00, 0x00,  //  0: call pcim_iomap_table
      0x48, 0x8b, 0x18,              //  5: mov rbx,QWORD PTR [rax]
      0x48, 0x8d, 0x7b, 0x08,        //  8: lea rdi,[rbx+0x8]
      0xe8, 0x00, 0x00, 0x00, 0x00,  // 12: call ioread32
      0x8b, 0x43, 0x10,              // 17: mov eax,DWORD PTR [rbx+0x10]
      0xc3,                          // 20: ret
  }, {external("pcim_iomap_table"), external("ioread32")}, {plt32(1, 2), plt32(13, 3)});
  auto r = accessesAt(a->result, 12);
  ASSERT_EQ(r.size(), 1u);
  ASSERT_EQ(r[0]->where, Access::Where::BaseOffset);
  EXPECT_FALSE(a->result.bases[r[0]->base].bar_memory);
  EXPECT_FALSE(a->result.bases[r[0]->base].memory());
  EXPECT_TRUE(accessesAt(a->result, 17).empty()) << "not an MMIO read of an I/O BAR";
}

}  // namespace
}  // namespace iof::analysis
