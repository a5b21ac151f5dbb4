#include "chunk_map.h"

#include <utility>

namespace aysfs {

std::string ChunkList::HexOf(size_t i) const {
  static const char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t k = 0; k < 16; k++) {
    auto b = static_cast<unsigned char>(md5s[i * 16 + k]);
    out[2 * k] = kHex[b >> 4];
    out[2 * k + 1] = kHex[b & 15];
  }
  return out;
}

bool ChunkMap::Set(const std::string& md5, uint64_t size, uint64_t chunk_size, std::string md5s) {
  if (md5s.empty() || md5s.size() % 16 != 0 || chunk_size == 0) return false;
  uint64_t n = md5s.size() / 16;
  if (n > kMaxChunks || chunk_size > kMaxChunkSize) return false;  // and no overflow below
  // Every chunk but the last full, the last 1..chunk_size bytes.
  if (size <= chunk_size * (n - 1) || size > chunk_size * n) return false;
  auto list = std::make_shared<ChunkList>();
  list->size = size;
  list->chunk_size = chunk_size;
  list->md5s = std::move(md5s);
  std::lock_guard<std::mutex> lock(mu_);
  lists_[md5] = std::move(list);
  return true;
}

std::shared_ptr<const ChunkList> ChunkMap::Find(const std::string& md5) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (lists_.empty()) return nullptr;
  auto it = lists_.find(md5);
  return it == lists_.end() ? nullptr : it->second;
}

size_t ChunkMap::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lists_.size();
}

}  // namespace aysfs
