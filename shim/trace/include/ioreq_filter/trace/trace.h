// A trace: a QEMU qtest command script plus ioreq-filter's annotations (docs/trace-format.md).
// Commands are kept as parsed values, never as the original text: what a replay forwards to QEMU is
// regenerated from the values the filter judged, so the two can never read a line differently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ioreq_filter/core/error.h"
#include "ioreq_filter/core/io_request.h"

namespace iof {

enum class TraceOp : std::uint8_t {
  PortWrite,   // outb/outw/outl
  PortRead,    // inb/inw/inl
  MmioWrite,   // writeb/writew/writel/writeq
  MmioRead,    // readb/readw/readl/readq
  RamWrite,    // write ADDR LEN 0xHEX
  RamRead,     // read ADDR LEN
  RamSet,      // memset ADDR LEN BYTE
  RamB64Write, // b64write ADDR LEN BASE64
  RamB64Read,  // b64read ADDR LEN
  ClockStep,   // clock_step [NS]
  ClockSet,    // clock_set NS
};

struct TraceCommand {
  std::size_t line = 0;  // 1-based line in the trace file
  TraceOp op = TraceOp::PortWrite;
  std::uint64_t addr = 0;
  std::uint8_t size = 0;        // access size of port/MMIO commands (1/2/4/8)
  std::uint64_t value = 0;      // port/MMIO write value; memset byte; clock_step/clock_set ns
  bool has_value = false;       // clock_step without NS
  std::uint64_t length = 0;     // RAM commands
  std::string payload;          // write: lowercase hex digits without 0x; b64write: the base64 text
  std::uint16_t cpu = 0;        // `cpu N` annotation
  std::optional<std::uint64_t> ret;  // `ret V` annotation (reads): recorded device response
  bool trigger = false;         // `trigger` annotation
  std::int32_t phase = -1;      // index into Trace::phases, -1 before the first `# phase` line

  // Port and MMIO accesses are I/O requests; RAM and clock commands are not.
  bool isIo() const noexcept {
    return op == TraceOp::PortWrite || op == TraceOp::PortRead || op == TraceOp::MmioWrite || op == TraceOp::MmioRead;
  }
  bool isRead() const noexcept { return op == TraceOp::PortRead || op == TraceOp::MmioRead; }
};

struct Trace {
  std::string file;  // as given to the parser; used in every message
  // `# qemu: ARGS` (several such lines are joined with a space), and its words split shell-style.
  std::string qemu_args;
  std::vector<std::string> qemu_argv;
  // Every `# key: value` header line in order, `qemu` included.
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<std::string> phases;  // in order of appearance; a name may repeat
  std::vector<TraceCommand> commands;
  // Lines accepted the way QEMU's qtest reads them although they say more than QEMU uses (a value
  // wider than its access, `write` data longer than LEN or with an odd digit): what was done, where.
  // Programs show them to the user; a replay forwards the adjusted command, never the original text.
  std::vector<Error> warnings;

  // First value of header `key`, if any.
  std::optional<std::string> header(std::string_view key) const;
  std::vector<std::size_t> triggerLines() const;
  std::string where(const TraceCommand& command) const;  // "file:line"
};

// Parses a whole trace. The first malformed line ends parsing with an Error naming file:line.
Result<Trace> parseTrace(std::string_view text, std::string file);
// Reads and parses a plain-text trace file (compressed traces are opened by the CLI/backends).
Result<Trace> loadTrace(const std::string& path);

// The request Xen would hand a device model for this command; nullopt for non-I/O commands.
std::optional<IoRequest> toIoRequest(const TraceCommand& command) noexcept;

// The command as a qtest line (no newline, no annotations), regenerated from the parsed values.
std::string toQtest(const TraceCommand& command);
const char* toString(TraceOp op) noexcept;

// Splits a `# qemu:` argument string like a POSIX shell does for words: blanks separate, single and
// double quotes group, backslash escapes. No expansion of any kind. `where` names the line for errors.
Result<std::vector<std::string>> splitShellWords(std::string_view text, const std::string& where);

// Mask of an access of `size` bytes (all-ones is what a refused read returns).
constexpr std::uint64_t accessMask(std::uint8_t size) noexcept {
  return size >= 8 ? ~std::uint64_t(0) : (std::uint64_t(1) << (8 * size)) - 1;
}

}  // namespace iof
