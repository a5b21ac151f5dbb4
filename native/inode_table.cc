#include "inode_table.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace aysfs {

namespace {

uint64_t Mix(uint64_t ino) { return (ino ^ (ino >> 29)) * 0x9E3779B97F4A7C15ull; }

bool InRange(uint64_t off, uint64_t len, uint64_t limit) {
  return off <= limit && len <= limit - off;
}

// "[off, end)" for messages; off and len are u32 here, so the sum cannot wrap in u64.
std::string Span(uint64_t off, uint64_t len) {
  return "[" + std::to_string(off) + ", " + std::to_string(off + len) + ")";
}

std::string Octal(uint32_t v) {
  char buf[16];
  snprintf(buf, sizeof buf, "0%o", v);
  return buf;
}

bool Fail(std::string* error, uint32_t index, const std::string& what) {
  *error = "inode table entry " + std::to_string(index) + ": " + what;
  return false;
}

bool IsDevice(uint32_t mode) { return S_ISBLK(mode) || S_ISCHR(mode); }

bool IsFileType(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFBLK:
    case S_IFCHR:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

bool HasMd5(const RawEntry& e) {
  for (uint8_t b : e.md5)
    if (b != 0) return true;
  return false;
}

// The first pass: entry `i`'s own fields, each against the table's bounds (count, the pool's
// length). Reads nothing but `e` and the pool bytes of its own name and target, and those only
// once their range is known to lie inside the pool. The rules are docs/design.md's, in order.
bool CheckFields(const RawEntry& e, uint32_t i, uint32_t count, std::string_view pool,
                 std::string* error) {
  const bool root = i == 0;
  if (!IsFileType(e.mode) || (e.mode & ~uint32_t(S_IFMT | 07777)) != 0)
    return Fail(error, i, "mode " + Octal(e.mode) + " is not a file type and permission bits");
  if (root && (e.ino != kRootIno || !S_ISDIR(e.mode) || e.parent != 0))
    return Fail(error, i, "the root must be a directory with inode 1 and parent 0");
  if (!root && (e.ino == 0 || e.ino == kRootIno))
    return Fail(error, i, "reserved inode number " + std::to_string(e.ino));
  if (!root && e.parent >= i)
    return Fail(error, i, "parent " + std::to_string(e.parent) + " is not before it");

  if (!InRange(e.name_off, e.name_len, pool.size()))
    return Fail(error, i,
                "name " + Span(e.name_off, e.name_len) + " outside the string pool (" +
                    std::to_string(pool.size()) + " bytes)");
  const std::string_view name = pool.substr(e.name_off, e.name_len);
  if (root && !name.empty()) return Fail(error, i, "the root has a name");
  if (!root && (name.empty() || name == "." || name == ".." || name.find('/') != name.npos ||
                name.find('\0') != name.npos))
    return Fail(error, i, "invalid name (empty, . or .., or with / or NUL)");

  if (S_ISLNK(e.mode)) {
    if (!InRange(e.target_off, e.target_len, pool.size()))
      return Fail(error, i,
                  "target " + Span(e.target_off, e.target_len) + " outside the string pool (" +
                      std::to_string(pool.size()) + " bytes)");
    const std::string_view target = pool.substr(e.target_off, e.target_len);
    if (target.empty() || target.find('\0') != target.npos)
      return Fail(error, i, "symlink target empty or with a NUL byte");
    if (e.size != e.target_len)
      return Fail(error, i,
                  "symlink size " + std::to_string(e.size) + ", its target has " +
                      std::to_string(e.target_len) + " bytes");
  } else {
    if (e.target_off != 0 || e.target_len != 0) return Fail(error, i, "a target on a non-symlink");
    if (S_ISREG(e.mode) && e.size > uint64_t(INT64_MAX))
      return Fail(error, i, "size " + std::to_string(e.size) + " past the largest off_t");
    if (!S_ISREG(e.mode) && e.size != 0)
      return Fail(error, i, "size " + std::to_string(e.size) + " on a non-regular file");
  }
  if (!IsDevice(e.mode) && (e.rdev_major != 0 || e.rdev_minor != 0))
    return Fail(error, i, "device numbers on a non-device");
  if (!S_ISREG(e.mode) && HasMd5(e)) return Fail(error, i, "an md5 on a non-regular file");

  if (!S_ISDIR(e.mode)) {
    if (e.first_child != 0 || e.child_count != 0)
      return Fail(error, i, "a non-directory with children");
  } else if (e.child_count == 0
                 ? e.first_child != 0
                 : e.first_child <= i || !InRange(e.first_child, e.child_count, count)) {
    return Fail(error, i,
                "children " + Span(e.first_child, e.child_count) + " out of range (after " +
                    std::to_string(i) + ", before " + std::to_string(count) + ")");
  }
  return true;
}

}  // namespace

std::shared_ptr<const InodeTable> InodeTable::Adopt(const uint8_t* data, size_t len,
                                                    std::string* error) {
  if (len < kHeaderSize) {
    *error = "inode table: " + std::to_string(len) + " bytes, shorter than its header";
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
  if (count == 0 || count >= kNone) {
    *error = "inode table: " + std::to_string(count) + " entries";
    return nullptr;
  }
  if (strings_off != kHeaderSize + uint64_t(count) * kEntrySize) {
    *error = "inode table: stringsOffset " + std::to_string(strings_off) + ", expected " +
             std::to_string(kHeaderSize + uint64_t(count) * kEntrySize) + " for " +
             std::to_string(count) + " entries";
    return nullptr;
  }
  if (!InRange(strings_off, strings_len, len)) {
    *error = "inode table: the string pool (" + std::to_string(strings_len) + " bytes at " +
             std::to_string(strings_off) + ") runs past the buffer's " + std::to_string(len) +
             " bytes";
    return nullptr;
  }

  std::shared_ptr<InodeTable> t(new InodeTable());
  const size_t used = strings_off + strings_len;  // a copy of what the table uses, no more
  t->data_.reset(new uint8_t[used]);
  memcpy(t->data_.get(), data, used);
  t->entries_ = reinterpret_cast<const RawEntry*>(t->data_.get() + kHeaderSize);
  t->strings_ = reinterpret_cast<const char*>(t->data_.get() + strings_off);
  t->count_ = count;

  // Every entry's own fields first, so that the relations below (which read other entries'
  // names and ranges) only ever follow values already known to be in bounds.
  const std::string_view pool(t->strings_, strings_len);
  for (uint32_t i = 0; i < count; i++)
    if (!CheckFields(t->entries_[i], i, count, pool, error)) return nullptr;
  if (!t->CheckRelations(error)) return nullptr;
  return t;
}

bool InodeTable::CheckRelations(std::string* error) {
  size_t cap = 16;
  while (cap < size_t(count_) * 2) cap <<= 1;
  slots_.assign(cap, 0);
  nlink_.assign(count_, 1);
  const size_t mask = cap - 1;
  for (uint32_t i = 0; i < count_; i++) {
    const RawEntry& e = entries_[i];
    if (i > 0) {
      // Every entry but the root must be listed by its parent, or lookups could not reach it;
      // with the check below (everything a directory lists names it as parent), the child
      // ranges split the entries into one tree. parent < i: nlink_[e.parent] is already 2.
      const RawEntry& p = entries_[e.parent];
      if (!S_ISDIR(p.mode))
        return Fail(error, i, "parent " + std::to_string(e.parent) + " is not a directory");
      if (i < p.first_child || i - p.first_child >= p.child_count)
        return Fail(error, i, "not among its parent's children");
      if (S_ISDIR(e.mode)) nlink_[e.parent]++;
    }
    if (S_ISDIR(e.mode)) {
      nlink_[i] = 2;
      for (uint32_t c = e.first_child; c - e.first_child < e.child_count; c++) {
        if (entries_[c].parent != i)
          return Fail(error, i, "child " + std::to_string(c) + " has another parent");
        if (c > e.first_child && Name(c - 1) >= Name(c))
          return Fail(error, i, "children not sorted or not unique at " + std::to_string(c));
      }
    }
    if (S_ISREG(e.mode) && __builtin_add_overflow(total_bytes_, e.size, &total_bytes_))
      return Fail(error, i, "file sizes add up to more than 2^64 bytes");
    size_t slot = Mix(e.ino) & mask;
    while (slots_[slot] != 0) {
      if (entries_[slots_[slot] - 1].ino == e.ino)
        return Fail(error, i, "duplicate inode number " + std::to_string(e.ino));
      slot = (slot + 1) & mask;
    }
    slots_[slot] = i + 1;
  }
  return true;
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
  // Device numbers mean something only on a device node: Adopt refuses them on other entries,
  // and this keeps any other entry from ever being served with one (`cp -a` would recreate it).
  if (IsDevice(e.mode)) st->st_rdev = makedev(e.rdev_major, e.rdev_minor);
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
