// Serving reads from the local cache: a read of a cached blob is answered from its file on the
// FUSE thread that took the request (pread for small files, splice for large ones), and the read
// path decides what to push into the page cache ahead of readers (the rest of a chunk around
// random reads; small files after a lookup names them or in a walk), which the pushers then do.
// A read whose blob is not cached goes to the miss path (miss_path.h). No Node-API here.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "chunk_map.h"
#include "counters.h"
#include "options.h"
#include "pusher.h"
#include "table_set.h"

namespace aysfs {

class ReadPath {
 public:
  ReadPath(const SessionOptions& opts, Counters& counters, Pusher& around, Pusher& files);

  enum class Attempt {
    kFirst,       // a READ as it comes from the kernel: counted as a hit, may push a walk's files
    kAfterFetch,  // a parked read, after its fetch settled (MissPath)
  };
  enum class Served {
    kAnswered,  // replied (the bytes, or an errno)
    kAbsent,    // a first attempt whose blob is not in the cache: not replied, to be parked
  };
  // Answers a read of `node` from its blob's cache file, or, for a file whose chunk index is
  // known (`chunks`), from the cached chunk blobs that cover the range. Only a first attempt may
  // come back kAbsent, with the blob's md5 in *md5, and an attempt after a fetch of a chunked
  // file whose chunks for this range are not all cached (its fetch brought other chunks); after
  // a fetch, any other blob still absent is answered EIO.
  Served Serve(const Node& node, fuse_req_t req, size_t size, off_t off, Attempt attempt,
               std::string* md5 = nullptr);
  // A LOOKUP was answered with this entry: push a small file's local blob into the page cache.
  void PushOnLookup(const Node& node);

  // Chunk indexes the miss worker checked (bridge_session.cc sets them).
  ChunkMap chunks;

 private:
  // True when a read of `ino` at `off` continues the previous read of it (a sequential stream,
  // which the kernel's own read-ahead serves); records where this one ends.
  bool Continues(uint64_t ino, uint64_t off, uint64_t end);
  // A read of [off, off + want) answered from the cached chunks of `list`; false (not replied)
  // when one of them is not in the cache.
  bool ServeChunks(const ChunkList& list, fuse_req_t req, size_t want, off_t off);
  // Marks the chunk; true if it was marked already.
  bool Touch(uint64_t ino, uint64_t chunk);

  const SessionOptions& opts_;
  Counters& counters_;
  Pusher& around_pusher_;  // read-around
  Pusher& file_pusher_;    // small files

  // No lock here: the state below is atomics, where a race costs at most a push (or a missed
  // one), never a wrong byte.

  // The end of the last read per inode, in a small direct-mapped table: a collision only costs
  // a read-around that was not needed, so no lock.
  struct LastRead {
    std::atomic<uint64_t> ino{0};
    std::atomic<uint64_t> end{0};
  };
  static constexpr size_t kLastReads = 64;
  LastRead last_reads_[kLastReads];
  // Chunks (inode, offset / read_around) that took a random read, as bits of a hashed set. A
  // chunk is pushed at its second random read only: a reader that came back near a page it
  // read before will likely read more there, one that never does (sparse lookups in a big
  // file) pays no push. Cleared when half full; a false hit costs one push.
  static constexpr size_t kTouchedBits = size_t(1) << 20;
  std::unique_ptr<std::atomic<uint64_t>[]> touched_;  // kTouchedBits / 64 words
  std::atomic<uint64_t> touched_count_{0};
  // The directory's own mark in the touched set (no chunk index is this large).
  static constexpr uint64_t kDirectoryMark = UINT64_MAX;
};

}  // namespace aysfs
