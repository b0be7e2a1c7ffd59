// Index ranges: a constant (or a device base plus a constant) that takes every value off + k*stride,
// k < count, for each of its alternatives. They come from loop counters (analyzer's loop headers)
// and reach register arrays written with an index: e1000's `writel(mta[i], hw_addr + MTA + i*4)`
// for i = 127..0 becomes 128 offsets, not one unknown address.
#pragma once

#include <capstone/capstone.h>

#include <cstdint>
#include <numeric>
#include <optional>

#include "ioreq_filter/analysis/io_analysis.h"

namespace iof::analysis {

// Larger ranges are not register arrays but buffers; they stay unknown.
inline constexpr std::uint32_t kMaxIndexRange = 1024;

// Offsets and counters this far from zero are not register indices; keeping away from them also keeps
// the arithmetic below from overflowing.
inline bool smallNumber(std::int64_t v) noexcept { return v > -(std::int64_t(1) << 40) && v < (std::int64_t(1) << 40); }
inline bool smallValue(const Value& v) noexcept {
  if (!smallNumber(v.off)) return false;
  for (int i = 0; i < v.alts; ++i)
    if (!smallNumber(v.alt[std::size_t(i)])) return false;
  return true;
}

inline std::int64_t rangeLast(const Value& v) noexcept {
  return v.count ? v.off + std::int64_t(v.count - 1) * std::int64_t(v.stride) : v.off;
}

// A range from lo to hi (inclusive) in steps of stride, or nullopt if it is too large to enumerate.
inline std::optional<Value> makeRange(std::int64_t lo, std::int64_t hi, std::uint64_t stride) noexcept {
  if (hi < lo || !smallNumber(lo) || !smallNumber(hi)) return std::nullopt;
  Value v = Value::constant(std::uint64_t(lo));
  if (hi == lo) return v;
  if (stride == 0 || std::uint64_t(hi - lo) % stride != 0) return std::nullopt;
  const std::uint64_t count = std::uint64_t(hi - lo) / stride + 1;
  if (count > kMaxIndexRange) return std::nullopt;
  v.stride = std::uint32_t(stride);
  v.count = std::uint32_t(count);
  return v;
}

// The smallest range holding both (same kind and identity, no alternatives), or nullopt.
inline std::optional<Value> rangeHull(const Value& a, const Value& b) noexcept {
  if (a.kind != b.kind || a.id != b.id || a.alts || b.alts || a.known != 8 || b.known != 8 || a.field != b.field)
    return std::nullopt;
  if (a.kind != Value::Const && a.kind != Value::Base) return std::nullopt;
  if (!smallValue(a) || !smallValue(b)) return std::nullopt;
  const std::int64_t lo = std::min(a.off, b.off), hi = std::max(rangeLast(a), rangeLast(b));
  std::uint64_t stride = std::gcd(std::uint64_t(a.stride), std::uint64_t(b.stride));
  stride = std::gcd(stride, std::uint64_t(a.off > b.off ? a.off - b.off : b.off - a.off));
  auto r = makeRange(lo, hi, stride);
  if (!r) return std::nullopt;
  r->kind = a.kind;
  r->id = a.id;
  r->field = a.field;
  r->direction = a.direction == b.direction ? a.direction : std::int8_t(0);
  return r;
}

// x * factor for a constant with a range (lea (,%reg,8), shl $2, imul $4).
inline std::optional<Value> scaleRange(const Value& x, std::int64_t factor) noexcept {
  if (x.kind != Value::Const || x.known != 8 || factor <= 0 || factor > 64 || !smallValue(x)) return std::nullopt;
  Value r = x;
  r.off *= factor;
  for (int i = 0; i < r.alts; ++i) r.alt[std::size_t(i)] *= factor;
  r.stride = std::uint32_t(std::uint64_t(r.stride) * std::uint64_t(factor));
  return r;
}

// x + y where at most one side has a range and at most one has alternatives; the result keeps the
// symbolic side (a device base) if there is one. nullopt if the sum cannot be represented.
inline std::optional<Value> addRanges(const Value& x, const Value& y) noexcept {
  auto usable = [](const Value& v) {
    return (v.kind == Value::Const && v.known == 8) || (v.kind == Value::Base && v.field == Value::kNoField);
  };
  if (!usable(x) || !usable(y)) return std::nullopt;
  if (x.kind == Value::Base && y.kind == Value::Base) return std::nullopt;
  if ((x.count && y.count) || (x.alts && y.alts) || !smallValue(x) || !smallValue(y)) return std::nullopt;
  const Value& sym = y.kind == Value::Base ? y : x;
  const Value& other = y.kind == Value::Base ? x : y;
  Value r = sym;
  r.off = sym.off + other.off;
  const Value& with_alts = x.alts ? x : y;
  const Value& without_alts = x.alts ? y : x;
  r.alts = with_alts.alts;
  for (int i = 0; i < r.alts; ++i) r.alt[std::size_t(i)] = with_alts.alt[std::size_t(i)] + without_alts.off;
  if (!x.alts && !y.alts) r.alt = {};
  const Value& ranged = x.count ? x : y;
  r.stride = ranged.stride;
  r.count = ranged.count;
  r.direction = ranged.direction;
  return r;
}

// Every value of a range fits in `bytes` bytes as a non-negative number (so sign or zero extension
// keeps it).
inline bool rangeFitsSigned(const Value& v, unsigned bytes) noexcept {
  return v.kind == Value::Const && v.count && !v.alts && v.off >= 0 && bytes >= 1 && bytes <= 8 &&
         (bytes == 8 || rangeLast(v) < (std::int64_t(1) << (bytes * 8 - 1)));
}

// A two-operand operation (`add`, `sub`, `shl`, `imul`, `and`) where an operand has a range, or a
// constant with alternatives is added to a device base (e1000's `sbb; and $mask; add $RA; add hw_addr`
// picks the 82542's or the later chips' register). nullopt: not such an operation.
// The result is masked to `width` bytes; Top if a value would not fit.
inline std::optional<Value> rangeArithmetic(unsigned insn, const Value& a, const Value& b, std::uint8_t width) noexcept {
  const bool ranged = a.count || b.count;
  const bool alts_on_base = insn == X86_INS_ADD && ((a.alts && b.kind == Value::Base) || (b.alts && a.kind == Value::Base));
  if (!ranged && !alts_on_base) return std::nullopt;
  const bool b_const = b.kind == Value::Const && b.known == 8 && b.alts == 0 && b.count == 0;
  std::optional<Value> r;
  switch (insn) {
    case X86_INS_ADD:
      if (b_const && width == 4) {
        Value sext = b;
        sext.off = std::int64_t(std::int32_t(std::uint32_t(b.off)));
        r = addRanges(a, sext);
      } else {
        r = addRanges(a, b);
      }
      break;
    case X86_INS_SUB:
      if (b_const) {
        Value neg = b;
        neg.off = -b.off;
        r = addRanges(a, neg);
      }
      break;
    case X86_INS_SHL:
      if (b_const && b.off >= 0 && b.off < 6) r = scaleRange(a, std::int64_t(1) << b.off);
      break;
    case X86_INS_IMUL:
      if (b_const) r = scaleRange(a, b.off);
      break;
    case X86_INS_AND:
      if (b_const && (std::uint64_t(b.off) | ~((width >= 8 ? ~0ull : (1ull << (width * 8)) - 1))) == ~0ull) r = a;
      break;
    default: break;
  }
  if (!r) return Value::top();
  if (r->kind == Value::Base) return width == 8 ? *r : Value::top();
  if (width < 8) {
    const std::uint64_t mask = (1ull << (width * 8)) - 1;
    if (r->alts || r->off < 0 || std::uint64_t(rangeLast(*r)) > mask) return Value::top();
  }
  return r;
}

}  // namespace iof::analysis
