#pragma once
// MD5 (RFC 1321), streaming. Only for checking that an archive is the one published; MD5 is
// no protection against a deliberate forgery, and the archives' publishers give only MD5.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace memcnn::data::detail {

class Md5 {
 public:
  void update(const uint8_t* data, size_t size);
  // Lower-case hex of the digest of everything given so far; ends the computation.
  std::string hex_digest();

 private:
  void process_block(const uint8_t* block);

  std::array<uint32_t, 4> state_{0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
  std::array<uint8_t, 64> pending_{};
  size_t pending_size_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace memcnn::data::detail
