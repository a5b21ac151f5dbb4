// Fuzz target for the native inode table check (native/inode_table.cc, compiled into this file).
//
// InodeTable::Adopt is the one place where bytes from JavaScript become something FUSE threads
// serve from. It must refuse every malformed buffer with an error, reading nothing outside it,
// and every table it accepts must be one the accessors can serve: every inode found, every
// name looked up, every directory walkable, and the rules of docs/design.md ("The inode table
// buffer") holding. Inputs are tables in that layout from a seeded generator (breadth first,
// sorted children, a string pool, every kind of entry), mutated: bit flips, header and entry
// fields set to values around the bounds (0, count, the pool's length, UINT32_MAX, another
// entry's value), entries swapped or copied, names made invalid, truncation and extension.
// Each accepted table is checked against those rules independently of Adopt (a walk from the
// root, Find and Lookup of everything and of near-misses, Stat, Name, Target, Md5Hex).
//
// g++ (sanitizers catch what the checks cannot: a read outside the buffer, UB):
//   g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
//       test/fuzz/table_fuzz.cc -o table_fuzz
//   ./table_fuzz [--seed N] [--iterations N] [--seconds S] [--corpus DIR] [--stats]
//   ./table_fuzz --seed N --only I [--save FILE]   replay one input (and write it to FILE)
// Inputs are numbered; input I of seed N is the same on every run, and a failure prints the
// command that replays it. Files in --corpus DIR (raw table buffers) are run first, then mutated
// along with generated tables (a README.md there is skipped). test/fuzz/table.test.ts builds and
// runs this.
//
// libFuzzer (clang), where its own main runs instead of ours and a corpus file is a raw buffer:
//   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -DAYSFS_LIBFUZZER
//       test/fuzz/table_fuzz.cc -o table_fuzz
//   ./table_fuzz -max_len=65536 CORPUS_DIR   (generated tables reach about 60 KiB)
#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../../native/inode_table.cc"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AYSFS_FUZZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define AYSFS_FUZZ_ASAN 1
#endif
#ifdef AYSFS_FUZZ_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace {

using aysfs::InodeTable;
using aysfs::kEntrySize;
using aysfs::kHeaderSize;
using aysfs::kNone;
using aysfs::RawEntry;

// splitmix64: small, fast, and the same sequence everywhere for a seed.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
};

// What the failure callback prints: which input was running.
std::string g_current = "(none)";

[[noreturn]] void Violation(const std::string& what) {
  fprintf(stderr, "table_fuzz: an accepted table breaks a rule: %s\ninput: %s\n", what.c_str(),
          g_current.c_str());
  abort();
}

void Expect(bool ok, const std::string& what) {
  if (!ok) Violation(what);
}

// ---------------------------------------------------------------------------------------------
// The generator: a valid table, laid out as lib/table.ts writes it.

struct GenEntry {
  uint32_t mode = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime = 0, ctime = 0;
  uint32_t uid = 0, gid = 0;
  std::string name, target;
  uint32_t major = 0, minor = 0;
  uint8_t md5[16] = {};
  uint32_t parent = 0;         // generator id
  std::vector<uint32_t> kids;  // generator ids
};

const uint32_t kTypes[] = {S_IFREG, S_IFREG, S_IFREG, S_IFDIR, S_IFDIR, S_IFDIR,
                           S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK};

std::string RandomName(Rng& r) {
  // Mostly short names over a few letters (so siblings share prefixes and collide), sometimes
  // any byte but '/' and NUL (high bytes test the unsigned order), sometimes long.
  static const char kLetters[] = "ab.c-_Z~";
  size_t len = r.OneIn(20) ? 1 + r.Below(300) : 1 + r.Below(4);
  std::string s;
  for (size_t k = 0; k < len; k++) {
    if (r.OneIn(6)) {
      char c;
      do c = static_cast<char>(r.Below(256));
      while (c == '/' || c == '\0');
      s += c;
    } else {
      s += kLetters[r.Below(sizeof kLetters - 1)];
    }
  }
  if (s == "." || s == "..") s += 'x';
  return s;
}

std::vector<uint8_t> Generate(Rng& r) {
  // Sizes: mostly small tables (fast, dense in edge cases), sometimes hundreds of entries.
  const uint32_t n = r.OneIn(10) ? 1 + r.Below(600) : 1 + r.Below(24);
  std::vector<GenEntry> g(n);
  std::vector<uint32_t> dirs = {0};
  std::set<uint64_t> inos = {1};
  uint64_t total = 0;
  g[0].mode = S_IFDIR | 0755;
  g[0].ino = 1;
  for (uint32_t id = 1; id < n; id++) {
    GenEntry& e = g[id];
    e.mode = kTypes[r.Below(sizeof kTypes / sizeof kTypes[0])] | uint32_t(r.Below(010000));
    // Names unique among siblings; a few tries, else a suffix that makes it so.
    e.parent = dirs[r.Below(dirs.size())];
    for (int attempt = 0;; attempt++) {
      e.name = RandomName(r);
      if (attempt > 4) e.name += "#" + std::to_string(id);
      bool taken = false;
      for (uint32_t k : g[e.parent].kids) taken |= g[k].name == e.name;
      if (!taken) break;
    }
    g[e.parent].kids.push_back(id);
    do e.ino = r.OneIn(8) ? r.Below(64) : r.Next();
    while (e.ino == 0 || !inos.insert(e.ino).second);
    e.mtime = static_cast<int64_t>(r.Next());
    e.ctime = r.OneIn(2) ? e.mtime : static_cast<int64_t>(r.Next());
    e.uid = r.OneIn(2) ? 0 : static_cast<uint32_t>(r.Next());
    e.gid = r.OneIn(2) ? 0 : static_cast<uint32_t>(r.Next());
    if (S_ISDIR(e.mode)) dirs.push_back(id);
    if (S_ISREG(e.mode)) {
      // Up to INT64_MAX, with the sum kept under 2^64 (a rule of the table).
      e.size = r.OneIn(4) ? 0 : r.OneIn(10) ? r.Next() >> (1 + r.Below(12)) : r.Below(1 << 20);
      uint64_t sum;
      if (__builtin_add_overflow(total, e.size, &sum)) e.size = 0;
      total += e.size;
      for (uint8_t& b : e.md5) b = static_cast<uint8_t>(r.Next());
    } else if (S_ISLNK(e.mode)) {
      e.target = RandomName(r);
      if (r.OneIn(2)) e.target = "../" + e.target + "/x";
      e.size = e.target.size();
    } else if (S_ISCHR(e.mode) || S_ISBLK(e.mode)) {
      e.major = r.OneIn(3) ? static_cast<uint32_t>(r.Next()) : static_cast<uint32_t>(r.Below(9));
      e.minor = r.OneIn(3) ? static_cast<uint32_t>(r.Next()) : static_cast<uint32_t>(r.Below(9));
    }
  }
  // Children sorted by name bytes (std::string compares as unsigned char, as Buffer.compare).
  for (GenEntry& e : g)
    std::sort(e.kids.begin(), e.kids.end(),
              [&](uint32_t a, uint32_t b) { return g[a].name < g[b].name; });
  // Breadth first: the children of every directory contiguous.
  std::vector<uint32_t> order = {0}, index_of(n);
  for (size_t k = 0; k < order.size(); k++)
    for (uint32_t c : g[order[k]].kids) order.push_back(c);
  for (uint32_t k = 0; k < n; k++) index_of[order[k]] = k;

  // The pool: names and targets in id order, as lib/table.ts; sometimes a string reuses an
  // earlier identical one (nothing forbids sharing bytes).
  std::string pool;
  std::map<std::string, uint32_t> seen;
  auto put = [&](const std::string& s, uint32_t* off) {
    auto it = seen.find(s);
    if (it != seen.end() && r.OneIn(2)) {
      *off = it->second;
      return;
    }
    *off = static_cast<uint32_t>(pool.size());
    seen[s] = *off;
    pool += s;
  };
  std::vector<RawEntry> raw(n);
  for (uint32_t id = 0; id < n; id++) {
    const GenEntry& e = g[id];
    RawEntry& x = raw[index_of[id]];
    memset(&x, 0, sizeof x);
    x.ino = e.ino;
    x.size = e.size;
    x.mtime = e.mtime;
    x.ctime = e.ctime;
    x.mode = e.mode;
    x.uid = e.uid;
    x.gid = e.gid;
    x.parent = id == 0 ? 0 : index_of[e.parent];
    if (id > 0) put(e.name, &x.name_off);
    x.name_len = static_cast<uint32_t>(e.name.size());
    if (!e.kids.empty()) {
      x.first_child = index_of[e.kids[0]];
      x.child_count = static_cast<uint32_t>(e.kids.size());
    }
    if (!e.target.empty()) {
      put(e.target, &x.target_off);
      x.target_len = static_cast<uint32_t>(e.target.size());
    }
    x.rdev_major = e.major;
    x.rdev_minor = e.minor;
    memcpy(x.md5, e.md5, 16);
  }
  std::vector<uint8_t> out(kHeaderSize + n * kEntrySize + pool.size());
  const uint32_t magic = aysfs::kTableMagic, version = aysfs::kTableVersion;
  const uint64_t strings_off = kHeaderSize + uint64_t(n) * kEntrySize, strings_len = pool.size();
  memcpy(&out[0], &magic, 4);
  memcpy(&out[4], &version, 4);
  memcpy(&out[8], &n, 4);
  memcpy(&out[16], &strings_off, 8);
  memcpy(&out[24], &strings_len, 8);
  memcpy(&out[kHeaderSize], raw.data(), n * kEntrySize);
  if (!pool.empty()) memcpy(&out[strings_off], pool.data(), pool.size());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutations.

uint32_t Load32(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v = 0;
  if (at + 4 <= b.size()) memcpy(&v, &b[at], 4);
  return v;
}
uint64_t Load64(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v = 0;
  if (at + 8 <= b.size()) memcpy(&v, &b[at], 8);
  return v;
}
void Store(std::vector<uint8_t>& b, size_t at, const void* v, size_t n) {
  if (at + n <= b.size()) memcpy(&b[at], v, n);
}

// A value near a bound of this table: where off-by-one checks and overflows live.
uint64_t Interesting(Rng& r, const std::vector<uint8_t>& b, uint64_t old) {
  const uint64_t count = Load32(b, 8), pool = Load64(b, 24);
  const uint64_t entries = b.size() > kHeaderSize ? (b.size() - kHeaderSize) / kEntrySize : 0;
  switch (r.Below(16)) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return count == 0 ? 0 : count - 1;
    case 3:
      return count;
    case 4:
      return count + 1;
    case 5:
      return UINT32_MAX;
    case 6:
      return UINT32_MAX - r.Below(3);
    case 7:
      return 0x80000000u;
    case 8:
      return pool == 0 ? 0 : pool - 1;
    case 9:
      return pool;
    case 10:
      return pool + 1 + r.Below(8);
    case 11:
      return old + 1;
    case 12:
      return old - 1;
    case 13:
      return entries == 0 ? 0 : r.Below(entries);  // another entry's index
    case 14:                                       // another entry's field
      return entries == 0
                 ? 0
                 : Load32(b, kHeaderSize + r.Below(entries) * kEntrySize + 44 + 4 * r.Below(8));
    default:
      return r.OneIn(2) ? r.Next() : r.Below(64);
  }
}

struct Field {
  size_t offset, width;
};
const Field kEntryFields[] = {
    {offsetof(RawEntry, ino), 8},         {offsetof(RawEntry, size), 8},
    {offsetof(RawEntry, mtime), 8},       {offsetof(RawEntry, mode), 4},
    {offsetof(RawEntry, parent), 4},      {offsetof(RawEntry, name_off), 4},
    {offsetof(RawEntry, name_len), 4},    {offsetof(RawEntry, first_child), 4},
    {offsetof(RawEntry, child_count), 4}, {offsetof(RawEntry, target_off), 4},
    {offsetof(RawEntry, target_len), 4},  {offsetof(RawEntry, rdev_major), 4},
    {offsetof(RawEntry, rdev_minor), 4},  {offsetof(RawEntry, md5), 1},
};
const Field kHeaderFields[] = {{0, 4}, {4, 4}, {8, 4}, {12, 4}, {16, 8}, {24, 8}};

void SetField(Rng& r, std::vector<uint8_t>& b, size_t at, size_t width) {
  uint64_t old = width == 8 ? Load64(b, at) : Load32(b, at);
  uint64_t v = Interesting(r, b, old);
  if (width == 8 && r.OneIn(4)) v |= r.Next() << 32;
  Store(b, at, &v, width);  // little endian: the low `width` bytes
}

void MutateOnce(Rng& r, std::vector<uint8_t>& b) {
  const size_t entries = b.size() > kHeaderSize
                             ? std::min<size_t>(Load32(b, 8), (b.size() - kHeaderSize) / kEntrySize)
                             : 0;
  auto entry_at = [&](size_t index) { return kHeaderSize + index * kEntrySize; };
  auto some_entry = [&]() { return r.OneIn(4) ? 0 : r.Below(entries); };
  const uint64_t pool_off = Load64(b, 16);
  switch (r.Below(14)) {
    case 0:
    case 1:
    case 2:
    case 3: {  // an entry's field to a value near a bound
      if (entries == 0) break;
      const Field& f = kEntryFields[r.Below(sizeof kEntryFields / sizeof kEntryFields[0])];
      SetField(r, b, entry_at(some_entry()) + f.offset, f.width);
      break;
    }
    case 4: {  // a header field
      const Field& f = kHeaderFields[r.Below(sizeof kHeaderFields / sizeof kHeaderFields[0])];
      SetField(r, b, f.offset, f.width);
      break;
    }
    case 5:  // bit flips anywhere
      for (uint64_t k = 1 + r.Below(4); k > 0 && !b.empty(); k--)
        b[r.Below(b.size())] ^= 1 << r.Below(8);
      break;
    case 6:  // truncation: a few bytes, or into the entries
      if (!b.empty())
        b.resize(r.OneIn(2) ? b.size() - 1 - r.Below(std::min<size_t>(b.size(), 16))
                            : r.Below(b.size()));
      break;
    case 7: {  // extension, sometimes with the pool grown over it
      size_t more = 1 + r.Below(64);
      for (size_t k = 0; k < more; k++)
        b.push_back(static_cast<uint8_t>(r.OneIn(2) ? 'a' : r.Next()));
      if (r.OneIn(2)) {
        uint64_t pool = Load64(b, 24) + more;
        Store(b, 24, &pool, 8);
      }
      break;
    }
    case 8:  // two entries swapped, or one copied over another
      if (entries > 1) {
        size_t x = entry_at(r.Below(entries)), y = entry_at(r.Below(entries));
        if (r.OneIn(2))
          std::swap_ranges(b.begin() + x, b.begin() + x + kEntrySize, b.begin() + y);
        else
          std::copy(b.begin() + x, b.begin() + x + kEntrySize, b.begin() + y);
      }
      break;
    case 9:  // two entries' names swapped (breaks the order, keeps every offset valid)
      if (entries > 1) {
        size_t x = entry_at(r.Below(entries)) + offsetof(RawEntry, name_off);
        size_t y = entry_at(r.Below(entries)) + offsetof(RawEntry, name_off);
        std::swap_ranges(b.begin() + x, b.begin() + x + 8, b.begin() + y);
      }
      break;
    case 10:  // a byte of the pool: '/', NUL, '.', a letter
      if (pool_off < b.size()) {
        static const uint8_t kBytes[] = {'/', 0, '.', 'a', 0xff};
        b[pool_off + r.Below(b.size() - pool_off)] = kBytes[r.Below(sizeof kBytes)];
      }
      break;
    case 12:  // an inode number copied from another entry
      if (entries > 1) {
        size_t x = entry_at(r.Below(entries)), y = entry_at(r.Below(entries));
        std::copy(b.begin() + x, b.begin() + x + 8, b.begin() + y);
      }
      break;
    case 13:  // every regular file near the largest size: their sum wraps
      for (size_t i = 0; i < entries; i++) {
        if (!S_ISREG(Load32(b, entry_at(i) + offsetof(RawEntry, mode)))) continue;
        uint64_t size = uint64_t(INT64_MAX) - r.Below(2);
        Store(b, entry_at(i) + offsetof(RawEntry, size), &size, 8);
      }
      break;
    default: {  // the mode's file type, keeping the permissions
      if (entries == 0) break;
      size_t at = entry_at(some_entry()) + offsetof(RawEntry, mode);
      uint32_t mode = (Load32(b, at) & 07777) | kTypes[r.Below(sizeof kTypes / sizeof kTypes[0])];
      if (r.OneIn(8)) mode |= uint32_t(r.Below(16)) << 12;  // maybe no type at all
      Store(b, at, &mode, 4);
      break;
    }
  }
}

void Mutate(Rng& r, std::vector<uint8_t>& b) {
  // Mostly one or two mutations, so that many inputs fail a single check (each check is
  // reached), sometimes many.
  uint64_t n = r.OneIn(8) ? 1 + r.Below(12) : 1 + r.Below(2);
  for (uint64_t k = 0; k < n; k++) MutateOnce(r, b);
}

// ---------------------------------------------------------------------------------------------
// Every accessor on every entry of an accepted table, against the rules of the layout.

bool IsDevice(uint32_t mode) { return S_ISBLK(mode) || S_ISCHR(mode); }

std::string At(uint32_t i) { return " (entry " + std::to_string(i) + ")"; }

void Exercise(const InodeTable& t, Rng& r) {
  const uint32_t n = t.count();
  Expect(n >= 1, "no entries");
  Expect(t.at(0).ino == aysfs::kRootIno && t.IsDir(0), "the root is not directory 1");
  uint64_t total = 0;
  uint64_t sink = 0;  // every byte of every string is read, so a sanitizer sees each read
  for (uint32_t i = 0; i < n; i++) {
    const RawEntry& e = t.at(i);
    Expect(t.Find(e.ino) == i, "Find(ino) is not the entry" + At(i));
    std::string_view name = t.Name(i), target = t.Target(i);
    for (char c : name) sink += static_cast<uint8_t>(c);
    for (char c : target) sink += static_cast<uint8_t>(c);
    if (i > 0) {
      Expect(!name.empty() && name != "." && name != ".." && name.find('/') == name.npos &&
                 name.find('\0') == name.npos,
             "invalid name" + At(i));
      Expect(e.parent < i && t.IsDir(e.parent), "parent not a directory before it" + At(i));
    } else {
      Expect(name.empty() && e.parent == 0, "the root has a name or a parent");
    }
    struct stat st;
    t.Stat(i, &st);
    Expect(st.st_ino == e.ino && st.st_mode == e.mode && st.st_size >= 0, "Stat" + At(i));
    Expect(IsDevice(e.mode) || st.st_rdev == 0, "st_rdev on a non-device" + At(i));
    Expect(!IsDevice(e.mode) || st.st_rdev == makedev(e.rdev_major, e.rdev_minor),
           "st_rdev of a device" + At(i));
    std::string md5 = t.Md5Hex(i);
    Expect(md5.size() == 32 && md5.find_first_not_of("0123456789abcdef") == md5.npos,
           "Md5Hex" + At(i));
    if (t.IsReg(i)) {
      total += e.size;
    } else {
      Expect(md5 == std::string(32, '0'), "an md5 on a non-regular file" + At(i));
      Expect(S_ISLNK(e.mode) ? e.size == target.size() : e.size == 0, "size" + At(i));
    }
    Expect(S_ISLNK(e.mode) ? !target.empty() && target.find('\0') == target.npos : target.empty(),
           "target" + At(i));
    if (!t.IsDir(i)) {
      Expect(e.child_count == 0 && st.st_nlink == 1, "a non-directory with children" + At(i));
      Expect(t.Lookup(i, name) == kNone, "Lookup in a non-directory" + At(i));
    }
  }
  Expect(t.total_bytes() == total, "total_bytes");

  // A walk from the root reaches every entry exactly once: the child ranges are one tree.
  std::vector<uint8_t> seen(n, 0);
  std::vector<uint32_t> queue = {0};
  seen[0] = 1;
  for (size_t k = 0; k < queue.size(); k++) {
    const uint32_t d = queue[k];
    const RawEntry& de = t.at(d);
    if (!t.IsDir(d)) continue;
    Expect(de.child_count == 0 ||
               (de.first_child > d && de.first_child <= n && de.child_count <= n - de.first_child),
           "children out of range" + At(d));
    uint32_t dirs = 0;
    for (uint32_t c = de.first_child; c - de.first_child < de.child_count; c++) {
      Expect(!seen[c], "entry reached twice" + At(c));
      seen[c] = 1;
      queue.push_back(c);
      Expect(t.at(c).parent == d, "a child with another parent" + At(c));
      if (c > de.first_child) Expect(t.Name(c - 1) < t.Name(c), "children not sorted" + At(c));
      Expect(t.Lookup(d, t.Name(c)) == c, "Lookup(dir, its child's name)" + At(c));
      dirs += t.IsDir(c);
      // Near misses: a byte more, a byte less, the last byte changed.
      std::string miss(t.Name(c));
      switch (r.Below(3)) {
        case 0:
          miss += static_cast<char>(r.Next());
          break;
        case 1:
          miss.pop_back();
          break;
        default:
          miss.back() = static_cast<char>(miss.back() + 1 + r.Below(255));
          break;
      }
      uint32_t got = t.Lookup(d, miss);
      Expect(got == kNone || (t.at(got).parent == d && t.Name(got) == miss),
             "Lookup of a near miss" + At(c));
    }
    struct stat st;
    t.Stat(d, &st);
    Expect(st.st_nlink == 2 + dirs, "nlink of a directory" + At(d));
    std::string random(1 + r.Below(3), 'a');
    for (char& ch : random) ch = static_cast<char>(r.Next());
    uint32_t got = t.Lookup(d, random);
    Expect(got == kNone || (t.at(got).parent == d && t.Name(got) == random),
           "Lookup of a random name" + At(d));
  }
  for (uint32_t i = 0; i < n; i++) Expect(seen[i], "entry unreachable from the root" + At(i));

  for (int k = 0; k < 16; k++) {
    uint64_t ino = r.OneIn(2) ? r.Below(64) : r.Next();
    uint32_t got = t.Find(ino);
    Expect(got == kNone || t.at(got).ino == ino, "Find of a random inode");
  }
  if (sink == 1) fputc(' ', stderr);  // keeps the reads
}

struct Totals {
  uint64_t runs = 0, accepted = 0, refused = 0;
  std::map<std::string, uint64_t>* reasons = nullptr;  // --stats: refusals by message shape
};

// The message with its numbers taken out: one line per check in the --stats histogram.
std::string Shape(const std::string& error) {
  std::string out;
  for (char c : error)
    if (!(c >= '0' && c <= '9') || out.empty() || out.back() != '#')
      out += c >= '0' && c <= '9' ? '#' : c;
  return out;
}

// One input: a heap copy of exactly its size, so that a read one byte past the caller's
// buffer is a sanitizer report, not a silent read of whatever follows.
void RunOne(const uint8_t* data, size_t size, Rng& r, Totals* totals) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[size == 0 ? 1 : size]);
  if (size > 0) memcpy(copy.get(), data, size);
  std::string error;
  auto table = InodeTable::Adopt(copy.get(), size, &error);
  totals->runs++;
  if (!table) {
    totals->refused++;
    if (error.rfind("inode table", 0) != 0) Violation("refused without a clear error: " + error);
    if (totals->reasons) (*totals->reasons)[Shape(error)]++;
    return;
  }
  totals->accepted++;
  copy.reset();  // the table is a copy: nothing may point into the caller's buffer
  Exercise(*table, r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Rng r(size * 0x9E3779B97F4A7C15ull + (size > 0 ? data[0] : 0));
  Totals totals;
  RunOne(data, size, r, &totals);
  return 0;
}

#ifdef AYSFS_LIBFUZZER
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

// libFuzzer's byte mutations alone rarely keep a table valid enough to reach the relations:
// mostly ours, on a generated table when the input is too short to be one.
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  Rng r(seed);
  if (r.OneIn(4)) return LLVMFuzzerMutate(data, size, max_size);
  std::vector<uint8_t> b =
      size < kHeaderSize || r.OneIn(8) ? Generate(r) : std::vector<uint8_t>(data, data + size);
  if (!r.OneIn(8)) Mutate(r, b);
  size_t n = std::min(b.size(), max_size);
  memcpy(data, b.data(), n);
  return n;
}
#else

namespace {

uint64_t ParseNumber(const char* flag, const char* s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = s ? strtoull(s, &end, 10) : 0;
  if (s == nullptr || *s == '\0' || *end != '\0' || errno != 0) {
    fprintf(stderr, "table_fuzz: %s needs a number, got %s\n", flag, s ? s : "nothing");
    exit(2);
  }
  return v;
}

using Corpus = std::vector<std::pair<std::string, std::vector<uint8_t> > >;

Corpus LoadCorpus(const std::string& dir) {
  Corpus out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    fprintf(stderr, "table_fuzz: cannot open corpus %s: %s\n", dir.c_str(), strerror(errno));
    exit(2);
  }
  while (dirent* ent = readdir(d)) {
    std::string path = dir + "/" + ent->d_name;
    struct stat st;
    std::string_view name = ent->d_name;
    if (name[0] == '.' || (name.size() > 3 && name.substr(name.size() - 3) == ".md")) continue;
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    FILE* f = fopen(path.c_str(), "rb");
    if (f == nullptr) continue;
    std::vector<uint8_t> bytes(st.st_size);
    size_t got = bytes.empty() ? 0 : fread(bytes.data(), 1, bytes.size(), f);
    fclose(f);
    bytes.resize(got);
    out.emplace_back(path, std::move(bytes));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Input `i` of `seed`: its own generator state (left in *r for the checks), so any one input
// replays alone. *pristine: a generated table left as it was, which must be accepted.
std::vector<uint8_t> MakeInput(uint64_t seed, uint64_t i, const Corpus& corpus, Rng* r,
                               bool* pristine) {
  *r = Rng(seed * 0xD1B54A32D192ED03ull + i);
  const bool from_corpus = !corpus.empty() && r->OneIn(8);
  std::vector<uint8_t> b = from_corpus ? corpus[r->Below(corpus.size())].second : Generate(*r);
  *pristine = !from_corpus && r->OneIn(16);
  if (!*pristine) Mutate(*r, b);
  return b;
}

#ifdef AYSFS_FUZZ_ASAN
void OnDeath() { fprintf(stderr, "table_fuzz: failed on input: %s\n", g_current.c_str()); }
#endif

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1, iterations = 0, seconds = 0, only = UINT64_MAX;
  std::string corpus_dir, save;
  bool stats = false;
  for (int k = 1; k < argc; k++) {
    std::string a = argv[k];
    const char* v = k + 1 < argc ? argv[k + 1] : nullptr;
    if (a == "--seed")
      seed = ParseNumber("--seed", v), k++;
    else if (a == "--iterations")
      iterations = ParseNumber("--iterations", v), k++;
    else if (a == "--seconds")
      seconds = ParseNumber("--seconds", v), k++;
    else if (a == "--only")
      only = ParseNumber("--only", v), k++;
    else if (a == "--corpus" && v)
      corpus_dir = v, k++;
    else if (a == "--save" && v)
      save = v, k++;
    else if (a == "--stats")
      stats = true;
    else {
      fprintf(
          stderr,
          "usage: table_fuzz [--seed N] [--iterations N] [--seconds S] [--corpus DIR] [--stats]\n"
          "       table_fuzz --seed N --only I [--save FILE]\n");
      return 2;
    }
  }
  if (iterations == 0 && seconds == 0) iterations = 10000;
#ifdef AYSFS_FUZZ_ASAN
  __sanitizer_set_death_callback(OnDeath);
#endif
  Corpus corpus;
  if (!corpus_dir.empty()) corpus = LoadCorpus(corpus_dir);
  Totals totals;
  std::map<std::string, uint64_t> reasons;
  if (stats) totals.reasons = &reasons;
  Rng r(seed);
  const std::string replay = std::string(argv[0]) + " --seed " + std::to_string(seed);
  if (only != UINT64_MAX) {
    bool pristine;
    std::vector<uint8_t> b = MakeInput(seed, only, corpus, &r, &pristine);
    if (!save.empty()) {
      FILE* f = fopen(save.c_str(), "wb");
      if (f == nullptr || fwrite(b.data(), 1, b.size(), f) != b.size() || fclose(f) != 0) {
        fprintf(stderr, "table_fuzz: cannot write %s\n", save.c_str());
        return 2;
      }
    }
    g_current = replay + " --only " + std::to_string(only);
    RunOne(b.data(), b.size(), r, &totals);
    printf("table_fuzz: input %llu of seed %llu (%zu bytes): %s\n", (unsigned long long)only,
           (unsigned long long)seed, b.size(), totals.accepted ? "accepted" : "refused");
    return 0;
  }
  for (const auto& [path, bytes] : corpus) {
    g_current = "corpus file " + path;
    RunOne(bytes.data(), bytes.size(), r, &totals);
  }
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  uint64_t valid = 0;
  for (uint64_t i = 0; iterations == 0 || i < iterations; i++) {
    if (seconds > 0 && (i & 63) == 0 && elapsed() >= double(seconds)) break;
    bool pristine;
    std::vector<uint8_t> b = MakeInput(seed, i, corpus, &r, &pristine);
    g_current = replay + " --only " + std::to_string(i);
    const uint64_t accepted = totals.accepted;
    RunOne(b.data(), b.size(), r, &totals);
    if (pristine) {
      valid++;
      // What lib/table.ts writes must pass (or the generator drifted from the layout).
      if (totals.accepted == accepted) {
        std::string error;
        InodeTable::Adopt(b.data(), b.size(), &error);
        fprintf(stderr, "table_fuzz: a valid generated table was refused: %s\ninput: %s\n",
                error.c_str(), g_current.c_str());
        abort();
      }
    }
  }
  printf(
      "table_fuzz: seed %llu: %llu inputs in %.1f s (%llu accepted, %llu refused, %llu valid "
      "as generated, %zu from the corpus)\n",
      (unsigned long long)seed, (unsigned long long)totals.runs, elapsed(),
      (unsigned long long)totals.accepted, (unsigned long long)totals.refused,
      (unsigned long long)valid, corpus.size());
  for (const auto& [shape, n] : reasons)
    printf("  %8llu  %s\n", (unsigned long long)n, shape.c_str());
  return 0;
}

#endif  // AYSFS_LIBFUZZER
