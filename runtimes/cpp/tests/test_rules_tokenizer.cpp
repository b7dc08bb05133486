// Tokenizer: known ids (checked against open_clip / vtc_deploy.tokenizer), padding and truncation, cleaning rules.
// The full comparison with the Python tokenizer runs from pytest (tests/test_cpp_rules.py).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "rules/tokenizer.h"

namespace {

using vtc::rules::Tokenizer;

const Tokenizer& tok() {
  static const Tokenizer t;
  return t;
}

TEST(Tokenizer, KnownIds) {
  // vtc_deploy.tokenizer.tokenize("a photo of a dog.") = 49406 320 1125 539 320 1929 269 49407 0 ...
  const auto ids = tok().tokenize("a photo of a dog.");
  const std::vector<int64_t> head(ids.begin(), ids.begin() + 9);
  EXPECT_EQ(head, (std::vector<int64_t>{49406, 320, 1125, 539, 320, 1929, 269, 49407, 0}));
  EXPECT_EQ(ids.size(), 77u);
}

TEST(Tokenizer, EmptyTextIsStartEnd) {
  const auto ids = tok().tokenize("   ", 5);
  EXPECT_EQ(ids, (std::vector<int64_t>{49406, 49407, 0, 0, 0}));
}

TEST(Tokenizer, LongTextIsCutKeepingTheEndToken) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "dog ";
  const auto ids = tok().tokenize(text, 10);
  ASSERT_EQ(ids.size(), 10u);
  EXPECT_EQ(ids.front(), 49406);
  EXPECT_EQ(ids.back(), 49407);
  EXPECT_EQ(ids[1], 1929);
}

TEST(Tokenizer, CleaningRules) {
  EXPECT_EQ(tok().clean("  Hello\t\n  WORLD  "), "hello world");
  EXPECT_EQ(tok().clean("&amp;amp; &lt;b&gt;"), "& <b>");  // HTML unescaped twice (after ftfy's own pass)
  EXPECT_EQ(tok().clean("\xef\xac\x81ne"), "fine");          // U+FB01 LATIN SMALL LIGATURE FI
  EXPECT_EQ(tok().clean("\xef\xbc\xa1\xef\xbc\xa2"), "ab");  // full-width A B
  EXPECT_EQ(tok().clean("\xe2\x80\x9cq\xe2\x80\x9d"), "\"q\"");  // curly quotes
  EXPECT_EQ(tok().clean("\xce\x9f\xce\x94\xce\xa3"), "\xce\xbf\xce\xb4\xcf\x82");  // ΟΔΣ -> οδς (final sigma)
  EXPECT_EQ(tok().clean("e\xcc\x81"), "\xc3\xa9");  // NFC
}

TEST(Tokenizer, SpecialTokensInTextAreSpecial) {
  const auto ids = tok().encode("<start_of_text>x<end_of_text>");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], 49406);
  EXPECT_EQ(ids[2], 49407);
}

TEST(Tokenizer, InvalidUtf8IsAnInputError) {
  try {
    (void)tok().encode("ok \xff bad");
    FAIL() << "expected an error";
  } catch (const vtc::rules::Error& e) {
    EXPECT_EQ(e.kind(), vtc::rules::Error::Kind::input);
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos);
  }
  EXPECT_THROW((void)tok().encode("\xed\xa0\x80"), vtc::rules::Error);  // an encoded surrogate
  EXPECT_THROW((void)tok().encode("\xc0\xaf"), vtc::rules::Error);      // overlong
}

TEST(Tokenizer, ThreadSafe) {
  const std::vector<int64_t> want = tok().tokenize("a video of a person playing the violin");
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int good = 0;
      for (int i = 0; i < 50; ++i) good += tok().tokenize("a video of a person playing the violin") == want;
      ok[t] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int v : ok) EXPECT_EQ(v, 50);
}

}  // namespace
