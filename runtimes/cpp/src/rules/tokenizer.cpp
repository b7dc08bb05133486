// CLIP BPE tokenizer, same ids as vtc_deploy.tokenizer (open_clip's default "lower" cleaning):
//   ftfy.fix_text (per line) -> html.unescape twice -> strip + whitespace collapsed (Python str.split) ->
//   str.lower -> the CLIP pre-tokenizer regex -> bytes mapped to printable symbols -> BPE merges by rank -> ids.
// The character tables (Unicode categories as the `regex` module sees them, Python's lower-case mapping and
// whitespace, HTML5 entities, ftfy's maps and its mojibake detector) are generated from Python by
// tools/gen_text_tables.py. ICU gives NFC and the Cased/Case_Ignorable properties for the final-sigma rule.
// ftfy's mojibake repair (fix_encoding: UTF-8 that was decoded as Latin-1, Windows-125x, MacRoman, ...) is not
// reproduced; text it could change is refused instead (Error::Kind::input, "looks like mis-decoded UTF-8"), never
// tokenized differently. fix_encoding leaves a text unchanged unless ftfy.badness.is_bad(text) (BADNESS_RE) finds
// a match, so the tokenizer refuses exactly the texts where is_bad is true at the point ftfy calls fix_encoding (after
// unescape_html, in each pass of fix_and_explain's loop). That is a superset: ftfy leaves some of those unchanged
// (e.g. text with C1 controls that it maps as Windows-1252, or is_bad matches it cannot decode); they are refused too.
#include "tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

extern const unsigned char vtc_bpe_vocab_gz[];
extern const std::size_t vtc_bpe_vocab_gz_size;

namespace vtc::rules {
namespace {

struct CodeRange {
  uint32_t lo, hi;
};
struct CodeMap {
  uint32_t cp;
  const char* utf8;
};
struct EntityEntry {
  const char* name;
  const char* utf8;
};
struct BadnessClass {  // kBadnessRanges[offset, offset + count), sorted
  uint32_t offset, count;
};
struct BadnessAlt {  // one fixed-length alternative of ftfy's BADNESS_RE: a code point of each class in turn
  bool at_start;     // '^': only at the start of the text
  uint8_t len;
  uint16_t cls[8];
};

#include "text_tables.inc"

constexpr int kMerges = 49152 - 256 - 2;
const char* const kSot = "<start_of_text>";
const char* const kEot = "<end_of_text>";

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], uint32_t cp) {
  const CodeRange* end = table + N;
  const CodeRange* it = std::upper_bound(table, end, cp, [](uint32_t v, const CodeRange& r) { return v < r.lo; });
  return it != table && cp <= (it - 1)->hi;
}

bool is_letter(uint32_t c) { return in_ranges(kLetter, c); }
bool is_number(uint32_t c) { return in_ranges(kNumber, c); }
bool is_py_space(uint32_t c) { return in_ranges(kPySpace, c); }
bool is_decimal(uint32_t c) { return in_ranges(kDecimal, c); }
bool is_other(uint32_t c) { return in_ranges(kOther, c); }  // [^\s\p{L}\p{N}]

bool in_badness_class(uint16_t k, uint32_t cp) {
  const CodeRange* begin = kBadnessRanges + kBadnessClasses[k].offset;
  const CodeRange* end = begin + kBadnessClasses[k].count;
  const CodeRange* it = std::upper_bound(begin, end, cp, [](uint32_t v, const CodeRange& r) { return v < r.lo; });
  return it != begin && cp <= (it - 1)->hi;
}

// ftfy.badness.is_bad: BADNESS_RE.search(text) is not None.
bool looks_like_mojibake(const std::u32string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    for (const BadnessAlt& alt : kBadnessAlts) {
      if ((alt.at_start && i != 0) || s.size() - i < alt.len) continue;
      size_t k = 0;
      while (k < alt.len && in_badness_class(alt.cls[k], s[i + k])) ++k;
      if (k == alt.len) return true;
    }
  }
  return false;
}

[[noreturn]] void refuse_mojibake(const std::u32string& segment);

std::u32string decode_utf8(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    uint32_t cp = 0;
    size_t n = 0;
    if (b0 < 0x80) {
      cp = b0, n = 1;
    } else if ((b0 & 0xE0) == 0xC0) {
      cp = b0 & 0x1F, n = 2;
    } else if ((b0 & 0xF0) == 0xE0) {
      cp = b0 & 0x0F, n = 3;
    } else if ((b0 & 0xF8) == 0xF0) {
      cp = b0 & 0x07, n = 4;
    } else {
      n = 0;
    }
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (ok) {
      static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = false;
    }
    if (!ok) throw Error(Error::Kind::input, "text is not valid UTF-8 (at byte " + std::to_string(i) + ")");
    out.push_back(cp);
    i += n;
  }
  return out;
}

void append_utf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(&out, c);
  return out;
}

std::u32string u32(const char* utf8) { return decode_utf8(utf8); }

// Code point -> replacement (possibly empty) tables, built once.
struct Tables {
  std::unordered_map<uint32_t, std::u32string> lower, c1, ligatures, width, invalid_charrefs;
  std::unordered_set<uint32_t> invalid_codepoints, control;
  std::unordered_map<std::u32string, std::u32string> html5, ftfy_entities;
  size_t longest_html5 = 0;

  Tables() {
    for (const auto& m : kLower) lower[m.cp] = u32(m.utf8);
    for (const auto& m : kC1) c1[m.cp] = u32(m.utf8);
    for (const auto& m : kLigatures) ligatures[m.cp] = u32(m.utf8);
    for (const auto& m : kWidth) width[m.cp] = u32(m.utf8);
    for (const auto& m : kInvalidCharrefs) invalid_charrefs[m.cp] = u32(m.utf8);
    for (uint32_t c : kInvalidCodepoints) invalid_codepoints.insert(c);
    for (uint32_t c : kControlChars) control.insert(c);
    for (const auto& e : kHtml5) {
      html5[u32(e.name)] = u32(e.utf8);
      longest_html5 = std::max(longest_html5, std::strlen(e.name));
    }
    for (const auto& e : kFtfyEntities) ftfy_entities[u32(e.name)] = u32(e.utf8);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

bool ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool ascii_hex(char32_t c) { return ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool ascii_alnum(char32_t c) { return ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python's html.unescape (HTML5 rules): numeric references with the invalid-codepoint rules, named references
// (longest known prefix for names without ';').
std::u32string html_unescape(const std::u32string& s) {
  const Tables& t = tables();
  if (s.find(U'&') == std::u32string::npos) return s;
  std::u32string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] != U'&' || i + 1 >= s.size()) {
      out.push_back(s[i++]);
      continue;
    }
    const size_t start = i + 1;
    if (s[start] == U'#') {
      const bool hex = start + 1 < s.size() && (s[start + 1] == U'x' || s[start + 1] == U'X');
      size_t j = start + (hex ? 2 : 1);
      const size_t digits_from = j;
      uint64_t value = 0;
      bool big = false;
      while (j < s.size() && (hex ? ascii_hex(s[j]) : ascii_digit(s[j]))) {
        const char32_t c = s[j];
        const uint32_t d = ascii_digit(c) ? c - U'0' : (c >= U'a' ? c - U'a' + 10 : c - U'A' + 10);
        if (!big) {
          value = value * (hex ? 16 : 10) + d;
          if (value > 0x10FFFF) big = true;
        }
        ++j;
      }
      if (j == digits_from) {  // "&#" without digits: not a reference
        out.push_back(s[i++]);
        continue;
      }
      if (j < s.size() && s[j] == U';') ++j;
      const auto num = static_cast<uint32_t>(big ? 0x110000 : value);
      auto it = t.invalid_charrefs.find(num);
      if (it != t.invalid_charrefs.end()) {
        out += it->second;
      } else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out.push_back(0xFFFD);
      } else if (t.invalid_codepoints.count(num) == 0) {
        out.push_back(num);
      }
      i = j;
      continue;
    }
    // named: [^\t\n\f <&#;]{1,32};?
    size_t j = start;
    while (j < s.size() && j - start < 32) {
      const char32_t c = s[j];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' || c == U'#' || c == U';') break;
      ++j;
    }
    if (j == start) {
      out.push_back(s[i++]);
      continue;
    }
    if (j < s.size() && s[j] == U';') ++j;
    const std::u32string name = s.substr(start, j - start);
    auto it = t.html5.find(name);
    if (it != t.html5.end()) {
      out += it->second;
    } else {
      bool found = false;
      for (size_t x = name.size() - 1; x > 1; --x) {
        auto p = t.html5.find(name.substr(0, x));
        if (p != t.html5.end()) {
          out += p->second;
          out += name.substr(x);
          found = true;
          break;
        }
      }
      if (!found) {
        out.push_back(U'&');
        out += name;
      }
    }
    i = j;
  }
  return out;
}

// ftfy.fixes.unescape_html: &#?[0-9A-Za-z]{1,24}; replaced when it is a known entity (ftfy's table, which adds
// upper-case variants) or a numeric reference that html.unescape fully resolves.
std::u32string ftfy_unescape_html(const std::u32string& s) {
  const Tables& t = tables();
  std::u32string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == U'&') {
      size_t j = i + 1;
      if (j < s.size() && s[j] == U'#') ++j;
      const size_t body = j;
      while (j < s.size() && j - body < 24 && ascii_alnum(s[j])) ++j;
      if (j > body && j < s.size() && s[j] == U';') {
        const std::u32string match = s.substr(i, j + 1 - i);
        auto it = t.ftfy_entities.find(match);
        if (it != t.ftfy_entities.end()) {
          out += it->second;
          i = j + 1;
          continue;
        }
        if (match[1] == U'#') {
          const std::u32string un = html_unescape(match);
          out += un.find(U';') == std::u32string::npos ? un : match;
          i = j + 1;
          continue;
        }
        out += match;
        i = j + 1;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

std::u32string translate(const std::u32string& s, const std::unordered_map<uint32_t, std::u32string>& map) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    auto it = map.find(c);
    if (it == map.end()) {
      out.push_back(c);
    } else {
      out += it->second;
    }
  }
  return out;
}

std::u32string nfc(const std::u32string& s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw Error(Error::Kind::internal, "ICU NFC normaliser unavailable");
  const icu::UnicodeString in = icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                                              static_cast<int32_t>(s.size()));
  if (norm->isNormalized(in, status) && U_SUCCESS(status)) return s;
  status = U_ZERO_ERROR;
  const icu::UnicodeString res = norm->normalize(in, status);
  if (U_FAILURE(status)) throw Error(Error::Kind::internal, "ICU NFC normalisation failed");
  std::u32string out(static_cast<size_t>(res.countChar32()), U'\0');
  UErrorCode st2 = U_ZERO_ERROR;
  res.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), st2);
  return out;
}

// One ftfy.fix_and_explain run (unescape_html, fix_encoding [only where it is the identity: refused where
// ftfy.badness.is_bad lets it act], fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
// fix_line_breaks, remove_terminal_escapes, remove_control_chars, NFC) repeated until the text no longer changes.
std::u32string ftfy_segment(std::u32string text, bool unescape) {
  const Tables& t = tables();
  while (true) {
    const std::u32string orig = text;
    if (unescape) text = ftfy_unescape_html(text);
    // fix_encoding returns its input when it is ASCII or not is_bad (ftfy's _fix_encoding_one_step_and_explain)
    if (looks_like_mojibake(text)) refuse_mojibake(text);
    text = translate(text, t.c1);
    text = translate(text, t.ligatures);
    text = translate(text, t.width);
    for (char32_t& c : text) {  // uncurl_quotes
      if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
      else if (c >= 0x201C && c <= 0x201F) c = U'"';
    }
    {  // fix_line_breaks
      std::u32string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size(); ++i) {
        const char32_t c = text[i];
        if (c == U'\r' && i + 1 < text.size() && text[i + 1] == U'\n') continue;  // \r\n -> \n
        out.push_back(c == U'\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? U'\n' : c);
      }
      text.swap(out);
    }
    {  // remove_terminal_escapes: \x1b\[(\d|;)*[a-zA-Z]
      std::u32string out;
      size_t i = 0;
      while (i < text.size()) {
        if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == U'[') {
          size_t j = i + 2;
          while (j < text.size() && (text[j] == U';' || is_decimal(text[j]))) ++j;
          if (j < text.size() && ((text[j] >= U'a' && text[j] <= U'z') || (text[j] >= U'A' && text[j] <= U'Z'))) {
            i = j + 1;
            continue;
          }
        }
        out.push_back(text[i++]);
      }
      text.swap(out);
    }
    text.erase(std::remove_if(text.begin(), text.end(), [&](char32_t c) { return t.control.count(c) != 0; }),
               text.end());
    text = nfc(text);
    if (text == orig) return text;
  }
}

std::u32string ftfy_fix_text(const std::u32string& text) {
  constexpr size_t kMaxDecodeLength = 1000000;
  std::u32string out;
  bool unescape = true;  // "auto": off from the first segment that contains '<'
  size_t pos = 0;
  while (pos < text.size()) {
    size_t brk = text.find(U'\n', pos);
    brk = brk == std::u32string::npos ? text.size() : brk + 1;
    if (brk - pos > kMaxDecodeLength) brk = pos + kMaxDecodeLength;
    const std::u32string segment = text.substr(pos, brk - pos);
    if (unescape && segment.find(U'<') != std::u32string::npos) unescape = false;
    out += ftfy_segment(segment, unescape);
    pos = brk;
  }
  return out;
}

void refuse_mojibake(const std::u32string& segment) {
  // the text (its first 80 code points), control characters and line separators escaped: one line
  std::string shown;
  for (size_t i = 0; i < segment.size() && i < 80; ++i) {
    const char32_t c = segment[i];
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029) {
      static const char* const kHex = "0123456789abcdef";
      shown += c < 0x100 ? std::string{'\\', 'x', kHex[c >> 4], kHex[c & 15]}
                         : std::string{'\\', 'u', '2', '0', '2', kHex[c & 15]};
    } else {
      append_utf8(&shown, c);
    }
  }
  throw Error(Error::Kind::input, "'" + shown + (segment.size() > 80 ? "...'" : "'") +
                                      " looks like mis-decoded UTF-8 (mojibake), which the C++ tokenizer does not "
                                      "repair (Python's ftfy may change it): fix the text, or rebake with "
                                      "`vtc-deploy rebake`");
}

bool cased(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASED) != 0; }
bool case_ignorable(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASE_IGNORABLE) != 0; }

// Python str.lower(): full lower-case mapping, capital sigma final when after a cased letter and not before one.
std::u32string py_lower(const std::u32string& s) {
  const Tables& t = tables();
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == 0x3A3) {
      size_t j = i;
      bool before = false;
      while (j > 0) {
        --j;
        if (case_ignorable(s[j])) continue;
        before = cased(s[j]);
        break;
      }
      bool after = false;
      for (size_t k = i + 1; k < s.size(); ++k) {
        if (case_ignorable(s[k])) continue;
        after = cased(s[k]);
        break;
      }
      out.push_back(before && !after ? 0x3C2 : 0x3C3);
      continue;
    }
    auto it = t.lower.find(c);
    if (it == t.lower.end()) {
      out.push_back(c);
    } else {
      out += it->second;
    }
  }
  return out;
}

std::u32string clean_text(const std::string& utf8) {
  std::u32string text = html_unescape(html_unescape(ftfy_fix_text(decode_utf8(utf8))));
  std::u32string joined;  // " ".join(text.strip().split())
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_py_space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !is_py_space(text[i])) ++i;
    if (i > start) {
      if (!joined.empty()) joined.push_back(U' ');
      joined.append(text, start, i - start);
    }
  }
  return py_lower(joined);
}

// Pre-tokenizer: SOT|EOT|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ (case-insensitive), findall.
bool ci_equal(char32_t c, char ascii_lower) {
  if (c == static_cast<char32_t>(ascii_lower)) return true;
  if (ascii_lower >= 'a' && ascii_lower <= 'z' && c == static_cast<char32_t>(ascii_lower - 'a' + 'A')) return true;
  if (ascii_lower == 's' && c == 0x17F) return true;  // LATIN SMALL LETTER LONG S folds to s
  if (ascii_lower == 'k' && c == 0x212A) return true;  // KELVIN SIGN folds to k
  return false;
}

size_t match_literal(const std::u32string& s, size_t pos, const char* lit) {
  const size_t n = std::strlen(lit);
  if (pos + n > s.size()) return 0;
  for (size_t k = 0; k < n; ++k) {
    if (!ci_equal(s[pos + k], lit[k])) return 0;
  }
  return n;
}

std::vector<std::u32string> pre_tokenize(const std::u32string& s) {
  static const char* const kLiterals[] = {kSot, kEot, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  std::vector<std::u32string> pieces;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t len = 0;
    for (const char* lit : kLiterals) {
      len = match_literal(s, pos, lit);
      if (len) break;
    }
    if (!len) {
      const char32_t c = s[pos];
      if (is_letter(c)) {
        len = 1;
        while (pos + len < s.size() && is_letter(s[pos + len])) ++len;
      } else if (is_number(c)) {
        len = 1;
      } else if (is_other(c)) {
        len = 1;
        while (pos + len < s.size() && is_other(s[pos + len])) ++len;
      }
    }
    if (len) {
      pieces.push_back(s.substr(pos, len));
      pos += len;
    } else {
      ++pos;
    }
  }
  return pieces;
}

std::string inflate_gzip(const unsigned char* data, size_t size) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error(Error::Kind::internal, "zlib init failed");
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  std::string out;
  char buf[1 << 16];
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    ret = inflate(&zs, Z_NO_FLUSH);
    if (ret != Z_OK && ret != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error(Error::Kind::internal, "embedded BPE vocabulary is corrupt");
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> byte_symbol;                  // byte -> UTF-8 of its printable symbol
  std::unordered_map<std::string, int32_t> ids;          // token (UTF-8) -> id
  std::unordered_map<std::string, int32_t> ranks;        // "a b" -> merge rank
  int32_t sot = 0, eot = 0;
  mutable std::mutex mutex;
  mutable std::unordered_map<std::string, std::vector<std::string>> cache;

  Impl() {
    // bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256, 257, ... in byte order
    byte_symbol.resize(256);
    std::vector<uint32_t> cps(256, 0);
    std::vector<bool> printable(256, false);
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    uint32_t extra = 0;
    for (int b = 0; b < 256; ++b) cps[b] = printable[b] ? static_cast<uint32_t>(b) : 256 + extra++;
    std::vector<std::string> vocab;
    vocab.reserve(49408);
    // printable bytes first in the order of the Python dict (printable ranges, then the rest)
    std::vector<int> order;
    for (int b = 0; b < 256; ++b)
      if (printable[b]) order.push_back(b);
    for (int b = 0; b < 256; ++b)
      if (!printable[b]) order.push_back(b);
    for (int b = 0; b < 256; ++b) {
      std::string sym;
      append_utf8(&sym, cps[b]);
      byte_symbol[b] = sym;
    }
    for (int b : order) vocab.push_back(byte_symbol[b]);
    for (int b : order) vocab.push_back(byte_symbol[b] + "</w>");
    const std::string text = inflate_gzip(vtc_bpe_vocab_gz, vtc_bpe_vocab_gz_size);
    size_t pos = text.find('\n');  // skip the header line
    if (pos == std::string::npos) throw Error(Error::Kind::internal, "embedded BPE vocabulary is empty");
    ++pos;
    for (int r = 0; r < kMerges; ++r) {
      const size_t end = text.find('\n', pos);
      if (end == std::string::npos) throw Error(Error::Kind::internal, "embedded BPE vocabulary is too short");
      const std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        throw Error(Error::Kind::internal, "embedded BPE vocabulary: bad merge line " + std::to_string(r + 1));
      }
      ranks.emplace(line, r);
      vocab.push_back(line.substr(0, sp) + line.substr(sp + 1));
    }
    vocab.push_back(kSot);
    vocab.push_back(kEot);
    for (size_t i = 0; i < vocab.size(); ++i) ids[vocab[i]] = static_cast<int32_t>(i);  // later duplicates win
    sot = ids.at(kSot);
    eot = ids.at(kEot);
  }

  std::vector<std::string> bpe(const std::string& symbols_utf8) const {
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = cache.find(symbols_utf8);
      if (it != cache.end()) return it->second;
    }
    std::vector<std::string> word;
    const std::u32string cps = decode_utf8(symbols_utf8);
    for (size_t i = 0; i < cps.size(); ++i) {
      std::string sym;
      append_utf8(&sym, cps[i]);
      if (i + 1 == cps.size()) sym += "</w>";
      word.push_back(sym);
    }
    while (word.size() > 1) {
      int best_rank = -1;
      size_t best_at = 0;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = ranks.find(word[i] + " " + word[i + 1]);
        if (it != ranks.end() && (best_rank < 0 || it->second < best_rank)) best_rank = it->second, best_at = i;
      }
      if (best_rank < 0) break;
      const std::string a = word[best_at], b = word[best_at + 1];
      std::vector<std::string> merged;
      merged.reserve(word.size());
      size_t i = 0;
      while (i < word.size()) {
        if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
          merged.push_back(a + b);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word.swap(merged);
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (cache.size() > 100000) cache.clear();  // bounded memory for long-running hosts
    cache.emplace(symbols_utf8, word);
    return word;
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::string Tokenizer::clean(const std::string& utf8) const { return encode_utf8(clean_text(utf8)); }

std::vector<int32_t> Tokenizer::encode(const std::string& utf8) const {
  std::vector<int32_t> out;
  for (const std::u32string& piece : pre_tokenize(clean_text(utf8))) {
    const std::string piece_utf8 = encode_utf8(piece);
    if (piece_utf8 == kSot || piece_utf8 == kEot) {
      out.push_back(piece_utf8 == kSot ? impl_->sot : impl_->eot);
      continue;
    }
    std::string symbols;
    for (unsigned char b : piece_utf8) symbols += impl_->byte_symbol[b];
    for (const std::string& token : impl_->bpe(symbols)) {
      auto it = impl_->ids.find(token);
      if (it == impl_->ids.end()) throw Error(Error::Kind::internal, "tokenizer: BPE produced an unknown token");
      out.push_back(it->second);
    }
  }
  return out;
}

std::vector<int64_t> Tokenizer::tokenize(const std::string& utf8, int context_length) const {
  if (context_length < 2) {
    throw Error(Error::Kind::input, "context_length must be >= 2, got " + std::to_string(context_length));
  }
  std::vector<int32_t> ids = encode(utf8);
  std::vector<int64_t> out(static_cast<size_t>(context_length), 0);
  std::vector<int64_t> tokens;
  tokens.reserve(ids.size() + 2);
  tokens.push_back(impl_->sot);
  tokens.insert(tokens.end(), ids.begin(), ids.end());
  tokens.push_back(impl_->eot);
  if (tokens.size() > out.size()) {
    tokens.resize(out.size());
    tokens.back() = impl_->eot;
  }
  std::copy(tokens.begin(), tokens.end(), out.begin());
  return out;
}

}  // namespace vtc::rules
