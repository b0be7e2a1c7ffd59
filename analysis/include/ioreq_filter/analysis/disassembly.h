// Capstone (x86-64, detail on) behind one interface: decodes a module's functions into compact
// instructions with relocations already applied to their references, splits them into basic blocks
// and classifies control flow the way real kernel code needs (see docs in analysis/README.md):
// `call __fentry__`, `jmp __x86_return_thunk` (a return), retpoline thunks (indirect calls/jumps),
// calls through `pv_ops` (paravirt), tail calls, and jumps into `.text.unlikely` cold fragments.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ioreq_filter/analysis/elf_module.h"
#include "ioreq_filter/core/error.h"

namespace iof::analysis {


// General-purpose registers in encoding order; sub-registers map onto these with a width.
enum Gpr : std::uint8_t { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15, kGprCount, NoReg = 0xff };

struct RegRef {
  std::uint8_t gpr = NoReg;  // Gpr, or NoReg for non-GPRs (rip, segment, vector)
  std::uint8_t width = 0;    // bytes: 1, 2, 4, 8
  bool high8 = false;        // ah/ch/dh/bh
  bool rip = false;
};

// A symbolic reference an instruction makes through a relocation (or a PC-relative branch).
struct Reference {
  enum Kind : std::uint8_t { None, Local, External } kind = None;
  std::uint32_t section = 0;   // Local: section of the referenced byte
  std::int64_t offset = 0;     // Local: offset in it (addend and PC adjustment applied)
  std::uint32_t symbol = 0;    // External: index into Module::symbols
};

struct Operand {
  enum Kind : std::uint8_t { None, Reg, Imm, Mem } kind = None;
  std::uint8_t size = 0;  // bytes
  RegRef reg;             // Reg
  std::int64_t imm = 0;   // Imm
  RegRef base, index;     // Mem
  std::uint8_t scale = 1;
  std::int64_t disp = 0;  // raw displacement; `ref` holds the relocated meaning when there is one
};

enum class Flow : std::uint8_t {
  Next,          // falls through
  Jump,          // unconditional jump to target / ref
  CondJump,      // conditional: target or fall through
  Call,          // direct call (target or ref)
  IndirectCall,  // call *reg, call *mem, call __x86_indirect_thunk_*
  Return,        // ret, jmp __x86_return_thunk
  IndirectJump,  // jmp *reg, jmp __x86_indirect_thunk_* (a tail call through a pointer)
  Stop,          // ud2, int3, hlt: the path ends
};

struct Insn {
  CodeAddr addr = 0;
  std::uint8_t size = 0;
  std::uint16_t id = 0;  // X86_INS_*
  std::uint8_t op_count = 0;
  bool rep = false;      // rep/repe/repne prefix
  Flow flow = Flow::Next;
  Operand ops[3];
  Reference ref;         // what the relocation at this instruction resolves to (branch target included)
  CodeAddr target = 0;   // Jump/CondJump/Call within this section when ref is None
};

struct BasicBlock {
  std::uint32_t first = 0, last = 0;  // instruction index range [first, last]
  std::vector<std::uint32_t> succs;   // block indices within the function
};

struct Function {
  std::string name;
  std::uint32_t symbol = 0;  // index into Module::symbols
  CodeAddr entry = 0;
  std::uint64_t size = 0;
  std::vector<Insn> insns;
  std::vector<BasicBlock> blocks;  // blocks[0] is the entry block
  std::uint32_t undecodable = 0;   // bytes Capstone could not decode (reported, never guessed)
  // Decoded by following control flow from the entry (Module::recovered_entries), not from a symbol's
  // extent: `insns` are runs of code (the body and cold fragments) in address order.
  bool recovered = false;
  std::vector<std::pair<CodeAddr, CodeAddr>> ranges;  // [begin, end) of each run of the function's code
};

class Disassembly {
 public:
  const Module& module() const noexcept { return *module_; }
  const std::vector<Function>& functions() const noexcept { return functions_; }
  // Function whose entry is `addr`, or -1.
  int functionAt(CodeAddr addr) const noexcept;
  // Function covering `addr`, or -1.
  int functionCovering(CodeAddr addr) const noexcept;
  std::size_t instructionCount() const noexcept;
  // Callees of recovered functions left undecoded (over the bound on recovered functions).
  std::size_t unfollowedCallees() const noexcept { return unfollowed_; }

 private:
  friend Result<Disassembly> disassemble(const Module& module);
  struct CodeRange {
    CodeAddr begin, end;
    std::uint32_t function;
  };
  const Module* module_ = nullptr;
  std::vector<Function> functions_;  // sorted by entry
  std::vector<CodeRange> ranges_;    // every function's code, sorted by begin
  std::size_t unfollowed_ = 0;
};

// Decodes every STT_FUNC symbol in the module's executable sections and builds its CFG.
Result<Disassembly> disassemble(const Module& module);

// Name of an external (or any) symbol a reference points at; "" if none.
std::string referenceName(const Module& module, const Reference& ref);

}  // namespace iof::analysis
