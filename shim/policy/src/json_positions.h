// Maps JSON-pointer-like paths ("graphs/0/channels/1/nodes/3/offset") to line:column in the source
// text, so semantic errors found after parsing can still name where they are. nlohmann-json does not
// keep positions of values; this scanner walks the (already syntax-checked) text once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace iof::detail {

struct TextPosition {
  std::size_t line = 1;
  std::size_t column = 1;
};

class JsonPositions {
 public:
  explicit JsonPositions(std::string_view text);
  // Position of the value at `path`, or of its nearest ancestor that exists.
  TextPosition find(std::string path) const;

 private:
  void value(const std::string& path);
  void skipSpace();
  void skipString();
  std::string readString();
  TextPosition here() const;

  std::string_view text_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::size_t line_start_ = 0;
  std::unordered_map<std::string, TextPosition> positions_;
};

}  // namespace iof::detail
