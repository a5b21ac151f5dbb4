// One mounted file system: the fuse_session, its loop threads, the live and retired inode
// tables, parked misses and counters. No Node-API here: addon.cc bridges to JavaScript through
// the two callbacks below.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "inode_table.h"
#include "misses.h"

namespace aysfs {

struct SessionOptions {
  std::string mountpoint;
  std::string cache_dir;  // blobs at <cache_dir>/<h0>/<h1>/<md5>
  std::string fsname = "aysfs";
  bool allow_other = false;
  bool suid = false;
  bool dev = false;
  bool debug = false;
  // The backstop: reads parked on a fetch that has made no progress for this long fail with EIO
  // and the fetch is abandoned (see MissTable; the miss worker reports progress).
  uint32_t stall_timeout_ms = 60000;
  uint64_t splice_min_size = 1 << 20;  // files at least this big are read with splice
  // Read-ahead window of the mount's backing device (root only: /sys/class/bdi is root's). The
  // kernel's default, 128 KiB, cuts a sequential read into 128 KiB requests; 512 KiB measured
  // about a fifth faster for a first read of a 1 GiB file here (1 MiB was slower). 0 = leave it.
  uint32_t read_ahead_kb = 512;
  // A small read at a random offset of a file also pushes the rest of its aligned chunk of this
  // many bytes into the kernel's page cache (notify_store), the way the kernel reads around a
  // page fault in a mapping: later reads nearby need no round trip. 0 = off.
  uint32_t read_around = 128 << 10;
  // Regular files of at most this many bytes whose blobs are local are pushed whole into the
  // kernel's page cache, so that reading them sends no READ: one that a LOOKUP names, right
  // after the reply (a file opened by path: an import, an exec), and the files of a directory
  // after the one of a second small read from the start in it (a walk: cat, tar, cp -r). A
  // listing alone pushes nothing. 0 = off.
  uint32_t push_files = 128 << 10;
  // A blob whose fetch just failed fails again at once for this long: the kernel retries a
  // failed readahead with a plain read straight away, which would otherwise wait a second time.
  uint32_t failure_memory_ms = 250;
};

// Requests served per operation; `rejected` counts write-type requests answered EROFS.
// (clang-format 14 re-wraps this macro differently on every pass: left as written.)
// clang-format off
#define AYSFS_OPS(X) \
  X(init) X(lookup) X(forget) X(getattr) X(readlink) X(open) X(opendir) X(read) X(readdir) \
  X(readdirplus) X(release) X(releasedir) X(statfs) X(getxattr) X(listxattr) X(ioctl) X(rejected)
// clang-format on

struct Counters {
#define AYSFS_FIELD(name) std::atomic<uint64_t> name{0};
  AYSFS_OPS(AYSFS_FIELD)
#undef AYSFS_FIELD
  std::atomic<uint64_t> bytes_read{0};     // bytes returned by read
  std::atomic<uint64_t> hits{0};           // reads answered from a local cache file
  std::atomic<uint64_t> misses{0};         // reads that had to park
  std::atomic<uint64_t> miss_calls{0};     // fetches asked of JavaScript (one per blob)
  std::atomic<uint64_t> miss_failures{0};  // fetches that failed (EIO to their readers)
  std::atomic<uint64_t> miss_timeouts{0};  // fetches the backstop gave up on (no progress)
  std::atomic<uint64_t> interrupted{0};  // parked reads answered EINTR (the reader was interrupted)
  std::atomic<uint64_t> errors{0};       // EIO replies of any cause
  std::atomic<uint64_t> invalidations{0};  // kernel cache entries dropped by table swaps
  std::atomic<uint64_t> read_around{0};    // bytes pushed to the page cache around random reads
  std::atomic<uint64_t> pushed_files{0};   // bytes of small files pushed (see push_files)
};

// An entry resolved by inode number: the table keeps the index valid while held.
struct Node {
  std::shared_ptr<const InodeTable> table;
  uint32_t index = kNone;
  const RawEntry& e() const { return table->at(index); }
};

struct SwapResult {
  uint64_t invalidated_entries = 0;
  uint64_t invalidated_inodes = 0;
  uint64_t retired_tables = 0;  // old tables still alive because the kernel holds their inodes
};

class Session {
 public:
  // Called (from any thread, no lock held) when a blob must be fetched: exactly once per blob
  // until Complete(md5, ...), ServeVerified(md5, ...) or the backstop.
  std::function<void(const std::string& md5, uint64_t size)> on_miss;
  // Called from the loop thread when the loop ended without Unmount() (an outside umount).
  std::function<void()> on_exit;

  Session(SessionOptions opts, std::shared_ptr<const InodeTable> table);
  ~Session();

  // Mounts and starts the loop; returns 0 or an errno and sets *error.
  int Mount(std::string* error);
  // Unmounts, stops the loop, fails parked reads with EIO. Returns within about a second even
  // when files are held open. Idempotent.
  void Unmount();
  bool mounted() const { return mounted_.load(); }
  bool loop_running() const { return !loop_done_.load(); }

  // Replaces the live table; the kernel forgets what changed (never called from a handler).
  SwapResult Swap(std::shared_ptr<const InodeTable> next);
  // A fetch finished: answer every read parked on md5 (errno 0: the blob is now cached).
  void Complete(const std::string& md5, int err);
  // A fetch has verified blob md5 (these `len` bytes) and is still putting it in the cache:
  // answer the reads parked on it from memory now. Reads that park after this wait for Complete.
  void ServeVerified(const std::string& md5, const char* data, size_t len);
  // The fetches of these blobs made progress (bytes arrived, or they moved on to another source).
  // Returns the blobs the backstop gave up on since the last call: their fetches must end.
  std::vector<std::string> Progress(const std::vector<std::string>& md5s);

  bool Resolve(uint64_t ino, Node* out) const;
  std::shared_ptr<const InodeTable> table() const;
  void CountLookup(uint64_t ino, uint64_t n = 1);
  void Forget(uint64_t ino, uint64_t n);
  // Parks a read on its blob's fetch (asking for the fetch if it is the first), with an interrupt
  // callback: an interrupted reader is answered EINTR at once.
  void ParkRead(const std::string& md5, uint64_t size, const ParkedRead& read);
  // Answers a read from the cache file, or parks it when the blob is not there yet.
  void ServeRead(const Node& node, fuse_req_t req, size_t size, off_t off);
  // A LOOKUP was answered with this entry: push a small file's local blob into the page cache.
  void PushOnLookup(const Node& node);

  // Sets one part of the status document (`pipeline`, `mount`): a JSON text.
  void SetStatus(const std::string& part, std::string json);
  std::string Status() const;
  size_t retired_tables() const;

  const SessionOptions& options() const { return opts_; }
  Counters counters;
  MissTable misses;
  std::atomic<bool> initialized{false};
  void NotifyInit();

 private:
  void Loop();
  void Reaper();
  static void OnInterrupt(fuse_req_t req, void* session);
  void Detach();
  bool Abort();
  std::string BlobPath(const std::string& md5) const;
  void ServeReadOnce(const Node& node, fuse_req_t req, size_t size, off_t off, bool may_park);
  // True when a read of `ino` at `off` continues the previous read of it (a sequential stream,
  // which the kernel's own read-ahead serves); records where this one ends.
  bool Continues(uint64_t ino, uint64_t off, uint64_t end);
  // Pushes run on threads of their own, never on a FUSE thread or the miss worker:
  // notify_store waits for the locks of pages that other reads of the same file still hold
  // (queued or parked requests), which only those threads can answer. Two of them: read-around
  // at normal priority (the reader it serves is waiting for more of the chunk), small files at
  // SCHED_IDLE (guesses; and see PushFile).
  struct PushJob {
    enum Kind { kRange, kLookedUp, kDirectory } kind = kRange;
    uint64_t ino = 0;   // the file's; kDirectory: the directory's. 0: none
    std::string path;   // the blob (kRange, kLookedUp)
    uint64_t from = 0;  // kRange: [from, to); kLookedUp: [0, size)
    uint64_t to = 0;
    std::shared_ptr<const InodeTable> table;  // kDirectory: the files after `index`
    uint32_t index = kNone;
    uint64_t size = 0;  // kRange: the blob's size (OpenBlob checks the file against it)

    static PushJob Range(uint64_t ino, std::string path, uint64_t size, uint64_t from,
                         uint64_t to) {
      return PushJob{kRange, ino, std::move(path), from, to, nullptr, kNone, size};
    }
    static PushJob LookedUp(uint64_t ino, std::string path, uint64_t size) {
      return PushJob{kLookedUp, ino, std::move(path), 0, size, nullptr, kNone, size};
    }
    static PushJob Directory(uint64_t dir_ino, std::shared_ptr<const InodeTable> t, uint32_t i) {
      return PushJob{kDirectory, dir_ino, {}, 0, 0, std::move(t), i, 0};
    }
  };
  struct Pusher {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<PushJob> queue;  // guarded by mu
    PushJob current;             // guarded by mu: the job in flight
    bool stop = false;           // guarded by mu
    std::thread thread;
  };
  // Queues a push; one that overlaps a job queued or in flight is dropped (a directory's
  // overlaps any of the same directory), and so is any beyond kMaxPushes.
  void QueuePush(Pusher& p, PushJob job);
  void StartPusher(Pusher& p);
  void StopPusher(Pusher& p);
  void RunPusher(Pusher& p);
  void PushRange(const PushJob& job);
  void PushDirectory(const PushJob& job);
  // Pushes a whole blob of `size` bytes into the page cache of `ino`; false if it is not in the
  // cache (or not of that size) or the kernel took none of it.
  bool PushFile(uint64_t ino, const std::string& path, uint64_t size, bool wait_for_inode);
  void SetReadAhead();

  SessionOptions opts_;
  fuse_session* se_ = nullptr;
  std::thread loop_thread_;
  std::thread reaper_thread_;
  std::atomic<bool> mounted_{false};
  std::atomic<bool> loop_done_{true};
  std::atomic<bool> unmounting_{false};
  unsigned conn_minor_ = 0;  // /sys/fs/fuse/connections/<minor>, for abort

  // Lock order: unmount_mu_ before tables_mu_ before nlookup shards. Never hold one across a
  // fuse_reply_* or fuse_lowlevel_notify_* call.
  std::mutex unmount_mu_;
  // Held shared while Complete answers the reads it took, exclusively while Unmount takes the
  // rest: no reply is under way when the session is destroyed. (A reply never blocks on it.)
  std::shared_mutex complete_mu_;
  mutable std::mutex tables_mu_;
  std::shared_ptr<const InodeTable> current_;  // guarded by tables_mu_
  struct Retired {
    std::shared_ptr<const InodeTable> table;
    std::unordered_set<uint64_t>
        live;  // its inodes absent from newer tables the kernel still holds
  };
  std::vector<Retired> retired_;  // guarded by tables_mu_, newest last
  std::atomic<bool> have_retired_{false};

  static constexpr size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    std::unordered_map<uint64_t, uint64_t> counts;  // kernel lookup count per inode
  };
  mutable Shard shards_[kShards];
  uint64_t LookupCount(uint64_t ino) const;

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
  // Marks the chunk; true if it was marked already.
  bool Touch(uint64_t ino, uint64_t chunk);

  static constexpr size_t kMaxPushes = 64;  // beyond this, pushes are dropped: an optimisation
  // How long PushFile waits for the kernel to make the inode a lookup named.
  static constexpr std::chrono::milliseconds kInodeWait{50};
  // At most this many bytes of a directory's files are pushed after a read in it.
  static constexpr uint64_t kDirectoryPushMax = 4 << 20;
  // The directory's own mark in the touched set (no chunk index is this large).
  static constexpr uint64_t kDirectoryMark = UINT64_MAX;
  Pusher around_pusher_;
  Pusher file_pusher_;

  std::mutex failed_mu_;
  std::unordered_map<std::string, MissTable::Clock::time_point> failed_;  // guarded by failed_mu_
  bool RecentlyFailed(const std::string& md5);
  void RememberFailure(const std::string& md5);

  mutable std::mutex status_mu_;
  std::map<std::string, std::string> status_parts_;  // guarded by status_mu_; JSON texts

  std::mutex init_mu_;
  std::condition_variable init_cv_;
  std::mutex reaper_mu_;
  std::condition_variable reaper_cv_;
  bool reaper_stop_ = false;  // guarded by reaper_mu_
};

}  // namespace aysfs
