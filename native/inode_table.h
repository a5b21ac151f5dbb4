// The read-only inode table: one buffer built by lib/table.ts, adopted here in a single call.
// Layout: docs/design.md ("The inode table buffer"). No Node-API in this file: the table is
// used from FUSE threads only.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace aysfs {

constexpr uint32_t kTableMagic = 0x54535941;  // "AYST"
constexpr uint32_t kTableVersion = 1;
constexpr size_t kHeaderSize = 32;
constexpr size_t kEntrySize = 96;
constexpr uint64_t kRootIno = 1;
constexpr uint32_t kNone = UINT32_MAX;

#pragma pack(push, 1)
struct RawEntry {
  uint64_t ino;
  uint64_t size;
  int64_t mtime;
  int64_t ctime;
  uint32_t mode;
  uint32_t uid;
  uint32_t gid;
  uint32_t parent;
  uint32_t name_off;
  uint32_t name_len;
  uint32_t first_child;
  uint32_t child_count;
  uint32_t target_off;
  uint32_t target_len;
  uint32_t rdev_major;
  uint32_t rdev_minor;
  uint8_t md5[16];
};
#pragma pack(pop)
static_assert(sizeof(RawEntry) == kEntrySize, "RawEntry must match lib/table.ts");

class InodeTable {
 public:
  // Copies and validates `data`. On a malformed buffer returns null and sets *error.
  static std::shared_ptr<const InodeTable> Adopt(const uint8_t* data, size_t len,
                                                 std::string* error);

  uint32_t count() const { return count_; }
  const RawEntry& at(uint32_t index) const { return entries_[index]; }

  // Index of the entry with this inode number, or kNone. O(1): open addressing.
  uint32_t Find(uint64_t ino) const;
  // Index of the child `name` of directory `dir`, or kNone. Binary search over sorted children.
  uint32_t Lookup(uint32_t dir, std::string_view name) const;

  std::string_view Name(uint32_t index) const;
  std::string_view Target(uint32_t index) const;
  bool IsDir(uint32_t index) const { return S_ISDIR(entries_[index].mode); }
  bool IsReg(uint32_t index) const { return S_ISREG(entries_[index].mode); }
  void Stat(uint32_t index, struct stat* st) const;
  // 32 lower-case hex digits of a regular file's content hash.
  std::string Md5Hex(uint32_t index) const;
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  InodeTable() = default;
  // The second pass of Adopt: parents, child ranges, name order, inode numbers; fills slots_,
  // nlink_ and total_bytes_. Runs only after every entry's own fields were checked.
  bool CheckRelations(std::string* error);
  std::unique_ptr<uint8_t[]> data_;
  const RawEntry* entries_ = nullptr;
  const char* strings_ = nullptr;
  uint32_t count_ = 0;
  uint64_t total_bytes_ = 0;
  std::vector<uint32_t> slots_;  // index + 1, 0 = empty; size is a power of two
  std::vector<uint32_t> nlink_;  // directories: 2 + child directories
};

}  // namespace aysfs
