#include "ioreq_filter/analysis/disassembly.h"

#include <capstone/capstone.h>
#include <elf.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include "text_util.h"

namespace iof::analysis {
namespace {

struct CapstoneHandle {
  csh handle = 0;
  bool ok = false;
  CapstoneHandle() {
    ok = cs_open(CS_ARCH_X86, CS_MODE_64, &handle) == CS_ERR_OK;
    if (ok) cs_option(handle, CS_OPT_DETAIL, CS_OPT_ON);
  }
  ~CapstoneHandle() {
    if (ok) cs_close(&handle);
  }
  CapstoneHandle(const CapstoneHandle&) = delete;
  CapstoneHandle& operator=(const CapstoneHandle&) = delete;
};

RegRef mapRegister(unsigned reg) noexcept {
  switch (reg) {
#define IOF_R(cs, g, w) \
  case X86_REG_##cs:    \
    return RegRef{g, w, false, false};
    IOF_R(RAX, RAX, 8) IOF_R(EAX, RAX, 4) IOF_R(AX, RAX, 2) IOF_R(AL, RAX, 1)
    IOF_R(RCX, RCX, 8) IOF_R(ECX, RCX, 4) IOF_R(CX, RCX, 2) IOF_R(CL, RCX, 1)
    IOF_R(RDX, RDX, 8) IOF_R(EDX, RDX, 4) IOF_R(DX, RDX, 2) IOF_R(DL, RDX, 1)
    IOF_R(RBX, RBX, 8) IOF_R(EBX, RBX, 4) IOF_R(BX, RBX, 2) IOF_R(BL, RBX, 1)
    IOF_R(RSP, RSP, 8) IOF_R(ESP, RSP, 4) IOF_R(SP, RSP, 2) IOF_R(SPL, RSP, 1)
    IOF_R(RBP, RBP, 8) IOF_R(EBP, RBP, 4) IOF_R(BP, RBP, 2) IOF_R(BPL, RBP, 1)
    IOF_R(RSI, RSI, 8) IOF_R(ESI, RSI, 4) IOF_R(SI, RSI, 2) IOF_R(SIL, RSI, 1)
    IOF_R(RDI, RDI, 8) IOF_R(EDI, RDI, 4) IOF_R(DI, RDI, 2) IOF_R(DIL, RDI, 1)
    IOF_R(R8, R8, 8) IOF_R(R8D, R8, 4) IOF_R(R8W, R8, 2) IOF_R(R8B, R8, 1)
    IOF_R(R9, R9, 8) IOF_R(R9D, R9, 4) IOF_R(R9W, R9, 2) IOF_R(R9B, R9, 1)
    IOF_R(R10, R10, 8) IOF_R(R10D, R10, 4) IOF_R(R10W, R10, 2) IOF_R(R10B, R10, 1)
    IOF_R(R11, R11, 8) IOF_R(R11D, R11, 4) IOF_R(R11W, R11, 2) IOF_R(R11B, R11, 1)
    IOF_R(R12, R12, 8) IOF_R(R12D, R12, 4) IOF_R(R12W, R12, 2) IOF_R(R12B, R12, 1)
    IOF_R(R13, R13, 8) IOF_R(R13D, R13, 4) IOF_R(R13W, R13, 2) IOF_R(R13B, R13, 1)
    IOF_R(R14, R14, 8) IOF_R(R14D, R14, 4) IOF_R(R14W, R14, 2) IOF_R(R14B, R14, 1)
    IOF_R(R15, R15, 8) IOF_R(R15D, R15, 4) IOF_R(R15W, R15, 2) IOF_R(R15B, R15, 1)
#undef IOF_R
    case X86_REG_AH: return RegRef{RAX, 1, true, false};
    case X86_REG_CH: return RegRef{RCX, 1, true, false};
    case X86_REG_DH: return RegRef{RDX, 1, true, false};
    case X86_REG_BH: return RegRef{RBX, 1, true, false};
    case X86_REG_RIP: return RegRef{NoReg, 8, false, true};
    default: return RegRef{};
  }
}

bool isPcRelative(std::uint32_t type) noexcept { return type == R_X86_64_PC32 || type == R_X86_64_PLT32; }

Reference resolve(const Module& m, const Relocation& r, std::uint64_t insn_end) {
  const Symbol& s = m.symbols[r.symbol];
  // Wrapping arithmetic: damaged values and addends must not overflow.
  std::uint64_t value = std::uint64_t(r.addend);
  if (isPcRelative(r.type)) value += insn_end - r.offset;
  if (!s.defined()) return Reference{Reference::External, 0, std::int64_t(value), r.symbol};
  return Reference{Reference::Local, s.section, std::int64_t(s.value + value), r.symbol};
}

bool startsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

std::string referenceName(const Module& m, const Reference& ref) {
  if (ref.kind == Reference::None || ref.symbol >= m.symbols.size()) return "";
  return m.symbols[ref.symbol].name;
}

int Disassembly::functionAt(CodeAddr addr) const noexcept {
  auto it = std::lower_bound(functions_.begin(), functions_.end(), addr,
                             [](const Function& f, CodeAddr a) { return f.entry < a; });
  return it != functions_.end() && it->entry == addr ? int(it - functions_.begin()) : -1;
}

int Disassembly::functionCovering(CodeAddr addr) const noexcept {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr, [](CodeAddr a, const CodeRange& r) { return a < r.begin; });
  if (it == ranges_.begin()) return -1;
  --it;
  return addr < it->end ? int(it->function) : -1;
}

std::size_t Disassembly::instructionCount() const noexcept {
  std::size_t n = 0;
  for (const auto& f : functions_) n += f.insns.size();
  return n;
}

namespace {

Insn makeInsn(csh h, const cs_insn* ci, const Module& m, const Section& sec) {
    Insn in;
    in.addr = codeAddr(sec.index, ci->address);
    in.size = std::uint8_t(ci->size);
    in.id = std::uint16_t(ci->id);
    const cs_x86& x = ci->detail->x86;
    in.rep = x.prefix[0] == X86_PREFIX_REP || x.prefix[0] == X86_PREFIX_REPNE;
    in.op_count = std::uint8_t(std::min<int>(x.op_count, 3));
    for (int i = 0; i < in.op_count; ++i) {
      const cs_x86_op& o = x.operands[i];
      Operand& op = in.ops[i];
      op.size = o.size;
      switch (o.type) {
        case X86_OP_REG: op.kind = Operand::Reg; op.reg = mapRegister(o.reg); break;
        case X86_OP_IMM: op.kind = Operand::Imm; op.imm = o.imm; break;
        case X86_OP_MEM:
          op.kind = Operand::Mem;
          op.base = mapRegister(o.mem.base);
          op.index = mapRegister(o.mem.index);
          op.scale = std::uint8_t(o.mem.scale);
          op.disp = o.mem.disp;
          if (o.mem.segment != X86_REG_INVALID) op.base = RegRef{};  // %gs: per-cpu data, not a device
          break;
        default: break;
      }
    }
    const std::uint64_t end = ci->address + ci->size;
    if (const Relocation* r = m.relocationIn(sec.index, ci->address, end)) in.ref = resolve(m, *r, end);
    // Code linked at a fixed address names its branch targets by address (Module::code_names).
    if (in.ref.kind == Reference::None && sec.address && in.op_count == 1 && in.ops[0].kind == Operand::Imm &&
        (cs_insn_group(h, ci, CS_GRP_CALL) || cs_insn_group(h, ci, CS_GRP_JUMP))) {
      auto named = m.code_names.find(codeAddr(sec.index, std::uint64_t(in.ops[0].imm)));
      if (named != m.code_names.end()) in.ref = Reference{Reference::External, 0, 0, named->second};
    }
    const std::string ext = in.ref.kind == Reference::External ? m.symbols[in.ref.symbol].name : std::string();
    const bool imm_target = in.op_count == 1 && in.ops[0].kind == Operand::Imm;
    if (cs_insn_group(h, ci, CS_GRP_CALL)) {
      if (!imm_target || startsWith(ext, "__x86_indirect_thunk_")) {
        in.flow = Flow::IndirectCall;
      } else {
        in.flow = Flow::Call;
        if (in.ref.kind == Reference::None) in.target = codeAddr(sec.index, std::uint64_t(in.ops[0].imm));
      }
    } else if (cs_insn_group(h, ci, CS_GRP_RET)) {
      in.flow = Flow::Return;
    } else if (ci->id == X86_INS_JMP) {
      if (!imm_target || startsWith(ext, "__x86_indirect_thunk_")) {
        in.flow = Flow::IndirectJump;
      } else if (ext == "__x86_return_thunk") {
        in.flow = Flow::Return;
      } else {
        in.flow = Flow::Jump;
        if (in.ref.kind == Reference::None) in.target = codeAddr(sec.index, std::uint64_t(in.ops[0].imm));
      }
    } else if (cs_insn_group(h, ci, CS_GRP_JUMP)) {
      in.flow = Flow::CondJump;
      if (in.ref.kind == Reference::None && imm_target) in.target = codeAddr(sec.index, std::uint64_t(in.ops[0].imm));
    } else if (ci->id == X86_INS_UD2 || ci->id == X86_INS_INT3 || ci->id == X86_INS_HLT) {
      in.flow = Flow::Stop;
    }
    // A relocated branch into this same section is still a local target.
    if ((in.flow == Flow::Jump || in.flow == Flow::CondJump || in.flow == Flow::Call) && in.ref.kind == Reference::Local &&
        in.ref.offset >= 0)
      in.target = codeAddr(in.ref.section, std::uint64_t(in.ref.offset));
    return in;
}

void decodeFunction(csh h, cs_insn* ci, const Module& m, const Section& sec, Function& f) {
  const std::uint64_t start = offsetOf(f.entry);
  const std::uint8_t* code = sec.bytes.data() + start;
  std::size_t left = f.size;
  std::uint64_t address = start;
  while (left > 0) {
    if (!cs_disasm_iter(h, &code, &left, &address, ci)) {
      // Undecodable byte: count it and resume after it (kernel code has none in practice).
      ++f.undecodable;
      ++code;
      --left;
      ++address;
      continue;
    }
    f.insns.push_back(makeInsn(h, ci, m, sec));
  }
}

// A recovered function's code is runs of decoded instructions (the body, cold fragments): control
// falls through only to the instruction right after, and a run's first instruction starts a block.
bool fallsThrough(const Function& f, std::uint32_t i) {
  return !f.recovered || f.insns[i].addr + f.insns[i].size == f.insns[i + 1].addr;
}

void buildBlocks(Function& f) {
  const auto n = std::uint32_t(f.insns.size());
  if (n == 0) return;
  auto indexOf = [&](CodeAddr a) -> int {
    auto it = std::lower_bound(f.insns.begin(), f.insns.end(), a, [](const Insn& i, CodeAddr x) { return i.addr < x; });
    return it != f.insns.end() && it->addr == a ? int(it - f.insns.begin()) : -1;
  };
  auto inside = [&](CodeAddr a) { return f.recovered ? indexOf(a) >= 0 : a >= f.entry && a < f.entry + f.size; };
  std::vector<char> leader(n, 0);
  leader[0] = 1;
  for (std::uint32_t i = 0; i < n; ++i) {
    const Insn& in = f.insns[i];
    const bool ends = in.flow == Flow::Jump || in.flow == Flow::CondJump || in.flow == Flow::Return ||
                      in.flow == Flow::IndirectJump || in.flow == Flow::Stop;
    if ((ends || (i + 1 < n && !fallsThrough(f, i))) && i + 1 < n) leader[i + 1] = 1;
    if (in.addr == f.entry) leader[i] = 1;
    if ((in.flow == Flow::Jump || in.flow == Flow::CondJump) && in.target && inside(in.target)) {
      int t = indexOf(in.target);
      if (t >= 0) leader[std::size_t(t)] = 1;
    }
  }
  std::vector<std::uint32_t> block_of(n, 0);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (leader[i]) f.blocks.push_back(BasicBlock{i, i, {}});
    f.blocks.back().last = i;
    block_of[i] = std::uint32_t(f.blocks.size() - 1);
  }
  for (std::uint32_t b = 0; b < f.blocks.size(); ++b) {
    BasicBlock& bb = f.blocks[b];
    const Insn& in = f.insns[bb.last];
    auto addTarget = [&] {
      if (in.target && inside(in.target)) {
        int t = indexOf(in.target);
        if (t >= 0) bb.succs.push_back(block_of[std::size_t(t)]);
      }
    };
    switch (in.flow) {
      case Flow::Jump: addTarget(); break;
      case Flow::CondJump:
        addTarget();
        if (bb.last + 1 < n && fallsThrough(f, bb.last)) bb.succs.push_back(b + 1);
        break;
      case Flow::Return:
      case Flow::IndirectJump:
      case Flow::Stop: break;
      default:
        if (bb.last + 1 < n && fallsThrough(f, bb.last)) bb.succs.push_back(b + 1);
        break;
    }
    std::sort(bb.succs.begin(), bb.succs.end());
    bb.succs.erase(std::unique(bb.succs.begin(), bb.succs.end()), bb.succs.end());
  }
  // blocks[0] must be the entry: a cold fragment placed below the entry comes first in address order.
  std::uint32_t entry_block = 0;
  while (entry_block < f.blocks.size() && f.insns[f.blocks[entry_block].first].addr != f.entry) ++entry_block;
  if (entry_block == 0 || entry_block == f.blocks.size()) return;
  auto renumber = [&](std::uint32_t x) { return x == entry_block ? 0 : x < entry_block ? x + 1 : x; };
  std::rotate(f.blocks.begin(), f.blocks.begin() + entry_block, f.blocks.begin() + entry_block + 1);
  for (BasicBlock& bb : f.blocks)
    for (auto& succ : bb.succs) succ = renumber(succ);
}

// Calls that do not come back: the bytes after them belong to something else.
bool noReturn(std::string_view callee) {
  for (std::string_view n : {"__stack_chk_fail", "panic", "do_exit", "make_task_dead", "BUG_func", "__ubsan_handle_builtin_unreachable",
                             "usercopy_abort", "__fortify_panic", "fortify_panic"})
    if (callee == n) return true;
  return false;
}

// Bounds for following a kernel hook's unnamed callees (static functions, inlined helpers' bodies...):
// beyond them a callee stays a call the analysis knows nothing of.
constexpr std::size_t kMaxRecoveredFunctions = 64, kMaxRecoveredInstructions = 50000;

struct Recovery {
  csh h;
  cs_insn* ci;
  const Module& m;
  std::size_t instructions = 0;

  std::optional<Insn> decodeAt(CodeAddr a) {
    if (sectionOf(a) >= m.sections.size()) return std::nullopt;
    const Section& sec = m.sections[sectionOf(a)];
    if (!sec.executable() || offsetOf(a) >= sec.bytes.size()) return std::nullopt;
    const std::uint8_t* code = sec.bytes.data() + offsetOf(a);
    std::size_t left = std::min<std::size_t>(16, sec.bytes.size() - offsetOf(a));
    std::uint64_t address = offsetOf(a);
    if (!cs_disasm_iter(h, &code, &left, &address, ci)) return std::nullopt;
    return makeInsn(h, ci, m, sec);
  }
  bool isFentry(const Insn& in) const {
    return in.flow == Flow::Call && in.ref.kind == Reference::External && m.symbols[in.ref.symbol].name == "__fentry__";
  }
  // Every function of this kernel starts with `call __fentry__` (ftrace): a jump to one is a tail call,
  // and falling through into one means the path ran past its own function.
  bool startsFunction(CodeAddr a) {
    auto in = decodeAt(a);
    return in && isFentry(*in);
  }

  Function recover(CodeAddr entry, std::string name, std::vector<CodeAddr>& callees) {
    Function f;
    f.name = std::move(name);
    f.entry = entry;
    f.recovered = true;
    std::map<CodeAddr, Insn> code;
    std::vector<CodeAddr> work{entry};
    while (!work.empty() && instructions < kMaxRecoveredInstructions) {
      const CodeAddr a = work.back();
      work.pop_back();
      auto next = code.lower_bound(a);
      if (next != code.end() && next->first == a) continue;
      if (next != code.begin() && std::prev(next)->first + std::prev(next)->second.size > a) continue;  // inside another instruction
      auto decoded = decodeAt(a);
      if (!decoded) {
        ++f.undecodable;
        continue;
      }
      const Insn in = *decoded;
      if (a != entry && isFentry(in)) continue;
      code.emplace(a, in);
      ++instructions;
      const CodeAddr after = a + in.size;
      const std::string callee = in.ref.kind == Reference::External ? m.symbols[in.ref.symbol].name : std::string();
      switch (in.flow) {
        case Flow::Next:
        case Flow::IndirectCall: work.push_back(after); break;
        case Flow::Call:
          if (in.target && in.ref.kind == Reference::None) callees.push_back(in.target);
          if (!noReturn(callee)) work.push_back(after);
          break;
        case Flow::CondJump:
          work.push_back(after);
          if (in.target) work.push_back(in.target);
          break;
        case Flow::Jump:
          if (in.ref.kind == Reference::None && in.target) {
            if (startsFunction(in.target)) callees.push_back(in.target);
            else work.push_back(in.target);
          }
          break;
        default: break;
      }
    }
    for (auto& [a, in] : code) f.insns.push_back(in);
    // A function's extent: the run of code from its entry (the cold fragments are found through ranges).
    f.size = 0;
    for (auto it = code.find(entry); it != code.end() && it->first == entry + f.size; ++it) f.size += it->second.size;
    for (std::size_t i = 0; i < f.insns.size();) {
      std::size_t j = i;
      while (j + 1 < f.insns.size() && f.insns[j].addr + f.insns[j].size == f.insns[j + 1].addr) ++j;
      f.ranges.emplace_back(f.insns[i].addr, f.insns[j].addr + f.insns[j].size);
      i = j + 1;
    }
    return f;
  }
};

// GCC moves a function's unlikely paths into NAME.cold (.text.unlikely) and jumps there and back: it is
// the same function's code, so it joins that function's CFG, where the body's state (callee-saved
// registers, the stack) reaches it. vmxnet3_probe_device's usual path runs through its .cold part; as a
// function of its own, the fragment was entered with nothing known, or not at all (conditional jumps).
void mergeColdFragments(const Module& m, std::vector<Function>& functions) {
  auto originOf = [&](CodeAddr a) -> std::string_view {
    return sectionOf(a) < m.section_origin.size() ? std::string_view(m.section_origin[sectionOf(a)]) : std::string_view();
  };
  std::map<std::pair<std::string_view, std::string_view>, std::size_t> by_name;
  for (std::size_t i = 0; i < functions.size(); ++i) by_name.try_emplace({originOf(functions[i].entry), functions[i].name}, i);
  std::vector<char> merged(functions.size(), 0);
  for (std::size_t i = 0; i < functions.size(); ++i) {
    const std::string& name = functions[i].name;
    if (!name.ends_with(".cold") || functions[i].insns.empty()) continue;
    auto parent = by_name.find({originOf(functions[i].entry), std::string_view(name).substr(0, name.size() - 5)});
    if (parent == by_name.end() || parent->second == i || merged[parent->second]) continue;
    Function& f = functions[parent->second];
    Function& cold = functions[i];
    f.insns.insert(f.insns.end(), cold.insns.begin(), cold.insns.end());
    std::sort(f.insns.begin(), f.insns.end(), [](const Insn& a, const Insn& b) { return a.addr < b.addr; });
    f.ranges.insert(f.ranges.end(), cold.ranges.begin(), cold.ranges.end());
    f.undecodable += cold.undecodable;
    f.recovered = true;  // runs of code: control falls through only to the next address
    f.blocks.clear();
    buildBlocks(f);
    merged[i] = 1;
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < functions.size(); ++i)
    if (!merged[i]) {
      if (kept != i) functions[kept] = std::move(functions[i]);
      ++kept;
    }
  functions.resize(kept);
}

}  // namespace

Result<Disassembly> disassemble(const Module& module) {
  thread_local CapstoneHandle cs;
  if (!cs.ok) return fail(module.path, "Capstone cannot open an x86-64 disassembler");
  Disassembly d;
  d.module_ = &module;
  cs_insn* ci = cs_malloc(cs.handle);
  if (!ci) return fail(module.path, "Capstone cannot allocate an instruction");
  std::vector<std::pair<CodeAddr, std::uint32_t>> entries;
  for (std::uint32_t i = 0; i < module.symbols.size(); ++i) {
    const Symbol& s = module.symbols[i];
    if (s.type != STT_FUNC || !s.defined() || s.size == 0) continue;
    const Section& sec = module.sections[s.section];
    if (!sec.executable() || s.value > sec.bytes.size() || s.size > sec.bytes.size() - s.value) continue;
    entries.emplace_back(codeAddr(s.section, s.value), i);
  }
  std::sort(entries.begin(), entries.end());
  entries.erase(std::unique(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.first == b.first; }), entries.end());
  d.functions_.reserve(entries.size());
  for (auto [addr, sym] : entries) {
    const Symbol& s = module.symbols[sym];
    Function f;
    f.name = s.name;
    f.symbol = sym;
    f.entry = addr;
    f.size = s.size;
    // Overlapping symbols (aliases of different sizes) are cut at the next entry.
    decodeFunction(cs.handle, ci, module, module.sections[s.section], f);
    buildBlocks(f);
    f.ranges.emplace_back(f.entry, f.entry + f.size);
    d.functions_.push_back(std::move(f));
  }
  mergeColdFragments(module, d.functions_);
  if (!module.recovered_entries.empty()) {
    Recovery r{cs.handle, ci, module};
    std::set<CodeAddr> done;
    for (const Function& f : d.functions_) done.insert(f.entry);
    std::vector<std::pair<CodeAddr, std::string>> work(module.recovered_entries.rbegin(), module.recovered_entries.rend());
    std::size_t recovered = 0;
    while (!work.empty() && recovered < kMaxRecoveredFunctions) {
      auto [entry, name] = std::move(work.back());
      work.pop_back();
      if (!done.insert(entry).second) continue;
      std::vector<CodeAddr> callees;
      Function f = r.recover(entry, std::move(name), callees);
      buildBlocks(f);
      d.functions_.push_back(std::move(f));
      ++recovered;
      for (auto c = callees.rbegin(); c != callees.rend(); ++c)
        if (!done.count(*c)) work.emplace_back(*c, module.describe(sectionOf(*c), offsetOf(*c)));
    }
    d.unfollowed_ = work.size();
    std::sort(d.functions_.begin(), d.functions_.end(), [](const Function& a, const Function& b) { return a.entry < b.entry; });
  }
  for (std::uint32_t i = 0; i < d.functions_.size(); ++i)
    for (auto [begin, end] : d.functions_[i].ranges) d.ranges_.push_back(Disassembly::CodeRange{begin, end, i});
  std::sort(d.ranges_.begin(), d.ranges_.end(), [](const Disassembly::CodeRange& a, const Disassembly::CodeRange& b) { return a.begin < b.begin; });
  cs_free(ci, 1);
  return d;
}

}  // namespace iof::analysis
