// Traces come from outside (published reproducers, recordings): no input may crash the parser, every
// rejection must name a line of the input, and what a replay forwards must read back the same.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "ioreq_filter/trace/trace.h"

namespace iof {
namespace {

TEST(TraceParserRobustness, MutatedTracesParseOrFailWithALineNumber) {
  const std::vector<std::string> lines{"outb 0x3f5 0x0a",          "inb 0x3f4 # ret 0x80 cpu 1",
                                       "writel 0xfebc0000 0xdeadbeef # trigger", "write 0x1000 4 0xa1b2c3d4",
                                       "memset 0 16 0xff",         "clock_step 1000",
                                       "# phase probe",            "# qemu: -machine pc 'a b'",
                                       "readq 0x1000",             "b64read 0x0 8",
                                       "outl 0xcf8 0x80002000",    "inw 0xcfe # cpu 0 ret 0x200"};
  const std::string noise = "0x19afg #-'\"\\\t\r\xff:qrc ";
  std::mt19937 rng(12345);  // fixed seed: a failure reproduces
  int parsed = 0, rejected = 0;
  for (int round = 0; round < 5000; ++round) {
    std::string text;
    const int count = 1 + int(rng() % 5);
    for (int l = 0; l < count; ++l) {
      std::string line = lines[rng() % lines.size()];
      for (int m = int(rng() % 3); m > 0 && round % 4; --m) {
        const std::size_t at = rng() % (line.size() + 1);
        switch (rng() % 3) {
          case 0: line.insert(at, 1, noise[rng() % noise.size()]); break;
          case 1: if (at < line.size()) line.erase(at, 1); break;
          default: if (at < line.size()) line[at] = noise[rng() % noise.size()]; break;
        }
      }
      text += line + "\n";
    }
    auto t = parseTrace(text, "fuzz");
    if (t) {
      ++parsed;
      for (const auto& c : t->commands) {
        auto again = parseTrace(toQtest(c), "again");
        ASSERT_TRUE(again) << toQtest(c) << ": " << again.error().message();
        ASSERT_EQ(again->commands.size(), 1u);
        EXPECT_EQ(toQtest(again->commands[0]), toQtest(c));
      }
    } else {
      ++rejected;
      EXPECT_TRUE(t.error().where.starts_with("fuzz:")) << t.error().message();
      EXPECT_FALSE(t.error().what.empty());
    }
  }
  // Both paths must actually be exercised for the test to mean anything.
  EXPECT_GT(parsed, 1000);
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace iof
