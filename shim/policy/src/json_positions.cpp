#include "json_positions.h"

namespace iof::detail {

JsonPositions::JsonPositions(std::string_view text) : text_(text) {
  skipSpace();
  if (pos_ < text_.size()) value("");
}

TextPosition JsonPositions::here() const { return TextPosition{line_, pos_ - line_start_ + 1}; }

void JsonPositions::skipSpace() {
  while (pos_ < text_.size()) {
    const char c = text_[pos_];
    if (c == '\n') {
      ++line_;
      line_start_ = pos_ + 1;
    } else if (c != ' ' && c != '\t' && c != '\r') {
      break;
    }
    ++pos_;
  }
}

std::string JsonPositions::readString() {
  std::string out;
  ++pos_;  // opening quote
  while (pos_ < text_.size() && text_[pos_] != '"') {
    if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
    out += text_[pos_++];
  }
  ++pos_;
  return out;
}

void JsonPositions::skipString() { (void)readString(); }

void JsonPositions::value(const std::string& path) {
  skipSpace();
  if (pos_ >= text_.size()) return;
  positions_.emplace(path, here());
  const std::string prefix = path.empty() ? "" : path + "/";
  const char c = text_[pos_];
  if (c == '{') {
    ++pos_;
    skipSpace();
    while (pos_ < text_.size() && text_[pos_] != '}') {
      if (text_[pos_] != '"') return;  // not valid JSON; nlohmann reported it already
      const std::string key = readString();
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ':') ++pos_;
      value(prefix + key);
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ',') ++pos_, skipSpace();
    }
    ++pos_;
  } else if (c == '[') {
    ++pos_;
    skipSpace();
    std::size_t index = 0;
    while (pos_ < text_.size() && text_[pos_] != ']') {
      value(prefix + std::to_string(index++));
      skipSpace();
      if (pos_ < text_.size() && text_[pos_] == ',') ++pos_, skipSpace();
      else if (pos_ < text_.size() && text_[pos_] != ']') return;
    }
    ++pos_;
  } else if (c == '"') {
    skipString();
  } else {
    while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '}' && text_[pos_] != ']' && text_[pos_] != '\n' &&
           text_[pos_] != ' ')
      ++pos_;
  }
}

TextPosition JsonPositions::find(std::string path) const {
  for (;;) {
    if (auto it = positions_.find(path); it != positions_.end()) return it->second;
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) {
      if (auto root = positions_.find(""); root != positions_.end() && !path.empty()) return root->second;
      return {};
    }
    path.resize(slash);
  }
}

}  // namespace iof::detail
