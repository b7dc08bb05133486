// vtc::Error: the exception the library core throws; the C API turns it into a status and a one-line message.
// Errors from the rules components (vtc::rules::Error) are mapped at the boundary too (capi.cpp).
#pragma once

#include <stdexcept>
#include <string>

#include "vtc/vtc.h"

namespace vtc {

class Error : public std::runtime_error {
 public:
  Error(int status, const std::string& message) : std::runtime_error(one_line(message)), status_(status) {}
  int status() const noexcept { return status_; }

  static std::string one_line(const std::string& text) {  // collapse all whitespace runs into one space
    std::string out;
    bool space = false;
    for (char c : text) {
      if (c == '\n' || c == '\r' || c == '\t' || c == ' ' || c == '\v' || c == '\f') {
        space = !out.empty();
      } else {
        if (space) out.push_back(' ');
        space = false;
        out.push_back(c);
      }
    }
    return out;
  }

 private:
  int status_;
};

}  // namespace vtc
