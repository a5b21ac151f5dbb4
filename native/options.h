// The options of one mount, one list. lib/engine.ts checks every engine option (its type and
// range), fills in the defaults and hands the addon a complete set; the addon (bridge_session.cc
// ReadOptions) checks again, cheaply, that every field below is there with its type, and copies
// it into a SessionOptions. No defaults here: lib/engine.ts has them, with the reasons for them.
//
// To add an engine option: one X(...) line here (C++ type, C++ name, JavaScript name, what it
// does), its line in TUNABLES (lib/engine.ts: type, range, default), its field in
// NativeMountOptions (binding.d.ts), which test/unit/native-lists.test.ts demands; then the code
// that uses it.
#pragma once

#include <cstdint>
#include <string>

namespace aysfs {

// Types: std::string (a JavaScript string), bool, uint32_t (an integer from 0 to 2^32 - 1),
// uint64_t (an integer from 0 to 2^53 - 1, JavaScript's safe integers).
// clang-format off
#define AYSFS_MOUNT_OPTIONS(X) \
  X(std::string, mountpoint, "mountpoint", "absolute path of an existing directory") \
  X(std::string, cache_dir, "cacheDir", "blobs at <cache_dir>/<h0>/<h1>/<md5>") \
  X(std::string, fsname, "fsname", "the source in /proc/mounts; no ',' or '\\'") \
  X(bool, allow_other, "allowOther", "allow_other: other users see the tree") \
  X(bool, suid, "suid", "honour setuid bits (else nosuid)") \
  X(bool, dev, "dev", "honour device files (else nodev)") \
  X(bool, debug, "debug", "libfuse's debug output on stderr") \
  X(uint32_t, stall_timeout_ms, "stallTimeoutMs", "the backstop: a fetch with no progress for this long fails its reads (Backstop)") \
  X(uint64_t, splice_min_size, "spliceMinSize", "files at least this big are read with splice") \
  X(uint32_t, read_ahead_kb, "readAheadKb", "read-ahead window of the mount's backing device (root only); 0 = the kernel's") \
  X(uint32_t, read_around, "readAround", "chunk pushed to the page cache around a small random read; 0 = off") \
  X(uint32_t, push_files, "pushFiles", "files of at most this many bytes with a local blob are pushed whole; 0 = off")
// clang-format on

struct SessionOptions {
#define AYSFS_OPTION_FIELD(type, name, js, what) type name{};
  AYSFS_MOUNT_OPTIONS(AYSFS_OPTION_FIELD)
#undef AYSFS_OPTION_FIELD
};

// The JavaScript names, in list order (the addon's `mountOptionNames` export).
#define AYSFS_OPTION_NAME(type, name, js, what) js,
constexpr const char* kMountOptionNames[] = {AYSFS_MOUNT_OPTIONS(AYSFS_OPTION_NAME)};
#undef AYSFS_OPTION_NAME

}  // namespace aysfs
