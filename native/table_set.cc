#include "table_set.h"

#include <algorithm>
#include <string_view>

namespace aysfs {

namespace {

bool SameAttrs(const RawEntry& a, const RawEntry& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.size == b.size &&
         a.mtime == b.mtime && a.ctime == b.ctime && a.rdev_major == b.rdev_major &&
         a.rdev_minor == b.rdev_minor && a.child_count == b.child_count;
}

}  // namespace

TableSet::TableSet(std::shared_ptr<const InodeTable> table) : live_(std::move(table)) {}

std::shared_ptr<const InodeTable> TableSet::live() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_;
}

bool TableSet::Resolve(uint64_t ino, Node* out) const {
  out->table = live();
  out->index = out->table->Find(ino);
  if (out->index != kNone) return true;
  if (!have_retired_.load()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = retired_.rbegin(); it != retired_.rend(); ++it) {
    uint32_t i = it->table->Find(ino);
    if (i != kNone) {
      out->table = it->table;
      out->index = i;
      return true;
    }
  }
  return false;
}

uint64_t TableSet::LookupCount(uint64_t ino) const {
  Shard& s = shards_[ino % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.counts.find(ino);
  return it == s.counts.end() ? 0 : it->second;
}

void TableSet::CountLookup(uint64_t ino, uint64_t n) {
  if (ino == kRootIno) return;  // the kernel never forgets the root
  Shard& s = shards_[ino % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  s.counts[ino] += n;
}

void TableSet::Forget(uint64_t ino, uint64_t n) {
  if (ino == kRootIno) return;
  {
    Shard& s = shards_[ino % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.counts.find(ino);
    if (it == s.counts.end()) return;
    if (it->second > n) {
      it->second -= n;
      return;
    }
    s.counts.erase(it);
  }
  if (!have_retired_.load()) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : retired_) r.live.erase(ino);
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const Retired& r) { return r.live.empty(); }),
                 retired_.end());
  have_retired_ = !retired_.empty();
}

size_t TableSet::retired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return retired_.size();
}

SwapResult TableSet::Swap(std::shared_ptr<const InodeTable> next, fuse_session* se) {
  SwapResult result;
  std::shared_ptr<const InodeTable> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = live_;
    live_ = next;
  }
  // The old table stays while the kernel still holds inodes that only it knows.
  Retired r{old, {}};
  for (uint32_t i = 0; i < old->count(); i++) {
    uint64_t ino = old->at(i).ino;
    if (next->Find(ino) == kNone && LookupCount(ino) > 0) r.live.insert(ino);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& older : retired_)
      for (auto it = older.live.begin(); it != older.live.end();)
        it = next->Find(*it) != kNone ? older.live.erase(it) : std::next(it);
    if (!r.live.empty()) retired_.push_back(std::move(r));
    retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                  [](const Retired& x) { return x.live.empty(); }),
                   retired_.end());
    have_retired_ = !retired_.empty();
    result.retired_tables = retired_.size();
  }
  if (se == nullptr) return result;

  // Tell the kernel what changed.
  auto inval_entry = [&](uint64_t dir, std::string_view name) {
    fuse_lowlevel_notify_inval_entry(se, dir, name.data(), name.size());
    result.invalidated_entries++;
  };
  auto inval_inode = [&](uint64_t ino, off_t off) {
    fuse_lowlevel_notify_inval_inode(se, ino, off, 0);
    result.invalidated_inodes++;
  };
  for (uint32_t d = 0; d < old->count(); d++) {
    if (!old->IsDir(d)) continue;
    const RawEntry& od = old->at(d);
    uint32_t nd = next->Find(od.ino);
    if (nd == kNone || !next->IsDir(nd)) continue;  // its parent's entry is invalidated instead
    const RawEntry& ne = next->at(nd);
    bool children_changed = false;
    uint32_t a = od.first_child, a_end = od.first_child + od.child_count;
    uint32_t b = ne.first_child, b_end = ne.first_child + ne.child_count;
    while (a < a_end || b < b_end) {
      int c = a == a_end ? 1 : b == b_end ? -1 : old->Name(a).compare(next->Name(b));
      if (c < 0) {
        inval_entry(od.ino, old->Name(a++));
        children_changed = true;
      } else if (c > 0) {
        inval_entry(od.ino, next->Name(b++));  // drops a cached negative entry
        children_changed = true;
      } else {
        const RawEntry& x = old->at(a);
        const RawEntry& y = next->at(b);
        if (x.ino != y.ino) {
          inval_entry(od.ino, old->Name(a));
          children_changed = true;
        } else if (!next->IsDir(b) && !SameAttrs(x, y)) {
          inval_inode(x.ino, -1);  // attributes only: same inode means same content
        }
        a++;
        b++;
      }
    }
    if (children_changed)
      inval_inode(od.ino, 0);  // drops the cached listing too
    else if (!SameAttrs(od, ne))
      inval_inode(od.ino, -1);
  }
  return result;
}

}  // namespace aysfs
