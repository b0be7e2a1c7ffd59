#include "ioreq_filter/trace/trace.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

namespace iof {
namespace {

// Guest-RAM commands larger than this are almost certainly a corrupted line, not a DMA buffer.
constexpr std::uint64_t kMaxRamTransfer = 16u << 20;
constexpr std::uint64_t kMaxRamSet = 1ull << 32;

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

bool isBlank(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f'; }

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && isBlank(s[i])) ++i;
    const std::size_t start = i;
    while (i < s.size() && !isBlank(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && isBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && isBlank(s.back())) s.remove_suffix(1);
  return s;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// QEMU reads qtest numbers with strtoull(base 0): a leading 0 means octal and a '-' wraps. Both are
// refused here rather than guessed at, so a number means the same to the filter and to QEMU.
Result<std::uint64_t> parseNumber(std::string_view w, const std::string& where, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return fail(where, std::string(what) + " '" + std::string(w) + "' " + std::string(why));
  };
  if (w.empty()) return bad("is empty");
  std::uint64_t v = 0;
  if (w.size() > 2 && w[0] == '0' && (w[1] == 'x' || w[1] == 'X')) {
    for (char c : w.substr(2)) {
      const int d = hexDigit(c);
      if (d < 0) return bad("is not a number");
      if (v >> 60) return bad("does not fit in 64 bits");
      v = v << 4 | unsigned(d);
    }
    return v;
  }
  if (w[0] == '-' || w[0] == '+') return bad("has a sign (QEMU would wrap it)");
  for (char c : w) {
    if (c < '0' || c > '9') return bad("is not a number (use 0x.. hex or decimal)");
  }
  if (w.size() > 1 && w[0] == '0') return bad("has a leading zero (QEMU would read it as octal)");
  for (char c : w) {
    const unsigned d = unsigned(c - '0');
    if (v > (~std::uint64_t(0) - d) / 10) return bad("does not fit in 64 bits");
    v = v * 10 + d;
  }
  return v;
}

struct Mnemonic {
  std::string_view name;
  TraceOp op;
  std::uint8_t size;
};
constexpr Mnemonic kMnemonics[] = {
    {"outb", TraceOp::PortWrite, 1},   {"outw", TraceOp::PortWrite, 2},   {"outl", TraceOp::PortWrite, 4},
    {"inb", TraceOp::PortRead, 1},     {"inw", TraceOp::PortRead, 2},     {"inl", TraceOp::PortRead, 4},
    {"writeb", TraceOp::MmioWrite, 1}, {"writew", TraceOp::MmioWrite, 2}, {"writel", TraceOp::MmioWrite, 4},
    {"writeq", TraceOp::MmioWrite, 8}, {"readb", TraceOp::MmioRead, 1},   {"readw", TraceOp::MmioRead, 2},
    {"readl", TraceOp::MmioRead, 4},   {"readq", TraceOp::MmioRead, 8},   {"write", TraceOp::RamWrite, 0},
    {"read", TraceOp::RamRead, 0},     {"memset", TraceOp::RamSet, 0},    {"b64write", TraceOp::RamB64Write, 0},
    {"b64read", TraceOp::RamB64Read, 0}, {"clock_step", TraceOp::ClockStep, 0}, {"clock_set", TraceOp::ClockSet, 0},
};

const char* operandsOf(TraceOp op) {
  switch (op) {
    case TraceOp::PortWrite:
    case TraceOp::MmioWrite: return "ADDR VALUE";
    case TraceOp::PortRead:
    case TraceOp::MmioRead: return "ADDR";
    case TraceOp::RamWrite: return "ADDR LEN 0xHEXDATA";
    case TraceOp::RamRead:
    case TraceOp::RamB64Read: return "ADDR LEN";
    case TraceOp::RamSet: return "ADDR LEN BYTE";
    case TraceOp::RamB64Write: return "ADDR LEN BASE64DATA";
    case TraceOp::ClockStep: return "[NS]";
    case TraceOp::ClockSet: return "NS";
  }
  return "?";
}

std::size_t operandCount(TraceOp op, std::size_t given) {
  switch (op) {
    case TraceOp::PortWrite:
    case TraceOp::MmioWrite:
    case TraceOp::RamRead:
    case TraceOp::RamB64Read: return 2;
    case TraceOp::PortRead:
    case TraceOp::MmioRead:
    case TraceOp::ClockSet: return 1;
    case TraceOp::RamWrite:
    case TraceOp::RamSet:
    case TraceOp::RamB64Write: return 3;
    case TraceOp::ClockStep: return given <= 1 ? given : 1;
  }
  return 0;
}

// How QEMU's qtest reads what it is given (checked against softmmu/qtest.c, qtest_process_command; the
// code there is unchanged from 7.2 in the version read): a port write parses VALUE as an unsigned long
// and hands it to cpu_outb/outw/outl, whose parameter is 8/16/32 bits wide; an MMIO write parses a
// uint64 and copies it into an 8/16/32/64-bit variable before the access. Either way the device
// receives the value's low `size` bytes. `write ADDR LEN DATA` skips DATA's first two characters and
// fills byte i from the digit pair at 2i, 2i+1 only while both digits exist; every other byte up to LEN
// is zero. So a last, unpaired digit is dropped, data shorter than LEN is zero-filled, and data beyond
// LEN is never read. We accept those lines as QEMU reads them, keep the values the device gets, and
// say so in a warning: a reproducer copied from a bug tracker means what it did there.
std::string bytesWord(std::uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

Result<TraceCommand> parseCommand(const std::vector<std::string_view>& w, const std::string& where,
                                  std::vector<Error>& warnings) {
  const Mnemonic* m = nullptr;
  for (const auto& candidate : kMnemonics) {
    if (candidate.name == w[0]) m = &candidate;
  }
  if (!m) {
    std::string name(w[0].substr(0, 40));
    return fail(where, "unknown command '" + name + "'");
  }
  TraceCommand c;
  c.op = m->op;
  c.size = m->size;
  const std::size_t given = w.size() - 1;
  if (given != operandCount(c.op, given)) {
    return fail(where, std::string(given < operandCount(c.op, given) ? "missing operand" : "too many operands") +
                           " for '" + std::string(m->name) + "' (expected " + std::string(m->name) + " " +
                           operandsOf(c.op) + ")");
  }
  auto number = [&](std::size_t i, std::string_view what) { return parseNumber(w[i], where, what); };
  auto checkLength = [&](std::uint64_t len, std::uint64_t max) -> Result<void> {
    if (len == 0) return fail(where, "length 0 in '" + std::string(m->name) + "'");
    if (len > max) return fail(where, "length " + hex(len) + " exceeds the limit " + hex(max));
    if (c.addr + len - 1 < c.addr) return fail(where, "guest range " + hex(c.addr) + "+" + hex(len) + " wraps");
    return {};
  };
  if (c.op == TraceOp::ClockStep || c.op == TraceOp::ClockSet) {
    if (given == 1) {
      auto ns = number(1, "nanoseconds");
      if (!ns) return std::unexpected(ns.error());
      c.value = *ns;
      c.has_value = true;
    }
    return c;
  }
  auto addr = number(1, "address");
  if (!addr) return std::unexpected(addr.error());
  c.addr = *addr;
  switch (c.op) {
    case TraceOp::PortWrite:
    case TraceOp::PortRead:
      // QEMU's qtest asserts (and aborts) on a port above 0xffff.
      if (c.addr > kMaxPort) return fail(where, "port " + hex(c.addr) + " out of range (0..0xffff)");
      break;
    default:
      break;
  }
  switch (c.op) {
    case TraceOp::PortWrite:
    case TraceOp::MmioWrite: {
      auto value = number(2, "value");
      if (!value) return std::unexpected(value.error());
      c.value = *value & accessMask(c.size);
      if (c.value != *value) {
        warnings.push_back(Error{where, "value " + hex(*value) + " truncated to " + bytesWord(c.size) + " (" + hex(c.value) +
                                            "), as QEMU's qtest does"});
      }
      c.has_value = true;
      break;
    }
    case TraceOp::RamWrite: {
      auto len = number(2, "length");
      if (!len) return std::unexpected(len.error());
      if (auto ok = checkLength(*len, kMaxRamTransfer); !ok) return std::unexpected(ok.error());
      c.length = *len;
      std::string_view data = w[3];
      if (data.size() < 3 || data[0] != '0' || (data[1] != 'x' && data[1] != 'X')) {
        return fail(where, "data of 'write' must be 0x followed by hex digits");
      }
      data.remove_prefix(2);
      for (char ch : data) {
        if (hexDigit(ch) < 0) return fail(where, "data of 'write' has a non-hex character '" + std::string(1, ch) + "'");
      }
      const std::uint64_t whole_bytes = data.size() / 2;
      if (whole_bytes > c.length) {
        const std::string count = std::to_string(whole_bytes) + (data.size() % 2 ? ".5" : "");
        warnings.push_back(Error{where, "data of 'write' has " + count + " bytes, more than its length " +
                                            std::to_string(c.length) + ": the bytes after the first " +
                                            std::to_string(c.length) + " are ignored, as QEMU's qtest does"});
        data = data.substr(0, 2 * c.length);
      } else if (data.size() % 2) {
        warnings.push_back(Error{where, "data of 'write' has an odd number of hex digits (" + std::to_string(data.size()) +
                                            "): the last digit '" + std::string(1, data.back()) +
                                            "' is dropped and the byte it began is zero, as QEMU's qtest does"});
        data.remove_suffix(1);
      }
      c.payload.reserve(data.size());
      for (char ch : data) c.payload.push_back(ch >= 'A' && ch <= 'F' ? char(ch - 'A' + 'a') : ch);
      break;
    }
    case TraceOp::RamRead:
    case TraceOp::RamB64Read: {
      auto len = number(2, "length");
      if (!len) return std::unexpected(len.error());
      if (auto ok = checkLength(*len, kMaxRamTransfer); !ok) return std::unexpected(ok.error());
      c.length = *len;
      break;
    }
    case TraceOp::RamSet: {
      auto len = number(2, "length");
      if (!len) return std::unexpected(len.error());
      if (auto ok = checkLength(*len, kMaxRamSet); !ok) return std::unexpected(ok.error());
      c.length = *len;
      auto byte = number(3, "byte");
      if (!byte) return std::unexpected(byte.error());
      if (*byte > 0xff) return fail(where, "memset byte " + hex(*byte) + " does not fit in a byte");
      c.value = *byte;
      c.has_value = true;
      break;
    }
    case TraceOp::RamB64Write: {
      auto len = number(2, "length");
      if (!len) return std::unexpected(len.error());
      if (auto ok = checkLength(*len, kMaxRamTransfer); !ok) return std::unexpected(ok.error());
      c.length = *len;
      for (char ch : w[3]) {
        const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                        ch == '+' || ch == '/' || ch == '=';
        if (!ok) return fail(where, "data of 'b64write' has a non-base64 character '" + std::string(1, ch) + "'");
      }
      c.payload = std::string(w[3]);
      break;
    }
    default:
      break;
  }
  return c;
}

// Annotations come first in a command's trailing comment; the first word that is not a known key
// starts free text (published reproducers comment their lines: `outb 0x3f5 0x0a # READ ID`).
Result<void> parseAnnotations(std::string_view comment, TraceCommand& c, const std::string& where) {
  const auto w = words(comment);
  bool seen_cpu = false;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (w[i] == "cpu") {
      if (seen_cpu) return fail(where, "annotation 'cpu' given twice");
      if (i + 1 >= w.size()) return fail(where, "annotation 'cpu' needs a vCPU number");
      auto n = parseNumber(w[++i], where, "vCPU");
      if (!n) return std::unexpected(n.error());
      if (*n > 0xffff) return fail(where, "vCPU " + std::to_string(*n) + " out of range (0..65535)");
      c.cpu = std::uint16_t(*n);
      seen_cpu = true;
    } else if (w[i] == "ret") {
      if (c.ret) return fail(where, "annotation 'ret' given twice");
      if (!c.isRead()) return fail(where, "annotation 'ret' on a command that is not a port or MMIO read");
      if (i + 1 >= w.size()) return fail(where, "annotation 'ret' needs the value the device returned");
      auto v = parseNumber(w[++i], where, "ret value");
      if (!v) return std::unexpected(v.error());
      if (*v & ~accessMask(c.size)) {
        return fail(where, "ret value " + hex(*v) + " is wider than the " + std::to_string(c.size) + "-byte read");
      }
      c.ret = *v;
    } else if (w[i] == "trigger") {
      if (c.trigger) return fail(where, "annotation 'trigger' given twice");
      c.trigger = true;
    } else {
      break;
    }
  }
  return {};
}

bool isHeaderKey(std::string_view k) {
  if (k.empty() || !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= 'A' && k[0] <= 'Z'))) return false;
  for (char ch : k) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Result<std::vector<std::string>> splitShellWords(std::string_view text, const std::string& where) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (isBlank(ch)) {
      if (in_word) out.push_back(std::move(cur)), cur.clear(), in_word = false;
    } else if (ch == '\'') {
      const auto end = text.find('\'', i + 1);
      if (end == std::string_view::npos) return fail(where, "unterminated single quote in qemu arguments");
      cur.append(text.substr(i + 1, end - i - 1));
      i = end;
      in_word = true;
    } else if (ch == '"') {
      std::size_t j = i + 1;
      for (; j < text.size() && text[j] != '"'; ++j) {
        if (text[j] == '\\' && j + 1 < text.size() &&
            (text[j + 1] == '"' || text[j + 1] == '\\' || text[j + 1] == '$' || text[j + 1] == '`')) {
          ++j;
        }
        cur.push_back(text[j]);
      }
      if (j >= text.size()) return fail(where, "unterminated double quote in qemu arguments");
      i = j;
      in_word = true;
    } else if (ch == '\\') {
      if (i + 1 >= text.size()) return fail(where, "trailing backslash in qemu arguments");
      cur.push_back(text[++i]);
      in_word = true;
    } else {
      cur.push_back(ch);
      in_word = true;
    }
  }
  if (in_word) out.push_back(std::move(cur));
  return out;
}

Result<Trace> parseTrace(std::string_view text, std::string file) {
  Trace trace;
  trace.file = std::move(file);
  std::size_t line_no = 0;
  std::int32_t phase = -1;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = trace.file + ":" + std::to_string(line_no);
    if (line.find('\0') != std::string_view::npos) return fail(where, "NUL byte in the line (binary file?)");
    const auto hash = line.find('#');
    const std::string_view code = trim(line.substr(0, hash));
    const std::string_view comment = hash == std::string_view::npos ? std::string_view{} : trim(line.substr(hash + 1));
    if (code.empty()) {
      if (comment.empty()) continue;
      const auto w = words(comment);
      if (w[0] == "phase") {
        if (w.size() != 2) return fail(where, "'# phase' needs exactly one phase name");
        trace.phases.emplace_back(w[1]);
        phase = std::int32_t(trace.phases.size() - 1);
        continue;
      }
      const auto colon = comment.find(':');
      if (colon != std::string_view::npos && isHeaderKey(comment.substr(0, colon))) {
        const std::string key(comment.substr(0, colon));
        const std::string value(trim(comment.substr(colon + 1)));
        if (!trace.commands.empty()) {
          // Metadata-looking comments later on are prose, except a misplaced machine description.
          if (key == "qemu") return fail(where, "'# qemu:' header after the first command (line " +
                                                    std::to_string(trace.commands.front().line) + ")");
          continue;
        }
        if (key == "qemu") {
          if (value.empty()) return fail(where, "'# qemu:' header without arguments");
          trace.qemu_args += (trace.qemu_args.empty() ? "" : " ") + value;
          auto argv = splitShellWords(value, where);
          if (!argv) return std::unexpected(argv.error());
          trace.qemu_argv.insert(trace.qemu_argv.end(), argv->begin(), argv->end());
        }
        trace.metadata.emplace_back(key, value);
      }
      continue;
    }
    auto command = parseCommand(words(code), where, trace.warnings);
    if (!command) return std::unexpected(command.error());
    command->line = line_no;
    command->phase = phase;
    if (!comment.empty()) {
      if (auto ok = parseAnnotations(comment, *command, where); !ok) return std::unexpected(ok.error());
    }
    trace.commands.push_back(std::move(*command));
  }
  if (trace.commands.empty()) return fail(trace.file + ":" + std::to_string(line_no ? line_no : 1), "trace has no commands");
  return trace;
}

Result<Trace> loadTrace(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path, std::string("cannot open trace: ") + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return fail(path, std::string("cannot read trace: ") + std::strerror(errno));
  return parseTrace(text, path);
}

std::optional<std::string> Trace::header(std::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return std::nullopt;
}

std::vector<std::size_t> Trace::triggerLines() const {
  std::vector<std::size_t> out;
  for (const auto& c : commands) {
    if (c.trigger) out.push_back(c.line);
  }
  return out;
}

std::string Trace::where(const TraceCommand& command) const { return file + ":" + std::to_string(command.line); }

std::optional<IoRequest> toIoRequest(const TraceCommand& c) noexcept {
  if (!c.isIo()) return std::nullopt;
  IoRequest r;
  r.addr = c.addr;
  r.size = c.size;
  r.count = 1;
  r.dir = c.isRead() ? Dir::Read : Dir::Write;
  r.data = c.isRead() ? 0 : c.value;
  r.type = (c.op == TraceOp::PortWrite || c.op == TraceOp::PortRead) ? IoType::Pio : IoType::Copy;
  r.vcpu = c.cpu;
  return r;
}

const char* toString(TraceOp op) noexcept {
  switch (op) {
    case TraceOp::PortWrite: return "port write";
    case TraceOp::PortRead: return "port read";
    case TraceOp::MmioWrite: return "MMIO write";
    case TraceOp::MmioRead: return "MMIO read";
    case TraceOp::RamWrite: return "write";
    case TraceOp::RamRead: return "read";
    case TraceOp::RamSet: return "memset";
    case TraceOp::RamB64Write: return "b64write";
    case TraceOp::RamB64Read: return "b64read";
    case TraceOp::ClockStep: return "clock_step";
    case TraceOp::ClockSet: return "clock_set";
  }
  return "?";
}

std::string toQtest(const TraceCommand& c) {
  static constexpr const char* kSuffix = "?bw?l???q";
  std::string out;
  switch (c.op) {
    case TraceOp::PortWrite: return std::string("out") + kSuffix[c.size] + " " + hex(c.addr) + " " + hex(c.value);
    case TraceOp::PortRead: return std::string("in") + kSuffix[c.size] + " " + hex(c.addr);
    case TraceOp::MmioWrite: return std::string("write") + kSuffix[c.size] + " " + hex(c.addr) + " " + hex(c.value);
    case TraceOp::MmioRead: return std::string("read") + kSuffix[c.size] + " " + hex(c.addr);
    case TraceOp::RamWrite: {
      // QEMU zero-fills data shorter than LEN; spelling the zeros out keeps the line unambiguous.
      std::string data = c.payload;
      data.resize(2 * c.length, '0');
      return "write " + hex(c.addr) + " " + hex(c.length) + " 0x" + data;
    }
    case TraceOp::RamRead: return "read " + hex(c.addr) + " " + hex(c.length);
    case TraceOp::RamSet: return "memset " + hex(c.addr) + " " + hex(c.length) + " " + hex(c.value);
    case TraceOp::RamB64Write: return "b64write " + hex(c.addr) + " " + hex(c.length) + " " + c.payload;
    case TraceOp::RamB64Read: return "b64read " + hex(c.addr) + " " + hex(c.length);
    case TraceOp::ClockStep: return c.has_value ? "clock_step " + std::to_string(c.value) : "clock_step";
    case TraceOp::ClockSet: return "clock_set " + std::to_string(c.value);
  }
  return out;
}

}  // namespace iof
