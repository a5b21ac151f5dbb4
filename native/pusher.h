// Pushes into the kernel's page cache (fuse_lowlevel_notify_store) ahead of readers: a Pusher is
// one thread with a short queue of push jobs. The read path decides what to push (read_path.h);
// a pusher does it.
//
// Pushes run on threads of their own, never on a FUSE thread or the miss worker: notify_store
// waits for the locks of pages that other reads of the same file still hold (queued or parked
// requests), which only those threads can answer. A session has two: read-around at normal
// priority (the reader it serves is waiting for more of the chunk), small files at SCHED_IDLE
// (guesses; and see PushFile). No Node-API here.
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "counters.h"
#include "inode_table.h"
#include "options.h"

namespace aysfs {

struct PushJob {
  enum Kind { kRange, kLookedUp, kDirectory } kind = kRange;
  uint64_t ino = 0;   // the file's; kDirectory: the directory's. 0: none
  std::string path;   // the blob (kRange, kLookedUp)
  uint64_t from = 0;  // kRange: [from, to); kLookedUp: [0, size)
  uint64_t to = 0;
  std::shared_ptr<const InodeTable> table;  // kDirectory: the files after `index`
  uint32_t index = kNone;
  uint64_t size = 0;  // kRange: the blob's size (OpenBlob checks the file against it)

  static PushJob Range(uint64_t ino, std::string path, uint64_t size, uint64_t from, uint64_t to) {
    return PushJob{kRange, ino, std::move(path), from, to, nullptr, kNone, size};
  }
  static PushJob LookedUp(uint64_t ino, std::string path, uint64_t size) {
    return PushJob{kLookedUp, ino, std::move(path), 0, size, nullptr, kNone, size};
  }
  static PushJob Directory(uint64_t dir_ino, std::shared_ptr<const InodeTable> t, uint32_t i) {
    return PushJob{kDirectory, dir_ino, {}, 0, 0, std::move(t), i, 0};
  }
};

class Pusher {
 public:
  enum class Priority {
    kNormal,  // read-around: its reader waits for the chunk
    kIdle,    // small files: SCHED_IDLE, timer slack 1 ns (PushFile says why)
  };
  Pusher(Priority priority, const SessionOptions& opts, Counters& counters);

  // Starts the thread, which pushes into `se`. Stop before `se` is destroyed.
  void Start(fuse_session* se);
  // Drops what is queued and joins the thread (after the job in flight). Call it once the
  // connection is gone: no page lock then holds a push.
  void Stop();
  // Queues a push; one that overlaps a job queued or in flight is dropped (a directory's
  // overlaps any of the same directory), and so is any beyond kMaxQueue.
  void Queue(PushJob job);

 private:
  void Run();
  void PushRange(const PushJob& job);
  void PushDirectory(const PushJob& job);
  // Pushes a whole blob of `size` bytes into the page cache of `ino`; false if it is not in the
  // cache (or not of that size) or the kernel took none of it.
  bool PushFile(uint64_t ino, const std::string& path, uint64_t size, bool wait_for_inode);

  static constexpr size_t kMaxQueue = 64;  // beyond this, pushes are dropped: an optimisation
  // How long PushFile waits for the kernel to make the inode a lookup named.
  static constexpr std::chrono::milliseconds kInodeWait{50};
  // At most this many bytes of a directory's files are pushed after a read in it.
  static constexpr uint64_t kDirectoryPushMax = 4 << 20;

  const Priority priority_;
  const SessionOptions& opts_;
  Counters& counters_;
  fuse_session* se_ = nullptr;  // set by Start before the thread runs

  // A leaf lock: nothing else is taken while it is held, and no push runs under it.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PushJob> queue_;  // guarded by mu_
  PushJob current_;             // guarded by mu_: the job in flight
  bool stop_ = false;           // guarded by mu_
  std::thread thread_;
};

}  // namespace aysfs
