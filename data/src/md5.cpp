#include "md5.h"

#include <nettle/md5.h>

namespace memcnn::data::detail {

struct Md5::Context {
  md5_ctx state;
};

Md5::Md5() : context_(std::make_unique<Context>()) { md5_init(&context_->state); }

Md5::~Md5() = default;

void Md5::update(const uint8_t* data, size_t size) { md5_update(&context_->state, size, data); }

std::string Md5::hex_digest() {
  uint8_t digest[MD5_DIGEST_SIZE];
  md5_digest(&context_->state, MD5_DIGEST_SIZE, digest);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (const uint8_t value : digest) {
    hex += kHex[value >> 4];
    hex += kHex[value & 15];
  }
  return hex;
}

}  // namespace memcnn::data::detail
