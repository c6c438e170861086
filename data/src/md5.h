#pragma once
// MD5, streaming, computed by nettle (GNU's maintained cryptographic library). Only for checking
// that an archive is the one published; MD5 is no protection against a deliberate forgery, and
// the archives' publishers give only MD5.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace memcnn::data::detail {

class Md5 {
 public:
  Md5();
  ~Md5();
  Md5(const Md5&) = delete;
  Md5& operator=(const Md5&) = delete;
  void update(const uint8_t* data, size_t size);
  // Lower-case hex of the digest of everything given so far; ends the computation.
  std::string hex_digest();

 private:
  struct Context;  // nettle's md5_ctx, kept out of this header
  std::unique_ptr<Context> context_;
};

}  // namespace memcnn::data::detail
