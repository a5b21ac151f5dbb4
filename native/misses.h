// The table of parked misses: requests parked on blobs that are not in the local cache yet, and
// when each blob's fetch last moved. Only the miss path (miss_path.h) uses it, from several
// threads: it parks from FUSE threads, answers and notes progress from the miss worker's thread,
// gives up on stalled fetches from the backstop's, and takes single reads back in libfuse's
// interrupt callback. No Node-API here.
//
// Whoever takes a read out of this table replies to it, exactly once: Take (its fetch settled
// or served it), TakeStalled (the backstop), TakeAll (unmount) or Interrupt (the reader was
// interrupted). Nothing else ever replies to a parked read.
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace aysfs {

// A read waiting for its blob. Plain data only: the kernel's request and copies of its
// arguments, never a pointer into a buffer libfuse owns.
struct ParkedRead {
  fuse_req_t req;
  uint64_t ino;
  off_t off;
  size_t size;
  // When it parked (set by MissPath::Park): the miss-latency histogram.
  std::chrono::steady_clock::time_point parked{};
};

struct StalledMiss {
  std::string md5;
  std::vector<ParkedRead> reads;
};

class MissTable {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Parked {
    kFirst,       // the first read waiting on its blob: ask for exactly one fetch
    kJoined,      // a fetch of the blob is already asked for
    kInterrupted  // interrupted before it parked: not parked, answer it EINTR
  };

  // `req` is about to park: from now until Park an interrupt of it is remembered (the caller
  // registers its interrupt callback between the two, and libfuse may run that callback at
  // once when the request was interrupted already).
  void Expect(fuse_req_t req);
  // Parks `read` on blob `md5`. A new miss's progress clock starts at `now`.
  Parked Park(const std::string& md5, const ParkedRead& read, Clock::time_point now);
  // Libfuse says `req` was interrupted. True when it was parked: it is taken now and the caller
  // answers it EINTR. False when it is not parked: someone else took it (and replies), or it
  // has not parked yet (Park refuses it).
  bool Interrupt(fuse_req_t req);
  // Takes every read parked on `md5` (empty when none, e.g. after the backstop fired).
  std::vector<ParkedRead> Take(const std::string& md5);
  // The fetches of these blobs made progress at `now` (unknown blobs are ignored).
  void Progress(const std::vector<std::string>& md5s, Clock::time_point now);
  // Takes the misses whose fetch has made no progress since `cutoff` (the blob is dropped even
  // when every read on it was interrupted) and remembers them as abandoned.
  std::vector<StalledMiss> TakeStalled(Clock::time_point cutoff);
  // The blobs given up on since the last call whose fetch must now end. A blob that a read
  // parked on again meanwhile is not among them: that read's miss keeps the fetch.
  std::vector<std::string> TakeAbandoned();
  // Takes everything (unmount).
  std::vector<ParkedRead> TakeAll();
  size_t parked() const;
  size_t blobs() const;

 private:
  struct Miss {
    Clock::time_point moved;  // the last progress of its fetch (or when it was asked for)
    std::vector<ParkedRead> reads;
  };
  // A read between Expect and its reply: the blob it is parked on (empty before Park).
  struct Waiting {
    std::string md5;
    bool interrupted = false;  // interrupted before Park
  };
  std::vector<ParkedRead> TakeLocked(std::unordered_map<std::string, Miss>::iterator it);

  // A leaf: nothing else is taken while it is held, and no reply is made under it. MissPath takes
  // it under its complete_mu_; libfuse's interrupt callback under its lock of the request.
  mutable std::mutex mu_;
  std::unordered_map<std::string, Miss> misses_;     // guarded by mu_
  std::unordered_map<fuse_req_t, Waiting> waiting_;  // guarded by mu_
  std::unordered_set<std::string> abandoned_;        // guarded by mu_
  size_t parked_ = 0;                                // guarded by mu_
};

}  // namespace aysfs
