// One mounted file system: the fuse_session and its loop thread, mount and unmount (and the
// abort that ends a connection that open files keep alive). A session is made of parts, each in
// a file of its own, which ops.cc and the bridge reach through it:
//   tables    table_set.h  the live and retired inode tables, lookup counts, swaps
//   reads     read_path.h  reads answered from the local cache; what to push ahead of readers
//   misses    miss_path.h  reads parked on a blob's fetch, answered when it settles
//   counters  counters.h   what stats() and the status document count
// and, behind them, the two pushers (pusher.h), the backstop (backstop.h) and the status
// document (status.h). No Node-API here: bridge_session.cc bridges to JavaScript through
// misses.on_miss and on_exit.
//
// Lock order, overall (each lock's own rules are on the class that owns it):
//   Session::unmount_mu_ (held through Unmount), then any of:
//     Session::init_mu_, Backstop::mu_, Pusher::mu_ (each taken alone), or
//     MissPath::complete_mu_ (shared while parked reads are answered, exclusive at unmount),
//       then any one of TableSet::mu_, MissTable's, MissPath::failed_mu_, Pusher::mu_.
//   Every other lock (TableSet's shards, StatusDocument's) is taken with none of these held, and
//   none is taken under it. Only unmount_mu_ and complete_mu_ are held across a fuse_reply_*
//   call; none across a fuse_lowlevel_notify_* call. The bridge's locks (bridge_session.cc) are
//   never held while a session's lock is taken, and a session calls out (on_miss, on_exit)
//   holding none of its own.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "backstop.h"
#include "counters.h"
#include "inode_table.h"
#include "miss_path.h"
#include "options.h"
#include "pusher.h"
#include "read_path.h"
#include "status.h"
#include "table_set.h"

namespace aysfs {

class Session {
 public:
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
  // The kernel initialised the connection (fs_init): Mount may return.
  void NotifyInit();

  // Replaces the live table; the kernel forgets what changed (never called from a handler).
  SwapResult Swap(std::shared_ptr<const InodeTable> next);

  // The gauges of counters.h, now.
  Gauges gauges() const;
  // Sets one part of the status document (`pipeline`, `mount`): a JSON text.
  void SetStatus(const std::string& part, std::string json);
  std::string Status() const;

  const SessionOptions& options() const { return opts_; }

  // The parts, declared in the order they are made: each refers to those above it.
 private:
  const SessionOptions opts_;

 public:
  Counters counters;
  TableSet tables;

 private:
  Pusher around_pusher_{Pusher::Priority::kNormal, opts_, counters};
  Pusher file_pusher_{Pusher::Priority::kIdle, opts_, counters};

 public:
  ReadPath reads{opts_, counters, around_pusher_, file_pusher_};
  MissPath misses{counters, tables, reads};

 private:
  Backstop backstop_{misses};
  StatusDocument status_;

  void Loop();
  bool Abort();
  void SetReadAhead();

  fuse_session* se_ = nullptr;
  std::thread loop_thread_;
  std::atomic<bool> mounted_{false};
  std::atomic<bool> loop_done_{true};
  std::atomic<bool> unmounting_{false};
  unsigned conn_minor_ = 0;  // /sys/fs/fuse/connections/<minor>, for abort

  // Makes Unmount one at a time (and idempotent); first in the lock order (above).
  std::mutex unmount_mu_;
  // A leaf: the loop's start and end, for Mount and Unmount to wait on.
  std::mutex init_mu_;
  std::condition_variable init_cv_;
  std::atomic<bool> initialized_{false};
};

}  // namespace aysfs
