#pragma once
// A set of 64-bit keys in one open-addressed array: the sequence fixpoint asks it about the same
// edges millions of times per large module, and std::unordered_set spent a node allocation and a
// pointer chase on each of them.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace iof::analysis {

class FlatU64Set {
 public:
  // Returns true if `key` was not in the set.
  bool insert(std::uint64_t key) {
    if (key == kEmpty) {
      const bool added = !has_empty_key_;
      has_empty_key_ = true;
      return added;
    }
    if ((size_ + 1) * 2 > slots_.size()) grow();
    if (!place(key)) return false;
    ++size_;
    return true;
  }
  void clear() {
    slots_.clear();
    size_ = 0;
    has_empty_key_ = false;
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  std::size_t home(std::uint64_t key) const {
    return std::size_t((key * 0x9E3779B97F4A7C15ull) >> 32) & (slots_.size() - 1);
  }
  bool place(std::uint64_t key) {
    for (std::size_t i = home(key);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i] == key) return false;
      if (slots_[i] == kEmpty) {
        slots_[i] = key;
        return true;
      }
    }
  }
  void grow() {
    std::vector<std::uint64_t> old(slots_.empty() ? 64 : slots_.size() * 2, kEmpty);
    old.swap(slots_);
    for (std::uint64_t key : old)
      if (key != kEmpty) place(key);
  }
  std::vector<std::uint64_t> slots_;
  std::size_t size_ = 0;
  bool has_empty_key_ = false;
};

}  // namespace iof::analysis
