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

bool refused(const std::string& text) {
  try {
    (void)tok().encode(text);
    return false;
  } catch (const vtc::rules::Error& e) {
    EXPECT_EQ(e.kind(), vtc::rules::Error::Kind::input);
    EXPECT_NE(std::string(e.what()).find("looks like mis-decoded UTF-8 (mojibake)"), std::string::npos) << e.what();
    return true;
  }
}

// Text that ftfy's mojibake detector (ftfy.badness.is_bad) flags is refused; Python's ftfy would repair or change it.
// The exhaustive comparison with ftfy runs from pytest (test_tokenizer_refuses_exactly_what_ftfy_could_repair).
TEST(Tokenizer, MojibakeIsRefusedNotTokenizedDifferently) {
  EXPECT_TRUE(refused("caf\xc3\x83\xc2\xa9"));                     // "cafÃ©": café as UTF-8 read as Latin-1
  EXPECT_TRUE(refused("it\xc3\xa2\xe2\x82\xac\xe2\x84\xa2s"));     // "itâ€™s": Windows-1252
  EXPECT_TRUE(refused("&Atilde;&copy;"));                           // "Ã©" once ftfy has unescaped it
  EXPECT_TRUE(refused("ok\n\xc3\x83 ok"));                          // "^[ÃÂ] " at the start of the second line
  EXPECT_TRUE(refused("x \xc3\x83 ok"));                            // "[a-z]\s?[ÃÂ] "
  EXPECT_TRUE(refused("\xc2\x85"));                                 // a C1 control
  EXPECT_TRUE(refused("\xc5\x92."));                                // "Œ." ('Œ' not before a Latin letter)
  EXPECT_FALSE(refused("caf\xc3\xa9 cr\xc3\xa8me"));               // "café crème"
  EXPECT_FALSE(refused("1\xc3\x83 ok"));                            // "1Ã ok"
  EXPECT_FALSE(refused("\xc5\x92uvre"));                            // "Œuvre"
  EXPECT_FALSE(refused("<b>&Atilde;&copy;</b>"));                   // markup: ftfy leaves entities alone
  EXPECT_EQ(tok().clean("<b>&Atilde;&copy;</b>"), "<b>\xc3\xa3\xc2\xa9</b>");  // then html.unescape: "ã©"
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
