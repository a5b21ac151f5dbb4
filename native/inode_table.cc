#include "inode_table.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

namespace aysfs {

namespace {

uint64_t Mix(uint64_t ino) { return (ino ^ (ino >> 29)) * 0x9E3779B97F4A7C15ull; }

bool InRange(uint64_t off, uint64_t len, uint64_t limit) {
  return off <= limit && len <= limit - off;
}

std::string Fail(std::string* error, uint32_t index, const char* what) {
  *error = "inode table entry " + std::to_string(index) + ": " + what;
  return *error;
}

}  // namespace

std::shared_ptr<const InodeTable> InodeTable::Adopt(const uint8_t* data, size_t len,
                                                    std::string* error) {
  if (len < kHeaderSize) {
    *error = "inode table: buffer shorter than its header";
    return nullptr;
  }
  uint32_t magic, version, count;
  uint64_t strings_off, strings_len;
  memcpy(&magic, data, 4);
  memcpy(&version, data + 4, 4);
  memcpy(&count, data + 8, 4);
  memcpy(&strings_off, data + 16, 8);
  memcpy(&strings_len, data + 24, 8);
  if (magic != kTableMagic) {
    *error = "inode table: bad magic";
    return nullptr;
  }
  if (version != kTableVersion) {
    *error = "inode table: version " + std::to_string(version) + ", expected " +
             std::to_string(kTableVersion);
    return nullptr;
  }
  if (count == 0 || count >= kNone || strings_off != kHeaderSize + uint64_t(count) * kEntrySize ||
      !InRange(strings_off, strings_len, len)) {
    *error = "inode table: header does not match the buffer's size";
    return nullptr;
  }

  std::shared_ptr<InodeTable> t(new InodeTable());
  t->len_ = kHeaderSize + count * kEntrySize + strings_len;
  t->data_.reset(new uint8_t[t->len_]);
  memcpy(t->data_.get(), data, t->len_);
  t->entries_ = reinterpret_cast<const RawEntry*>(t->data_.get() + kHeaderSize);
  t->strings_ = reinterpret_cast<const char*>(t->data_.get() + strings_off);
  t->strings_len_ = strings_len;
  t->count_ = count;

  const RawEntry& root = t->entries_[0];
  if (root.ino != kRootIno || !S_ISDIR(root.mode) || root.parent != 0) {
    Fail(error, 0, "the root must be a directory with inode 1");
    return nullptr;
  }

  size_t cap = 16;
  while (cap < size_t(count) * 2) cap <<= 1;
  t->slots_.assign(cap, 0);
  t->nlink_.assign(count, 1);
  const size_t mask = cap - 1;
  for (uint32_t i = 0; i < count; i++) {
    const RawEntry& e = t->entries_[i];
    if (e.ino == 0 || (i > 0 && e.ino == kRootIno))
      return Fail(error, i, "reserved inode number"), nullptr;
    if ((i > 0 && e.parent >= i) || !S_ISDIR(t->entries_[e.parent].mode))
      return Fail(error, i, "parent is not a directory"), nullptr;
    if (!InRange(e.name_off, e.name_len, strings_len) || (i > 0 && e.name_len == 0))
      return Fail(error, i, "name out of range"), nullptr;
    if (!InRange(e.target_off, e.target_len, strings_len))
      return Fail(error, i, "target out of range"), nullptr;
    std::string_view name(t->strings_ + e.name_off, e.name_len);
    if (name.find('/') != name.npos || name.find('\0') != name.npos || name == "." || name == "..")
      return Fail(error, i, "invalid name"), nullptr;
    if (S_ISDIR(e.mode)) {
      t->nlink_[i] = 2;
      if (e.child_count > 0) {
        if (e.first_child == 0 || !InRange(e.first_child, e.child_count, count))
          return Fail(error, i, "children out of range"), nullptr;
        for (uint32_t c = e.first_child; c < e.first_child + e.child_count; c++) {
          if (t->entries_[c].parent != i)
            return Fail(error, i, "child with another parent"), nullptr;
          if (c > e.first_child && t->Name(c - 1) >= t->Name(c))
            return Fail(error, i, "children not sorted or not unique"), nullptr;
        }
      }
    } else if (e.child_count != 0) {
      return Fail(error, i, "a non-directory with children"), nullptr;
    }
    if (S_ISREG(e.mode)) t->total_bytes_ += e.size;
    size_t slot = Mix(e.ino) & mask;
    while (t->slots_[slot] != 0) {
      if (t->entries_[t->slots_[slot] - 1].ino == e.ino)
        return Fail(error, i, "duplicate inode number"), nullptr;
      slot = (slot + 1) & mask;
    }
    t->slots_[slot] = i + 1;
  }
  for (uint32_t i = 1; i < count; i++) {
    const RawEntry& e = t->entries_[i];
    // Every entry but the root must be listed by its parent, or lookups could not reach it.
    const RawEntry& p = t->entries_[e.parent];
    if (i < p.first_child || i >= p.first_child + p.child_count)
      return Fail(error, i, "not among its parent's children"), nullptr;
    if (S_ISDIR(e.mode)) t->nlink_[e.parent]++;
  }
  return t;
}

uint32_t InodeTable::Find(uint64_t ino) const {
  const size_t mask = slots_.size() - 1;
  for (size_t slot = Mix(ino) & mask;; slot = (slot + 1) & mask) {
    uint32_t v = slots_[slot];
    if (v == 0) return kNone;
    if (entries_[v - 1].ino == ino) return v - 1;
  }
}

std::string_view InodeTable::Name(uint32_t index) const {
  const RawEntry& e = entries_[index];
  return std::string_view(strings_ + e.name_off, e.name_len);
}

std::string_view InodeTable::Target(uint32_t index) const {
  const RawEntry& e = entries_[index];
  return std::string_view(strings_ + e.target_off, e.target_len);
}

uint32_t InodeTable::Lookup(uint32_t dir, std::string_view name) const {
  const RawEntry& d = entries_[dir];
  uint32_t lo = d.first_child, hi = d.first_child + d.child_count;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = Name(mid).compare(name);
    if (c == 0) return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return kNone;
}

void InodeTable::Stat(uint32_t index, struct stat* st) const {
  const RawEntry& e = entries_[index];
  memset(st, 0, sizeof(*st));
  st->st_ino = e.ino;
  st->st_mode = e.mode;
  st->st_nlink = nlink_[index];
  st->st_uid = e.uid;
  st->st_gid = e.gid;
  st->st_size = static_cast<off_t>(e.size);
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((e.size + 511) / 512);
  st->st_rdev = makedev(e.rdev_major, e.rdev_minor);
  st->st_atim.tv_sec = e.mtime;
  st->st_mtim.tv_sec = e.mtime;
  st->st_ctim.tv_sec = e.ctime;
}

std::string InodeTable::Md5Hex(uint32_t index) const {
  static const char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  const uint8_t* m = entries_[index].md5;
  for (int i = 0; i < 16; i++) {
    out[2 * i] = kHex[m[i] >> 4];
    out[2 * i + 1] = kHex[m[i] & 15];
  }
  return out;
}

}  // namespace aysfs
