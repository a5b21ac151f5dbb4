// Reads whose blob is not in the local cache, from parking to reply. A read parks on its blob's
// fetch (the first one asks JavaScript for it, through on_miss) and is answered when the fetch
// settles (Complete) or hands over the verified bytes (ServeVerified), when its reader is
// interrupted (EINTR), when the backstop gives up on the fetch (FailStalled) or at unmount
// (FailAll). The parked reads themselves are kept in a MissTable (misses.h). No Node-API here:
// bridge_session.cc calls in from the miss worker's thread.
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "counters.h"
#include "misses.h"
#include "read_path.h"
#include "table_set.h"

namespace aysfs {

class MissPath {
 public:
  // Called (from any thread, no lock held) when a blob must be fetched: exactly once per blob
  // until Complete(md5, ...), ServeVerified(md5, ...) or the backstop.
  // `off` and `len`: the read that missed (a chunked file's fetch brings the chunks it covers).
  std::function<void(const std::string& md5, uint64_t size, uint64_t off, uint64_t len)> on_miss;

  MissPath(Counters& counters, const TableSet& tables, ReadPath& reads);

  // Parks `read` on the fetch of blob `md5` of `size` bytes (asking for the fetch if it is the
  // first), with an interrupt callback: an interrupted reader is answered EINTR at once. A blob
  // whose fetch failed a moment ago fails the read at once (EIO).
  void Park(const std::string& md5, uint64_t size, const ParkedRead& read);
  // A fetch finished: answer every read parked on md5 (errno 0: the blob is now cached, or, for
  // a chunked file, some of its chunks: a read whose chunks are still absent parks again).
  void Complete(const std::string& md5, int err);
  // A fetch has verified blob md5 (these `len` bytes) and is still putting it in the cache:
  // answer the reads parked on it from memory now. Reads that park after this wait for Complete.
  void ServeVerified(const std::string& md5, const char* data, size_t len);
  // The fetches of these blobs made progress (bytes arrived, or they moved on to another source).
  // Returns the blobs the backstop gave up on since the last call: their fetches must end.
  std::vector<std::string> Progress(const std::vector<std::string>& md5s);
  // The backstop (backstop.h): fails the reads parked on fetches that have made no progress
  // since `cutoff`.
  void FailStalled(MissTable::Clock::time_point cutoff);
  // Unmount, once the connection is gone: fails every read still parked, after the Complete and
  // ServeVerified calls under way (no reply is under way when the session is destroyed).
  void FailAll();

  size_t parked() const { return table_.parked(); }
  size_t fetching() const { return table_.blobs(); }

 private:
  static void OnInterrupt(fuse_req_t req, void* self);
  bool RecentlyFailed(const std::string& md5);
  void RememberFailure(const std::string& md5);
  void Observe(const ParkedRead& r, MissTable::Clock::time_point now);

  // A blob whose fetch just failed fails again at once for this long: the kernel retries a
  // failed readahead with a plain read straight away, which would otherwise wait a second time.
  static constexpr std::chrono::milliseconds kFailureMemory{250};

  Counters& counters_;
  const TableSet& tables_;
  ReadPath& reads_;
  // Its lock is a leaf, also taken by OnInterrupt under libfuse's lock of the request.
  MissTable table_;

  // Lock order: complete_mu_ before TableSet's, MissTable's, failed_mu_ and the pushers' locks
  // (answering a parked read resolves its inode and may queue a push). Held shared while
  // Complete and ServeVerified answer the reads they took, exclusively while FailAll takes the
  // rest. (A reply never blocks on it.)
  std::shared_mutex complete_mu_;
  std::mutex failed_mu_;                                                  // a leaf
  std::unordered_map<std::string, MissTable::Clock::time_point> failed_;  // guarded by failed_mu_
};

}  // namespace aysfs
