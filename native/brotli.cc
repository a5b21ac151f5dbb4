#include "brotli.h"

#include <brotli/decode.h>

#include <cstdlib>
#include <cstring>

namespace aysfs {

namespace {

// Every block the decoder gets carries its size in front, so Free can count it back. Sixteen
// bytes keep the block aligned as malloc's own.
constexpr size_t kHeader = 16;

}  // namespace

BrotliStream::BrotliStream(size_t max_memory)
    : limit_(max_memory < kMaxMemory ? max_memory : kMaxMemory) {
  state_ = BrotliDecoderCreateInstance(Alloc, Free, this);
  if (state_ == nullptr) Fail("cannot create a brotli decoder (out of memory)");
}

BrotliStream::~BrotliStream() { Close(); }

void BrotliStream::Close() {
  if (state_ != nullptr) BrotliDecoderDestroyInstance(state_);
  state_ = nullptr;
  std::vector<uint8_t>().swap(input_);
  input_pos_ = 0;
  if (error_.empty() && !finished_) error_ = "the decoder is closed";
}

void* BrotliStream::Alloc(void* opaque, size_t size) {
  auto* self = static_cast<BrotliStream*>(opaque);
  if (size > self->limit_ || self->used_ + size > self->limit_) return nullptr;
  auto* block = static_cast<uint8_t*>(std::malloc(size + kHeader));
  if (block == nullptr) return nullptr;
  std::memcpy(block, &size, sizeof size);
  self->used_ += size;
  if (self->used_ > self->peak_) self->peak_ = self->used_;
  return block + kHeader;
}

void BrotliStream::Free(void* opaque, void* address) {
  if (address == nullptr) return;
  auto* self = static_cast<BrotliStream*>(opaque);
  uint8_t* block = static_cast<uint8_t*>(address) - kHeader;
  size_t size;
  std::memcpy(&size, block, sizeof size);
  self->used_ -= size;
  std::free(block);
}

void BrotliStream::Fail(const std::string& why) {
  if (error_.empty()) error_ = why;
  if (state_ != nullptr) BrotliDecoderDestroyInstance(state_);
  state_ = nullptr;
  std::vector<uint8_t>().swap(input_);
  input_pos_ = 0;
}

bool BrotliStream::Feed(const uint8_t* data, size_t len) {
  if (input_pos_ < input_.size()) return false;
  if (finished_ && len > 0) {
    finished_ = false;
    Fail("bytes follow the end of the brotli stream");
  }
  if (state_ == nullptr) return true;  // ended or failed: Pull says which
  input_.assign(data, data + len);
  input_pos_ = 0;
  return true;
}

ptrdiff_t BrotliStream::Pull(uint8_t* out, size_t cap) {
  if (state_ == nullptr) return finished_ ? 0 : -1;
  if (cap == 0) return 0;
  size_t avail_in = input_.size() - input_pos_;
  const uint8_t* next_in = input_.data() + input_pos_;
  size_t avail_out = cap;
  uint8_t* next_out = out;
  BrotliDecoderResult r =
      BrotliDecoderDecompressStream(state_, &avail_in, &next_in, &avail_out, &next_out, nullptr);
  input_pos_ = input_.size() - avail_in;
  size_t produced = cap - avail_out;
  switch (r) {
    case BROTLI_DECODER_RESULT_ERROR: {
      BrotliDecoderErrorCode code = BrotliDecoderGetErrorCode(state_);
      bool memory = code <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
                    code >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES;
      Fail(memory ? "it needs more than " + std::to_string(limit_) +
                        " bytes to decode (a standard stream of this size never does)"
                  : std::string("brotli: ") + BrotliDecoderErrorString(code));
      return -1;
    }
    case BROTLI_DECODER_RESULT_SUCCESS:
      if (input_pos_ < input_.size()) {
        Fail("bytes follow the end of the brotli stream");
        return -1;
      }
      // Its memory goes now: the body is complete, only end() is still to come.
      finished_ = true;
      BrotliDecoderDestroyInstance(state_);
      state_ = nullptr;
      std::vector<uint8_t>().swap(input_);
      input_pos_ = 0;
      return ptrdiff_t(produced);
    case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
      return ptrdiff_t(produced);  // all input consumed
    case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
      // `out` is full. (Never empty-handed with room to write: that would be a loop that does
      // not move, so it fails instead.)
      if (produced == 0) {
        Fail("brotli: the decoder made no progress");
        return -1;
      }
      return ptrdiff_t(produced);
  }
  Fail("brotli: unknown decoder result");
  return -1;
}

}  // namespace aysfs
