// FlatU64Set stands in for std::unordered_set in the sequence fixpoint's edge deduplication: any
// disagreement with it (a key lost across a growth, the empty-slot marker taken as a key) would drop
// or duplicate edges in every policy.
#include "flat_u64_set.h"

#include <gtest/gtest.h>

#include <random>
#include <unordered_set>

using iof::analysis::FlatU64Set;

TEST(FlatU64Set, AgreesWithUnorderedSetAcrossGrowthAndClear) {
  FlatU64Set flat;
  std::unordered_set<std::uint64_t> reference;
  std::mt19937_64 rng(42);
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 20000; ++i) {
      // Few distinct keys among many draws, so that repeated inserts are exercised, plus the edge keys.
      std::uint64_t key = rng() % 5000;
      if (i % 997 == 0) key = ~std::uint64_t{0};
      if (i % 991 == 0) key = 0;
      if (i % 13 == 0) key = key << 32 | (key * 7);
      ASSERT_EQ(flat.insert(key), reference.insert(key).second) << "key " << key << " at draw " << i;
    }
    flat.clear();
    reference.clear();
  }
}

TEST(FlatU64Set, ReservedMarkerIsAnOrdinaryKey) {
  FlatU64Set flat;
  EXPECT_TRUE(flat.insert(~std::uint64_t{0}));
  EXPECT_FALSE(flat.insert(~std::uint64_t{0}));
  EXPECT_TRUE(flat.insert(0));
  flat.clear();
  EXPECT_TRUE(flat.insert(~std::uint64_t{0}));
}
