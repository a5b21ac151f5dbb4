// A streaming brotli decoder whose memory does not grow with the size of what it decodes: the
// pipeline fetches `.bro` variants of blobs of any size, and the whole-body decode it replaces
// held the compressed body and the whole output at once. Compressed bytes go in a chunk at a time
// and come out in pieces as large as the caller's buffer. The decoder is Debian's libbrotlidec,
// linked statically (its symbols hidden) so nodes need no new library. No Node-API here: the
// addon wraps it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

struct BrotliDecoderStateStruct;

namespace aysfs {

class BrotliStream {
 public:
  // Most the decoder itself may hold at once. A standard stream declares a window of at most
  // 16 MiB (large-window streams are refused); the decoder's ring buffer starts small and grows
  // to the window, holding the old one (at most half the window) while it copies, and its
  // Huffman tables and context maps stay under 3 MiB: 16 + 8 + 3 MiB, with room to spare. An
  // allocation past it fails the stream as corrupt.
  static constexpr size_t kMaxMemory = 28u << 20;

  // `max_memory`: the most this stream may hold (at most kMaxMemory): the caller's bound for a
  // blob of a known size (lib/sources/bro.ts), so that a small blob's stream cannot claim a
  // window's worth. An allocation past it fails the stream as corrupt.
  explicit BrotliStream(size_t max_memory = kMaxMemory);
  ~BrotliStream();
  BrotliStream(const BrotliStream&) = delete;
  BrotliStream& operator=(const BrotliStream&) = delete;

  // Takes a copy of `len` compressed bytes. False (nothing taken) while earlier input is still
  // pending: the caller drains with Pull first.
  bool Feed(const uint8_t* data, size_t len);

  // Decodes pending input into `out` (at most `cap` bytes). Returns the bytes written: 0 once all
  // pending input is consumed (more is needed) or the stream has ended. -1 when the stream is
  // corrupt (error() says how); the stream stays failed.
  ptrdiff_t Pull(uint8_t* out, size_t cap);

  // The stream's last meta-block has been decoded and every byte of it handed out.
  bool finished() const { return finished_; }
  const std::string& error() const { return error_; }
  // The most the decoder has held at once, in bytes (its window, buffers and tables).
  size_t peak_memory() const { return peak_; }
  // Frees the decoder's memory now; the stream is failed from then on.
  void Close();

 private:
  static void* Alloc(void* opaque, size_t size);
  static void Free(void* opaque, void* address);
  void Fail(const std::string& why);

  BrotliDecoderStateStruct* state_ = nullptr;
  std::vector<uint8_t> input_;  // the pending chunk (its capacity is kept: at most one chunk)
  size_t input_pos_ = 0;
  bool finished_ = false;
  std::string error_;
  size_t limit_;     // the most the decoder may hold (bytes)
  size_t used_ = 0;  // bytes the decoder holds now
  size_t peak_ = 0;
};

}  // namespace aysfs
