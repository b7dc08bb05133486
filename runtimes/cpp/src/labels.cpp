// Class-name lists, by the rules of vtc_deploy/labels.py (load_class_names): a bundled set name, a .csv with an
// id,name header (ids 0..C-1 without gaps, in any order) or a text file with one name per line; UTF-8 (a BOM is
// skipped); names stripped, non-empty, unique.
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"
#include "error.h"

namespace vtc {

const std::map<std::string, std::string>& bundled_label_lists();  // generated (embed_labels.cmake)

namespace {

[[noreturn]] void fail(const std::string& where, const std::string& message) {
  throw Error(VTC_ERR_LABELS, where + ": " + message);
}

std::string strip(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(ws);
  return s.substr(a, b - a + 1);
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// Python's csv.reader (excel dialect, non-strict) over the whole text.
std::vector<std::vector<std::string>> read_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, in_quotes = false, any = false;
  size_t i = 0;
  auto end_field = [&] {
    row.push_back(field);
    field.clear();
    quoted = false;
  };
  auto end_row = [&] {
    if (any || !row.empty()) {
      end_field();
      rows.push_back(row);
    }
    row.clear();
    field.clear();
    any = false;
    quoted = false;
  };
  while (i < text.size()) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        field.push_back(c);
      }
    } else if (c == '"' && field.empty() && !quoted) {
      in_quotes = quoted = any = true;
    } else if (c == ',') {
      end_field();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
    } else {
      field.push_back(c);
      any = true;
    }
    ++i;
  }
  end_row();
  return rows;
}

bool parse_int(const std::string& text, long long* out) {
  const std::string s = strip(text);
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  long long v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
    if (v > 1000000000LL) return false;
  }
  *out = s[0] == '-' ? -v : v;
  return true;
}

std::vector<std::string> parse_csv(const std::string& data, const std::string& where) {
  std::vector<std::vector<std::string>> rows;
  for (auto& r : read_csv(data)) {
    bool blank = true;
    for (const auto& cell : r) blank = blank && strip(cell).empty();
    if (!blank) rows.push_back(std::move(r));
  }
  if (rows.empty()) fail(where, "class list is empty");
  std::vector<std::string> header;
  for (const auto& h : rows[0]) header.push_back(lower(strip(h)));
  int name_col = -1, id_col = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "name" && name_col < 0) name_col = static_cast<int>(i);
    if (header[i] == "id" && id_col < 0) id_col = static_cast<int>(i);
  }
  if (name_col < 0) fail(where, "CSV header has no 'name' column");
  std::map<long long, std::string> by_id;
  for (size_t line = 1; line < rows.size(); ++line) {
    const auto& r = rows[line];
    if (static_cast<int>(r.size()) <= std::max(name_col, id_col)) {
      fail(where, "line " + std::to_string(line + 1) + " has " + std::to_string(r.size()) + " fields, expected " +
                      std::to_string(header.size()));
    }
    const std::string name = strip(r[static_cast<size_t>(name_col)]);
    long long idx = static_cast<long long>(by_id.size());
    if (id_col >= 0) {
      if (!parse_int(r[static_cast<size_t>(id_col)], &idx)) {
        fail(where, "line " + std::to_string(line + 1) + ": id '" + r[static_cast<size_t>(id_col)] +
                        "' is not an integer");
      }
      if (by_id.count(idx)) fail(where, "line " + std::to_string(line + 1) + ": duplicate id " + std::to_string(idx));
    }
    by_id[idx] = name;
  }
  if (by_id.empty()) fail(where, "class list is empty (header only)");
  std::vector<std::string> names;
  for (long long i = 0; i < static_cast<long long>(by_id.size()); ++i) {
    auto it = by_id.find(i);
    if (it == by_id.end()) {
      fail(where, "ids must be 0.." + std::to_string(by_id.size() - 1) + " without gaps; missing " +
                      std::to_string(i));
    }
    names.push_back(it->second);
  }
  return names;
}

}  // namespace

std::vector<std::string> load_class_names(const std::string& source) {
  struct stat st {};
  const bool exists = stat(source.c_str(), &st) == 0;
  const auto& bundled = bundled_label_lists();
  auto it = bundled.find(source);
  std::vector<std::string> names;
  if (it != bundled.end() && !exists) {
    names = parse_csv(it->second, "<bundled " + source + ">");
    check_class_names(names, "<bundled " + source + ">");
    return names;
  }
  if (!exists) {
    fail(source, "class list not found; give a file (.csv with id,name or .txt with one name per line) or one of "
                 "kinetics400, ucf101, hmdb51, activitynet200");
  }
  if (!S_ISREG(st.st_mode)) fail(source, "class list is not a file");
  if (st.st_size > (64LL << 20)) fail(source, "class list is larger than 64 MiB");
  std::string data;
  {
    std::unique_ptr<FILE, decltype(&std::fclose)> fh(std::fopen(source.c_str(), "rb"), &std::fclose);
    if (!fh) fail(source, "cannot read the class list");
    char buffer[65536];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, fh.get())) > 0) data.append(buffer, got);
  }
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);
  for (size_t i = 0; i < data.size();) {  // UTF-8 check
    const unsigned char c = static_cast<unsigned char>(data[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && i + len <= data.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(data[i + k]) >> 6) == 2;
    if (!ok) fail(source, "class list is not UTF-8 text (invalid byte at " + std::to_string(i) + ")");
    i += len;
  }
  const std::string ext = source.size() >= 4 ? lower(source.substr(source.size() - 4)) : "";
  if (ext == ".csv") {
    names = parse_csv(data, source);
  } else {
    std::string line;
    for (size_t i = 0; i <= data.size(); ++i) {
      if (i == data.size() || data[i] == '\n' || data[i] == '\r') {
        const std::string s = strip(line);
        if (!s.empty()) names.push_back(s);
        line.clear();
      } else {
        line.push_back(data[i]);
      }
    }
  }
  check_class_names(names, source);
  return names;
}

}  // namespace vtc
