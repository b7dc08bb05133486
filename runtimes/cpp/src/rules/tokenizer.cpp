#include "tokenizer.h"
namespace vtc::rules {
struct Tokenizer::Impl {};
Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
std::vector<int32_t> Tokenizer::encode(const std::string&) const { throw Error(Error::Kind::internal, "tokenizer: not implemented yet"); }
std::vector<int64_t> Tokenizer::tokenize(const std::string&, int) const { throw Error(Error::Kind::internal, "tokenizer: not implemented yet"); }
std::string Tokenizer::clean(const std::string&) const { throw Error(Error::Kind::internal, "tokenizer: not implemented yet"); }
}  // namespace vtc::rules
