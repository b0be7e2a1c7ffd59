#include "ioreq_filter/analysis/io_analysis.h"

#include <capstone/capstone.h>
#include <elf.h>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include "flat_u64_set.h"
#include "index_range.h"
#include "text_util.h"

namespace iof::analysis {
namespace {

constexpr std::uint32_t kStart = 0xffffffffu;  // sequence marker: function entry, nothing written yet
constexpr std::uint32_t kIdle = 0xfffffffeu;   // sequence marker: control may have left the sequence
constexpr std::uint32_t kErrorReturn = 1;       // Item::Return index: the function returns a negative errno
// Value::field of a Base from which a pointer with an identity was subtracted (see the SUB rule).
constexpr std::int64_t kMinusParam = Value::kNoField + 16;

// A pointer with an identity the analysis can subtract and add back: an unknown argument or call
// result (Ptr), a pointer into the structure holding a base (whose `off` counts the other way), or
// into this function's stack frame (pcnet32_probe1 reading the address PROM into a local buffer).
struct PointerPos {
  std::int64_t tag, pos;
};
std::optional<PointerPos> pointerPos(const Value& v) noexcept {
  if (v.alts != 0) return std::nullopt;
  // Tags wrap rather than overflow: ids come from the binary, and a damaged one may be huge (fuzzer).
  const std::int64_t tag = std::int64_t(std::uint64_t(kMinusParam) - 2 * std::uint64_t(v.id));
  if (v.kind == Value::Ptr) return PointerPos{tag, v.off};
  if (v.kind == Value::Holder) return PointerPos{std::int64_t(std::uint64_t(tag) - 1), std::int64_t(0 - std::uint64_t(v.off))};
  if (v.kind == Value::Stack) return PointerPos{kMinusParam + 1, v.off};  // a buffer in this frame
  return std::nullopt;
}

// The constant result of add/sub/and/or/xor on two known operands; nullopt for other instructions.
std::optional<std::uint64_t> foldAddLogic(unsigned id, std::uint64_t x, std::uint64_t y) noexcept {
  switch (id) {
    case X86_INS_ADD: return x + y;
    case X86_INS_SUB: return x - y;
    case X86_INS_AND: return x & y;
    case X86_INS_OR: return x | y;
    case X86_INS_XOR: return x ^ y;
    default: return std::nullopt;
  }
}

std::uint64_t maskFor(unsigned bytes) noexcept { return bytes >= 8 ? ~0ull : ((1ull << (bytes * 8)) - 1); }

bool isSymbolic(const Value& v) noexcept {
  return v.kind == Value::GlobalAddr || v.kind == Value::Cell || v.kind == Value::Base || v.kind == Value::Stack ||
         v.kind == Value::Holder || v.kind == Value::Ptr || v.kind == Value::FieldVal || v.kind == Value::PciDev ||
         v.kind == Value::IomapTable;
}

// A Base whose alternatives are offsets from different bases (one per instance of a structure).
bool mixedBases(const Value& v) noexcept {
  for (int i = 0; i < v.alts; ++i)
    if (v.alt_base[std::size_t(i)] != 0) return true;
  return false;
}

// The base alternative i (-1: `off`) is an offset from.
std::uint32_t baseOfAlternative(const Value& v, int i) noexcept {
  return i < 0 || v.alt_base[std::size_t(i)] == 0 ? v.id : v.alt_base[std::size_t(i)] - 1;
}

Value join(const Value& a, const Value& b) noexcept {
  if (a == b) return a;
  if (a.count || b.count) return rangeHull(a, b).value_or(Value::top());
  if (mixedBases(a) || mixedBases(b)) return Value::top();
  const bool same = a.kind == b.kind && a.kind != Value::Top && a.kind != Value::Stack && a.id == b.id &&
                    (a.kind != Value::Const || (a.known == 8 && b.known == 8));
  if (!same) return Value::top();
  std::int64_t all[16];
  int n = 0;
  auto add = [&](std::int64_t x) {
    for (int i = 0; i < n; ++i)
      if (all[i] == x) return;
    if (n < 16) all[n++] = x;
  };
  a.forEach(add);
  b.forEach(add);
  if (n > 4) return Value::top();
  for (int i = 1; i < n; ++i)  // insertion sort: n <= 4
    for (int j = i; j > 0 && all[j - 1] > all[j]; --j) std::swap(all[j - 1], all[j]);
  Value r = a;
  r.off = all[0];
  r.alts = std::uint8_t(n - 1);
  r.alt = {};
  for (int i = 1; i < n; ++i) r.alt[std::size_t(i - 1)] = all[i];
  return r;
}

Value maskAll(Value v, std::uint64_t mask) noexcept {
  if (mask == ~0ull) return v;
  if (v.count && (v.alts || v.off < 0 || std::uint64_t(rangeLast(v)) > mask)) return Value::top();
  v.off = std::int64_t(std::uint64_t(v.off) & mask);
  for (int i = 0; i < v.alts; ++i) v.alt[std::size_t(i)] = std::int64_t(std::uint64_t(v.alt[std::size_t(i)]) & mask);
  return v;
}

Value addOffset(const Value& v, std::int64_t delta) noexcept {
  if (v.kind == Value::Const && v.known < 8) return Value::top();
  if (v.kind == Value::Holder) delta = -delta;  // the field gets closer as the pointer moves up
  if (v.kind == Value::Const || isSymbolic(v)) {
    Value r = v;
    r.off = std::int64_t(std::uint64_t(r.off) + std::uint64_t(delta));
    for (int i = 0; i < r.alts; ++i) r.alt[std::size_t(i)] = std::int64_t(std::uint64_t(r.alt[std::size_t(i)]) + std::uint64_t(delta));
    return r;
  }
  return Value::top();
}

// Values other operations may treat as one number.
bool single(const Value& v) noexcept { return v.alts == 0 && v.count == 0; }

// -1 .. -4095 in the low 32 bits (what `return -EIO;` and `return -1;` leave in eax).
bool returnsErrno(const Value& v) noexcept {
  if (v.kind != Value::Const || v.known < 4 || !single(v)) return false;
  const auto low = std::int32_t(std::uint32_t(v.off));
  return low < 0 && low >= -4095;
}

struct State {
  bool reachable = false;
  std::array<Value, kGprCount> reg{};
  std::vector<std::pair<std::int64_t, Value>> stack;  // sorted by offset from the entry rsp

  Value slot(std::int64_t off) const {
    auto it = std::lower_bound(stack.begin(), stack.end(), off, [](auto& p, std::int64_t o) { return p.first < o; });
    return it != stack.end() && it->first == off ? it->second : Value::top();
  }
  void setSlot(std::int64_t off, const Value& v) {
    auto it = std::lower_bound(stack.begin(), stack.end(), off, [](auto& p, std::int64_t o) { return p.first < o; });
    if (it != stack.end() && it->first == off) {
      if (v.kind == Value::Top) stack.erase(it); else it->second = v;
    } else if (v.kind != Value::Top) {
      if (stack.size() >= 64) return;  // deep frames: keep the analysis bounded
      stack.insert(it, {off, v});
    }
  }
  // Returns true if this state changed.
  bool joinWith(const State& o) {
    if (!o.reachable) return false;
    if (!reachable) {
      *this = o;
      return true;
    }
    bool changed = false;
    for (int i = 0; i < kGprCount; ++i) {
      if (reg[i] == o.reg[i]) continue;  // join(a, a) is a
      Value j = join(reg[i], o.reg[i]);
      if (!(j == reg[i])) reg[i] = j, changed = true;
    }
    // Both stacks are sorted by offset: one walk over both finds the slots they agree on (what o.slot
    // would find by a search per slot), and the others are dropped in place, without a new buffer.
    auto theirs = o.stack.begin();
    auto agrees = [&](const std::pair<std::int64_t, Value>& slot) {
      while (theirs != o.stack.end() && theirs->first < slot.first) ++theirs;
      return theirs != o.stack.end() && theirs->first == slot.first ? theirs->second == slot.second : slot.second == Value::top();
    };
    auto kept = stack.begin();
    for (auto it = stack.begin(); it != stack.end(); ++it)
      if (agrees(*it)) {
        if (kept != it) *kept = std::move(*it);
        ++kept;
      }
    if (kept == stack.end()) return changed;
    stack.erase(kept, stack.end());
    return true;
  }
};

bool sameState(const State& a, const State& b) {
  return a.reachable == b.reachable && a.reg == b.reg && a.stack == b.stack;
}

// The latest state flowing into each loop header along each edge, (header, from) -> state. Entries
// are few per function; their states keep their stack buffers from one context to the next.
class IntoHeaders {
 public:
  void clear() { live_ = 0; }
  void set(std::uint32_t header, std::uint32_t from, const State& s) {
    for (std::size_t i = 0; i < live_; ++i)
      if (entries_[i].header == header && entries_[i].from == from) {
        entries_[i].state = s;
        return;
      }
    if (live_ == entries_.size()) entries_.emplace_back();
    Entry& e = entries_[live_++];
    e.header = header, e.from = from, e.state = s;
  }
  // In increasing `from`, the order the joins at a header have always been taken in.
  template <typename F>
  void forEachInto(std::uint32_t header, F&& f) {
    order_.clear();
    for (std::size_t i = 0; i < live_; ++i)
      if (entries_[i].header == header) order_.push_back(i);
    std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) { return entries_[a].from < entries_[b].from; });
    for (std::size_t i : order_) f(entries_[i].from, entries_[i].state);
  }

 private:
  struct Entry {
    std::uint32_t header = 0, from = 0;
    State state;
  };
  std::vector<Entry> entries_;
  std::size_t live_ = 0;
  std::vector<std::size_t> order_;
};

// The value fixpoint's states for one function, reused by every context analysed at the same call
// depth: allocating and value-initialising nb States (16 Values of ~128 bytes each) twice per context
// was a tenth of e1000's analysis. Only a reachable state's registers and stack are ever read (a join
// into an unreachable state copies the other whole; loop-header merges always carry a reachable edge
// state), so a state is made fresh by marking it unreachable and emptying its stack.
struct ValueScratch {
  std::vector<State> in, out;
  IntoHeaders into_header;
  State header_entry, header_back;
  State item_state;  // a block stepped again to record its items
  void reset(std::size_t nb) {
    for (std::vector<State>* states : {&in, &out}) {
      if (states->size() < nb) states->resize(nb);
      for (std::size_t b = 0; b < nb; ++b) (*states)[b].reachable = false, (*states)[b].stack.clear();
    }
    into_header.clear();
  }
};

struct Summary {
  bool done = false;
  std::vector<std::uint32_t> first, last;  // last may hold kStart/kIdle
  Value ret;
  std::vector<std::uint32_t> reached;  // sorted, no duplicates
};

struct ContextKey {
  std::uint32_t function;
  std::array<Value, 6> args;
  bool operator<(const ContextKey& o) const {
    if (function != o.function) return function < o.function;
    for (int i = 0; i < 6; ++i) {
      const Value &a = args[i], &b = o.args[i];
      if (a.kind != b.kind) return a.kind < b.kind;
      if (a.id != b.id) return a.id < b.id;
      if (a.off != b.off) return a.off < b.off;
      if (a.known != b.known) return a.known < b.known;
      if (a.field != b.field) return a.field < b.field;
      if (a.alts != b.alts) return a.alts < b.alts;
      if (a.alt != b.alt) return a.alt < b.alt;
      if (a.stride != b.stride) return a.stride < b.stride;
      if (a.count != b.count) return a.count < b.count;
      if (a.direction != b.direction) return a.direction < b.direction;
      if (a.alt_base != b.alt_base) return a.alt_base < b.alt_base;
    }
    return false;
  }
};

constexpr std::array<Gpr, 6> kArgRegs = {RDI, RSI, RDX, RCX, R8, R9};

// One item of a block as the sequence builder sees it.
struct Item {
  enum Kind : std::uint8_t { Position, PositionAlt, Call, Break, Return } kind;
  std::uint32_t index;  // Position: access index; Call: summary id
};

class Analyzer {
 public:
  Analyzer(const Disassembly& d, const AnalysisOptions& o, ModuleAnalysis& out) : d_(d), m_(d.module()), opt_(o), out_(out) {}

  void run();

 private:
  const Disassembly& d_;
  const Module& m_;
  const AnalysisOptions& opt_;
  ModuleAnalysis& out_;
  std::map<ContextKey, std::uint32_t> memo_;
  std::vector<Summary> summaries_;
  std::vector<std::uint32_t> contexts_per_function_;
  std::unordered_map<std::uint64_t, std::uint32_t> cell_index_;
  // struct field displacement -> the device base (+ offset) stored there, or the iomap table. Where
  // instances store different bases at one displacement (libata's two ports), each is an alternative.
  std::map<std::int64_t, Value> field_base_;
  void learnField(std::int64_t disp, const Value& v) {
    if (v.count || v.field != Value::kNoField || (v.kind != Value::Base && v.kind != Value::IomapTable)) return;
    if (v.kind == Value::IomapTable && !single(v)) return;
    Value stored = v;
    stored.known = 8;
    stored.direction = 0;
    auto [it, inserted] = field_base_.try_emplace(disp, stored);
    if (inserted || it->second == stored || it->second.kind != Value::Base || stored.kind != Value::Base) return;
    // Outside a walk of one function's passes, a displacement already taken is another structure's
    // field (unrelated drivers' structures collide at small displacements): what was seen first stays.
    if (!learning_paths_ || out_.bases[it->second.id].memory() != out_.bases[stored.id].memory()) return;
    std::set<std::pair<std::uint32_t, std::int64_t>> pairs;
    for (const Value* x : {&it->second, &stored})
      for (int i = -1; i < x->alts; ++i) pairs.emplace(baseOfAlternative(*x, i), i < 0 ? x->off : x->alt[std::size_t(i)]);
    if (pairs.size() > 8) return;  // too many to be the instances one loop fills: keep what was seen first
    Value merged{Value::Base, 8, pairs.begin()->first, pairs.begin()->second};
    for (auto p = std::next(pairs.begin()); p != pairs.end(); ++p) {
      const std::size_t i = merged.alts++;
      merged.alt[i] = p->second;
      merged.alt_base[i] = p->first == merged.id ? 0 : p->first + 1;
    }
    it->second = merged;
  }
  // What a load of `width` bytes at displacement `disp` from a structure pointer gives, if a base was
  // stored there. Port numbers are 16 bits: `inb(dev->base_addr + reg)` may load only the low half.
  std::optional<Value> fieldHolds(std::int64_t disp, std::uint8_t width) const {
    auto it = field_base_.find(disp);
    if (it == field_base_.end()) return std::nullopt;
    if (width == 8) return it->second;
    if (width == 2 && it->second.kind == Value::Base && !out_.bases[it->second.id].memory()) return it->second;
    return std::nullopt;
  }
  // A pointer into a structure (`adapter = netdev_priv(netdev)`, netdev + 0x980, passed to a callee that
  // loads adapter->hw_addr1 at +0x74b0) reaches the field at its displacement from where the structure
  // starts (+0x7e30, where the probe stored the base through netdev). Small displacements are left out:
  // every structure has first fields.
  std::optional<Value> fieldFromStructureStart(const Value& a, const Operand& op, bool indexed, std::uint8_t width) const {
    if (indexed || !single(a) || (a.kind != Value::Ptr && a.kind != Value::FieldVal)) return std::nullopt;
    if (op.base.gpr == NoReg || op.base.rip || op.index.gpr != NoReg || a.off == op.disp || a.off < 0x40) return std::nullopt;
    return fieldHolds(a.off, width);
  }
  // Another field of a structure known to hold base b at +h (vmxnet3's adapter arrives holding hw_addr0
  // at +0x74a8 and reads hw_addr1 at +0x74b0): where the driver's main structure keeps b at D (+0x7e28
  // of the netdev the probe stored through), this field is at D - h + disp (+0x7e30). Every such D must
  // agree.
  std::optional<Value> siblingField(const Value& holder_at, const Operand& op, std::uint8_t width) const {
    const std::int64_t h = holder_at.off + op.disp;
    std::optional<Value> found;
    for (const auto& [d, v] : field_base_) {
      if (v.kind != Value::Base || !single(v) || v.id != holder_at.id || v.off != 0 || d == h) continue;
      auto held = fieldHolds(d - h + op.disp, width);
      if (!held) continue;
      if (found && !(*found == *held)) return std::nullopt;
      found = held;
    }
    return found;
  }
  std::map<std::int64_t, std::set<std::uint64_t>> field_consts_;  // struct field displacement -> constants stored
  bool field_offsets_used_ = false;
  std::map<CodeAddr, std::uint32_t> ptr_ids_;                           // call instruction -> pointer identity
  std::map<std::pair<std::uint32_t, std::int64_t>, std::uint32_t> ptr_holds_;  // (pointer, offset) -> base
  // (pointer, offset) where the probe kept its struct pci_dev (vmxnet3's `adapter->pdev = pdev`, reloaded
  // by the inlined vmxnet3_alloc_pci_resources before `ioremap(pci_resource_start(pdev, 0), ..)`).
  std::set<std::pair<std::uint32_t, std::int64_t>> ptr_holds_pdev_;
  std::map<std::pair<std::uint32_t, int>, std::pair<std::uint32_t, std::int64_t>> param_holder_;  // (fn, arg) -> (base, field)
  // (fn, arg) -> the port base its direct callers pass (pcnet32's `pcnet32_wio_read_csr(ioaddr, 0)` in
  // probe), also assumed where the same function is reached through a pointer (`lp->a->read_csr`).
  std::map<std::pair<std::uint32_t, int>, std::uint32_t> param_base_;
  std::set<std::pair<std::uint32_t, int>> param_base_conflict_;
  // Resolves a pointer to "holds base b at +d" if it is known to.
  std::optional<Value> asHolder(const Value& v) const {
    if (v.kind == Value::Holder) return v;
    if (v.kind != Value::Ptr || !single(v)) return std::nullopt;
    auto it = ptr_holds_.lower_bound({v.id, v.off});
    if (it == ptr_holds_.end() || it->first.first != v.id || it->first.second - v.off > 0x10000) return std::nullopt;
    return Value{Value::Holder, 8, it->second, it->first.second - v.off};
  }
  std::map<std::pair<int, int>, std::uint32_t> base_index_;
  std::map<std::tuple<CodeAddr, int, std::uint64_t, std::int64_t, std::uint64_t, bool>, std::uint32_t> access_index_;
  std::set<CodeAddr> site_insns_, pinned_insns_, foreign_insns_;
  // A hashed copy of out_.edges: the sequence fixpoint meets the same edge in every context of a function.
  FlatU64Set edge_seen_;
  // The edges edge_seen_ took, in the order met; out_.edges is built from them, sorted, at the end
  // (one ordered insert each at the end of the set instead of a search per edge).
  std::vector<std::uint64_t> new_edges_;
  int depth_ = 0;
  // `for (i = lo; i < N; i++)`: a register stepped by one once per iteration, from a constant to a
  // constant; uses before the step see lo..hi, uses after it lo+1..hi+1.
  struct Induction {
    std::uint8_t gpr = NoReg;
    std::int64_t lo = 0, hi = 0;
    CodeAddr step = 0;
  };
  struct FunctionLoops {
    bool computed = false;
    std::vector<std::int32_t> innermost;  // per block: index into ModuleAnalysis::loops, or -1
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::int32_t> back_edges;  // (from, header) -> loop
    std::vector<std::int32_t> header_of;                          // per block: the loop it heads, or -1
    std::map<std::int32_t, std::vector<std::uint32_t>> bodies;    // loop -> its blocks
    std::map<std::int32_t, std::vector<Induction>> inductions;  // loop -> its counted registers
  };
  const std::vector<Induction>* cur_inductions_ = nullptr;  // of the innermost loop around the block being stepped
  void enterBlock(std::uint32_t fn, std::uint32_t b) {
    const FunctionLoops& fl = loopsOf(fn);
    cur_inductions_ = nullptr;
    if (b < fl.innermost.size() && fl.innermost[b] >= 0) {
      auto it = fl.inductions.find(fl.innermost[b]);
      if (it != fl.inductions.end()) cur_inductions_ = &it->second;
    }
  }
  // The values a counted loop's index register takes at `at`, as alternatives (register arrays
  // written in a loop: 8390's `for (i = 0; i < 6; i++) outb(dev_addr[i], base + EN1_PHYS + i)`).
  std::optional<Value> inductionValues(std::uint8_t gpr, CodeAddr at) const {
    if (!cur_inductions_) return std::nullopt;
    for (const Induction& ind : *cur_inductions_) {
      if (ind.gpr != gpr) continue;
      const std::int64_t shift = at > ind.step ? 1 : 0;
      Value v = Value::constant(std::uint64_t(ind.lo + shift));
      for (std::int64_t x = ind.lo + shift + 1; x <= ind.hi + shift; ++x) v.alt[v.alts++] = x;
      return v;
    }
    return std::nullopt;
  }
  std::vector<FunctionLoops> loops_;
  const FunctionLoops& loopsOf(std::uint32_t fn);
  // The state at a loop header from the states on its entry and back edges: loop counters become
  // index ranges (from their entry value to the bound the loop tests).
  State mergeAtLoopHeader(std::uint32_t fn, std::uint32_t header, const State& entry, const State& back, const State& previous);
  // A poll is a handshake (wait for the status, then the next access): where it stands in the
  // sequence is what lets the next access happen, so it is a position. A poll is a read inside a loop
  // whose value, within the read's block, decides a branch out of that loop (wait_til_ready's
  // `in; test; jns`). A read whose value only lands in memory (a result byte) or nowhere (a posted-write
  // flush) stays stateless.
  bool polled(std::uint32_t fn, CodeAddr insn) {
    const Function& f = d_.functions()[fn];
    const FunctionLoops& fl = loopsOf(fn);
    for (std::uint32_t b = 0; b < f.blocks.size(); ++b) {
      const BasicBlock& bb = f.blocks[b];
      if (insn < f.insns[bb.first].addr || insn > f.insns[bb.last].addr) continue;
      const std::int32_t loop = fl.innermost[b];
      if (loop < 0) return false;
      auto body = fl.bodies.find(loop);
      if (body == fl.bodies.end()) return false;
      const Insn& last = f.insns[bb.last];
      if (last.flow != Flow::CondJump || bb.last == bb.first) return false;
      bool leaves = false;
      for (auto succ : bb.succs) leaves |= std::find(body->second.begin(), body->second.end(), succ) == body->second.end();
      if (!leaves) return false;
      // Registers holding the read value (or a part of it) from the read to the branch.
      std::uint32_t tainted = 0;
      for (std::uint32_t i = bb.first; i < bb.last; ++i) {
        const Insn& in = f.insns[i];
        auto isReg = [&](const Operand& o) { return o.kind == Operand::Reg && o.reg.gpr != NoReg; };
        auto has = [&](const Operand& o) { return isReg(o) && (tainted >> o.reg.gpr & 1); };
        if (in.addr == insn) {
          // in al,dx / ioread*() leave it in rax; a load through the base, in its destination.
          if (in.flow == Flow::Call || in.id == X86_INS_IN) tainted = 1u << RAX;
          else if (in.op_count >= 1 && isReg(in.ops[0])) tainted = 1u << in.ops[0].reg.gpr;
          continue;
        }
        if (!tainted) continue;
        if (i + 1 == bb.last && (in.id == X86_INS_TEST || in.id == X86_INS_CMP || in.id == X86_INS_AND) && in.op_count == 2)
          return has(in.ops[0]) || has(in.ops[1]);
        if (in.flow == Flow::Call) tainted &= (1u << RBX) | (1u << RBP) | (1u << R12) | (1u << R13) | (1u << R14) | (1u << R15);
        if (in.op_count == 2 && isReg(in.ops[0])) {
          const bool from = has(in.ops[1]) && (in.id == X86_INS_MOV || in.id == X86_INS_MOVZX || in.id == X86_INS_MOVSX);
          const bool keeps = has(in.ops[0]) && (in.id == X86_INS_AND || in.id == X86_INS_OR || in.id == X86_INS_SHR ||
                                                in.id == X86_INS_SHL || in.id == X86_INS_TEST || in.id == X86_INS_CMP);
          if (from || keeps) tainted |= 1u << in.ops[0].reg.gpr;
          else tainted &= ~(1u << in.ops[0].reg.gpr);
        }
      }
      return false;
    }
    return false;
  }

  std::uint32_t cellOf(std::uint32_t section, std::uint64_t offset) {
    const std::uint64_t key = codeAddr(section, offset);
    auto [it, inserted] = cell_index_.try_emplace(key, std::uint32_t(out_.cells.size()));
    if (inserted) out_.cells.push_back(Cell{section, offset, {}, {}});
    return it->second;
  }
  std::uint32_t baseFor(DeviceBase::Kind kind, int bar, std::uint32_t cell, std::string name, std::string origin) {
    const int key2 = kind == DeviceBase::PortCell ? int(cell) : bar;
    auto [it, inserted] = base_index_.try_emplace({int(kind), key2}, std::uint32_t(out_.bases.size()));
    if (inserted) out_.bases.push_back(DeviceBase{kind, bar, cell, {}, std::move(name), std::move(origin)});
    return it->second;
  }

  std::uint32_t analyze(std::uint32_t fn, std::array<Value, 6> args);
  std::vector<std::unique_ptr<ValueScratch>> scratch_;  // by nesting of analyze()
  std::size_t scratch_depth_ = 0;
  struct ScratchLease {
    Analyzer& analyzer;
    ValueScratch& scratch;
    ScratchLease(Analyzer& a, std::size_t nb) : analyzer(a), scratch(a.takeScratch()) { scratch.reset(nb); }
    ~ScratchLease() { --analyzer.scratch_depth_; }
    ScratchLease(const ScratchLease&) = delete;
    ScratchLease& operator=(const ScratchLease&) = delete;
  };
  ValueScratch& takeScratch() {
    if (scratch_depth_ == scratch_.size()) scratch_.push_back(std::make_unique<ValueScratch>());
    return *scratch_[scratch_depth_++];
  }
  // The sequence part of a context's analysis (first/last/reached of its summary, edges, break
  // entries and exits) reads only its items, the accesses they name and its callees' summaries, and
  // nothing before it reads what it writes except other sequence parts. The first round's results are
  // thrown away whenever a second round runs, so it defers them: run in the order the contexts
  // completed, each sees its callees' summaries exactly as it would have at that point (a callee still
  // in progress, a recursive one, keeps its transparent in-progress summary until it is run itself).
  void connectSequences(std::uint32_t fn, std::uint32_t sid, const std::vector<std::vector<Item>>& items, const std::vector<char>& unrolled);
  struct DeferredSequences {
    std::uint32_t fn, sid;
    std::vector<std::vector<Item>> items;
    std::vector<char> unrolled;
  };
  bool defer_sequences_ = false;
  std::vector<DeferredSequences> deferred_;
  // Where a function maps BARs through pcim_iomap_table, the merged fixpoint loses which pass of a loop
  // over instances stored which element (ata_pci_sff_init_host's `iomap[2 * i]` for port i: the offset
  // register keeps growing, since the flag that ends the loop is another register). Walking its paths
  // one by one, with branches on a known constant decided, learns what each pass stores where.
  bool learning_paths_ = false;
  std::set<std::uint32_t> walked_;
  void learnStoresAlongPaths(std::uint32_t fn, const State& initial);
  static std::optional<bool> decidedBranch(const State& s, const Function& f, const BasicBlock& bb);
  Value read(const State& s, const Insn& in, const Operand& op, std::uint8_t width, Item* item, std::uint32_t fn, bool record);
  void writeReg(State& s, const RegRef& r, std::uint8_t width, Value v);
  Value address(const State& s, const Insn& in, const Operand& op, bool* indexed) const;
  void store(State& s, const Insn& in, const Operand& dst, const Value& v, std::vector<Item>* items, std::uint32_t fn, bool record);
  void step(State& s, const Insn& in, std::uint32_t fn, std::vector<Item>* items, bool record);
  void call(State& s, const Insn& in, std::uint32_t fn, std::vector<Item>* items, bool record, bool tail, int known_callee = -1);
  // The function an indirect call reaches when its pointer is a known code address: `call *%rax` or
  // `call __x86_indirect_thunk_rax` (retpoline) with %rax = &some_function.
  std::optional<int> knownIndirectTarget(const State& s, const Insn& in) const {
    std::uint8_t gpr = NoReg;
    if (in.ref.kind == Reference::External) {
      const std::string& name = m_.symbols[in.ref.symbol].name;
      static const std::pair<const char*, Gpr> thunks[] = {
          {"__x86_indirect_thunk_rax", RAX}, {"__x86_indirect_thunk_rcx", RCX}, {"__x86_indirect_thunk_rdx", RDX},
          {"__x86_indirect_thunk_rbx", RBX}, {"__x86_indirect_thunk_rsi", RSI}, {"__x86_indirect_thunk_rdi", RDI},
          {"__x86_indirect_thunk_rbp", RBP}, {"__x86_indirect_thunk_r8", R8},   {"__x86_indirect_thunk_r9", R9},
          {"__x86_indirect_thunk_r10", R10}, {"__x86_indirect_thunk_r11", R11}, {"__x86_indirect_thunk_r12", R12},
          {"__x86_indirect_thunk_r13", R13}, {"__x86_indirect_thunk_r14", R14}, {"__x86_indirect_thunk_r15", R15}};
      for (auto [thunk, reg] : thunks)
        if (name == thunk) gpr = reg;
    } else if (in.op_count == 1 && in.ops[0].kind == Operand::Reg) {
      gpr = in.ops[0].reg.gpr;
    }
    if (gpr == NoReg) return std::nullopt;
    const Value& v = s.reg[gpr];
    if (v.kind != Value::GlobalAddr || !single(v) || v.off < 0 || v.id >= m_.sections.size() || !m_.sections[v.id].executable())
      return std::nullopt;
    const int callee = d_.functionAt(codeAddr(v.id, std::uint64_t(v.off)));
    if (callee < 0) return std::nullopt;
    return callee;
  }
  // An 8-byte load from read-only data where a relocation places an address: that address (a const
  // table of function pointers such as pcnet32's `struct pcnet32_access`).
  std::optional<Value> readOnlyPointer(const Value& a, std::uint8_t width) const {
    if (width != 8 || a.id >= m_.sections.size()) return std::nullopt;
    const Section& sec = m_.sections[a.id];
    if (sec.type != SHT_PROGBITS || (sec.flags & SHF_WRITE) || !(sec.flags & SHF_ALLOC) || sec.executable()) return std::nullopt;
    const Relocation* r = m_.relocationAt(a.id, std::uint64_t(a.off));
    if (!r || r->offset != std::uint64_t(a.off) || r->type != R_X86_64_64) return std::nullopt;
    const Symbol& sym = m_.symbols[r->symbol];
    if (!sym.defined()) return std::nullopt;
    return Value{Value::GlobalAddr, 8, sym.section, std::int64_t(sym.value) + r->addend};
  }
  std::uint32_t recordOne(Access a, const Value& addr, std::optional<Value> value, bool record);
  // Records every alternative (address x value) and appends them to `items` as one choice.
  std::uint32_t recordAccess(const Access& a, const Value& addr, std::optional<Value> value, bool record, std::vector<Item>* items);
  void clobber(State& s) const {
    for (Gpr g : {RAX, RCX, RDX, RSI, RDI, R8, R9, R10, R11}) s.reg[g] = Value::top();
  }
  std::string functionName(std::uint32_t fn) const { return d_.functions()[fn].name; }
  // A pci_iomap cookie used as a memory address makes its base memory from then on (DeviceBase::dereferenced);
  // the accesses made before are redone by the second round, which a dereference asks for.
  void noteDereference(const Value& a) {
    if (a.kind != Value::Base) return;
    DeviceBase& b = out_.bases[a.id];
    if (b.kind == DeviceBase::PciIomap && !b.dereferenced) b.dereferenced = true, dereferenced_any_ = true;
  }
  bool dereferenced_any_ = false;
  // `pdev->resource[bar].start`: an 8-byte load at resource + bar * sizeof(struct resource).
  std::optional<int> resourceBar(const Value& a, bool indexed, std::uint8_t width) const {
    if (indexed || !single(a) || width != 8) return std::nullopt;
    const std::int64_t rel = a.off - opt_.pci_dev_resource_offset;
    if (rel < 0 || rel % opt_.pci_resource_size != 0 || rel / opt_.pci_resource_size >= 6) return std::nullopt;
    return int(rel / opt_.pci_resource_size);
  }
  // `pcim_iomap_table(pdev)[bar]`: an 8-byte load at 8*bar is the cookie of that BAR's mapping. Several
  // offsets (a loop over the channels: `iomap[2 * i]`) give one base per BAR as alternatives.
  std::optional<Value> iomapTableLoad(const Value& a, bool indexed, std::uint8_t width, CodeAddr at) {
    if (indexed || width != 8 || a.count) return std::nullopt;
    std::vector<int> bars;
    for (int i = -1; i < a.alts; ++i) {
      const std::int64_t off = i < 0 ? a.off : a.alt[std::size_t(i)];
      if (off < 0 || off % 8 != 0 || off / 8 >= 6) return std::nullopt;
      bars.push_back(int(off / 8));
    }
    Value r;
    for (std::size_t i = 0; i < bars.size(); ++i) {
      const std::uint32_t id = baseFor(DeviceBase::PciIomap, bars[i], 0, "pcim_iomap_table(bar " + std::to_string(bars[i]) + ")", out_.where(at));
      if (i == 0) r = Value{Value::Base, 8, id, 0};
      else r.alt[r.alts] = 0, r.alt_base[r.alts] = id == r.id ? 0 : id + 1, ++r.alts;
    }
    return r;
  }
  // Stack slots hold up to 8 bytes at the offset they were stored at. A narrower store keeps what it
  // fixes: a port number spilled as 16 bits (8390's `u16 isr = base + EN0_ISR` kept on the stack), or
  // the low bytes of a constant. Slots the store overlaps lose their value.
  static void stackWrite(State& s, std::int64_t off, std::uint8_t size, Value v) {
    // A slot's extent is its `known` bytes (8 unless stored narrower).
    for (std::int64_t k = off - 7; k < off + std::max<std::int64_t>(size, 1); ++k)
      if (k != off && (k > off || k + s.slot(k).known > off)) s.setSlot(k, Value::top());
    if (size >= 4) return s.setSlot(off, v);
    if (size == 2 && isSymbolic(v)) {
      v.known = 2;
      return s.setSlot(off, v);
    }
    if (size && v.kind == Value::Const && v.known >= size) {
      v = maskAll(v, maskFor(size));
      v.known = size;
      return s.setSlot(off, v);
    }
    s.setSlot(off, Value::top());
  }
  // A read inside a slot holding a known constant (a table of bytes built on the stack with wide
  // immediate stores, read back one byte at a time) gives those bytes.
  static Value stackRead(const State& s, std::int64_t off, std::uint8_t width) {
    Value exact = s.slot(off);
    if (isSymbolic(exact)) {
      if (exact.known < 8 && width > exact.known) return Value::top();
      exact.known = 8;
    }
    if (exact.kind != Value::Top) return exact;
    for (std::int64_t k = off - 1; k > off - 8; --k) {
      const Value v = s.slot(k);
      if (v.kind == Value::Top) continue;
      if (v.kind != Value::Const || !single(v) || width == 0 || (off - k) + width > v.known) return Value::top();
      return Value::constant((std::uint64_t(v.off) >> (8 * (off - k))) & maskFor(width));
    }
    return Value::top();
  }
  // A load from read-only data with no relocation in it is the constant the file holds (a table
  // initialiser the compiler placed in .rodata).
  std::optional<Value> readOnlyConstant(const Value& a, std::uint8_t width) const {
    if (width != 1 && width != 2 && width != 4 && width != 8) return std::nullopt;
    if (a.id >= m_.sections.size()) return std::nullopt;
    const Section& sec = m_.sections[a.id];
    if (sec.type != SHT_PROGBITS || (sec.flags & SHF_WRITE) || !(sec.flags & SHF_ALLOC) || sec.executable()) return std::nullopt;
    const auto off = std::uint64_t(a.off);
    if (off + width > sec.bytes.size()) return std::nullopt;
    if (m_.relocationIn(a.id, off >= 7 ? off - 7 : 0, off + width)) return std::nullopt;
    std::uint64_t v = 0;
    for (unsigned i = 0; i < width; ++i) v |= std::uint64_t(sec.bytes[off + i]) << (8 * i);
    return Value::constant(v);
  }
  // An indexed load from a small relocation-free read-only object (8139cp's `mii_2_8139_map[location]`,
  // the MII register number to the chip's register offset): whichever element it is, it is one of the
  // object's values. Up to eight distinct values, as alternatives; more stay unknown.
  std::optional<Value> readOnlyTableValues(const Value& a, std::uint8_t width) const {
    if (width != 1 && width != 2 && width != 4) return std::nullopt;
    if (a.kind != Value::GlobalAddr || a.off < 0 || a.id >= m_.sections.size()) return std::nullopt;
    const Section& sec = m_.sections[a.id];
    if (sec.type != SHT_PROGBITS || (sec.flags & SHF_WRITE) || !(sec.flags & SHF_ALLOC) || sec.executable()) return std::nullopt;
    const Symbol* table = m_.symbolCovering(a.id, std::uint64_t(a.off), STT_OBJECT);
    if (!table || table->size < width || table->size > 64) return std::nullopt;
    const std::uint64_t begin = table->value, end = table->value + table->size;
    if (end > sec.bytes.size() || m_.relocationIn(a.id, begin, end)) return std::nullopt;
    std::set<std::uint64_t> values;
    // Elements are `width` apart and one of them starts where the code indexes from.
    for (std::uint64_t at = begin + (std::uint64_t(a.off) - begin) % width; at + width <= end; at += width) {
      std::uint64_t v = 0;
      for (unsigned i = 0; i < width; ++i) v |= std::uint64_t(sec.bytes[at + i]) << (8 * i);
      values.insert(v);
      if (values.size() > 8) return std::nullopt;
    }
    if (values.empty()) return std::nullopt;
    Value r = Value::constant(*values.begin(), width);
    for (auto it = std::next(values.begin()); it != values.end(); ++it) r.alt[r.alts++] = std::int64_t(*it);
    return r;
  }
  // `test %r,%r; je skip` (or jne taken): on the way where %r is not zero, none of its alternatives is
  // zero (8139cp's mdio_read skips the access when mii_2_8139_map[location] is 0, "no such register").
  // nullopt where the edge tells nothing about a register with alternatives.
  static std::optional<State> nonZeroOnEdge(const Function& f, const BasicBlock& bb, std::uint32_t succ, const State& s) {
    if (bb.last == bb.first || bb.succs.size() != 2 || bb.succs[0] == bb.succs[1]) return std::nullopt;
    const Insn& jcc = f.insns[bb.last];
    const Insn& test = f.insns[bb.last - 1];
    if (jcc.flow != Flow::CondJump || (jcc.id != X86_INS_JE && jcc.id != X86_INS_JNE)) return std::nullopt;
    if (test.id != X86_INS_TEST || test.op_count != 2 || test.ops[0].kind != Operand::Reg || test.ops[1].kind != Operand::Reg ||
        test.ops[0].reg.gpr == NoReg || test.ops[0].reg.gpr != test.ops[1].reg.gpr || test.ops[0].reg.high8 || test.ops[1].reg.high8)
      return std::nullopt;
    const bool to_target = f.insns[f.blocks[succ].first].addr == jcc.target;
    if (to_target != (jcc.id == X86_INS_JNE)) return std::nullopt;  // the way where it is zero
    const std::uint8_t width = test.ops[0].size ? test.ops[0].size : 8;
    const Value& v = s.reg[test.ops[0].reg.gpr];
    if (v.kind != Value::Const || !v.alts || v.count || v.known < width) return std::nullopt;
    Value r = v;
    r.alts = 0;
    r.alt = {};
    bool first = true;
    v.forEach([&](std::int64_t x) {
      if ((std::uint64_t(x) & maskFor(width)) == 0) return;
      if (first) r.off = x, first = false;
      else r.alt[r.alts++] = x;
    });
    if (first || r.alts == v.alts) return std::nullopt;  // all of them zero, or none
    State refined = s;
    refined.reg[test.ops[0].reg.gpr] = r;
    return refined;
  }
  // A function a kernel API stores together with a pointer it will later be called with
  // (netif_napi_add(dev, &priv->napi, poll) calls poll(&priv->napi, budget)): that parameter points
  // where the registered pointer does, so it reaches the base the structure around it holds.
  void typeCallbackParameter(std::string_view api, const std::array<Value, 6>& args);
  // "Holds base b at +d" for a pointer into a structure known to hold a base, the field before or
  // after it (container_of of an embedded member: 8139cp's regs at -0x18 from &cp->napi).
  std::optional<Value> nearestHolder(const Value& v) const {
    if (v.kind == Value::Holder) return v;
    if (v.kind != Value::Ptr || !single(v)) return std::nullopt;
    std::optional<Value> best;
    std::uint64_t best_distance = 0x10000;
    for (auto it = ptr_holds_.lower_bound({v.id, INT64_MIN}); it != ptr_holds_.end() && it->first.first == v.id; ++it) {
      const std::int64_t d = std::int64_t(std::uint64_t(it->first.second) - std::uint64_t(v.off));
      const std::uint64_t distance = d < 0 ? 0 - std::uint64_t(d) : std::uint64_t(d);
      if (distance < best_distance) best_distance = distance, best = Value{Value::Holder, 8, it->second, d};
    }
    return best;
  }
  // A one-block loop whose trip count the entry state fixes (a walk over a table of constants built
  // on the stack, `for (p = seq; p != seq + n; p += 2) outb(p[0], base + p[1])`): its iterations in
  // order, each with its own exact register and value, instead of one merged, unresolved access.
  std::optional<Induction> countedRegister(const Function& f, std::uint32_t header, const std::vector<char>& body,
                                          const std::vector<std::vector<std::uint32_t>>& preds) const;
  bool unrollSelfLoop(std::uint32_t fn, std::uint32_t b, const std::vector<State>& out_states, std::vector<Item>& items);
  // The PCI probe callbacks: the function a struct pci_driver names right after its id_table.
  std::set<std::uint32_t> pciProbes() const;

  // Scalar module parameters (module_param(use_io, int, 0)) the module itself only reads: a load of one
  // is the default the file holds (0 in .bss). The policy describes the driver as loaded without
  // options; a guest that overrides such a parameter may drive the device another way (e100's use_io=1
  // maps the I/O BAR instead of the memory BAR) and is refused. Keys: (section, offset).
  std::set<std::pair<std::uint32_t, std::uint64_t>> parameters_;
  void collectModuleParameters();
  std::optional<Value> parameterDefault(const Value& a, std::uint8_t width) const;
  // `setcc` right after the test/cmp that set its flags, when that test's operands are known
  // (e100_probe's `bar = use_io ? 1 : 0` as `test %eax,%eax; ...; setne %sil`).
  std::optional<bool> setccOutcome(const Insn& in, std::uint32_t fn, const State& s) const;
  // BARs whose pci_resource_flags the code tests, per BAR: bit 0 IORESOURCE_IO, bit 1 IORESOURCE_MEM.
  std::map<int, std::uint8_t> bar_flag_tests_;
  void noteResourceFlagsTest(const State& s, const Insn& in);
};

// struct kernel_param (include/linux/moduleparam.h, 6.1 x86-64): name, mod, ops (+0x10), perm, level,
// flags, then the union whose `arg` (+0x20) points at the variable; 0x28 bytes per entry.
constexpr std::uint64_t kKernelParamSize = 0x28, kKernelParamOps = 0x10, kKernelParamArg = 0x20;

void Analyzer::collectModuleParameters() {
  static const std::set<std::string_view> scalar_ops = {"param_ops_int",  "param_ops_uint",  "param_ops_bool", "param_ops_short",
                                                        "param_ops_ushort", "param_ops_byte", "param_ops_long", "param_ops_ulong",
                                                        "param_ops_ullong", "param_ops_hexint"};
  for (const Section& sec : m_.sections) {
    if (sec.name != "__param") continue;
    for (std::uint64_t e = 0; e + kKernelParamSize <= sec.size; e += kKernelParamSize) {
      const Relocation* ops = m_.relocationAt(sec.index, e + kKernelParamOps);
      const Relocation* arg = m_.relocationAt(sec.index, e + kKernelParamArg);
      if (!ops || !arg || ops->symbol >= m_.symbols.size() || arg->symbol >= m_.symbols.size()) continue;
      if (!scalar_ops.count(m_.symbols[ops->symbol].name)) continue;  // arrays and strings hold pointers
      const Symbol& var = m_.symbols[arg->symbol];
      if (!var.defined()) continue;
      parameters_.emplace(var.section, var.value + std::uint64_t(arg->addend));
    }
  }
  if (parameters_.empty()) return;
  // A parameter the module writes or whose address escapes can hold anything: only plain loads and
  // compares keep it at its default.
  for (const Function& f : d_.functions())
    for (const Insn& in : f.insns) {
      if (in.ref.kind != Reference::Local) continue;
      auto it = parameters_.find({in.ref.section, std::uint64_t(in.ref.offset)});
      if (it == parameters_.end()) continue;
      const bool load = (in.id == X86_INS_MOV || in.id == X86_INS_MOVZX || in.id == X86_INS_MOVSX || in.id == X86_INS_MOVSXD) &&
                        in.op_count == 2 && in.ops[0].kind == Operand::Reg && in.ops[1].kind == Operand::Mem;
      const bool compare = (in.id == X86_INS_CMP || in.id == X86_INS_TEST) && in.op_count == 2 &&
                           (in.ops[0].kind == Operand::Mem || in.ops[1].kind == Operand::Mem);
      if (!load && !compare) parameters_.erase(it);
    }
}

std::optional<Value> Analyzer::parameterDefault(const Value& a, std::uint8_t width) const {
  if (a.kind != Value::GlobalAddr || !single(a) || a.off < 0 || a.id >= m_.sections.size()) return std::nullopt;
  if (width != 1 && width != 2 && width != 4 && width != 8) return std::nullopt;
  if (!parameters_.count({a.id, std::uint64_t(a.off)})) return std::nullopt;
  const Section& sec = m_.sections[a.id];
  if (sec.type == SHT_NOBITS) return Value::constant(0);
  const auto off = std::uint64_t(a.off);
  if (off + width > sec.bytes.size() || m_.relocationIn(a.id, off, off + width)) return std::nullopt;
  std::uint64_t v = 0;
  for (unsigned i = 0; i < width; ++i) v |= std::uint64_t(sec.bytes[off + i]) << (8 * i);
  return Value::constant(v);
}

std::optional<bool> Analyzer::setccOutcome(const Insn& in, std::uint32_t fn, const State& s) const {
  if (in.id != X86_INS_SETE && in.id != X86_INS_SETNE) return std::nullopt;
  const Function& f = d_.functions()[fn];
  auto at = std::lower_bound(f.insns.begin(), f.insns.end(), in.addr, [](const Insn& i, CodeAddr a) { return i.addr < a; });
  if (at == f.insns.end() || at->addr != in.addr) return std::nullopt;
  std::uint32_t written = 0;  // registers moved between the test and the setcc (moves leave the flags)
  for (auto it = at; it != f.insns.begin();) {
    const Insn& p = *--it;
    if (p.flow != Flow::Next) return std::nullopt;
    if ((p.id == X86_INS_MOV || p.id == X86_INS_MOVABS || p.id == X86_INS_LEA) && p.op_count == 2 && p.ops[0].kind == Operand::Reg) {
      if (p.ops[0].reg.gpr != NoReg) written |= 1u << p.ops[0].reg.gpr;
      continue;
    }
    if (p.id != X86_INS_TEST && p.id != X86_INS_CMP) return std::nullopt;
    if (p.op_count != 2 || p.ops[0].kind != Operand::Reg || p.ops[0].reg.gpr == NoReg || p.ops[0].reg.high8) return std::nullopt;
    if (written >> p.ops[0].reg.gpr & 1) return std::nullopt;
    const std::uint8_t width = p.ops[0].size ? p.ops[0].size : 8;
    const Value x = s.reg[p.ops[0].reg.gpr];
    if (x.kind != Value::Const || !single(x) || x.known < width) return std::nullopt;
    const std::uint64_t m = maskFor(width), xv = std::uint64_t(x.off) & m;
    bool zero;
    if (p.id == X86_INS_TEST && p.ops[1].kind == Operand::Reg && p.ops[1].reg.gpr == p.ops[0].reg.gpr && !p.ops[1].reg.high8) {
      zero = xv == 0;
    } else if (p.id == X86_INS_CMP && p.ops[1].kind == Operand::Imm) {
      zero = xv == (std::uint64_t(p.ops[1].imm) & m);
    } else {
      return std::nullopt;
    }
    return in.id == X86_INS_SETE ? zero : !zero;
  }
  return std::nullopt;
}

void Analyzer::noteResourceFlagsTest(const State& s, const Insn& in) {
  if (in.op_count != 2 || in.ops[0].kind != Operand::Mem || in.ops[1].kind != Operand::Imm) return;
  bool indexed = false;
  const Value a = address(s, in, in.ops[0], &indexed);
  if (a.kind != Value::PciDev || indexed || !single(a)) return;
  const std::int64_t rel = a.off - opt_.pci_dev_resource_offset;
  if (rel < 0 || rel / opt_.pci_resource_size >= 6) return;
  const std::int64_t byte = rel % opt_.pci_resource_size - opt_.pci_resource_flags_offset;
  if (byte < 0 || byte >= 8) return;
  const std::uint64_t bits = std::uint64_t(in.ops[1].imm) << (8 * byte);
  constexpr std::uint64_t kIoresourceIo = 0x100, kIoresourceMem = 0x200;
  auto& seen = bar_flag_tests_[int(rel / opt_.pci_resource_size)];
  if (bits & kIoresourceIo) seen |= 1;
  if (bits & kIoresourceMem) seen |= 2;
}

std::string sectionName(const Module& m, std::uint32_t s) { return s < m.sections.size() ? m.sections[s].name : "?"; }

Value Analyzer::address(const State& s, const Insn& in, const Operand& op, bool* indexed) const {
  *indexed = false;
  if (op.base.rip) {
    if (in.ref.kind == Reference::Local) return Value{Value::GlobalAddr, 8, in.ref.section, in.ref.offset};
    return Value::top();
  }
  Value v;
  if (op.base.gpr != NoReg) {
    v = s.reg[op.base.gpr];
    if (in.ref.kind == Reference::Local) {
      // symbol(%reg): an array element, reg = index * element size.
      if (v.kind == Value::Const && v.known == 8) v = Value{Value::GlobalAddr, 8, in.ref.section, in.ref.offset + v.off};
      else if (v.kind == Value::Top || v.kind == Value::Ptr) v = Value{Value::GlobalAddr, 8, in.ref.section, in.ref.offset}, *indexed = true;
      else v = Value::top();
    } else {
      v = addOffset(v, op.disp);
    }
  } else if (in.ref.kind == Reference::Local) {
    v = Value{Value::GlobalAddr, 8, in.ref.section, in.ref.offset};
  } else {
    v = Value::constant(std::uint64_t(op.disp));  // lea disp(,%index,scale): the index decides below
  }
  if (op.index.gpr != NoReg) {
    const bool was_indexed = *indexed;
    Value ix = s.reg[op.index.gpr];
    const bool table_or_base = v.kind == Value::Base || v.kind == Value::IomapTable;
    if (ix.kind == Value::Top && table_or_base && single(v) && op.scale >= 1)
      if (auto counted = inductionValues(op.index.gpr, in.addr)) ix = *counted;
    if (ix.kind == Value::Const && ix.known == 8 && ix.alts && ix.count == 0 && table_or_base && single(v)) {
      Value r = v;
      r.off = v.off + ix.off * op.scale;
      r.alts = ix.alts;
      for (int i = 0; i < ix.alts; ++i) r.alt[std::size_t(i)] = v.off + ix.alt[std::size_t(i)] * op.scale;
      return r;
    }
    if (auto p = pointerPos(ix); p && v.kind == Value::Base && v.field == p->tag && op.scale == 1 && single(v)) {
      v.off += p->pos;
      v.field = Value::kNoField;
      return v;
    }
    if (ix.kind == Value::FieldVal && v.kind == Value::Base && v.field == Value::kNoField && op.scale == 1 && single(v) && single(ix)) {
      v.off += ix.off;
      v.field = ix.field;
    } else if (ix.kind == Value::Const && ix.known == 8 && single(ix)) {
      v = addOffset(v, ix.off * op.scale);
    } else if (auto ranged = ix.count || v.count ? scaleRange(ix, op.scale) : std::nullopt; ranged && addRanges(v, *ranged)) {
      v = *addRanges(v, *ranged);  // an array element whose index is a loop counter: every element
    } else if (v.kind == Value::Const) {
      v = Value::top();
    } else {
      *indexed = true;  // element of an array: keep the array's first element
    }
    *indexed |= was_indexed;
  }
  return v;
}

std::uint32_t Analyzer::recordAccess(const Access& a, const Value& addr, std::optional<Value> value, bool record,
                                     std::vector<Item>* items) {
  if (!record) return kStart;
  std::uint32_t first = kStart;
  bool alternative = false;
  if (addr.kind == Value::Base && addr.field != Value::kNoField) {
    field_offsets_used_ = true;
    auto it = field_consts_.find(addr.field);
    // Register offsets kept in a field are small; larger constants stored at the same displacement
    // belong to other structures.
    std::vector<std::uint64_t> offsets;
    if (it != field_consts_.end())
      for (std::uint64_t c : it->second)
        if (c <= 0xffff) offsets.push_back(c);
    if (!offsets.empty() && offsets.size() <= 4 && single(addr)) {
      Value expanded = addr;
      expanded.field = Value::kNoField;
      expanded.alts = 0;
      int i = 0;
      for (std::uint64_t c : offsets) {
        if (i == 0) expanded.off = addr.off + std::int64_t(c);
        else expanded.alt[std::size_t(i - 1)] = addr.off + std::int64_t(c), expanded.alts = std::uint8_t(i);
        ++i;
      }
      return recordAccess(a, expanded, value, record, items);
    }
    Access u = a;
    return recordOne(u, Value::top(), value, record);  // offset read from a field whose values are unknown
  }
  // An index range is one choice among its elements, like alternatives.
  Access element = a;
  if (addr.count) element.index_stride = addr.stride, element.index_direction = addr.direction;
  for (int ai = -1; ai < addr.alts; ++ai) {
   const std::int64_t alt_off = ai < 0 ? addr.off : addr.alt[std::size_t(ai)];
   for (std::uint32_t k = 0; k < std::max<std::uint32_t>(addr.count, 1); ++k) {
    Value one_addr = addr;
    one_addr.off = alt_off + std::int64_t(k) * std::int64_t(addr.stride);
    one_addr.alts = 0;
    if (addr.kind == Value::Base) one_addr.id = baseOfAlternative(addr, ai);
    one_addr.alt_base = {};
    one_addr.stride = one_addr.count = 0;
    auto emit = [&](std::optional<Value> one_value) {
      const std::uint32_t idx = recordOne(element, one_addr, one_value, record);
      if (first == kStart) first = idx;
      if (items) items->push_back(Item{alternative ? Item::PositionAlt : Item::Position, idx});
      alternative = true;
    };
    if (value && value->kind == Value::Const && value->alts) {
      value->forEach([&](std::int64_t vo) {
        Value one_value = *value;
        one_value.off = vo;
        one_value.alts = 0;
        emit(one_value);
      });
    } else {
      emit(value);
    }
   }
  }
  return first;
}

std::uint32_t Analyzer::recordOne(Access a, const Value& addr, std::optional<Value> value, bool record) {
  if (!record) return kStart;
  site_insns_.insert(a.insn);
  if (addr.kind == Value::Const && addr.known >= 2) {
    a.where = Access::Where::FixedPort;
    a.port = std::uint64_t(addr.off) & 0xffff;
  } else if (addr.kind == Value::Base) {
    a.where = Access::Where::BaseOffset;
    a.base = addr.id;
    a.offset = addr.off;
  } else if (addr.kind == Value::Cell && (a.form == Access::Form::PortInsn || a.form == Access::Form::PortString)) {
    const Cell& c = out_.cells[addr.id];
    const Symbol* sym = m_.symbolCovering(c.section, c.offset, STT_OBJECT);
    // Elements of one array of controllers (fdc_state[0], [1]) are one kind of base: key by object.
    std::string name = sym ? sym->name : sectionName(m_, c.section) + "+" + hex(c.offset);
    const std::uint32_t key = sym ? std::uint32_t(sym - m_.symbols.data()) | 0x80000000u : addr.id;
    a.where = Access::Where::BaseOffset;
    a.base = baseFor(DeviceBase::PortCell, -1, key, name, "port base loaded from " + name);
    auto& cells = out_.bases[a.base].cells;
    if (std::find(cells.begin(), cells.end(), addr.id) == cells.end()) cells.push_back(addr.id);
    a.offset = addr.off;
  } else {
    a.where = Access::Where::Unresolved;
    a.why_unresolved = addr.kind == Value::Top ? "address not derived from a constant or a device base"
                       : addr.kind == Value::Stack ? "address is a stack pointer"
                       : addr.kind == Value::GlobalAddr ? "address is a module global, not a device"
                                                        : "address is a value loaded from a global, used as memory";
  }
  if (a.where == Access::Where::FixedPort) {
    bool device = false;
    for (auto [lo, hi] : opt_.device_ports) device |= a.port >= lo && a.port <= hi;
    if (!device) foreign_insns_.insert(a.insn);
    else pinned_insns_.insert(a.insn);
    a.position = device && (a.dir == Dir::Write || polled(a.function, a.insn));
  } else if (a.where == Access::Where::BaseOffset) {
    pinned_insns_.insert(a.insn);
    a.position = a.dir == Dir::Write || polled(a.function, a.insn);
  }
  if (value && value->kind == Value::Const && a.size && value->known >= a.size && value->count == 0) a.value = std::uint64_t(value->off) & maskFor(a.size);
  if (a.repeated) a.value.reset();
  auto key = std::make_tuple(a.insn, int(a.where), a.where == Access::Where::FixedPort ? a.port : std::uint64_t(a.base), a.offset,
                             a.value.value_or(~0ull), a.value.has_value());
  auto [it, inserted] = access_index_.try_emplace(key, std::uint32_t(out_.accesses.size()));
  if (inserted) out_.accesses.push_back(std::move(a));
  return it->second;
}

Value Analyzer::read(const State& s, const Insn& in, const Operand& op, std::uint8_t width, Item* item, std::uint32_t fn, bool record) {
  switch (op.kind) {
    case Operand::Imm: {
      // `add $sym, %reg` / `mov $sym, %reg`: a relocated immediate is the address of a global.
      bool mem_takes_ref = false;
      for (int i = 0; i < in.op_count; ++i)
        if (in.ops[i].kind == Operand::Mem && (in.ops[i].base.rip || in.ops[i].base.gpr == NoReg)) mem_takes_ref = true;
      if (in.ref.kind == Reference::Local && !mem_takes_ref && width >= 4) return Value{Value::GlobalAddr, 8, in.ref.section, in.ref.offset};
      return Value::constant(std::uint64_t(op.imm) & maskFor(width));
    }
    case Operand::Reg: {
      if (op.reg.gpr == NoReg) return Value::top();
      Value v = s.reg[op.reg.gpr];
      if (op.reg.high8) {
        if (v.kind == Value::Const && v.known >= 2 && single(v)) return Value::constant((std::uint64_t(v.off) >> 8) & 0xff);
        return Value::top();
      }
      if (v.kind == Value::Const) {
        if (v.known < width) return Value::top();
        return maskAll(v, maskFor(width));
      }
      if (isSymbolic(v) && width >= 2) return v;
      return Value::top();
    }
    case Operand::Mem: {
      bool indexed = false;
      Value a = address(s, in, op, &indexed);
      if (a.kind == Value::Stack) return single(a) && !indexed ? stackRead(s, a.off, width) : Value::top();
      if (a.kind == Value::GlobalAddr && a.off >= 0 && !indexed && single(a)) {
        if (auto c = parameterDefault(a, width)) return *c;
        if (auto c = readOnlyConstant(a, width)) return *c;
        if (auto p = readOnlyPointer(a, width)) return *p;
      }
      if (a.kind == Value::GlobalAddr && indexed && single(a))
        if (auto t = readOnlyTableValues(a, width)) return *t;
      if (a.kind == Value::GlobalAddr && a.off >= 0) {
        const std::uint32_t c = cellOf(a.id, std::uint64_t(a.off));
        if (out_.cells[c].base) return Value{Value::Base, 8, *out_.cells[c].base, 0};
        if (out_.cells[c].alias && width >= 2) return *out_.cells[c].alias;
        if (width >= 2) return Value{Value::Cell, 8, c, 0};
        return Value::top();
      }
      noteDereference(a);
      if (a.kind == Value::Base && out_.bases[a.id].memory()) {
        Access acc;
        acc.form = Access::Form::MmioMov;
        acc.insn = in.addr;
        acc.function = fn;
        acc.dir = Dir::Read;
        acc.size = width;
        acc.offset_exact = !indexed;
        std::uint32_t idx = recordAccess(acc, a, std::nullopt, record, nullptr);
        if (item) *item = Item{Item::Position, idx};
        return Value::top();
      }
      const bool plain_field = op.base.gpr != NoReg && !op.base.rip && op.index.gpr == NoReg && in.ref.kind == Reference::None;
      auto fieldValue = [&] {
        if (!plain_field || width < 2 || a.kind == Value::Base) return Value::top();
        Value v{Value::FieldVal, 8, 0, 0};
        v.field = op.disp;
        return v;
      };
      if (a.kind == Value::IomapTable) {
        if (auto bars = iomapTableLoad(a, indexed, width, in.addr)) return *bars;
        return Value::top();
      }
      if (a.kind == Value::PciDev) {
        if (auto bar = resourceBar(a, indexed, width)) {
          return Value{Value::Base, 8, baseFor(DeviceBase::PciResource, *bar, 0, "pci_resource_start(bar " + std::to_string(*bar) + ")",
                                               out_.where(in.addr)), 0};
        }
        return fieldValue();
      }
      if (a.kind == Value::Ptr && !indexed && single(a)) {
        auto it = ptr_holds_.find({a.id, a.off});
        if (it != ptr_holds_.end() && width == 8) {
          // As for a Holder: the displacement used here from the driver's main structure (vmxnet3's
          // adapter->hw_addr1 at +0x74b0 of netdev_priv) also reaches the base where that structure
          // arrives untyped (ndo_open's callees). Small displacements are every structure's first fields.
          if (record && plain_field && op.disp >= 0x40) learnField(op.disp, Value{Value::Base, 8, it->second, 0});
          return Value{Value::Base, 8, it->second, 0};
        }
        if (width == 8 && ptr_holds_pdev_.count({a.id, a.off})) return Value{Value::PciDev, 8, 0, 0};
        if (plain_field)
          if (auto held = fieldHolds(op.disp, width)) return *held;
        if (auto held = fieldFromStructureStart(a, op, indexed, width)) {
          if (record && width == 8 && op.disp >= 0x40) learnField(op.disp, *held);
          return *held;
        }
        return fieldValue();
      }
      if (a.kind == Value::Holder && !indexed && single(a)) {
        if (a.off == 0 && width == 8) {
          // The displacement the driver uses to reach the base from its main structure also reaches it
          // where that structure arrives untyped (a callback's argument). Small displacements are too
          // common to generalise (hw->hw_addr at 0 is every first field).
          if (record && plain_field && op.disp >= 0x40) learnField(op.disp, Value{Value::Base, 8, a.id, 0});
          return Value{Value::Base, 8, a.id, 0};
        }
        if (plain_field && op.disp >= 0x40)
          if (auto held = siblingField(a, op, width)) {
            if (record && width == 8) learnField(op.disp, *held);  // as above: this displacement reaches it too
            return *held;
          }
        return fieldValue();
      }
      if (plain_field)
        if (auto held = fieldHolds(op.disp, width)) return *held;
      if (auto held = fieldFromStructureStart(a, op, indexed, width)) {
        if (record && width == 8 && op.disp >= 0x40) learnField(op.disp, *held);
        return *held;
      }
      return fieldValue();
    }
    default: return Value::top();
  }
}

void Analyzer::writeReg(State& s, const RegRef& r, std::uint8_t width, Value v) {
  if (r.gpr == NoReg) return;
  Value& dst = s.reg[r.gpr];
  if (r.high8) {
    dst = Value::top();
    return;
  }
  if (width >= 4) {
    if (v.kind == Value::Const && width == 4) v = v.known >= 4 ? maskAll(v, 0xffffffffu) : Value::top();
    if (v.kind == Value::Const && width == 4) v.known = 8;
    dst = v;
    return;
  }
  // 8/16-bit writes keep the upper bytes of the register.
  if (v.kind == Value::Const && v.known >= width && !(single(v) && single(dst))) {
    dst = maskAll(v, maskFor(width));  // only the written low bytes are known
    dst.known = width;
  } else if (v.kind == Value::Const && v.known >= width && single(v) && single(dst)) {
    if (dst.kind == Value::Const)
      dst = Value::constant((std::uint64_t(dst.off) & ~maskFor(width)) | (std::uint64_t(v.off) & maskFor(width)), dst.known);
    else
      dst = Value::constant(std::uint64_t(v.off) & maskFor(width), width);
  } else {
    dst = Value::top();
  }
}

void Analyzer::store(State& s, const Insn& in, const Operand& dst, const Value& v, std::vector<Item>* items, std::uint32_t fn, bool record) {
  bool indexed = false;
  Value a = address(s, in, dst, &indexed);
  if (a.kind == Value::Stack) {
    if (!indexed && single(a)) stackWrite(s, a.off, dst.size, v);
    return;
  }
  if (a.kind == Value::GlobalAddr && a.off >= 0) {
    if (!record) return;
    Cell& c = out_.cells[cellOf(a.id, std::uint64_t(a.off))];
    if (v.kind == Value::Const && v.known >= std::min<std::uint8_t>(dst.size, 8))
      v.forEach([&](std::int64_t x) { c.constants.insert(std::uint64_t(x) & maskFor(dst.size)); });
    if (v.kind == Value::Base && dst.size == 8) c.base = v.id;
    // A global that copies another global's port base (floppy's virtual_dma_port = fdc base).
    if (v.kind == Value::Cell && dst.size >= 2 && !c.alias_conflict) {
      if (c.alias && !(*c.alias == v)) c.alias.reset(), c.alias_conflict = true;
      else c.alias = v;
    }
    return;
  }
  noteDereference(a);
  if (a.kind == Value::Base && out_.bases[a.id].memory()) {
    Access acc;
    acc.form = Access::Form::MmioMov;
    acc.insn = in.addr;
    acc.function = fn;
    acc.dir = Dir::Write;
    acc.size = dst.size;
    acc.offset_exact = !indexed;
    recordAccess(acc, a, v, record, items);
    return;
  }
  if (record && v.kind == Value::Const && v.known >= dst.size && dst.size >= 2 && dst.base.gpr != NoReg && !dst.base.rip &&
      dst.index.gpr == NoReg && in.ref.kind == Reference::None) {
    auto& consts = field_consts_[dst.disp];
    if (consts.size() < 16) v.forEach([&](std::int64_t x) { consts.insert(std::uint64_t(x) & maskFor(dst.size)); });
  }
  if (v.kind == Value::PciDev && single(v) && v.off == 0 && dst.size == 8 && dst.base.gpr != NoReg && !dst.base.rip &&
      dst.index.gpr == NoReg) {
    const Value& holder = s.reg[dst.base.gpr];
    if (holder.kind == Value::Ptr && single(holder)) ptr_holds_pdev_.emplace(holder.id, holder.off + dst.disp);
    return;
  }
  if (v.kind == Value::IomapTable && dst.size == 8 && dst.base.gpr != NoReg && !dst.base.rip && dst.index.gpr == NoReg) {
    if (record || learning_paths_) learnField(dst.disp, v);  // `host->iomap = pcim_iomap_table(pdev)`, reloaded in a later pass of a loop
    return;
  }
  if (v.kind == Value::Base && dst.size == 8 && dst.base.gpr != NoReg && !dst.base.rip && dst.index.gpr == NoReg) {
    // Displacement 0 is every structure's first field and every list_del's `prev->next = next`: a base
    // seen stored there (through a mistaken pointer) would make each first-field load a base.
    if ((record || learning_paths_) && dst.disp != 0) learnField(dst.disp, v);
    // From here on the pointer is known to hold the base at +disp (and so is what it is passed to).
    Value& holder = s.reg[dst.base.gpr];
    if (mixedBases(v)) return;
    if (holder.kind == Value::Top) holder = Value{Value::Holder, 8, v.id, dst.disp};
    if (holder.kind == Value::Ptr && single(holder)) ptr_holds_.try_emplace({holder.id, holder.off + dst.disp}, v.id);
  }
}

void Analyzer::typeCallbackParameter(std::string_view api, const std::array<Value, 6>& args) {
  // {API, argument holding the pointer, argument holding the function, the function's parameter}.
  struct Registration {
    std::string_view api;
    int pointer, callback, parameter;
  };
  static constexpr Registration kRegistrations[] = {
      {"netif_napi_add_weight", 1, 2, 0},     // poll(napi, budget)
      {"netif_napi_add_tx_weight", 1, 2, 0},  // poll(napi, budget)
      {"init_timer_key", 0, 1, 0},            // timer_setup(): fn(timer)
      {"tasklet_setup", 0, 1, 0},             // callback(tasklet)
  };
  for (const Registration& r : kRegistrations) {
    if (api != r.api) continue;
    const Value& fnptr = args[std::size_t(r.callback)];
    if (fnptr.kind != Value::GlobalAddr || !single(fnptr) || fnptr.off < 0 || fnptr.id >= m_.sections.size() ||
        !m_.sections[fnptr.id].executable())
      return;
    const int callee = d_.functionAt(codeAddr(fnptr.id, std::uint64_t(fnptr.off)));
    auto holder = nearestHolder(args[std::size_t(r.pointer)]);
    if (callee < 0 || !holder) return;
    param_holder_.try_emplace({std::uint32_t(callee), r.parameter}, std::pair{holder->id, holder->off});
  }
}

void Analyzer::call(State& s, const Insn& in, std::uint32_t fn, std::vector<Item>* items, bool record, bool tail, int known_callee) {
  (void)tail;
  std::array<Value, 6> args;
  for (int i = 0; i < 6; ++i) args[i] = s.reg[kArgRegs[i]];
  if (in.ref.kind == Reference::External && known_callee < 0) {
    const std::string& name = m_.symbols[in.ref.symbol].name;
    if (name == "__fentry__") return;
    // Registering a network device runs the driver's own callbacks before the call returns (the
    // netlink notification reads ndo_get_stats64): as at an indirect call, what the driver did before
    // and does after are not one sequence.
    if ((name == "register_netdev" || name == "register_netdevice") && items && record) items->push_back(Item{Item::Break, 0});
    auto io = [&](Access::Form form, Dir dir, std::uint8_t size, const Value& addr, std::optional<Value> value, bool rep) {
      Access acc;
      acc.form = form;
      acc.insn = in.addr;
      acc.function = fn;
      acc.dir = dir;
      acc.size = size;
      acc.repeated = rep;
      if (addr.kind == Value::Base)
        for (int i = -1; i < addr.alts; ++i) out_.bases[baseOfAlternative(addr, i)].through_ioread = true;
      recordAccess(acc, addr, value, record, items);
    };
    auto sizeOf = [&](std::string_view rest) -> std::uint8_t {
      if (rest.starts_with("8")) return 1;
      if (rest.starts_with("16")) return 2;
      if (rest.starts_with("32")) return 4;
      if (rest.starts_with("64")) return 8;
      return 0;
    };
    std::string_view n = name;
    bool handled = false;
    if (n.starts_with("ioread") || n.starts_with("iowrite")) {
      const bool write = n.starts_with("iowrite");
      std::string_view rest = n.substr(write ? 7 : 6);
      const std::uint8_t size = sizeOf(rest);
      const bool rep = rest.ends_with("_rep");
      if (size) {
        handled = true;
        if (write && !rep) io(Access::Form::IowriteCall, Dir::Write, size, args[1], args[0], false);
        else io(write ? Access::Form::IowriteRepCall : (rep ? Access::Form::IoreadRepCall : Access::Form::IoreadCall),
                write ? Dir::Write : Dir::Read, size, args[0], std::nullopt, rep);
      }
    }
    clobber(s);
    if (handled) return;
    auto barOf = [&](const Value& v) { return v.kind == Value::Const && v.known == 8 ? int(v.off) : -1; };
    if (n == "pci_iomap" || n == "pcim_iomap" || n == "pci_iomap_range" || n == "pci_iomap_wc" || n == "pci_iomap_wc_range") {
      const int bar = barOf(args[1]);
      s.reg[RAX] = Value{Value::Base, 8, baseFor(DeviceBase::PciIomap, bar, 0, name + "(bar " + std::to_string(bar) + ")", out_.where(in.addr)), 0};
    } else if (n == "pcim_iomap_table") {
      s.reg[RAX] = Value{Value::IomapTable, 8, 0, 0};
    } else if (n == "pci_ioremap_bar" || n == "pci_ioremap_wc_bar") {
      const int bar = barOf(args[1]);
      s.reg[RAX] = Value{Value::Base, 8, baseFor(DeviceBase::PciIoremapBar, bar, 0, name + "(bar " + std::to_string(bar) + ")", out_.where(in.addr)), 0};
    } else if (n == "ioremap" || n == "ioremap_uc" || n == "ioremap_wc" || n == "ioremap_cache" || n == "devm_ioremap" ||
               n == "devm_ioremap_uc" || n == "devm_ioremap_wc" || n == "ioremap_nocache") {
      // ioremap(pci_resource_start(pdev, bar), len) (8139cp's cp_init_one) maps that BAR.
      const Value& phys = args[0];
      if (phys.kind == Value::Base && single(phys) && phys.off == 0 && out_.bases[phys.id].kind == DeviceBase::PciResource) {
        const int bar = out_.bases[phys.id].bar;
        s.reg[RAX] = Value{Value::Base, 8, baseFor(DeviceBase::PciIoremapBar, bar, 0, name + "(bar " + std::to_string(bar) + ")", out_.where(in.addr)), 0};
      } else {
        s.reg[RAX] = Value{Value::Base, 8, baseFor(DeviceBase::Ioremap, -1, 0, name, out_.where(in.addr)), 0};
      }
    } else {
      typeCallbackParameter(n, args);
      // Anything else an external call returns may be the driver's private structure (alloc_etherdev…).
      auto [it, inserted] = ptr_ids_.try_emplace(in.addr, std::uint32_t(ptr_ids_.size()));
      s.reg[RAX] = Value{Value::Ptr, 8, it->second, 0};
    }
    return;
  }
  int callee = known_callee;
  if (callee < 0 && in.target) callee = d_.functionAt(in.target);
  if (callee < 0 || learning_paths_) {
    clobber(s);
    return;
  }
  if (depth_ > 48) {
    clobber(s);
    return;
  }
  ++depth_;
  const std::uint32_t sid = analyze(std::uint32_t(callee), args);
  --depth_;
  clobber(s);
  s.reg[RAX] = summaries_[sid].ret;
  if (items && record) items->push_back(Item{Item::Call, sid});
}

void Analyzer::step(State& s, const Insn& in, std::uint32_t fn, std::vector<Item>* items, bool record) {
  const Operand* o = in.ops;
  auto w0 = [&] { return o[0].size ? o[0].size : std::uint8_t(8); };
  switch (in.flow) {
    case Flow::Call:
      call(s, in, fn, items, record, false);
      return;
    case Flow::IndirectCall: {
      const bool paravirt = in.ref.kind == Reference::External && m_.symbols[in.ref.symbol].name == "pv_ops";
      // A pointer the code has just loaded with a known function (pcnet32_probe1 calling through
      // &pcnet32_wio's read_csr before it keeps the table): a direct call in disguise.
      if (auto callee = knownIndirectTarget(s, in); callee && !paravirt) {
        call(s, in, fn, items, record, false, *callee);
        return;
      }
      clobber(s);
      if (!paravirt && items && record) items->push_back(Item{Item::Break, 0});
      return;
    }
    case Flow::Jump:
      if (in.ref.kind == Reference::External || (in.target && d_.functionCovering(in.target) != int(fn))) {
        // A tail call (to another function or a cold fragment): the callee's effects, then return.
        call(s, in, fn, items, record, true);
        if (items && record) items->push_back(Item{Item::Return, 0});
      }
      return;
    case Flow::IndirectJump:
      clobber(s);
      if (items && record) {
        items->push_back(Item{Item::Break, 0});
        items->push_back(Item{Item::Return, 0});
      }
      return;
    case Flow::Return:
      if (items && record) items->push_back(Item{Item::Return, 0});
      return;
    default: break;
  }
  switch (in.id) {
    case X86_INS_MOV:
    case X86_INS_MOVABS:
    case X86_INS_MOVZX:
    case X86_INS_MOVSX:
    case X86_INS_MOVSXD: {
      if (in.op_count != 2) break;
      const bool extend = in.id == X86_INS_MOVZX || in.id == X86_INS_MOVSX || in.id == X86_INS_MOVSXD;
      Item item{Item::Return, kStart};
      Value v = read(s, in, o[1], o[1].size, &item, fn, record);
      if (item.index != kStart && items && record) items->push_back(item);
      if (o[0].kind == Operand::Reg) {
        if (extend && rangeFitsSigned(v, o[1].size)) {
          // movslq/movzbl of a loop counter: the same values
        } else if (extend && v.kind == Value::Const && v.alts && v.count == 0 && v.known >= o[1].size) {
          // Each alternative extended (a byte picked from a table of register offsets).
          Value r = v;
          r.known = 8;
          auto ext = [&](std::int64_t x0) {
            std::uint64_t x = std::uint64_t(x0) & maskFor(o[1].size);
            if (in.id != X86_INS_MOVZX && (x >> (o[1].size * 8 - 1)) & 1) x |= ~maskFor(o[1].size);
            return std::int64_t(x & maskFor(o[0].size));
          };
          r.off = ext(v.off);
          for (int i = 0; i < v.alts; ++i) r.alt[std::size_t(i)] = ext(v.alt[std::size_t(i)]);
          v = r;
        } else if (extend && v.kind == Value::Const) {
          std::uint64_t x = std::uint64_t(v.off) & maskFor(o[1].size);
          if (in.id != X86_INS_MOVZX && (x >> (o[1].size * 8 - 1)) & 1) x |= ~maskFor(o[1].size);
          v = Value::constant(x & maskFor(o[0].size));
        } else if (extend && !(isSymbolic(v) && o[1].size >= (in.id == X86_INS_MOVZX ? 2 : 4))) {
          v = in.id == X86_INS_MOVSXD && isSymbolic(v) ? v : Value::top();
        }
        writeReg(s, o[0].reg, o[0].size, v);
      } else if (o[0].kind == Operand::Mem) {
        store(s, in, o[0], v, items, fn, record);
      }
      return;
    }
    case X86_INS_LEA: {
      bool indexed = false;
      Value a = address(s, in, o[1], &indexed);
      if (indexed && a.kind != Value::GlobalAddr) a = Value::top();
      if ((a.kind == Value::Top || (a.kind == Value::Ptr && !asHolder(a))) && o[1].base.gpr != NoReg && !o[1].base.rip && o[1].index.gpr == NoReg && in.ref.kind == Reference::None &&
          (s.reg[o[1].base.gpr].kind == Value::Top || s.reg[o[1].base.gpr].kind == Value::Ptr)) {
        // `lea 0x488(%rbx),%rdi` where loads from 0x488 give the base: a pointer to the field holding it
        // (e1000_configure passes &adapter->hw to e1000_config_collision_dist).
        auto it = field_base_.find(o[1].disp);
        if (it != field_base_.end() && it->second.kind == Value::Base && !mixedBases(it->second))
          a = Value{Value::Holder, 8, it->second.id, 0};
      }
      writeReg(s, o[0].reg, o[0].size, a);
      return;
    }
    case X86_INS_PUSH: {
      Value v = read(s, in, o[0], 8, nullptr, fn, record);
      s.reg[RSP] = addOffset(s.reg[RSP], -8);
      if (s.reg[RSP].kind == Value::Stack) s.setSlot(s.reg[RSP].off, v);
      return;
    }
    case X86_INS_POP: {
      Value v = s.reg[RSP].kind == Value::Stack ? s.slot(s.reg[RSP].off) : Value::top();
      s.reg[RSP] = addOffset(s.reg[RSP], 8);
      if (o[0].kind == Operand::Reg) writeReg(s, o[0].reg, 8, v);
      return;
    }
    case X86_INS_XCHG: {
      if (o[0].kind == Operand::Reg && o[1].kind == Operand::Reg) {
        Value a = read(s, in, o[0], o[0].size, nullptr, fn, record), b = read(s, in, o[1], o[1].size, nullptr, fn, record);
        writeReg(s, o[0].reg, o[0].size, b);
        writeReg(s, o[1].reg, o[1].size, a);
        return;
      }
      break;
    }
    case X86_INS_ADD:
    case X86_INS_SUB:
    case X86_INS_AND:
    case X86_INS_OR:
    case X86_INS_XOR:
    case X86_INS_SHL:
    case X86_INS_SHR:
    case X86_INS_SAR:
    case X86_INS_IMUL: {
      if (o[0].kind != Operand::Reg) break;
      const std::uint8_t w = w0();
      if ((in.id == X86_INS_XOR || in.id == X86_INS_SUB) && in.op_count == 2 && o[1].kind == Operand::Reg && o[1].reg.gpr == o[0].reg.gpr &&
          !o[1].reg.high8 && !o[0].reg.high8) {
        writeReg(s, o[0].reg, w, Value::constant(0));
        return;
      }
      Value a, b;
      if (in.id == X86_INS_IMUL && in.op_count == 3) {
        a = read(s, in, o[1], w, nullptr, fn, record);
        b = read(s, in, o[2], w, nullptr, fn, record);
      } else if (in.op_count == 2) {
        a = read(s, in, o[0], w, nullptr, fn, record);
        b = read(s, in, o[1], o[1].size ? o[1].size : w, nullptr, fn, record);
      } else if (in.op_count == 1 && (in.id == X86_INS_SHL || in.id == X86_INS_SHR || in.id == X86_INS_SAR)) {
        a = read(s, in, o[0], w, nullptr, fn, record);
        b = Value::constant(1);
      } else {
        if (in.id == X86_INS_IMUL) s.reg[RDX] = Value::top(), s.reg[RAX] = Value::top();
        writeReg(s, o[0].reg, w, Value::top());
        return;
      }
      Value r = Value::top();
      const bool bc = b.kind == Value::Const && b.known >= w && single(b);
      if (auto ranged = mixedBases(a) || mixedBases(b) ? std::nullopt : rangeArithmetic(in.id, a, b, w)) {
        r = *ranged;
      } else if (a.kind == Value::Const && a.known >= w && bc && !single(a)) {
        // Each alternative through the operation (branchless selects: sbb; and; add).
        Value acc;
        bool any = false;
        a.forEach([&](std::int64_t xa) {
          Value one = Value::constant(std::uint64_t(xa));
          const auto z = foldAddLogic(in.id, std::uint64_t(xa), std::uint64_t(b.off));
          if (!z) any = true;  // shifts/multiplies of alternatives: give up below
          one = Value::constant((z ? *z : std::uint64_t(xa)) & maskFor(w));
          acc = acc.kind == Value::Top && !any ? one : join(acc, one);
        });
        r = any ? Value::top() : acc;
      } else if (a.kind == Value::Const && a.known >= w && bc && single(a)) {
        const std::uint64_t x = std::uint64_t(a.off), y = std::uint64_t(b.off);
        std::uint64_t z = foldAddLogic(in.id, x, y).value_or(0);
        switch (in.id) {
          case X86_INS_SHL: z = (y & 63) ? x << (y & 63) : x; break;
          case X86_INS_SHR: z = (x & maskFor(w)) >> (y & 63); break;
          case X86_INS_SAR: z = std::uint64_t(std::int64_t(x << (64 - w * 8)) >> (64 - w * 8) >> (y & 63)); break;
          case X86_INS_IMUL: z = x * y; break;
        }
        r = Value::constant(z & maskFor(w));
      } else if (in.id == X86_INS_ADD && bc && isSymbolic(a)) {
        r = addOffset(a, std::int64_t(w == 8 ? std::uint64_t(b.off) : std::uint64_t(std::int64_t(std::int32_t(std::uint32_t(b.off))))));
      } else if (in.id == X86_INS_ADD && a.kind == Value::Const && a.known >= w && single(a) && isSymbolic(b)) {
        r = addOffset(b, a.off);
      } else if (in.id == X86_INS_SUB && single(a) && a.kind == Value::Base && a.field == Value::kNoField && pointerPos(b)) {
        // base - &table[0]: adding &table[i] back later gives base + i.
        r = a;
        r.off = a.off - pointerPos(b)->pos;
        r.field = pointerPos(b)->tag;
      } else if (in.id == X86_INS_ADD && single(a) && single(b) &&
                 ((a.kind == Value::Base && pointerPos(b) && a.field == pointerPos(b)->tag) ||
                  (b.kind == Value::Base && pointerPos(a) && b.field == pointerPos(a)->tag))) {
        const Value& base = a.kind == Value::Base ? a : b;
        const Value& ptr = a.kind == Value::Base ? b : a;
        r = base;
        r.off = base.off + pointerPos(ptr)->pos;
        r.field = Value::kNoField;
      } else if (in.id == X86_INS_SUB && bc && isSymbolic(a)) {
        r = addOffset(a, -std::int64_t(b.off));
      } else if (in.id == X86_INS_ADD && w == 8 && single(a) && single(b) &&
                 ((a.kind == Value::Base && a.field == Value::kNoField && b.kind == Value::FieldVal) ||
                  (b.kind == Value::Base && b.field == Value::kNoField && a.kind == Value::FieldVal))) {
        const Value& base = a.kind == Value::Base ? a : b;
        const Value& fv = a.kind == Value::Base ? b : a;
        r = base;
        r.off = base.off + fv.off;
        r.field = fv.field;
      } else if (in.id == X86_INS_ADD && w == 8 && ((a.kind == Value::GlobalAddr && b.kind == Value::Top) || (b.kind == Value::GlobalAddr && a.kind == Value::Top))) {
        // array + index*size: keep the array (its first element stands for every element).
        r = a.kind == Value::GlobalAddr ? a : b;
      } else if (in.id == X86_INS_AND && bc && (std::uint64_t(b.off) & maskFor(w)) == maskFor(w)) {
        r = a;
      } else if (in.id == X86_INS_OR && bc && w == 8 && a.kind == Value::Base && a.count == 0 && a.field == Value::kNoField &&
                 std::uint64_t(b.off) < 4 && !out_.bases[a.id].memory()) {
        // PCI I/O BARs are 4-byte aligned, so `base | 2` is base + 2 (libata's ctl_addr = iomap[1] | ATA_PCI_CTL_OFS).
        r = addOffset(a, b.off);
      }
      if (!isSymbolic(r) || w >= 4) writeReg(s, o[0].reg, w, r);
      else writeReg(s, o[0].reg, w, Value::top());
      return;
    }
    case X86_INS_INC:
    case X86_INS_DEC:
    case X86_INS_NEG:
    case X86_INS_NOT: {
      if (o[0].kind != Operand::Reg) break;
      const std::uint8_t w = w0();
      Value a = read(s, in, o[0], w, nullptr, fn, record);
      Value r = Value::top();
      if (a.kind == Value::Const && a.known >= w && single(a)) {
        std::uint64_t x = std::uint64_t(a.off);
        x = in.id == X86_INS_INC ? x + 1 : in.id == X86_INS_DEC ? x - 1 : in.id == X86_INS_NEG ? 0 - x : ~x;
        r = Value::constant(x & maskFor(w));
      } else if (isSymbolic(a) && (in.id == X86_INS_INC || in.id == X86_INS_DEC)) {
        r = addOffset(a, in.id == X86_INS_INC ? 1 : -1);
      }
      writeReg(s, o[0].reg, w, r);
      return;
    }
    case X86_INS_OUT:
    case X86_INS_IN: {
      const bool out = in.id == X86_INS_OUT;
      const Operand& port = out ? o[0] : o[1];
      const Operand& data = out ? o[1] : o[0];
      Value addr = port.kind == Operand::Imm ? Value::constant(std::uint64_t(port.imm) & 0xff) : read(s, in, port, 2, nullptr, fn, record);
      Access acc;
      acc.form = Access::Form::PortInsn;
      acc.insn = in.addr;
      acc.function = fn;
      acc.dir = out ? Dir::Write : Dir::Read;
      acc.size = data.size;
      std::optional<Value> v;
      if (out) v = read(s, in, data, data.size, nullptr, fn, record);
      recordAccess(acc, addr, v, record, items);
      if (!out) writeReg(s, data.reg, data.size, Value::top());
      return;
    }
    case X86_INS_INSB:
    case X86_INS_INSW:
    case X86_INS_INSD:
    case X86_INS_OUTSB:
    case X86_INS_OUTSW:
    case X86_INS_OUTSD: {
      const bool out = in.id == X86_INS_OUTSB || in.id == X86_INS_OUTSW || in.id == X86_INS_OUTSD;
      Access acc;
      acc.form = Access::Form::PortString;
      acc.insn = in.addr;
      acc.function = fn;
      acc.dir = out ? Dir::Write : Dir::Read;
      acc.size = (in.id == X86_INS_INSB || in.id == X86_INS_OUTSB) ? 1 : (in.id == X86_INS_INSW || in.id == X86_INS_OUTSW) ? 2 : 4;
      acc.repeated = in.rep;
      Value addr = s.reg[RDX];
      if (addr.kind == Value::Const && addr.known < 2) addr = Value::top();
      recordAccess(acc, addr, std::nullopt, record, items);
      s.reg[RDI] = s.reg[RSI] = s.reg[RCX] = Value::top();
      return;
    }
    case X86_INS_TEST:
      noteResourceFlagsTest(s, in);
      return;
    case X86_INS_SETE: case X86_INS_SETNE: case X86_INS_SETA: case X86_INS_SETAE: case X86_INS_SETB: case X86_INS_SETBE:
    case X86_INS_SETG: case X86_INS_SETGE: case X86_INS_SETL: case X86_INS_SETLE: case X86_INS_SETO: case X86_INS_SETNO:
    case X86_INS_SETP: case X86_INS_SETNP: case X86_INS_SETS: case X86_INS_SETNS:
      // A byte of 0 or 1; exact when the flags come from a test of known operands.
      if (in.op_count == 1 && o[0].kind == Operand::Reg) {
        if (o[0].reg.high8) {
          writeReg(s, o[0].reg, 1, Value::top());
        } else if (auto taken = setccOutcome(in, fn, s)) {
          writeReg(s, o[0].reg, 1, Value::constant(*taken ? 1 : 0, 1));
        } else {
          writeReg(s, o[0].reg, 1, join(Value::constant(0), Value::constant(1)));
        }
        return;
      }
      break;
    case X86_INS_CMP:
    case X86_INS_BT:
    case X86_INS_NOP:
    case X86_INS_PREFETCHT0:
    case X86_INS_CLFLUSH:
    case X86_INS_MFENCE:
    case X86_INS_LFENCE:
    case X86_INS_SFENCE:
    case X86_INS_PAUSE:
    case X86_INS_ENDBR64:
      return;
    case X86_INS_SBB:
      if (in.op_count == 2 && o[0].kind == Operand::Reg && o[1].kind == Operand::Reg && o[0].reg.gpr == o[1].reg.gpr &&
          !o[0].reg.high8) {
        // sbb %r,%r: 0 or all ones, by the carry flag.
        writeReg(s, o[0].reg, w0(), join(Value::constant(0), Value::constant(maskFor(w0()))));
        return;
      }
      break;
    case X86_INS_CDQ:
    case X86_INS_CQO:
    case X86_INS_CWD:
      s.reg[RDX] = Value::top();
      return;
    case X86_INS_CDQE:
      if (rangeFitsSigned(s.reg[RAX], 4)) return;  // cltq of a loop counter
      s.reg[RAX] = Value::top();
      return;
    case X86_INS_CWDE:
    case X86_INS_CBW:
      s.reg[RAX] = Value::top();
      return;
    default: break;
  }
  // Anything else: whatever it writes becomes unknown. Implicit register effects included.
  switch (in.id) {
    case X86_INS_MUL:
    case X86_INS_DIV:
    case X86_INS_IDIV:
    case X86_INS_CMPXCHG:
    case X86_INS_RDTSC:
    case X86_INS_RDMSR:
    case X86_INS_XADD:
      // rdx:rax only: a division must not lose the callee-saved registers holding the driver's
      // structure (e1000_watchdog's ITR computation before its ICS write).
      s.reg[RAX] = s.reg[RDX] = Value::top();
      break;
    case X86_INS_RDTSCP:
    case X86_INS_CPUID:
      s.reg[RAX] = s.reg[RDX] = s.reg[RCX] = s.reg[RBX] = Value::top();
      break;
    case X86_INS_STOSB: case X86_INS_STOSW: case X86_INS_STOSD: case X86_INS_STOSQ:
    case X86_INS_MOVSB: case X86_INS_MOVSW: case X86_INS_MOVSD: case X86_INS_MOVSQ:
    case X86_INS_LODSB: case X86_INS_LODSW: case X86_INS_LODSD: case X86_INS_LODSQ:
    case X86_INS_SCASB: case X86_INS_SCASW: case X86_INS_SCASD: case X86_INS_SCASQ:
    case X86_INS_CMPSB: case X86_INS_CMPSW: case X86_INS_CMPSD: case X86_INS_CMPSQ:
      s.reg[RDI] = s.reg[RSI] = s.reg[RCX] = s.reg[RAX] = Value::top();
      break;
    default: break;
  }
  if (in.op_count >= 1 && o[0].kind == Operand::Reg) writeReg(s, o[0].reg, 8, Value::top());
  if (in.id == X86_INS_XCHG && in.op_count == 2 && o[1].kind == Operand::Reg) writeReg(s, o[1].reg, 8, Value::top());
}

std::uint32_t Analyzer::analyze(std::uint32_t fn, std::array<Value, 6> args) {
  // The caller's loop context survives its calls.
  struct KeepInductions {
    const std::vector<Induction>*& ref;
    const std::vector<Induction>* saved;
    ~KeepInductions() { ref = saved; }
  } keep{cur_inductions_, cur_inductions_};
  for (auto& a : args)
    if (a.kind == Value::FieldVal) a = Value::top();  // keeps the number of contexts down
  // Parameter types: a parameter once seen pointing at the structure that holds a base always does.
  for (int i = 0; i < 6; ++i) {
    const Value& arg = args[std::size_t(i)];
    if (arg.kind == Value::Base && single(arg) && arg.off == 0 && arg.field == Value::kNoField && !out_.bases[arg.id].memory() &&
        !param_base_conflict_.count({fn, i})) {
      auto [it, inserted] = param_base_.try_emplace({fn, i}, arg.id);
      if (!inserted && it->second != arg.id) param_base_.erase(it), param_base_conflict_.insert({fn, i});
    }
    if (auto h = asHolder(args[std::size_t(i)])) {
      param_holder_.try_emplace({fn, i}, std::pair{h->id, h->off});
      args[std::size_t(i)] = *h;
    } else if (args[std::size_t(i)].kind == Value::Top || args[std::size_t(i)].kind == Value::Ptr) {
      // A pointer identity only matters where it was made; passing it on would multiply contexts.
      const Value passed = args[std::size_t(i)];
      args[std::size_t(i)] = Value::top();
      auto it = param_holder_.find({fn, i});
      if (it != param_holder_.end()) {
        args[std::size_t(i)] = Value{Value::Holder, 8, it->second.first, it->second.second};
        // The caller's pointer is the structure this parameter points to: it holds the base at the same
        // place (e1000_watchdog's container_of(work) passed to e1000_has_link(adapter)).
        if (passed.kind == Value::Ptr && single(passed))
          ptr_holds_.try_emplace({passed.id, passed.off + it->second.second}, it->second.first);
      }
      else if (auto b = param_base_.find({fn, i}); b != param_base_.end()) args[std::size_t(i)] = Value{Value::Base, 8, b->second, 0};
    }
  }
  if (contexts_per_function_[fn] >= opt_.max_contexts_per_function) args.fill(Value::top());
  ContextKey key{fn, args};
  if (auto it = memo_.find(key); it != memo_.end()) return it->second;
  const std::uint32_t sid = std::uint32_t(summaries_.size());
  memo_.emplace(key, sid);
  summaries_.emplace_back();
  summaries_[sid].last = {kStart};  // while in progress (recursion): transparent
  ++contexts_per_function_[fn];
  const Function& f = d_.functions()[fn];
  const std::size_t nb = f.blocks.size();
  if (nb == 0) {
    summaries_[sid].done = true;
    return sid;
  }
  // 1. Values: forward fixpoint over the CFG.
  ScratchLease lease(*this, nb);
  std::vector<State>& in = lease.scratch.in;
  std::vector<State>& out_states = lease.scratch.out;
  in[0].reg = {};
  in[0].reachable = true;
  in[0].reg[RSP] = Value{Value::Stack, 8, 0, 0};
  for (int i = 0; i < 6; ++i) {
    in[0].reg[kArgRegs[i]] = args[i];
    // An unknown parameter still has an identity, so that what a callee tells about it (a structure
    // holding the base at some field) is found again through this function's other uses of it.
    if (args[i].kind == Value::Top) {
      auto [it, inserted] = ptr_ids_.try_emplace(f.insns.empty() ? 0 : f.insns[0].addr + std::uint64_t(i) + 1, std::uint32_t(ptr_ids_.size()));
      in[0].reg[kArgRegs[i]] = Value{Value::Ptr, 8, it->second, 0};
    }
  }
  const State initial = in[0];
  if (!learning_paths_ && !walked_.count(fn)) {
    bool maps_table = false;
    for (const Insn& x : f.insns)
      maps_table |= x.flow == Flow::Call && x.ref.kind == Reference::External && m_.symbols[x.ref.symbol].name == "pcim_iomap_table";
    if (maps_table) {
      walked_.insert(fn);
      learnStoresAlongPaths(fn, initial);
    }
  }
  std::vector<char> queued(nb, 0);
  std::vector<std::uint32_t> work{0};
  queued[0] = 1;
  std::size_t steps = 0;
  const std::size_t step_limit = nb * 24 + 64;
  const FunctionLoops& value_loops = loopsOf(fn);
  IntoHeaders& into_header = lease.scratch.into_header;  // (header, from) -> latest state
  // Block visits copy states by assignment into out_states and these, whose stack buffers outlive
  // the visit (and the context: they are the scratch of this call depth): a visit allocates only when
  // a stack outgrows every earlier one.
  State& header_entry = lease.scratch.header_entry;
  State& header_back = lease.scratch.header_back;
  while (!work.empty() && steps++ < step_limit) {
    const std::uint32_t b = work.back();
    work.pop_back();
    queued[b] = 0;
    State& s_out = out_states[b];
    s_out = in[b];
    const BasicBlock& bb = f.blocks[b];
    enterBlock(fn, b);
    for (std::uint32_t i = bb.first; i <= bb.last; ++i) step(s_out, f.insns[i], fn, nullptr, false);
    for (std::uint32_t succ : bb.succs) {
      if (value_loops.header_of.empty() || value_loops.header_of[succ] < 0) {
        const std::optional<State> nonzero = nonZeroOnEdge(f, bb, succ, s_out);
        if (in[succ].joinWith(nonzero ? *nonzero : s_out) && !queued[succ]) queued[succ] = 1, work.push_back(succ);
        continue;
      }
      into_header.set(succ, b, s_out);
      for (State* fresh : {&header_entry, &header_back}) fresh->reachable = false, fresh->reg = {}, fresh->stack.clear();
      into_header.forEachInto(succ, [&](std::uint32_t from, const State& st) {
        (value_loops.back_edges.count({from, succ}) ? header_back : header_entry).joinWith(st);
      });
      if (succ == 0) header_entry.joinWith(initial);
      State merged = mergeAtLoopHeader(fn, succ, header_entry, header_back, in[succ]);
      if (!sameState(merged, in[succ])) {
        in[succ] = std::move(merged);
        if (!queued[succ]) queued[succ] = 1, work.push_back(succ);
      }
    }
  }
  // 2. Items per block from the converged states (records accesses and stores).
  std::vector<std::vector<Item>> items(nb);
  Value ret;
  bool ret_set = false;
  std::vector<char> unrolled(nb, 0);
  for (std::uint32_t b = 0; b < nb; ++b) {
    if (!in[b].reachable) continue;
    if (unrollSelfLoop(fn, b, out_states, items[b])) {
      unrolled[b] = 1;
      continue;
    }
    State& s = lease.scratch.item_state;
    s = in[b];
    const BasicBlock& bb = f.blocks[b];
    enterBlock(fn, b);
    for (std::uint32_t i = bb.first; i <= bb.last; ++i) {
      step(s, f.insns[i], fn, &items[b], true);
      if (!items[b].empty() && items[b].back().kind == Item::Return) {
        ret = ret_set ? join(ret, s.reg[RAX]) : s.reg[RAX];
        ret_set = true;
        items[b].back().index = returnsErrno(s.reg[RAX]) ? kErrorReturn : 0;
        break;
      }
    }
    // A block that runs off the end of the function (noreturn call before it) ends the path.
  }
  summaries_[sid].ret = ret_set ? ret : Value::top();
  if (defer_sequences_) {
    deferred_.push_back(DeferredSequences{fn, sid, std::move(items), std::move(unrolled)});
    return sid;
  }
  connectSequences(fn, sid, items, unrolled);
  return sid;
}

void Analyzer::connectSequences(std::uint32_t fn, std::uint32_t sid, const std::vector<std::vector<Item>>& items,
                                const std::vector<char>& unrolled) {
  const Function& f = d_.functions()[fn];
  const std::size_t nb = f.blocks.size();
  const std::size_t step_limit = nb * 24 + 64;
  std::vector<char> queued(nb, 0);
  std::vector<std::uint32_t> work;
  std::size_t steps = 0;
  // 3. Sequences: which positions may be the latest at each block's entry.
  std::vector<std::vector<std::uint32_t>> last_in(nb);
  std::vector<char> seen(nb, 0);
  Summary result;  // result.reached collects with duplicates, made a set at the end
  std::set<std::uint32_t> first, last;
  bool error_passthrough = false;
  auto addAll = [](std::vector<std::uint32_t>& dst, const std::vector<std::uint32_t>& src) {
    bool changed = false;
    for (auto x : src)
      if (std::find(dst.begin(), dst.end(), x) == dst.end()) dst.push_back(x), changed = true;
    return changed;
  };
  const FunctionLoops& fl = loopsOf(fn);
  // Positions that came around a loop's back edge: an edge from one of them is an iteration of that loop.
  using Carried = std::vector<std::pair<std::uint32_t, std::int32_t>>;
  std::vector<Carried> carried_in(nb);
  // Around a loop, an array element is followed by its neighbour: the counter that indexes it moves
  // by one step per iteration (any element after any other would be elements² edges).
  // `carried` can hold every element of an array: it is kept sorted (addCarried) for lookups.
  auto nextElement = [&](std::uint32_t p, std::uint32_t to, const Carried& sorted) {
    const Access &x = out_.accesses[p], &y = out_.accesses[to];
    if (x.insn != y.insn || !x.index_stride || x.index_stride != y.index_stride || x.base != y.base) return true;
    const std::int64_t d = y.offset - x.offset, step = std::int64_t(x.index_stride);
    const bool neighbour = x.index_direction != y.index_direction || x.index_direction == 0 ? d == step || d == -step
                                                                                             : d == step * x.index_direction;
    if (neighbour) return true;
    auto it = std::lower_bound(sorted.begin(), sorted.end(), std::pair<std::uint32_t, std::int32_t>{p, INT32_MIN});
    return it == sorted.end() || it->first != p;  // not around a loop: a straight-line edge
  };
  // A block is revisited each time its entry sets grow, and most of what a connection site then
  // connects it connected on the previous visit. What connecting p to `to` adds (first, break entries,
  // edges, edge loops) is a union that depends only on p, `to` and p's carried loops, so a revisit
  // connects only the p that are new at the site or whose carried loops changed. `from` usually grows
  // at its end; when it does not (a break or a choice reshapes it), everything is connected again.
  // A choice between an array's elements is connected as one site: a carried element is followed only
  // by its neighbours, which are found by offset instead of testing every element against every other
  // (e1000's 128 MTA elements: 128 x 128 tests per visit).
  struct SiteMemo {
    bool visited = false;
    std::vector<std::uint32_t> from, tos, by_element;  // by_element: tos sorted by array and offset
    Carried carried;
  };
  std::vector<std::vector<SiteMemo>> site_memo(nb);
  std::vector<std::uint32_t> recarried;  // positions whose carried loops changed since the previous visit
  auto elementKey = [&](std::uint32_t a) {
    const Access& x = out_.accesses[a];
    return std::tuple{x.insn, x.base, x.index_stride, x.offset};
  };
  auto connectEdge = [&](std::uint32_t p, std::uint32_t to, Carried::const_iterator loops, Carried::const_iterator loops_end) {
    if (edge_seen_.insert(std::uint64_t(p) << 32 | to)) new_edges_.push_back(std::uint64_t(p) << 32 | to);
    if (loops == loops_end) return;
    auto& edge_loops = out_.edge_loops[{p, to}];
    for (auto it = loops; it != loops_end; ++it) edge_loops.insert(std::uint32_t(it->second));
  };
  auto connectSite = [&](SiteMemo& memo, const std::vector<std::uint32_t>& from, std::span<const std::uint32_t> tos,
                         const Carried& carried) {
    if (tos.empty()) return;
    std::size_t known = 0;
    recarried.clear();
    const bool same_tos = memo.visited && std::equal(memo.tos.begin(), memo.tos.end(), tos.begin(), tos.end());
    if (same_tos && memo.from.size() <= from.size() && std::equal(memo.from.begin(), memo.from.end(), from.begin())) {
      known = memo.from.size();
      if (memo.carried != carried) {
        auto was = memo.carried.cbegin(), now = carried.cbegin();
        auto note = [&](std::uint32_t p) {
          if (recarried.empty() || recarried.back() != p) recarried.push_back(p);
        };
        while (was != memo.carried.cend() || now != carried.cend()) {
          if (now == carried.cend() || (was != memo.carried.cend() && *was < *now)) note((was++)->first);
          else if (was == memo.carried.cend() || *now < *was) note((now++)->first);
          else ++was, ++now;
        }
        std::sort(recarried.begin(), recarried.end());
      }
    }
    if (!same_tos) {
      memo.tos.assign(tos.begin(), tos.end());
      memo.by_element = memo.tos;
      std::sort(memo.by_element.begin(), memo.by_element.end(), [&](std::uint32_t a, std::uint32_t c) {
        return std::pair{elementKey(a), a} < std::pair{elementKey(c), c};
      });
    }
    const auto& by_element = memo.by_element;
    for (std::size_t i = 0; i < from.size(); ++i) {
      const std::uint32_t p = from[i];
      if (i < known && !std::binary_search(recarried.begin(), recarried.end(), p)) continue;
      if (p == kStart || p == kIdle) {
        for (auto to : tos) (p == kStart ? first : out_.break_entries).insert(to);
        continue;
      }
      const auto loops = std::lower_bound(carried.begin(), carried.end(), std::pair<std::uint32_t, std::int32_t>{p, INT32_MIN});
      auto loops_end = loops;
      while (loops_end != carried.end() && loops_end->first == p) ++loops_end;
      const Access& x = out_.accesses[p];
      if (loops == loops_end || !x.index_stride) {  // nextElement holds for every `to`
        for (auto to : tos) connectEdge(p, to, loops, loops_end);
        continue;
      }
      // Carried array element: every `to` outside its array, and its neighbours within it.
      const auto array_lo = std::partition_point(by_element.begin(), by_element.end(), [&](std::uint32_t a) {
        const Access& y = out_.accesses[a];
        return std::tuple{y.insn, y.base, y.index_stride} < std::tuple{x.insn, x.base, x.index_stride};
      });
      const auto array_hi = std::partition_point(array_lo, by_element.end(), [&](std::uint32_t a) {
        const Access& y = out_.accesses[a];
        return std::tuple{y.insn, y.base, y.index_stride} == std::tuple{x.insn, x.base, x.index_stride};
      });
      for (auto it = by_element.begin(); it != array_lo; ++it) connectEdge(p, *it, loops, loops_end);
      for (auto it = array_hi; it != by_element.end(); ++it) connectEdge(p, *it, loops, loops_end);
      const std::int64_t step = std::int64_t(x.index_stride);
      for (const std::int64_t neighbour : {x.offset - step, x.offset + step}) {
        auto it = std::partition_point(array_lo, array_hi, [&](std::uint32_t a) { return out_.accesses[a].offset < neighbour; });
        for (; it != array_hi && out_.accesses[*it].offset == neighbour; ++it)
          if (nextElement(p, *it, carried)) connectEdge(p, *it, loops, loops_end);
      }
    }
    memo.visited = true;
    memo.from = from;
    memo.carried = carried;
  };
  // last_in[b] in arrival order, and once it is long (an array's elements) a hashed copy for lookups.
  std::vector<std::unordered_set<std::uint32_t>> last_in_members(nb);
  auto addLatest = [&](std::uint32_t block, const std::vector<std::uint32_t>& src) {
    auto& dst = last_in[block];
    auto& members = last_in_members[block];
    bool changed = false;
    for (auto x : src) {
      if (members.empty() && dst.size() >= 32) members.insert(dst.begin(), dst.end());
      if (members.empty() ? std::find(dst.begin(), dst.end(), x) != dst.end() : members.count(x) != 0) continue;
      dst.push_back(x);
      if (!members.empty()) members.insert(x);
      changed = true;
    }
    return changed;
  };
  last_in[0] = {kStart};
  seen[0] = 1;
  work.assign(1, 0);
  queued[0] = 1;
  while (!work.empty() && steps++ < step_limit * 2) {
    const std::uint32_t b = work.back();
    work.pop_back();
    queued[b] = 0;
    std::vector<std::uint32_t> cur = last_in[b];
    Carried carried = carried_in[b], carried_choice;
    std::vector<std::uint32_t> before_choice;
    bool returned = false;
    // Every visit reads the same items up to the same return: what they reach is known after the first.
    const bool first_visit = site_memo[b].empty();
    site_memo[b].resize(items[b].size());
    // The positions of the choice being read, connected from before_choice once the choice ends.
    std::size_t choice_site = 0;
    std::vector<std::uint32_t> choice;
    auto endChoice = [&] {
      if (!choice.empty()) connectSite(site_memo[b][choice_site], before_choice, choice, carried_choice);
      choice.clear();
    };
    for (std::size_t k = 0; k < items[b].size(); ++k) {
      const Item& it = items[b][k];
      switch (it.kind) {
        case Item::Position:
        case Item::PositionAlt:
          if (!out_.accesses[it.index].position) {
            endChoice();
            before_choice.clear();
            break;
          }
          if (it.kind == Item::Position || before_choice.empty()) {
            endChoice();
            choice_site = k;
            before_choice = cur, cur.clear(), carried_choice = std::move(carried), carried.clear();
          }
          choice.push_back(it.index);
          if (first_visit) result.reached.push_back(it.index);
          if (std::find(cur.begin(), cur.end(), it.index) == cur.end()) cur.push_back(it.index);
          break;
        case Item::Call: {
          endChoice();
          before_choice.clear();
          const Summary& callee = summaries_[it.index];
          connectSite(site_memo[b][k], cur, callee.first, carried);
          if (first_visit) result.reached.insert(result.reached.end(), callee.reached.begin(), callee.reached.end());
          const bool nullable = std::find(callee.last.begin(), callee.last.end(), kStart) != callee.last.end();
          std::vector<std::uint32_t> next;
          for (auto l : callee.last)
            if (l != kStart) next.push_back(l);
          if (nullable) addAll(next, cur);
          else carried.clear();
          cur = std::move(next);
          break;
        }
        case Item::Break: {
          endChoice();
          before_choice.clear();
          std::vector<std::uint32_t> next;
          for (auto p : cur) {
            if (p == kStart) next.push_back(p);
            else if (p != kIdle) out_.break_exits.insert(p);
          }
          next.push_back(kIdle);
          cur = std::move(next);
          carried.clear();
          break;
        }
        case Item::Return:
          endChoice();
          for (auto p : cur) {
            // Reaching an error return without touching the device is the driver giving up, not a
            // way past the function: it does not let the caller's next access follow its previous one.
            if (p == kStart && it.index == kErrorReturn) error_passthrough = true;
            else last.insert(p);
          }
          returned = true;
          break;
      }
      if (returned) break;
    }
    endChoice();
    if (returned) continue;
    for (std::uint32_t succ : f.blocks[b].succs) {
      if (succ == b && unrolled[b]) continue;  // its iterations are already in the block's items
      bool changed = !seen[succ];
      seen[succ] = 1;
      changed |= addLatest(succ, cur);
      auto back = fl.back_edges.find({b, succ});
      auto addCarried = [&](std::uint32_t pos, std::int32_t loop) {
        auto& c = carried_in[succ];  // kept sorted: connect() looks positions up in it
        auto at = std::lower_bound(c.begin(), c.end(), std::pair{pos, loop});
        if (at == c.end() || *at != std::pair{pos, loop}) c.insert(at, {pos, loop}), changed = true;
      };
      if (back != fl.back_edges.end()) {
        for (auto p : cur)
          if (p != kStart && p != kIdle) addCarried(p, back->second);
      }
      for (auto [p, loop] : carried) addCarried(p, loop);
      if (changed && !queued[succ]) queued[succ] = 1, work.push_back(succ);
    }
  }
  if (error_passthrough && last.empty()) last.insert(kStart);  // every way out is that error: stay transparent
  Summary& out = summaries_[sid];
  out.first.assign(first.begin(), first.end());
  out.last.assign(last.begin(), last.end());
  std::sort(result.reached.begin(), result.reached.end());
  result.reached.erase(std::unique(result.reached.begin(), result.reached.end()), result.reached.end());
  out.reached = std::move(result.reached);
  out.done = true;
}

std::optional<Analyzer::Induction> Analyzer::countedRegister(const Function& f, std::uint32_t h, const std::vector<char>& body,
                                                             const std::vector<std::vector<std::uint32_t>>& preds) const {
  const std::size_t n = f.blocks.size();
  for (std::uint32_t b = 0; b < n; ++b) {
    if (!body[b]) continue;
    const std::uint32_t last = f.blocks[b].last;
    const Insn& jcc = f.insns[last];
    if (jcc.flow != Flow::CondJump || last == f.blocks[b].first) continue;
    const Insn& test = f.insns[last - 1];
    if (test.id != X86_INS_CMP || test.op_count != 2 || test.ops[0].kind != Operand::Reg || test.ops[1].kind != Operand::Imm) continue;
    const std::uint8_t gpr = test.ops[0].reg.gpr;
    if (gpr == NoReg || gpr == RSP) continue;
    // The only definition in the body: one step by +1.
    const Insn* step_insn = nullptr;
    bool other_def = false;
    for (std::uint32_t bb = 0; bb < n && !other_def; ++bb) {
      if (!body[bb]) continue;
      for (std::uint32_t i = f.blocks[bb].first; i <= f.blocks[bb].last; ++i) {
        const Insn& in = f.insns[i];
        if (in.flow == Flow::Call || in.flow == Flow::IndirectCall)
          if (gpr == RAX || gpr == RCX || gpr == RDX || gpr == RSI || gpr == RDI || gpr == R8 || gpr == R9 || gpr == R10 || gpr == R11)
            other_def = true;
        if (in.op_count < 1 || in.ops[0].kind != Operand::Reg || in.ops[0].reg.gpr != gpr || in.id == X86_INS_CMP || in.id == X86_INS_TEST ||
            in.id == X86_INS_PUSH)
          continue;
        const bool plus_one = in.id == X86_INS_INC || (in.id == X86_INS_ADD && in.op_count == 2 && in.ops[1].kind == Operand::Imm && in.ops[1].imm == 1);
        if (!plus_one || step_insn) other_def = true;
        else step_insn = &in;
      }
    }
    if (other_def || !step_insn || step_insn->addr > test.addr) continue;
    // Initial value: a constant set in the one block that enters the loop.
    std::optional<std::int64_t> lo;
    int entries = 0;
    for (auto p : preds[h]) {
      if (body[p]) continue;
      ++entries;
      for (std::uint32_t i = f.blocks[p].last + 1; i-- > f.blocks[p].first;) {
        const Insn& in = f.insns[i];
        if (in.op_count < 1 || in.ops[0].kind != Operand::Reg || in.ops[0].reg.gpr != gpr || in.id == X86_INS_CMP || in.id == X86_INS_TEST) continue;
        if (in.id == X86_INS_XOR && in.ops[1].kind == Operand::Reg && in.ops[1].reg.gpr == gpr) lo = 0;
        else if (in.id == X86_INS_MOV && in.ops[1].kind == Operand::Imm) lo = in.ops[1].imm;
        break;
      }
    }
    if (entries != 1 || !lo) continue;
    // Which way the branch leaves decides the last value: `i != N`/`i < N` keeps going up to N - 1.
    bool taken_stays = false;
    for (std::uint32_t t = 0; t < n; ++t)
      if (body[t] && f.insns[f.blocks[t].first].addr == jcc.target) taken_stays = true;
    std::int64_t limit = test.ops[1].imm, hi = 0;
    unsigned id = jcc.id;
    if (!taken_stays) {
      // The taken branch leaves: invert it to the condition that stays.
      switch (id) {
        case X86_INS_JE: id = X86_INS_JNE; break;
        case X86_INS_JAE: id = X86_INS_JB; break;
        case X86_INS_JGE: id = X86_INS_JL; break;
        case X86_INS_JA: id = X86_INS_JBE; break;
        case X86_INS_JG: id = X86_INS_JLE; break;
        default: id = 0; break;
      }
    }
    switch (id) {
      case X86_INS_JNE: case X86_INS_JB: case X86_INS_JL: hi = limit - 1; break;
      case X86_INS_JBE: case X86_INS_JLE: hi = limit; break;
      default: continue;
    }
    // The test sees the stepped value, so before the step the body saw lo .. hi.
    if (hi < *lo || hi - *lo > 7) continue;
    return Induction{gpr, *lo, hi, step_insn->addr};
  }
  return std::nullopt;
}

bool Analyzer::unrollSelfLoop(std::uint32_t fn, std::uint32_t b, const std::vector<State>& out_states, std::vector<Item>& items) {
  constexpr int kMaxIterations = 32;
  const Function& f = d_.functions()[fn];
  const BasicBlock& bb = f.blocks[b];
  if (std::find(bb.succs.begin(), bb.succs.end(), b) == bb.succs.end() || bb.succs.size() != 2 || bb.last == bb.first) return false;
  const Insn& jcc = f.insns[bb.last];
  const Insn& test = f.insns[bb.last - 1];
  if (jcc.flow != Flow::CondJump || (jcc.id != X86_INS_JNE && jcc.id != X86_INS_JE)) return false;
  if (test.id != X86_INS_CMP || test.op_count != 2) return false;
  const bool back_when_taken = jcc.target == f.insns[bb.first].addr;
  // Entry state: what every other predecessor hands over.
  State s;
  for (std::uint32_t p = 0; p < f.blocks.size(); ++p) {
    if (p == b || !out_states[p].reachable) continue;
    if (std::find(f.blocks[p].succs.begin(), f.blocks[p].succs.end(), b) == f.blocks[p].succs.end()) continue;
    s.joinWith(out_states[p]);
  }
  if (!s.reachable) return false;
  // Dry run: the trip count must follow from the entry state alone.
  auto equalKnown = [&](const State& st) -> std::optional<bool> {
    Value x = read(st, test, test.ops[0], test.ops[0].size, nullptr, fn, false);
    Value y = read(st, test, test.ops[1], test.ops[1].size, nullptr, fn, false);
    if (!single(x) || !single(y)) return std::nullopt;
    const bool comparable = (x.kind == Value::Const && y.kind == Value::Const && x.known == 8 && y.known == 8) ||
                            (x.kind == Value::Stack && y.kind == Value::Stack) ||
                            (pointerPos(x) && pointerPos(y) && pointerPos(x)->tag == pointerPos(y)->tag);
    if (!comparable) return std::nullopt;
    return x.off == y.off;  // same kind and identity: equal offsets, equal pointers
  };
  auto runBody = [&](State& st, std::vector<Item>* out, bool record) {
    enterBlock(fn, b);
    for (std::uint32_t i = bb.first; i < bb.last; ++i) step(st, f.insns[i], fn, out, record);
  };
  int trips = 0;
  {
    State st = s;
    for (;;) {
      if (++trips > kMaxIterations) return false;
      runBody(st, nullptr, false);
      auto eq = equalKnown(st);
      if (!eq) return false;
      const bool taken = jcc.id == X86_INS_JE ? *eq : !*eq;
      if (taken != back_when_taken) break;
    }
  }
  for (int t = 0; t < trips; ++t) runBody(s, &items, true);
  return true;
}

// Natural loops (back edges to a dominating header) and their trip bounds where the code fixes one:
//  - the exit test compares the induction register with a constant:  cmp $N, %reg ; jcc out
//  - a down-counter initialised to a constant before the loop:        mov $N, %reg ... sub $1, %reg ; jne
//  - the exit test compares with a byte/word (a u8/u16 count field):  cmp %reg, %r8b / movzbl then cmp
const Analyzer::FunctionLoops& Analyzer::loopsOf(std::uint32_t fn) {
  FunctionLoops& out = loops_[fn];
  if (out.computed) return out;
  out.computed = true;
  const Function& f = d_.functions()[fn];
  const std::size_t n = f.blocks.size();
  out.innermost.assign(n, -1);
  out.header_of.assign(n, -1);
  if (n == 0 || n > 4000) return out;
  // Dominators (iterative bit sets over reverse post-order; functions are small).
  std::vector<std::vector<std::uint32_t>> preds(n);
  for (std::uint32_t b = 0; b < n; ++b)
    for (auto s2 : f.blocks[b].succs) preds[s2].push_back(b);
  std::vector<std::uint32_t> order;
  {
    std::vector<char> seen(n, 0);
    std::vector<std::pair<std::uint32_t, std::size_t>> st{{0, 0}};
    seen[0] = 1;
    while (!st.empty()) {
      auto& [v, i] = st.back();
      if (i < f.blocks[v].succs.size()) {
        auto w = f.blocks[v].succs[i++];
        if (!seen[w]) seen[w] = 1, st.emplace_back(w, 0);
      } else {
        order.push_back(v);
        st.pop_back();
      }
    }
    std::reverse(order.begin(), order.end());
  }
  const std::size_t words = (n + 63) / 64;
  std::vector<std::uint64_t> dom(n * words, ~0ull);
  auto D = [&](std::uint32_t b) { return dom.data() + b * words; };
  std::fill(D(0), D(0) + words, 0ull);
  D(0)[0] = 1;
  std::vector<char> reachable(n, 0);
  for (auto b : order) reachable[b] = 1;
  for (bool changed = true; changed;) {
    changed = false;
    for (auto b : order) {
      if (b == 0) continue;
      std::vector<std::uint64_t> nd(words, ~0ull);
      for (auto p : preds[b])
        if (reachable[p])
          for (std::size_t w = 0; w < words; ++w) nd[w] &= D(p)[w];
      nd[b / 64] |= 1ull << (b % 64);
      if (!std::equal(nd.begin(), nd.end(), D(b))) std::copy(nd.begin(), nd.end(), D(b)), changed = true;
    }
  }
  auto dominates = [&](std::uint32_t a, std::uint32_t b) { return (D(b)[a / 64] >> (a % 64)) & 1; };
  // One loop per header: the union of its back edges' bodies.
  std::map<std::uint32_t, std::vector<char>> bodies;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> back_edge_list;
  for (auto b : order)
    for (auto h : f.blocks[b].succs)
      if (reachable[h] && dominates(h, b)) {
        auto& body = bodies[h];
        if (body.empty()) body.assign(n, 0);
        back_edge_list.emplace_back(b, h);
        body[h] = 1;
        std::vector<std::uint32_t> work{b};
        while (!work.empty()) {
          auto x = work.back();
          work.pop_back();
          if (body[x]) continue;
          body[x] = 1;
          for (auto p : preds[x]) work.push_back(p);
        }
      }
  // Innermost = smallest body containing the block.
  std::vector<std::size_t> size_of(n, ~std::size_t(0));
  for (auto& [h, body] : bodies) {
    const std::size_t size = std::size_t(std::count(body.begin(), body.end(), 1));
    LoopInfo info;
    info.function = fn;
    info.header = f.insns[f.blocks[h].first].addr;
    // Bound from an exit test.
    auto regDef = [&](std::uint32_t before, std::uint8_t gpr) -> const Insn* {
      for (std::uint32_t i = before; i-- > 0;) {
        const Insn& in = f.insns[i];
        if (in.op_count >= 1 && in.ops[0].kind == Operand::Reg && in.ops[0].reg.gpr == gpr && in.id != X86_INS_CMP &&
            in.id != X86_INS_TEST && in.id != X86_INS_PUSH)
          return &in;
      }
      return nullptr;
    };
    // The definition reaching the loop from outside: a loop laid out before its header (`jmp head`
    // over the body, cp_get_ethtool_stats' `mov $1000,%ebx; jmp poll` ... `sub $1,%ebx; je out`) has
    // its own step between the entry's definition and the header.
    auto entryDef = [&](std::uint8_t gpr) -> const Insn* {
      for (std::uint32_t i = f.blocks[h].first; i-- > 0;) {
        bool inside = false;
        for (std::uint32_t bb = 0; bb < n && !inside; ++bb)
          inside = body[bb] && i >= f.blocks[bb].first && i <= f.blocks[bb].last;
        if (inside) continue;
        const Insn& in = f.insns[i];
        if (in.op_count >= 1 && in.ops[0].kind == Operand::Reg && in.ops[0].reg.gpr == gpr && in.id != X86_INS_CMP &&
            in.id != X86_INS_TEST && in.id != X86_INS_PUSH)
          return &in;
      }
      return nullptr;
    };
    std::optional<std::uint64_t> best;
    std::string why;
    auto consider = [&](std::uint64_t b, std::string reason) {
      if (!best || b < *best) best = b, why = std::move(reason);
    };
    for (std::uint32_t b = 0; b < n; ++b) {
      if (!body[b]) continue;
      bool exits = false;
      for (auto s2 : f.blocks[b].succs) exits |= !body[s2];
      if (!exits) continue;
      const std::uint32_t last = f.blocks[b].last;
      if (f.insns[last].flow != Flow::CondJump || last == 0) continue;
      const Insn& test = f.insns[last - 1];
      if (test.id == X86_INS_CMP && test.op_count == 2) {
        const Operand& x = test.ops[0];
        const Operand& y = test.ops[1];
        auto induction = [&](std::uint8_t gpr) {
          for (std::uint32_t bb = 0; bb < n; ++bb) {
            if (!body[bb]) continue;
            for (std::uint32_t i = f.blocks[bb].first; i <= f.blocks[bb].last; ++i) {
              const Insn& in = f.insns[i];
              if (in.op_count < 1 || in.ops[0].kind != Operand::Reg || in.ops[0].reg.gpr != gpr) continue;
              if (in.id == X86_INS_INC || in.id == X86_INS_DEC) return true;
              if ((in.id == X86_INS_ADD || in.id == X86_INS_SUB) && in.op_count == 2 && in.ops[1].kind == Operand::Imm &&
                  (in.ops[1].imm == 1 || in.ops[1].imm == -1))
                return true;
            }
          }
          return false;
        };
        // A counter stepping by a constant other than one (a byte offset into a register array:
        // `mov $0x1fc,%eax` ... `sub $4,%rax; cmp $-4,%rax; jne`): trips from its initial constant.
        if (x.kind == Operand::Reg && x.reg.gpr != NoReg && y.kind == Operand::Imm) {
          std::optional<std::int64_t> step;
          bool single_step = true;
          for (std::uint32_t bb = 0; bb < n && single_step; ++bb) {
            if (!body[bb]) continue;
            for (std::uint32_t i = f.blocks[bb].first; i <= f.blocks[bb].last; ++i) {
              const Insn& in = f.insns[i];
              if (in.op_count < 1 || in.ops[0].kind != Operand::Reg || in.ops[0].reg.gpr != x.reg.gpr || in.id == X86_INS_CMP ||
                  in.id == X86_INS_TEST || in.id == X86_INS_PUSH)
                continue;
              const bool add = in.id == X86_INS_ADD, sub = in.id == X86_INS_SUB;
              if (step || !(add || sub) || in.op_count != 2 || in.ops[1].kind != Operand::Imm || !smallNumber(in.ops[1].imm)) {
                single_step = false;
                break;
              }
              step = add ? in.ops[1].imm : -in.ops[1].imm;
            }
          }
          const Insn* init = regDef(f.blocks[h].first, x.reg.gpr);
          if (single_step && step && *step != 1 && *step != -1 && *step != 0 && init && init->id == X86_INS_MOV &&
              init->ops[1].kind == Operand::Imm) {
            const std::int64_t bound = x.size == 4 ? std::int64_t(std::int32_t(std::uint32_t(y.imm))) : y.imm;
            const bool small = smallNumber(bound) && smallNumber(init->ops[1].imm) && smallNumber(*step);
            const std::int64_t distance = small ? bound - init->ops[1].imm : 0;
            // Tested before its step, the counter also runs the body with the bound itself.
            bool stepped_before_test = false;
            for (std::uint32_t i = f.blocks[b].first; i + 1 < last; ++i)
              stepped_before_test |= f.insns[i].op_count >= 1 && f.insns[i].ops[0].kind == Operand::Reg &&
                                     f.insns[i].ops[0].reg.gpr == x.reg.gpr && f.insns[i].id != X86_INS_CMP;
            if (small && distance % *step == 0 && distance / *step > 0 && distance / *step < (1 << 24))
              consider(std::uint64_t(distance / *step + (stepped_before_test ? 0 : 1)), "counter from " + std::to_string(init->ops[1].imm) + " stepping " +
                                                            std::to_string(*step) + " to " + std::to_string(bound));
          }
        }
        // Only a counter stepping by one bounds the loop; a status value compared with a constant does not.
        const bool counter = x.kind == Operand::Reg && x.reg.gpr != NoReg && induction(x.reg.gpr);
        const bool counter_y = y.kind == Operand::Reg && y.reg.gpr != NoReg && induction(y.reg.gpr);
        if (y.kind == Operand::Imm && counter && y.imm > 0 && y.imm < (1 << 24)) {
          consider(std::uint64_t(y.imm) + 1, "counter compared with " + std::to_string(y.imm));
        } else if ((counter || counter_y) && ((x.kind == Operand::Mem && x.size == 1) || (y.kind == Operand::Mem && y.size == 1))) {
          consider(256, "counter compared with a byte-sized count");
        } else if (counter || counter_y) {
          const Operand& other = counter ? y : x;
          if (other.kind == Operand::Reg && other.reg.gpr != NoReg) {
            const Insn* def = regDef(last - 1, other.reg.gpr);
            if (def && def->id == X86_INS_MOVZX && def->ops[1].size == 1) consider(256, "counter compared with a byte-sized count");
            else if (def && def->id == X86_INS_MOVZX && def->ops[1].size == 2) consider(65536, "counter compared with a 16-bit count");
          }
        }
      }
      // A flag register only ever set to constants inside the loop (`for (i = 0; i < 2; i++)` unrolled to
      // `test %ebx,%ebx; jne out; mov $1,%ebx; jmp head`): it can change value only that many times.
      if ((test.id == X86_INS_TEST || test.id == X86_INS_CMP) && test.op_count == 2 && test.ops[0].kind == Operand::Reg &&
          test.ops[0].reg.gpr != NoReg) {
        const std::uint8_t gpr = test.ops[0].reg.gpr;
        std::size_t defs = 0;
        bool only_constants = true;
        for (std::uint32_t bb = 0; bb < n && only_constants; ++bb) {
          if (!body[bb]) continue;
          for (std::uint32_t i = f.blocks[bb].first; i <= f.blocks[bb].last; ++i) {
            const Insn& in = f.insns[i];
            const bool call_clobbers = (in.flow == Flow::Call || in.flow == Flow::IndirectCall) &&
                                       (gpr == RAX || gpr == RCX || gpr == RDX || gpr == RSI || gpr == RDI || gpr == R8 ||
                                        gpr == R9 || gpr == R10 || gpr == R11);
            if (call_clobbers) { only_constants = false; break; }
            if (in.op_count < 1 || in.ops[0].kind != Operand::Reg || in.ops[0].reg.gpr != gpr || in.id == X86_INS_CMP ||
                in.id == X86_INS_TEST || in.id == X86_INS_PUSH)
              continue;
            const bool constant = (in.id == X86_INS_MOV && in.ops[1].kind == Operand::Imm) ||
                                  (in.id == X86_INS_XOR && in.ops[1].kind == Operand::Reg && in.ops[1].reg.gpr == gpr);
            if (!constant) { only_constants = false; break; }
            ++defs;
          }
        }
        if (only_constants && defs > 0) consider(defs + 2, "flag register set to constants " + std::to_string(defs) + " time(s) in the loop");
      }
      if ((test.id == X86_INS_SUB || test.id == X86_INS_DEC) && test.ops[0].kind == Operand::Reg &&
                 (test.id == X86_INS_DEC || (test.ops[1].kind == Operand::Imm && test.ops[1].imm == 1))) {
        // Down-counter: its initial constant, set before the header.
        const Insn* init = entryDef(test.ops[0].reg.gpr);
        if (init && init->id == X86_INS_MOV && init->ops[1].kind == Operand::Imm && init->ops[1].imm > 0)
          consider(std::uint64_t(init->ops[1].imm), "down-counter from " + std::to_string(init->ops[1].imm));
      }
    }
    info.bound = best;
    info.why = best ? why : "no exit test against a constant or a byte/word count";
    const auto id = std::int32_t(out_.loops.size());
    if (auto ind = countedRegister(f, h, body, preds)) out.inductions[id].push_back(*ind);
    out_.loops.push_back(std::move(info));
    for (std::uint32_t b = 0; b < n; ++b)
      if (body[b] && size < size_of[b]) size_of[b] = size, out.innermost[b] = id;
    for (auto [from, to] : back_edge_list)
      if (to == h) out.back_edges[{from, to}] = id;
    out.header_of[h] = id;
    auto& blocks = out.bodies[id];
    for (std::uint32_t b = 0; b < n; ++b)
      if (body[b]) blocks.push_back(b);
  }
  return out;
}

// The loop's own test of a register against a constant: `cmp $C, %reg; jcc` in a block of the loop
// that leaves it or goes back to its header. `after_update`: the register is stepped earlier in that
// block, so the value tested is the next iteration's (`sub $4,%rax; cmp $-4,%rax; jne head`).
struct LoopTest {
  std::int64_t bound = 0;
  bool after_update = false;
};
std::optional<LoopTest> loopTestOf(const Function& f, const std::vector<std::uint32_t>& body, std::uint32_t header, int gpr) {
  for (std::uint32_t b : body) {
    const BasicBlock& bb = f.blocks[b];
    if (bb.last == bb.first || f.insns[bb.last].flow != Flow::CondJump) continue;
    const Insn& cmp = f.insns[bb.last - 1];
    if (cmp.id != X86_INS_CMP || cmp.op_count != 2 || cmp.ops[0].kind != Operand::Reg || cmp.ops[0].reg.gpr != gpr ||
        cmp.ops[0].reg.high8 || cmp.ops[1].kind != Operand::Imm || (cmp.ops[0].size != 4 && cmp.ops[0].size != 8))
      continue;
    bool controls_loop = false;
    for (auto succ : bb.succs)
      controls_loop |= succ == header || !std::binary_search(body.begin(), body.end(), succ);
    if (!controls_loop) continue;
    LoopTest t;
    t.bound = cmp.ops[0].size == 4 ? std::int64_t(std::int32_t(std::uint32_t(cmp.ops[1].imm))) : cmp.ops[1].imm;
    for (std::uint32_t i = bb.first; i + 1 < bb.last; ++i) {
      const Insn& in = f.insns[i];
      const bool steps = in.id == X86_INS_ADD || in.id == X86_INS_SUB || in.id == X86_INS_INC || in.id == X86_INS_DEC ||
                         in.id == X86_INS_LEA;
      if (steps && in.op_count >= 1 && in.ops[0].kind == Operand::Reg && in.ops[0].reg.gpr == gpr) t.after_update = true;
    }
    return t;
  }
  return std::nullopt;
}

// The outcome of a block's final `je`/`jne` when the flags come from `test r,r` or `cmp r,imm` on a
// register holding one known constant; nullopt when the branch depends on anything else.
std::optional<bool> Analyzer::decidedBranch(const State& s, const Function& f, const BasicBlock& bb) {
  const Insn& jump = f.insns[bb.last];
  if (jump.flow != Flow::CondJump || bb.last == bb.first || (jump.id != X86_INS_JE && jump.id != X86_INS_JNE)) return std::nullopt;
  const Insn& flags = f.insns[bb.last - 1];
  if (flags.op_count != 2 || flags.ops[0].kind != Operand::Reg || flags.ops[0].reg.gpr == NoReg || flags.ops[0].reg.high8)
    return std::nullopt;
  const Value& v = s.reg[flags.ops[0].reg.gpr];
  const std::uint8_t w = flags.ops[0].size ? flags.ops[0].size : 8;
  if (v.kind != Value::Const || !single(v) || v.known < w) return std::nullopt;
  const std::uint64_t x = std::uint64_t(v.off) & maskFor(w);
  bool zero = false;
  if (flags.id == X86_INS_TEST && flags.ops[1].kind == Operand::Reg && flags.ops[1].reg.gpr == flags.ops[0].reg.gpr) {
    zero = x == 0;
  } else if (flags.id == X86_INS_CMP && flags.ops[1].kind == Operand::Imm) {
    zero = x == (std::uint64_t(flags.ops[1].imm) & maskFor(w));
  } else {
    return std::nullopt;
  }
  return jump.id == X86_INS_JE ? zero : !zero;
}

void Analyzer::learnStoresAlongPaths(std::uint32_t fn, const State& initial) {
  const Function& f = d_.functions()[fn];
  std::map<CodeAddr, std::uint32_t> block_at;
  for (std::uint32_t b = 0; b < f.blocks.size(); ++b) block_at[f.insns[f.blocks[b].first].addr] = b;
  struct Path {
    std::uint32_t block;
    State state;
    std::vector<std::uint8_t> visits;
  };
  // Bounded: a path visits a block at most 4 times, and the walk stops after a fixed amount of work.
  constexpr std::uint8_t kVisits = 4;
  std::size_t budget = 200000;
  std::vector<Path> stack;
  stack.push_back(Path{0, initial, std::vector<std::uint8_t>(f.blocks.size(), 0)});
  learning_paths_ = true;
  while (!stack.empty() && budget > 0) {
    Path p = std::move(stack.back());
    stack.pop_back();
    if (p.visits[p.block]++ >= kVisits) continue;
    const BasicBlock& bb = f.blocks[p.block];
    enterBlock(fn, p.block);
    bool returned = false;
    for (std::uint32_t i = bb.first; i <= bb.last && budget > 0; ++i, --budget) {
      const Insn& in = f.insns[i];
      step(p.state, in, fn, nullptr, false);
      returned |= in.flow == Flow::Return || in.flow == Flow::IndirectJump ||
                  (in.flow == Flow::Jump && (in.ref.kind == Reference::External || (in.target && d_.functionCovering(in.target) != int(fn))));
    }
    if (returned) continue;
    std::vector<std::uint32_t> next = bb.succs;
    if (auto taken = decidedBranch(p.state, f, bb)) {
      const Insn& jump = f.insns[bb.last];
      auto target = block_at.find(jump.target);
      if (target != block_at.end()) {
        const std::uint32_t t = target->second;
        next.erase(std::remove_if(next.begin(), next.end(), [&](std::uint32_t succ) { return (succ == t) != *taken; }), next.end());
      }
    }
    for (std::size_t k = 0; k < next.size(); ++k)
      stack.push_back(Path{next[k], k + 1 == next.size() ? std::move(p.state) : p.state, k + 1 == next.size() ? std::move(p.visits) : p.visits});
  }
  learning_paths_ = false;
}

State Analyzer::mergeAtLoopHeader(std::uint32_t fn, std::uint32_t header, const State& entry, const State& back,
                                  const State& previous) {
  State merged = entry;
  merged.joinWith(back);
  if (!entry.reachable || !back.reachable || !previous.reachable) return merged;
  const FunctionLoops& fl = loops_[fn];
  const Function& f = d_.functions()[fn];
  const auto& body = fl.bodies.at(fl.header_of[header]);
  // A counter: constant on entry, moved by the same step on every way around (the back edge brings
  // what the header had, plus the step).
  auto counterLike = [](const Value& v) { return v.kind == Value::Const && v.known == 8 && v.alts == 0 && smallValue(v); };
  std::vector<std::pair<int, std::int64_t>> untested;  // counters the loop does not test itself
  std::vector<char> counter(kGprCount, 0);
  std::uint64_t trips = 0;
  for (int g = 0; g < kGprCount; ++g) {
    if (g == RSP) continue;
    const Value &e = entry.reg[g], &bk = back.reg[g], &h = previous.reg[g];
    if (!counterLike(e) || !counterLike(bk) || !counterLike(h) || bk.count != h.count || bk.stride != h.stride) continue;
    const std::int64_t step = bk.off - h.off;  // both small (counterLike): no overflow
    if (step == 0 || step > 4096 || step < -4096) continue;
    counter[std::size_t(g)] = 1;
    auto test = loopTestOf(f, body, header, g);
    if (!test) {
      untested.emplace_back(g, step);
      continue;
    }
    if (!smallNumber(test->bound)) {
      merged.reg[std::size_t(g)] = Value::top();
      continue;
    }
    const std::uint64_t stride = std::gcd(std::uint64_t(step < 0 ? -step : step), std::uint64_t(e.stride));
    const std::int64_t lo = e.off, hi = rangeLast(e);
    std::optional<Value> r;
    if (step > 0) {
      const std::int64_t limit = test->after_update ? test->bound - 1 : test->bound;
      if (hi <= limit) r = makeRange(lo, lo + (limit - lo) / std::int64_t(stride) * std::int64_t(stride), stride);
    } else {
      const std::int64_t limit = test->after_update ? test->bound + 1 : test->bound;
      if (lo >= limit) r = makeRange(hi - (hi - limit) / std::int64_t(stride) * std::int64_t(stride), hi, stride);
    }
    if (!r) {
      merged.reg[std::size_t(g)] = Value::top();
      continue;
    }
    r->direction = r->count ? std::int8_t(step > 0 ? 1 : -1) : std::int8_t(0);
    merged.reg[std::size_t(g)] = *r;
    trips = std::max<std::uint64_t>(trips, r->count ? r->count : 1);
  }
  // Counters stepped alongside a tested one (an offset i*8+4 kept in its own register) go around as
  // many times; without the relation between them, from each entry value.
  for (auto [g, step] : untested) {
    const Value& e = entry.reg[std::size_t(g)];
    std::optional<Value> r;
    if (trips) {
      const std::int64_t span = step * std::int64_t(trips - 1);
      const std::uint64_t stride = std::gcd(std::uint64_t(step < 0 ? -step : step), std::uint64_t(e.stride));
      r = makeRange(std::min(e.off, e.off + span), std::max(rangeLast(e), rangeLast(e) + span), stride);
    }
    if (r && r->count) r->direction = std::int8_t(step > 0 ? 1 : -1);
    merged.reg[std::size_t(g)] = r.value_or(Value::top());
  }
  // Anything else that keeps growing around the loop is not a counter the loop bounds.
  for (int g = 0; g < kGprCount; ++g)
    if (!counter[std::size_t(g)] && merged.reg[std::size_t(g)].count && previous.reg[std::size_t(g)].count &&
        !(merged.reg[std::size_t(g)] == previous.reg[std::size_t(g)]))
      merged.reg[std::size_t(g)] = Value::top();
  return merged;
}

bool isMetadataSection(std::string_view name) {
  for (std::string_view n : {"__mcount_loc", ".orc_unwind_ip", ".orc_unwind", ".return_sites", ".retpoline_sites", ".parainstructions",
                             ".static_call_sites", "__bug_table", ".smp_locks", "__jump_table", ".altinstructions", "__ex_table",
                             ".ibt_endbr_seal", ".call_sites", ".note.gnu.property", "___srcu_struct_ptrs", ".kcfi_traps"})
    if (name == n) return true;
  return false;
}

std::set<std::uint32_t> Analyzer::pciProbes() const {
  std::set<std::uint32_t> probes;
  const Symbol* table = m_.pci_table_symbol.empty() ? nullptr : m_.findSymbol(m_.pci_table_symbol);
  if (!table) return probes;
  for (const Section& sec : m_.sections) {
    if (sec.type != SHT_PROGBITS || sec.executable()) continue;
    for (const Relocation& r : m_.relocations(sec.index)) {
      const Symbol& s = m_.symbols[r.symbol];
      if (r.type != R_X86_64_64 || !s.defined() || s.section != table->section ||
          s.value + std::uint64_t(r.addend) != table->value)
        continue;
      const Relocation* next = m_.relocationAt(sec.index, r.offset + 8);
      if (!next || next->type != R_X86_64_64) continue;
      const Symbol& f = m_.symbols[next->symbol];
      if (!f.defined()) continue;
      const int fi = d_.functionAt(codeAddr(f.section, std::uint64_t(std::int64_t(f.value) + next->addend)));
      if (fi >= 0) probes.insert(std::uint32_t(fi));
    }
  }
  return probes;
}

void Analyzer::run() {
  const auto& fns = d_.functions();
  contexts_per_function_.assign(fns.size(), 0);
  loops_.assign(fns.size(), {});
  collectModuleParameters();
  // Entry points: what the kernel calls without a direct call from this module.
  std::vector<std::string> why(fns.size());
  std::vector<char> called(fns.size(), 0);
  for (std::uint32_t fi = 0; fi < fns.size(); ++fi)
    for (const Insn& in : fns[fi].insns)
      if ((in.flow == Flow::Call || in.flow == Flow::Jump) && in.target) {
        int t = d_.functionAt(in.target);
        if (t >= 0 && std::uint32_t(t) != fi) called[std::size_t(t)] = 1;
      }
  for (const Section& sec : m_.sections) {
    if (sec.type != SHT_PROGBITS || isMetadataSection(sec.name)) continue;
    // A linked dependency's export table names everything it offers any driver, not what this one uses.
    const bool from_dependency = sec.index < m_.section_origin.size() && !m_.section_origin[sec.index].empty();
    if (from_dependency && sec.name.starts_with("__ksymtab")) continue;
    for (const Relocation& r : m_.relocations(sec.index)) {
      const Symbol& s = m_.symbols[r.symbol];
      if (!s.defined()) continue;
      // Wrapping arithmetic: a damaged symbol value or addend must not overflow (found by the fuzzer).
      std::int64_t off = std::int64_t(s.value + std::uint64_t(r.addend));
      if (sec.executable()) {
        // In code, a reference is an address take unless it is the target of a call/jump.
        int fi = d_.functionCovering(codeAddr(sec.index, r.offset));
        if (fi < 0) continue;
        const auto& insns = fns[std::size_t(fi)].insns;
        auto it = std::upper_bound(insns.begin(), insns.end(), codeAddr(sec.index, r.offset), [](CodeAddr a, const Insn& i) { return a < i.addr; });
        if (it == insns.begin()) continue;
        --it;
        if (it->flow == Flow::Call || it->flow == Flow::Jump || it->flow == Flow::CondJump) continue;
        if (r.type == R_X86_64_PC32 || r.type == R_X86_64_PLT32)
          off = std::int64_t(std::uint64_t(off) + (it->addr + it->size - codeAddr(sec.index, r.offset)));
      }
      if (off < 0) continue;
      int t = d_.functionAt(codeAddr(s.section, std::uint64_t(off)));
      if (t >= 0 && why[std::size_t(t)].empty()) why[std::size_t(t)] = "address taken in " + sec.name;
    }
  }
  for (std::uint32_t fi = 0; fi < fns.size(); ++fi) {
    // A linked dependency's code runs only where the driver (or the dependency's own callbacks) leads
    // to it: its exports the driver never uses and its own module init/exit are not this driver's.
    const std::uint32_t sec = sectionOf(fns[fi].entry);
    const bool dependency = sec < m_.section_origin.size() && !m_.section_origin[sec].empty();
    if (dependency) continue;
    if (fns[fi].name == "init_module" || fns[fi].name == "cleanup_module") why[fi] = fns[fi].name;
    else if (why[fi].empty() && !called[fi] && !fns[fi].name.ends_with(".cold") && fns[fi].name.find(".cold.") == std::string::npos)
      why[fi] = "not called within the module";
  }
  const std::set<std::uint32_t> probes = pciProbes();
  std::set<std::uint32_t> fixups;
  for (const auto& [entry, reason] : opt_.pci_fixup_roots) {
    const int fi = d_.functionAt(entry);
    if (fi < 0) continue;
    why[std::size_t(fi)] = reason;
    fixups.insert(std::uint32_t(fi));
  }
  auto learned = [&] {
    bool any = !field_base_.empty() || !param_holder_.empty() || !param_base_.empty() || field_offsets_used_ || dereferenced_any_;
    for (const Cell& c : out_.cells) any |= c.base.has_value() || c.alias.has_value();
    return any;
  };
  // Two rounds: the first learns which globals and struct fields hold device bases, the second uses them.
  for (int round = 0; round < 2; ++round) {
    if (round == 1) {
      if (!learned()) break;
      memo_.clear();
      summaries_.clear();
      contexts_per_function_.assign(fns.size(), 0);
      out_.accesses.clear();
      access_index_.clear();
      out_.edges.clear();
      edge_seen_.clear();
      new_edges_.clear();
      out_.edge_loops.clear();
      out_.loops.clear();
      loops_.assign(fns.size(), {});
      out_.break_entries.clear();
      out_.break_exits.clear();
      out_.roots.clear();
      site_insns_.clear(), pinned_insns_.clear(), foreign_insns_.clear();
    }
    defer_sequences_ = round == 0;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> root_sids;  // (function, summary)
    for (std::uint32_t fi = 0; fi < fns.size(); ++fi) {
      if (why[fi].empty()) continue;
      std::array<Value, 6> top{};
      if (probes.count(fi) || fixups.count(fi)) top[0] = Value{Value::PciDev, 8, 0, 0};
      root_sids.emplace_back(fi, analyze(fi, top));
    }
    defer_sequences_ = false;
    if (round == 0) {
      if (learned()) {
        deferred_.clear();  // the second round redoes everything
        continue;
      }
      for (const DeferredSequences& d : deferred_) connectSequences(d.fn, d.sid, d.items, d.unrolled);
      deferred_.clear();
    }
    for (auto [fi, sid] : root_sids) {
      const Summary& s = summaries_[sid];
      RootSummary root;
      root.function = fi;
      root.why = why[fi];
      root.first = s.first;
      for (auto l : s.last)
        if (l != kStart && l != kIdle) root.last.push_back(l);
      root.reached.insert(s.reached.begin(), s.reached.end());
      out_.roots.push_back(std::move(root));
    }
  }
  std::sort(new_edges_.begin(), new_edges_.end());
  for (std::uint64_t e : new_edges_) out_.edges.emplace_hint(out_.edges.end(), std::uint32_t(e >> 32), std::uint32_t(e));
  for (DeviceBase& b : out_.bases)
    if (b.kind == DeviceBase::PciIomap && b.bar >= 0) {
      auto it = bar_flag_tests_.find(b.bar);
      b.bar_memory = (it != bar_flag_tests_.end() && it->second == 2) || b.memory();
    }
  CoverageReport& c = out_.coverage;
  c.functions = fns.size();
  c.instructions = d_.instructionCount();
  for (const auto& f : fns) c.undecodable_bytes += f.undecodable;
  c.io_sites = site_insns_.size();
  c.sites_foreign = foreign_insns_.size();
  c.sites_pinned = pinned_insns_.size();
  std::set<CodeAddr> writes, pinned_values;
  for (const Access& a : out_.accesses) {
    if (a.where == Access::Where::Unresolved && !pinned_insns_.count(a.insn) && !foreign_insns_.count(a.insn))
      c.unresolved.push_back(out_.where(a.insn) + ": " + a.why_unresolved);
    if (a.dir == Dir::Write && a.where != Access::Where::Unresolved && !foreign_insns_.count(a.insn)) {
      writes.insert(a.insn);
      if (a.value) pinned_values.insert(a.insn);
    }
  }
  std::sort(c.unresolved.begin(), c.unresolved.end());
  c.unresolved.erase(std::unique(c.unresolved.begin(), c.unresolved.end()), c.unresolved.end());
  c.writes = writes.size();
  c.writes_value_pinned = pinned_values.size();
}

}  // namespace

std::string ModuleAnalysis::where(CodeAddr a) const {
  const Module& m = disassembly->module();
  std::string s = m.describe(sectionOf(a), offsetOf(a));
  int f = disassembly->functionCovering(a);
  if (f >= 0) s += " (" + disassembly->functions()[std::size_t(f)].name + ")";
  return s;
}

std::string ModuleAnalysis::describeAccess(const Access& a) const {
  std::string s = a.dir == Dir::Write ? "write" : "read";
  s += a.size ? std::to_string(a.size * 8) : "?";
  switch (a.where) {
    case Access::Where::FixedPort: s += " port " + hex(a.port); break;
    case Access::Where::BaseOffset: s += " " + bases[a.base].name + " + " + hex(std::uint64_t(a.offset)); break;
    case Access::Where::Unresolved: s += " <unresolved>"; break;
  }
  if (a.value) s += " = " + hex(*a.value);
  if (a.repeated) s += " (repeated)";
  return s + " at " + where(a.insn);
}

ModuleAnalysis analyzeModule(const Disassembly& disassembly, const AnalysisOptions& options) {
  ModuleAnalysis out;
  out.disassembly = &disassembly;
  Analyzer(disassembly, options, out).run();
  return out;
}

std::string formatCoverage(const ModuleAnalysis& a) {
  const CoverageReport& c = a.coverage;
  std::string s;
  s += "module: " + a.disassembly->module().name + "\n";
  s += "functions: " + std::to_string(c.functions) + ", instructions: " + std::to_string(c.instructions) +
       ", undecodable bytes: " + std::to_string(c.undecodable_bytes) + "\n";
  s += "I/O sites: " + std::to_string(c.io_sites) + ", address pinned: " + std::to_string(c.sites_pinned) +
       ", fixed ports of other devices: " + std::to_string(c.sites_foreign) + ", unresolved: " + std::to_string(c.unresolved.size()) + "\n";
  s += "device writes: " + std::to_string(c.writes) + ", value pinned: " + std::to_string(c.writes_value_pinned) + "\n";
  s += "loops over device writes: " + std::to_string(c.loops) + ", bounded: " + std::to_string(c.loops_bounded) + "\n";
  s += "device bases:\n";
  for (const auto& b : a.bases) s += "  " + b.name + " (" + b.origin + ")\n";
  for (const auto& u : c.unresolved) s += "unresolved: " + u + "\n";
  for (const auto& u : c.unbounded) s += "unbounded loop: " + u + "\n";
  return s;
}

}  // namespace iof::analysis
