// vtc::rules::Error: the one exception type of the rules components (decoder, resize, tokenizer).
// what() is ONE line that already names the file where there is one. The C API layer catches it at the boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace vtc::rules {

class Error : public std::runtime_error {
 public:
  enum class Kind { decode, input, internal };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

}  // namespace vtc::rules
