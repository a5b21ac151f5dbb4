// The inode tables of one mount: the live one, the replaced ones the kernel still holds inodes
// of, and the kernel's lookup count of every inode. A swap replaces the live table and tells the
// kernel what changed (fuse_lowlevel_notify_inval_*). No Node-API here.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "inode_table.h"

namespace aysfs {

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

class TableSet {
 public:
  explicit TableSet(std::shared_ptr<const InodeTable> table);

  std::shared_ptr<const InodeTable> live() const;
  // Finds `ino` in the live table, else in the retired ones (newest first).
  bool Resolve(uint64_t ino, Node* out) const;
  // The kernel took `n` more references to `ino` (a LOOKUP or READDIRPLUS entry).
  void CountLookup(uint64_t ino, uint64_t n = 1);
  // The kernel dropped `n` references; a retired table goes when none of its inodes is held.
  void Forget(uint64_t ino, uint64_t n);
  size_t retired() const;

  // Replaces the live table. With `se` (a session whose loop still runs), tells the kernel what
  // changed: called from JavaScript, never from a request handler, because the kernel takes
  // directory locks that a handler's own request may hold.
  SwapResult Swap(std::shared_ptr<const InodeTable> next, fuse_session* se);

 private:
  uint64_t LookupCount(uint64_t ino) const;

  // Lock order: mu_ and a shard's mu are never held together (Forget lets go of the shard
  // first; Swap counts lookups before it takes mu_). Neither is held across a fuse_reply_* or
  // fuse_lowlevel_notify_* call.
  mutable std::mutex mu_;
  std::shared_ptr<const InodeTable> live_;  // guarded by mu_
  struct Retired {
    std::shared_ptr<const InodeTable> table;
    std::unordered_set<uint64_t>
        live;  // its inodes absent from newer tables the kernel still holds
  };
  std::vector<Retired> retired_;           // guarded by mu_, newest last
  std::atomic<bool> have_retired_{false};  // !retired_.empty(): Resolve's fast path needs no lock

  static constexpr size_t kShards = 16;
  struct Shard {
    std::mutex mu;
    std::unordered_map<uint64_t, uint64_t> counts;  // guarded by mu: kernel lookup count per inode
  };
  mutable Shard shards_[kShards];
};

}  // namespace aysfs
