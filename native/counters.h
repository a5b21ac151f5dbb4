// The engine's counters, one list: every counter and gauge is declared once below, and the
// Counters struct, the JavaScript object of `stats()` (bridge_session.cc StatsObject), the
// status document's `engine` part (status.cc), the addon's `statNames` export (which a unit
// test checks binding.d.ts against) and its `statMeta` export (the Prometheus metrics) are
// generated from it.
//
// To add a counter: one X(...) line in AYSFS_STATS (its C++ name, its JavaScript name, what it
// counts), the code that counts it, and its line in NativeStats (binding.d.ts), which
// test/unit/native-lists.test.ts demands.
#pragma once

#include <atomic>
#include <cstdint>

namespace aysfs {

// Requests served per operation; `rejected` counts write-type requests answered EROFS. The
// JavaScript names are the C++ ones.
// (clang-format 14 re-wraps this macro differently on every pass: left as written.)
// clang-format off
#define AYSFS_OPS(X) \
  X(init) X(lookup) X(forget) X(getattr) X(readlink) X(open) X(opendir) X(read) X(readdir) \
  X(readdirplus) X(release) X(releasedir) X(statfs) X(getxattr) X(listxattr) X(ioctl) X(rejected)

// The other numbers of `stats()` and of the status document, in the document's order (after
// `ops`). COUNTER: a count since the mount, kept in Counters. GAUGE: a value of right now, which
// the session reads from its parts when asked (Session::gauges()).
#define AYSFS_STATS(COUNTER, GAUGE) \
  COUNTER(read_bytes, "bytesRead", "bytes returned to readers") \
  COUNTER(hits, "hits", "reads answered from a local cache file at once") \
  COUNTER(misses, "misses", "reads that parked: their blob was not cached") \
  COUNTER(miss_calls, "missCalls", "fetches asked of JavaScript, one per blob") \
  COUNTER(miss_failures, "missFailures", "fetches that failed (EIO to their readers)") \
  COUNTER(miss_timeouts, "missTimeouts", "fetches the backstop gave up on (no progress)") \
  COUNTER(interrupted, "interrupted", "parked reads answered EINTR (the reader was interrupted)") \
  COUNTER(errors, "errors", "EIO replies of any cause") \
  GAUGE(parked, "parked", "reads parked right now") \
  GAUGE(fetching, "fetching", "blobs being fetched right now") \
  GAUGE(entries, "entries", "entries in the live table") \
  GAUGE(retired_tables, "retiredTables", "replaced tables kept for inodes the kernel holds") \
  COUNTER(invalidations, "invalidations", "kernel cache entries and inodes dropped by swaps") \
  COUNTER(read_around_bytes, "readAround", "bytes pushed to the page cache around random reads") \
  COUNTER(pushed_file_bytes, "pushedFiles", "bytes of small files pushed whole (push_files)") \
  COUNTER(chunk_reads, "chunkReads", "reads answered from the cached chunks of a chunked file")
// clang-format on

#define AYSFS_IGNORE(...)

// The miss-latency histogram: how long a parked read waited until it was answered (served, or
// EIO when its fetch failed), by the upper bound of its bucket in microseconds; one more bucket
// (+Inf) holds what is above the last bound. Counted per bucket (not cumulative); the metrics
// (lib/metrics.ts, the addon's `missLatency`) add them up as Prometheus wants.
// clang-format off
#define AYSFS_MISS_BUCKETS_US(X) \
  X(1000) X(5000) X(10000) X(25000) X(50000) X(100000) X(250000) X(500000) X(1000000) \
  X(2500000) X(5000000) X(10000000)
// clang-format on
#define AYSFS_BUCKET_BOUND(us) uint64_t{us},
constexpr uint64_t kMissBucketsUs[] = {AYSFS_MISS_BUCKETS_US(AYSFS_BUCKET_BOUND)};
#undef AYSFS_BUCKET_BOUND
constexpr size_t kMissBuckets = sizeof(kMissBucketsUs) / sizeof(kMissBucketsUs[0]);

// Counted from any thread without a lock, read one by one: a snapshot is not consistent across
// counters, and needs not be.
struct Counters {
#define AYSFS_OP_FIELD(name) std::atomic<uint64_t> name{0};
  AYSFS_OPS(AYSFS_OP_FIELD)
#undef AYSFS_OP_FIELD
#define AYSFS_COUNTER_FIELD(name, js, what) std::atomic<uint64_t> name{0};
  AYSFS_STATS(AYSFS_COUNTER_FIELD, AYSFS_IGNORE)
#undef AYSFS_COUNTER_FIELD
  // The miss-latency histogram: one count per bucket of kMissBucketsUs, then +Inf; the sum of
  // the waits in microseconds.
  std::atomic<uint64_t> miss_latency[kMissBuckets + 1] = {};
  std::atomic<uint64_t> miss_latency_sum_us{0};

  void ObserveMissLatency(uint64_t us) {
    size_t i = 0;
    while (i < kMissBuckets && us > kMissBucketsUs[i]) i++;
    miss_latency[i]++;
    miss_latency_sum_us += us;
  }
};

// The gauges' values at one moment. Session::gauges() fills them with one aggregate initializer,
// so no default values here: a gauge added to the list and not filled there is a compile error
// (-Werror=missing-field-initializers, CMakeLists.txt).
struct Gauges {
#define AYSFS_GAUGE_FIELD(name, js, what) uint64_t name;
  AYSFS_STATS(AYSFS_IGNORE, AYSFS_GAUGE_FIELD)
#undef AYSFS_GAUGE_FIELD
};

// Calls f(js_name, value) for every op counter, in list order.
template <typename F>
void ForEachOp(const Counters& c, F&& f) {
#define AYSFS_VISIT_OP(name) f(#name, c.name.load());
  AYSFS_OPS(AYSFS_VISIT_OP)
#undef AYSFS_VISIT_OP
}

// Calls f(js_name, value) for every counter and gauge of AYSFS_STATS, in list order.
template <typename F>
void ForEachStat(const Counters& c, const Gauges& g, F&& f) {
#define AYSFS_VISIT_COUNTER(name, js, what) f(js, c.name.load());
#define AYSFS_VISIT_GAUGE(name, js, what) f(js, g.name);
  AYSFS_STATS(AYSFS_VISIT_COUNTER, AYSFS_VISIT_GAUGE)
#undef AYSFS_VISIT_COUNTER
#undef AYSFS_VISIT_GAUGE
}

// The JavaScript names, in list order (the addon's `statNames` export).
#define AYSFS_OP_NAME(name) #name,
constexpr const char* kOpNames[] = {AYSFS_OPS(AYSFS_OP_NAME)};
#undef AYSFS_OP_NAME
#define AYSFS_STAT_NAME(name, js, what) js,
constexpr const char* kStatNames[] = {AYSFS_STATS(AYSFS_STAT_NAME, AYSFS_STAT_NAME)};
#undef AYSFS_STAT_NAME

// What each stat is, in list order (the addon's `statMeta` export, which the Prometheus metrics
// are generated from: lib/metrics.ts): its C++ name (the metric's name), counter or gauge, and
// what it counts (the metric's help).
struct StatMeta {
  const char* name;
  const char* kind;
  const char* help;
};
#define AYSFS_STAT_META_COUNTER(name, js, what) {#name, "counter", what},
#define AYSFS_STAT_META_GAUGE(name, js, what) {#name, "gauge", what},
constexpr StatMeta kStatMeta[] = {AYSFS_STATS(AYSFS_STAT_META_COUNTER, AYSFS_STAT_META_GAUGE)};
#undef AYSFS_STAT_META_COUNTER
#undef AYSFS_STAT_META_GAUGE

}  // namespace aysfs
