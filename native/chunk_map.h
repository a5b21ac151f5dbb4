// The chunk indexes the miss worker has checked, by the md5 of the file they cut: with one, a read
// of a file whose whole blob is not in the local cache is answered from the chunk blobs that
// cover it (each an ordinary cached blob, checked before it was put there). Set from the miss
// worker's thread, read from the FUSE threads. No Node-API here.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace aysfs {

// One checked index: every chunk `chunk_size` bytes but the last, the sizes summing to `size`.
struct ChunkList {
  uint64_t size = 0;
  uint64_t chunk_size = 0;
  std::string md5s;  // 16 raw bytes a chunk, in file order

  size_t count() const { return md5s.size() / 16; }
  uint64_t SizeOf(size_t i) const {
    return i + 1 < count() ? chunk_size : size - chunk_size * (count() - 1);
  }
  std::string HexOf(size_t i) const;
};

class ChunkMap {
 public:
  // The largest index and chunk size the miss worker accepts (lib/chunks.ts), with room.
  static constexpr uint64_t kMaxChunks = uint64_t(1) << 20;
  static constexpr uint64_t kMaxChunkSize = uint64_t(1) << 30;

  // Replaces the index of file `md5`. False (nothing stored) when the list breaks the rules
  // above: the caller's check failed to run, and a wrong index must not serve.
  bool Set(const std::string& md5, uint64_t size, uint64_t chunk_size, std::string md5s);
  // The index of file `md5`, or null. The list stays valid while the caller holds it.
  std::shared_ptr<const ChunkList> Find(const std::string& md5) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;                                                    // a leaf
  std::unordered_map<std::string, std::shared_ptr<const ChunkList>> lists_;  // guarded by mu_
};

}  // namespace aysfs
