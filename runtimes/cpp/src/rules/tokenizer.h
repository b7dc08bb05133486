// CLIP's byte-level BPE tokenizer: the same ids as vtc_deploy.tokenizer.ClipTokenizer (open_clip's tokenize).
// Text cleaning as open_clip's default: ftfy.fix_text (HTML entities when no markup, terminal escapes, control
// characters, line breaks, curly quotes, Latin ligatures, full-width characters, NFC; text that ftfy's mojibake
// detector flags is refused, see tokenizer.cpp), HTML unescaped twice, whitespace collapsed, Unicode lower-casing,
// then the CLIP pre-tokenizer regex (\p{L}+, \p{N}, [^\s\p{L}\p{N}]+ and the English contractions) and the BPE merges.
// The vocabulary (bpe_simple_vocab_16e6.txt.gz) is embedded at build time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "error.h"

namespace vtc::rules {

class Tokenizer {
 public:
  Tokenizer();  // uses the embedded vocab
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  // BPE ids of the cleaned text, without start/end tokens. Throws Error(input) on invalid UTF-8 and on text that
  // looks like mojibake (ftfy would repair it; the message says "looks like mis-decoded UTF-8").
  std::vector<int32_t> encode(const std::string& utf8) const;
  // [context_length]: start, ids, end, zero padding; cut to length keeping the end token.
  std::vector<int64_t> tokenize(const std::string& utf8, int context_length = 77) const;
  // The text after cleaning (for tests).
  std::string clean(const std::string& utf8) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vtc::rules
