#include <gtest/gtest.h>

#include <string>

#include "ioreq_filter/trace/trace.h"

namespace iof {
namespace {

// Parses `text` expecting failure; returns "where: what".
std::string errorOf(std::string_view text) {
  auto t = parseTrace(text, "t.qtest");
  if (t) return "parsed";
  return t.error().message();
}

TEST(TraceParser, ReadsHeaderPhasesCommandsAndAnnotations) {
  const char* text =
      "# cve: CVE-2015-3456\n"
      "# qemu: -machine pc -nodefaults -drive 'file=a b.img,if=floppy,format=raw'\n"
      "# qemu: -m 64\n"
      "# description: VENOM\n"
      "\n"
      "# phase probe\n"
      "outb 0x3f5 0x0a # cpu 1\r\n"
      "inb 0x3f4 # ret 0x80 cpu 2 trigger READ ID answered\n"
      "# phase workload\n"
      "writel 0xfebc0000 0xdeadbeef\n"
      "readq 0xfebc0008 # ret 0xffffffffffffffff\n"
      "write 0x1000 4 0xA1b2\n"
      "clock_step\n"
      "clock_step 100\n"
      "outw 10 65535\n";
  auto t = parseTrace(text, "venom.qtest");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->qemu_args, "-machine pc -nodefaults -drive 'file=a b.img,if=floppy,format=raw' -m 64");
  const std::vector<std::string> argv{"-machine", "pc", "-nodefaults", "-drive", "file=a b.img,if=floppy,format=raw",
                                      "-m", "64"};
  EXPECT_EQ(t->qemu_argv, argv);
  EXPECT_EQ(t->header("cve"), "CVE-2015-3456");
  EXPECT_EQ(t->header("description"), "VENOM");
  EXPECT_FALSE(t->header("source"));
  ASSERT_EQ(t->phases.size(), 2u);
  ASSERT_EQ(t->commands.size(), 8u);

  const auto& out = t->commands[0];
  EXPECT_EQ(out.line, 7u);
  EXPECT_EQ(out.op, TraceOp::PortWrite);
  EXPECT_EQ(out.cpu, 1);
  EXPECT_EQ(out.phase, 0);
  EXPECT_EQ(toQtest(out), "outb 0x3f5 0xa");

  const auto& in = t->commands[1];
  EXPECT_EQ(in.ret, 0x80u);
  EXPECT_EQ(in.cpu, 2);
  EXPECT_TRUE(in.trigger);
  EXPECT_EQ(t->triggerLines(), std::vector<std::size_t>{8});
  EXPECT_EQ(t->where(in), "venom.qtest:8");

  EXPECT_EQ(t->commands[2].phase, 1);
  EXPECT_EQ(toQtest(t->commands[2]), "writel 0xfebc0000 0xdeadbeef");
  EXPECT_EQ(t->commands[3].ret, 0xffffffffffffffffu);
  EXPECT_EQ(toQtest(t->commands[4]), "write 0x1000 0x4 0xa1b20000");
  EXPECT_FALSE(t->commands[4].isIo());
  EXPECT_EQ(toQtest(t->commands[5]), "clock_step");
  EXPECT_EQ(toQtest(t->commands[6]), "clock_step 100");
  EXPECT_EQ(toQtest(t->commands[7]), "outw 0xa 0xffff");
}

TEST(TraceParser, ConvertsIoCommandsToRequests) {
  auto t = parseTrace("outl 0xcf8 0x80002000 # cpu 3\ninl 0xcfc\nwriteq 0x1000 0x1\nreadw 0x2000\nwrite 0 1 0x00\n",
                      "t");
  ASSERT_TRUE(t) << t.error().message();
  auto out = toIoRequest(t->commands[0]);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->type, IoType::Pio);
  EXPECT_EQ(out->dir, Dir::Write);
  EXPECT_EQ(out->addr, 0xcf8u);
  EXPECT_EQ(out->data, 0x80002000u);
  EXPECT_EQ(out->size, 4);
  EXPECT_EQ(out->count, 1u);
  EXPECT_EQ(out->vcpu, 3);
  auto in = toIoRequest(t->commands[1]);
  EXPECT_EQ(in->dir, Dir::Read);
  EXPECT_EQ(in->vcpu, 0);
  auto mmio = toIoRequest(t->commands[2]);
  EXPECT_EQ(mmio->type, IoType::Copy);
  EXPECT_EQ(mmio->size, 8);
  EXPECT_EQ(toIoRequest(t->commands[3])->size, 2);
  EXPECT_FALSE(toIoRequest(t->commands[4]));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(classify(*toIoRequest(t->commands[i])), Malformation::None);
}

TEST(TraceParser, FreeTextAfterAnnotationsIsAComment) {
  auto t = parseTrace("outb 0x3f5 0x0a # READ ID, ret is not a key here\ninb 0x3f4 # cpu 1 then poll\n", "t");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_FALSE(t->commands[0].ret);
  EXPECT_EQ(t->commands[1].cpu, 1);
}

TEST(TraceParser, KeyValueCommentsAfterTheFirstCommandAreProse) {
  auto t = parseTrace("outb 0x3f5 0x0a\n# note: not a header\n", "t");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->metadata.empty());
}

struct BadLine {
  const char* text;
  const char* message;
};

class MalformedTrace : public testing::TestWithParam<BadLine> {};

TEST_P(MalformedTrace, NamesFileLineAndProblem) { EXPECT_EQ(errorOf(GetParam().text), GetParam().message); }

INSTANTIATE_TEST_SUITE_P(
    EveryCase, MalformedTrace,
    testing::Values(
        BadLine{"outb 1 1\nfoo 0x1\n", "t.qtest:2: unknown command 'foo'"},
        BadLine{"outb 0x3f5\n", "t.qtest:1: missing operand for 'outb' (expected outb ADDR VALUE)"},
        BadLine{"inb 0x3f4 0x1\n", "t.qtest:1: too many operands for 'inb' (expected inb ADDR)"},
        BadLine{"clock_step 1 2\n", "t.qtest:1: too many operands for 'clock_step' (expected clock_step [NS])"},
        BadLine{"clock_set\n", "t.qtest:1: missing operand for 'clock_set' (expected clock_set NS)"},
        BadLine{"outb 0x3fz 1\n", "t.qtest:1: address '0x3fz' is not a number"},
        BadLine{"outb 0x 1\n", "t.qtest:1: address '0x' is not a number (use 0x.. hex or decimal)"},
        BadLine{"outb 0x3f5 abc\n", "t.qtest:1: value 'abc' is not a number (use 0x.. hex or decimal)"},
        BadLine{"outb 010 1\n", "t.qtest:1: address '010' has a leading zero (QEMU would read it as octal)"},
        BadLine{"outb -1 1\n", "t.qtest:1: address '-1' has a sign (QEMU would wrap it)"},
        BadLine{"writeq 0x10000000000000000 1\n", "t.qtest:1: address '0x10000000000000000' does not fit in 64 bits"},
        BadLine{"writeq 18446744073709551616 1\n", "t.qtest:1: address '18446744073709551616' does not fit in 64 bits"},
        BadLine{"outb 0x10000 1\n", "t.qtest:1: port 0x10000 out of range (0..0xffff)"},
        BadLine{"inl 0x10000\n", "t.qtest:1: port 0x10000 out of range (0..0xffff)"},
        BadLine{"write 0x1000 2 abcd\n", "t.qtest:1: data of 'write' must be 0x followed by hex digits"},
        BadLine{"write 0x1000 2 0xabcg\n", "t.qtest:1: data of 'write' has a non-hex character 'g'"},
        BadLine{"write 0x1000 0 0x00\n", "t.qtest:1: length 0 in 'write'"},
        BadLine{"read 0x1000 0x1000001\n", "t.qtest:1: length 0x1000001 exceeds the limit 0x1000000"},
        BadLine{"read 0xffffffffffffffff 2\n", "t.qtest:1: guest range 0xffffffffffffffff+0x2 wraps"},
        BadLine{"memset 0x1000 4 0x100\n", "t.qtest:1: memset byte 0x100 does not fit in a byte"},
        BadLine{"b64write 0x1000 4 AA*A\n", "t.qtest:1: data of 'b64write' has a non-base64 character '*'"},
        BadLine{"inb 0x3f4 # cpu\n", "t.qtest:1: annotation 'cpu' needs a vCPU number"},
        BadLine{"inb 0x3f4 # cpu x\n", "t.qtest:1: vCPU 'x' is not a number (use 0x.. hex or decimal)"},
        BadLine{"inb 0x3f4 # cpu 65536\n", "t.qtest:1: vCPU 65536 out of range (0..65535)"},
        BadLine{"inb 0x3f4 # cpu 1 cpu 2\n", "t.qtest:1: annotation 'cpu' given twice"},
        BadLine{"outb 0x3f5 1 # ret 0x80\n", "t.qtest:1: annotation 'ret' on a command that is not a port or MMIO read"},
        BadLine{"inb 0x3f4 # ret\n", "t.qtest:1: annotation 'ret' needs the value the device returned"},
        BadLine{"inb 0x3f4 # ret 0x5252\n", "t.qtest:1: ret value 0x5252 is wider than the 1-byte read"},
        BadLine{"inb 0x3f4 # ret 1 ret 1\n", "t.qtest:1: annotation 'ret' given twice"},
        BadLine{"inb 0x3f4 # trigger trigger\n", "t.qtest:1: annotation 'trigger' given twice"},
        BadLine{"# phase\ninb 1\n", "t.qtest:1: '# phase' needs exactly one phase name"},
        BadLine{"# phase two words\ninb 1\n", "t.qtest:1: '# phase' needs exactly one phase name"},
        BadLine{"inb 1\n# qemu: -m 64\n", "t.qtest:2: '# qemu:' header after the first command (line 1)"},
        BadLine{"# qemu:\ninb 1\n", "t.qtest:1: '# qemu:' header without arguments"},
        BadLine{"# qemu: -drive 'file=x\ninb 1\n", "t.qtest:1: unterminated single quote in qemu arguments"},
        BadLine{"# qemu: -name \"x\ninb 1\n", "t.qtest:1: unterminated double quote in qemu arguments"},
        BadLine{"# qemu: -m 64 \\\ninb 1\n", "t.qtest:1: trailing backslash in qemu arguments"},
        BadLine{"# only a header: yes\n\n", "t.qtest:2: trace has no commands"},
        BadLine{"", "t.qtest:1: trace has no commands"}));

// Reproducers copied from QEMU's bug trackers rely on how QEMU 7.2's qtest reads a line; those lines
// are accepted as QEMU reads them, and each adjustment is a warning naming file:line.
struct QemuReading {
  std::string line;
  std::string qtest;    // the line as a replay forwards it
  std::string warning;  // "where: what"
};
class ReadLikeQemu : public testing::TestWithParam<QemuReading> {};

TEST_P(ReadLikeQemu, AcceptsWithAWarningNamingTheLine) {
  auto t = parseTrace("inb 0x3f4\n" + GetParam().line + "\n", "t.qtest");
  ASSERT_TRUE(t) << t.error().message();
  ASSERT_EQ(t->commands.size(), 2u);
  EXPECT_EQ(toQtest(t->commands[1]), GetParam().qtest);
  ASSERT_EQ(t->warnings.size(), 1u);
  EXPECT_EQ(t->warnings[0].message(), GetParam().warning);
}

INSTANTIATE_TEST_SUITE_P(
    EveryCase, ReadLikeQemu,
    testing::Values(
        QemuReading{"writeb 0x1000 0x642a8d58", "writeb 0x1000 0x58",
                    "t.qtest:2: value 0x642a8d58 truncated to 1 byte (0x58), as QEMU's qtest does"},
        QemuReading{"writew 0x1000 0x10000", "writew 0x1000 0x0",
                    "t.qtest:2: value 0x10000 truncated to 2 bytes (0x0), as QEMU's qtest does"},
        QemuReading{"writel 0x1000 0x123456789", "writel 0x1000 0x23456789",
                    "t.qtest:2: value 0x123456789 truncated to 4 bytes (0x23456789), as QEMU's qtest does"},
        QemuReading{"outb 0x3f5 0x100", "outb 0x3f5 0x0",
                    "t.qtest:2: value 0x100 truncated to 1 byte (0x0), as QEMU's qtest does"},
        QemuReading{"outw 0x1f0 0x12345", "outw 0x1f0 0x2345",
                    "t.qtest:2: value 0x12345 truncated to 2 bytes (0x2345), as QEMU's qtest does"},
        QemuReading{"outl 0xc000 0xfffffffff", "outl 0xc000 0xffffffff",
                    "t.qtest:2: value 0xfffffffff truncated to 4 bytes (0xffffffff), as QEMU's qtest does"},
        QemuReading{"write 0x1000 4 0x0000030", "write 0x1000 0x4 0x00000300",
                    "t.qtest:2: data of 'write' has an odd number of hex digits (7): the last digit '0' is dropped and "
                    "the byte it began is zero, as QEMU's qtest does"},
        QemuReading{"write 0x1000 2 0xabc", "write 0x1000 0x2 0xab00",
                    "t.qtest:2: data of 'write' has an odd number of hex digits (3): the last digit 'c' is dropped and "
                    "the byte it began is zero, as QEMU's qtest does"},
        QemuReading{"write 0x1000 1 0xabcd", "write 0x1000 0x1 0xab",
                    "t.qtest:2: data of 'write' has 2 bytes, more than its length 1: the bytes after the first 1 are "
                    "ignored, as QEMU's qtest does"},
        QemuReading{"write 0x1000 1 0xabcde", "write 0x1000 0x1 0xab",
                    "t.qtest:2: data of 'write' has 2.5 bytes, more than its length 1: the bytes after the first 1 are "
                    "ignored, as QEMU's qtest does"}));

TEST(TraceParser, WritesWithinLimitsGiveNoWarnings) {
  auto t = parseTrace("writeq 0x1000 0xffffffffffffffff\noutb 0x3f5 0xff\nwrite 0x1000 4 0xab\n", "t.qtest");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_TRUE(t->warnings.empty());
  EXPECT_EQ(toQtest(t->commands[2]), "write 0x1000 0x4 0xab000000");  // shorter data: zero-filled, as QEMU does
}

TEST(TraceParser, RejectsNulBytes) {
  EXPECT_EQ(errorOf(std::string_view("inb 1\nou\0b 1 1\n", 15)), "t.qtest:2: NUL byte in the line (binary file?)");
}

TEST(TraceParser, SplitsShellWordsLikeAShell) {
  auto w = splitShellWords(R"(-a "b c" 'd "e"' f\ g "h\"i" j'k'l)", "x");
  ASSERT_TRUE(w) << w.error().message();
  const std::vector<std::string> expected{"-a", "b c", "d \"e\"", "f g", "h\"i", "jkl"};
  EXPECT_EQ(*w, expected);
}

TEST(TraceParser, LoadReportsAMissingFile) {
  auto t = loadTrace("/nonexistent/trace.qtest");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().where, "/nonexistent/trace.qtest");
  EXPECT_NE(t.error().what.find("cannot open trace"), std::string::npos);
}

}  // namespace
}  // namespace iof
