#include <gtest/gtest.h>

#include "ioreq_filter/core/io_request.h"
#include "test_policies.h"

namespace iof {
namespace {

using testing::pio;

TEST(IoRequest, WellFormedPortAccess) { EXPECT_EQ(classify(pio(0x3f5, Dir::Write, 0x0a)), Malformation::None); }

TEST(IoRequest, EveryMalformationIsNamed) {
  auto r = pio(0x3f5, Dir::Write);
  r.size = 3;
  EXPECT_EQ(classify(r), Malformation::BadSize);
  r = pio(0x3f5, Dir::Write);
  r.count = 0;
  EXPECT_EQ(classify(r), Malformation::ZeroCount);
  r.count = kMaxRepCount + 1;
  EXPECT_EQ(classify(r), Malformation::HugeCount);
  r = pio(0x10000, Dir::Read);
  EXPECT_EQ(classify(r), Malformation::PortOutOfRange);
  r = pio(0xffff, Dir::Read, 0, 0, 2);
  EXPECT_EQ(classify(r), Malformation::AddressWrap);
  r = pio(0x10, Dir::Read);
  r.type = static_cast<IoType>(5);
  EXPECT_EQ(classify(r), Malformation::UnknownType);
  r = pio(0x10, Dir::Read);
  r.dir = static_cast<Dir>(7);
  EXPECT_EQ(classify(r), Malformation::BadDirection);
  r = pio(0, Dir::Read);
  r.type = IoType::Copy;
  r.addr = ~0ull - 2;
  r.size = 4;
  EXPECT_EQ(classify(r), Malformation::AddressWrap);
  r.addr = 8;
  r.df = true;
  r.count = 4;  // walks down from 8 by 4 bytes x4: below zero
  EXPECT_EQ(classify(r), Malformation::AddressWrap);
  r = pio(0, Dir::Read);
  r.type = IoType::PciConfig;
  r.addr = pciConfigAddress(Sbdf{0, 0, 4, 0}, 0x1000);
  EXPECT_EQ(classify(r), Malformation::ConfigOutOfRange);
  r.addr = pciConfigAddress(Sbdf{0, 0, 4, 0}, 0x3);
  r.size = 2;  // crosses a dword
  EXPECT_EQ(classify(r), Malformation::ConfigOutOfRange);
  for (auto m : {Malformation::BadSize, Malformation::ZeroCount, Malformation::CrossesRegion})
    EXPECT_STRNE(toString(m), "?");
}

TEST(IoRequest, BroadcastsNeedNoAddress) {
  IoRequest r;
  r.type = IoType::Invalidate;
  r.size = 0;
  EXPECT_EQ(classify(r), Malformation::None);
}

TEST(IoRequest, SbdfRoundTrip) {
  const Sbdf s{0, 3, 31, 7};
  EXPECT_EQ(Sbdf::fromRaw(s.raw()), s);
  EXPECT_EQ(toString(s), "0000:03:1f.7");
  EXPECT_EQ(pciConfigAddress(s, 0x10) >> 32, s.raw());
}

TEST(IoRequest, DescribeNamesEverything) {
  auto r = pio(0x3f5, Dir::Write, 0x0a, 1);
  EXPECT_EQ(describe(r), "PIO write 0x3f5 size 1 data 0xa vcpu 1");
}

}  // namespace
}  // namespace iof
