// The session bridge: JavaScript's side of a mount. The registry of sessions by id; mount,
// swap, stats, status and unmount for the thread that mounted; attach, complete, serveVerified,
// setChunks and progress for the engine's miss worker, whose miss function is a thread-safe
// function (Bridge::Dispatch); the exit notice, on the thread that mounted.
#include <malloc.h>
#include <napi.h>
#include <sys/mount.h>

#include <cmath>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bridge.h"
#include "counters.h"
#include "options.h"
#include "session.h"

namespace aysfs {

namespace {

// A miss: the blob, and the read that missed (a chunked file's fetch brings what it covers).
struct Miss {
  std::string md5;
  uint64_t size;
  uint64_t off;
  uint64_t len;
};

struct MissCall {
  std::shared_ptr<Session> session;
  Miss miss;
};

// What the native side knows of one mount. Lock order: g_mu before Bridge::mu, and neither is
// held while a lock of the session is taken (only its atomics are read under g_mu); the
// session calls out, through on_miss and on_exit, holding none of its own.
struct Bridge {
  std::shared_ptr<Session> session;
  napi_env owner = nullptr;  // the env that mounted (its teardown unmounts)
  std::mutex mu;
  enum class Fetcher { kWaiting, kAttached, kGone } fetcher = Fetcher::kWaiting;  // guarded by mu
  Napi::ThreadSafeFunction miss_fn;                                               // guarded by mu
  std::vector<Miss> pending;         // misses before attach; guarded by mu
  Napi::ThreadSafeFunction exit_fn;  // guarded by mu
  bool exit_live = false;            // guarded by mu

  void Dispatch(const Miss& miss) {
    std::unique_lock<std::mutex> lock(mu);
    if (fetcher == Fetcher::kWaiting) {
      pending.push_back(miss);
      return;
    }
    if (fetcher == Fetcher::kAttached) {
      auto* call = new MissCall{session, miss};
      if (miss_fn.NonBlockingCall(call, CallMiss) == napi_ok) return;
      delete call;
    }
    lock.unlock();
    session->misses.Complete(miss.md5, EIO);  // nobody left to fetch it
  }

  static void CallMiss(Napi::Env env, Napi::Function fn, MissCall* call) {
    std::unique_ptr<MissCall> owned(call);
    const Miss& m = owned->miss;
    if (env == nullptr || fn.IsEmpty()) {
      owned->session->misses.Complete(m.md5, EIO);
      return;
    }
    fn.Call({Napi::String::New(env, m.md5), Napi::Number::New(env, double(m.size)),
             Napi::Number::New(env, double(m.off)), Napi::Number::New(env, double(m.len))});
    if (env.IsExceptionPending()) {
      env.GetAndClearPendingException();
      owned->session->misses.Complete(m.md5, EIO);
    }
  }

  // Lets go of both thread-safe functions; called once, at unmount.
  void Close() {
    std::lock_guard<std::mutex> lock(mu);
    if (fetcher == Fetcher::kAttached) miss_fn.Release();
    fetcher = Fetcher::kGone;
    pending.clear();
    if (exit_live) exit_fn.Release();
    exit_live = false;
  }
};

std::mutex g_mu;
// Never destroyed: static destruction at exit must not race the loop threads.
auto* g_bridges = new std::unordered_map<uint32_t, std::shared_ptr<Bridge>>();  // guarded by g_mu
uint32_t g_next_id = 1;                                                         // guarded by g_mu

std::shared_ptr<Bridge> Find(uint32_t id) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_bridges->find(id);
  return it == g_bridges->end() ? nullptr : it->second;
}

std::shared_ptr<Bridge> BridgeArg(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string(fn) + ": expected a session id")
        .ThrowAsJavaScriptException();
    return nullptr;
  }
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  if (!b)
    ThrowCoded(info.Env(), EINVAL, std::string(fn) + ": no such session (already unmounted?)");
  return b;
}

std::shared_ptr<const InodeTable> TableArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    Napi::TypeError::New(info.Env(), "the inode table must be a Buffer")
        .ThrowAsJavaScriptException();
    return nullptr;
  }
  auto buf = info[i].As<Napi::Buffer<uint8_t>>();
  std::string error;
  auto table = InodeTable::Adopt(buf.Data(), buf.Length(), &error);
  if (!table) ThrowCoded(info.Env(), EINVAL, error);
  return table;
}

// Reads one mount option: present and of its type (a number: an integer within its C++ type's
// range), else a TypeError naming it. lib/engine.ts has checked every option against its own
// range already; this is the cheap second check, against a caller that went around it (a
// number that does not fit would otherwise be truncated).
bool OptionError(Napi::Env env, const char* js, const char* what) {
  Napi::TypeError::New(env, std::string("mount: expected the \"") + js + "\" option to be " + what)
      .ThrowAsJavaScriptException();
  return false;
}
bool ReadOption(Napi::Env env, Napi::Value v, const char* js, std::string* out) {
  if (!v.IsString()) return OptionError(env, js, "a string");
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}
bool ReadOption(Napi::Env env, Napi::Value v, const char* js, bool* out) {
  if (!v.IsBoolean()) return OptionError(env, js, "a boolean");
  *out = v.As<Napi::Boolean>().Value();
  return true;
}
bool ReadInteger(Napi::Value v, double max, double* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= max) || d != std::floor(d)) return false;
  *out = d;
  return true;
}
bool ReadOption(Napi::Env env, Napi::Value v, const char* js, uint32_t* out) {
  double d;
  if (!ReadInteger(v, 4294967295.0, &d))
    return OptionError(env, js, "an integer from 0 to 4294967295");
  *out = static_cast<uint32_t>(d);
  return true;
}
bool ReadOption(Napi::Env env, Napi::Value v, const char* js, uint64_t* out) {
  double d;
  if (!ReadInteger(v, 9007199254740991.0, &d))
    return OptionError(env, js, "an integer from 0 to 9007199254740991");
  *out = static_cast<uint64_t>(d);
  return true;
}

// Every option of options.h, each checked; false (a TypeError thrown) at the first that fails.
bool ReadOptions(Napi::Env env, Napi::Object o, SessionOptions* opts) {
#define AYSFS_READ_OPTION(type, name, js, what) \
  if (!ReadOption(env, o.Get(js), js, &opts->name)) return false;
  AYSFS_MOUNT_OPTIONS(AYSFS_READ_OPTION)
#undef AYSFS_READ_OPTION
  return true;
}

// mount(options, table, onExit) -> id
Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "mount", {napi_object, napi_object, napi_function})) return env.Undefined();
  SessionOptions opts;
  if (!ReadOptions(env, info[0].As<Napi::Object>(), &opts)) return env.Undefined();
  if (opts.mountpoint.empty() || opts.mountpoint[0] != '/' || opts.cache_dir.empty()) {
    Napi::TypeError::New(env, "mount: mountpoint and cacheDir must be absolute paths")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // A ',' would end the option and start another in the mount's options.
  if (opts.fsname.find_first_of(",\\") != std::string::npos) {
    Napi::TypeError::New(env, "mount: fsname must not contain ',' or '\\'")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto table = TableArg(info, 1);
  if (!table) return env.Undefined();

  auto bridge = std::make_shared<Bridge>();
  bridge->owner = env;
  bridge->session = std::make_shared<Session>(opts, table);
  // The session's callbacks may outlive the registry's reference: they hold a weak one.
  std::weak_ptr<Bridge> weak = bridge;
  bridge->session->misses.on_miss = [weak](const std::string& md5, uint64_t size, uint64_t off,
                                           uint64_t len) {
    if (auto b = weak.lock()) b->Dispatch(Miss{md5, size, off, len});
  };
  bridge->exit_fn =
      Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "aysfs-exit", 0, 1);
  bridge->exit_fn.Unref(env);  // a mount alone does not keep the event loop alive
  bridge->exit_live = true;
  bridge->session->on_exit = [weak]() {
    auto b = weak.lock();
    if (!b) return;
    std::lock_guard<std::mutex> lock(b->mu);
    if (b->exit_live) b->exit_fn.NonBlockingCall();
  };

  std::string error;
  int err = bridge->session->Mount(&error);
  if (err != 0) {
    bridge->Close();
    ThrowCoded(env, err, error);
    return env.Undefined();
  }
  std::lock_guard<std::mutex> lock(g_mu);
  uint32_t id = g_next_id++;
  (*g_bridges)[id] = bridge;
  return Napi::Number::New(env, id);
}

// attach(id, onMiss): called on the miss worker; onMiss(md5, size) runs there.
Napi::Value Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto b = BridgeArg(info, "attach");
  if (!b || !CheckArgs(info, "attach", {napi_number, napi_function})) return env.Undefined();
  std::vector<Miss> pending;
  {
    std::lock_guard<std::mutex> lock(b->mu);
    if (b->fetcher != Bridge::Fetcher::kWaiting) {
      ThrowCoded(env, EBUSY, "attach: this session already has a fetcher");
      return env.Undefined();
    }
    // The finalizer runs on the worker, maybe after the bridge is gone: a weak reference.
    std::weak_ptr<Bridge> weak = b;
    auto finalize = [weak](Napi::Env) {
      // The worker's env is going away: later misses fail at once instead of waiting.
      auto bridge = weak.lock();
      if (!bridge) return;
      std::lock_guard<std::mutex> lock(bridge->mu);
      if (bridge->fetcher == Bridge::Fetcher::kAttached) bridge->fetcher = Bridge::Fetcher::kGone;
    };
    b->miss_fn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "aysfs-miss", 0,
                                               1, finalize);
    b->fetcher = Bridge::Fetcher::kAttached;
    pending.swap(b->pending);
  }
  for (auto& miss : pending) b->Dispatch(miss);
  return env.Undefined();
}

// progress(id, md5s) -> md5s: the fetches of these blobs made progress; returns the blobs the
// backstop gave up on since the last call (their fetches must end). Called by the miss worker
// a few times a second while fetches run, never per chunk.
Napi::Value Progress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "progress", {napi_number, napi_object}) || !info[1].IsArray()) {
    if (!env.IsExceptionPending())
      Napi::TypeError::New(env, "progress: argument 2 must be an array of strings")
          .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array in = info[1].As<Napi::Array>();
  std::vector<std::string> md5s;
  md5s.reserve(in.Length());
  for (uint32_t i = 0; i < in.Length(); i++) {
    Napi::Value v = in.Get(i);
    if (!v.IsString()) {
      Napi::TypeError::New(env, "progress: argument 2 must be an array of strings")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    md5s.push_back(v.As<Napi::String>().Utf8Value());
  }
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  std::vector<std::string> abandoned;
  if (b) abandoned = b->session->misses.Progress(md5s);
  Napi::Array out = Napi::Array::New(env, abandoned.size());
  for (uint32_t i = 0; i < abandoned.size(); i++) out.Set(i, abandoned[i]);
  return out;
}

// complete(id, md5, errno): a fetch settled.
Napi::Value Complete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "complete", {napi_number, napi_string, napi_number})) return env.Undefined();
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  if (b)
    b->session->misses.Complete(info[1].As<Napi::String>().Utf8Value(),
                                info[2].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

// serveVerified(id, md5, data): a fetch verified these bytes; answer the reads parked on them.
Napi::Value ServeVerified(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "serveVerified", {napi_number, napi_string, napi_object}))
    return env.Undefined();
  if (!info[2].IsBuffer()) {
    Napi::TypeError::New(env, "serveVerified: data must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  auto data = info[2].As<Napi::Buffer<char>>();
  if (b)
    b->session->misses.ServeVerified(info[1].As<Napi::String>().Utf8Value(), data.Data(),
                                     data.Length());
  return env.Undefined();
}

// setChunks(id, md5, size, chunkSize, md5s): the miss worker checked the chunk index of file md5
// (md5s: 16 bytes a chunk); reads of it are answered from its cached chunks from now on. False
// when the list breaks the index rules (nothing is set).
Napi::Value SetChunks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "setChunks",
                 {napi_number, napi_string, napi_number, napi_number, napi_object}))
    return env.Undefined();
  if (!info[4].IsBuffer()) {
    Napi::TypeError::New(env, "setChunks: md5s must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double size = info[2].As<Napi::Number>().DoubleValue();
  double chunk = info[3].As<Napi::Number>().DoubleValue();
  if (!(size >= 1 && size <= 9007199254740991.0 && std::floor(size) == size) ||
      !(chunk >= 1 && chunk <= 9007199254740991.0 && std::floor(chunk) == chunk)) {
    Napi::TypeError::New(env, "setChunks: size and chunkSize must be positive integers")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  auto md5s = info[4].As<Napi::Buffer<char>>();
  bool ok =
      b && b->session->reads.chunks.Set(info[1].As<Napi::String>().Utf8Value(), uint64_t(size),
                                        uint64_t(chunk), std::string(md5s.Data(), md5s.Length()));
  return Napi::Boolean::New(env, ok);
}

Napi::Value Swap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto b = BridgeArg(info, "swap");
  if (!b) return env.Undefined();
  auto table = TableArg(info, 1);
  if (!table) return env.Undefined();
  SwapResult r = b->session->Swap(table);
  Napi::Object out = Napi::Object::New(env);
  out.Set("invalidatedEntries", double(r.invalidated_entries));
  out.Set("invalidatedInodes", double(r.invalidated_inodes));
  out.Set("retiredTables", double(r.retired_tables));
  return out;
}

// The counters as `stats()` returns them (NativeStats in binding.d.ts): the one conversion,
// generated from counters.h's lists like the status document.
Napi::Object StatsObject(Napi::Env env, const Session& s) {
  Napi::Object ops = Napi::Object::New(env);
  ForEachOp(s.counters, [&](const char* name, uint64_t value) { ops.Set(name, double(value)); });
  Napi::Object out = Napi::Object::New(env);
  out.Set("ops", ops);
  ForEachStat(s.counters, s.gauges(),
              [&](const char* name, uint64_t value) { out.Set(name, double(value)); });
  out.Set("mounted", s.mounted() && s.loop_running());
  return out;
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto b = BridgeArg(info, "stats");
  if (!b) return env.Undefined();
  return StatsObject(env, *b->session);
}

// The miss-latency histogram: bucket bounds (µs), counts per bucket then +Inf, the sum (µs).
Napi::Value MissLatency(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto b = BridgeArg(info, "missLatency");
  if (!b) return env.Undefined();
  const Counters& c = b->session->counters;
  Napi::Array bounds = Napi::Array::New(env, kMissBuckets);
  Napi::Array counts = Napi::Array::New(env, kMissBuckets + 1);
  for (uint32_t i = 0; i < kMissBuckets; i++) bounds.Set(i, static_cast<double>(kMissBucketsUs[i]));
  for (uint32_t i = 0; i <= kMissBuckets; i++)
    counts.Set(i, static_cast<double>(c.miss_latency[i].load()));
  Napi::Object out = Napi::Object::New(env);
  out.Set("boundsUs", bounds);
  out.Set("counts", counts);
  out.Set("sumUs", static_cast<double>(c.miss_latency_sum_us.load()));
  return out;
}

Napi::Value SetStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "setStatus", {napi_number, napi_string, napi_string}))
    return env.Undefined();
  auto b = Find(info[0].As<Napi::Number>().Uint32Value());
  if (b)
    b->session->SetStatus(info[1].As<Napi::String>().Utf8Value(),
                          info[2].As<Napi::String>().Utf8Value());
  return env.Undefined();
}

Napi::Value Status(const Napi::CallbackInfo& info) {
  auto b = BridgeArg(info, "status");
  if (!b) return info.Env().Undefined();
  return Napi::String::New(info.Env(), b->session->Status());
}

void UnmountBridge(uint32_t id) {
  std::shared_ptr<Bridge> b;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_bridges->find(id);
    if (it == g_bridges->end()) return;
    b = it->second;
    g_bridges->erase(it);
  }
  b->session->Unmount();
  b->Close();
}

Napi::Value Unmount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "unmount", {napi_number})) return env.Undefined();
  UnmountBridge(info[0].As<Napi::Number>().Uint32Value());
  return env.Undefined();
}

Napi::Value CheckTable(const Napi::CallbackInfo& info) {
  auto table = TableArg(info, 0);
  if (!table) return info.Env().Undefined();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("entries", double(table->count()));
  out.Set("bytes", double(table->total_bytes()));
  return out;
}

// Gives the C heap's free memory back to the system (after a big flist was parsed and its
// garbage collected, glibc keeps the freed chunks otherwise).
Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  return info.Env().Undefined();
}

template <size_t N>
Napi::Array Names(Napi::Env env, const char* const (&names)[N]) {
  Napi::Array out = Napi::Array::New(env, N);
  for (uint32_t i = 0; i < N; i++) out.Set(i, names[i]);
  return out;
}

}  // namespace

void UnmountSessionsOf(napi_env env) {
  std::vector<uint32_t> ids;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto& [id, b] : *g_bridges)
      if (b->owner == env) ids.push_back(id);
  }
  for (uint32_t id : ids) UnmountBridge(id);
}

void DetachAllMounts() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& [id, b] : *g_bridges)
    if (b->session->mounted()) umount2(b->session->options().mountpoint.c_str(), MNT_DETACH);
}

void ExportSessionFunctions(Napi::Env env, Napi::Object exports) {
  using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
  static const std::pair<const char*, Fn> kFunctions[] = {
      {"mount", Mount},           {"attach", Attach},
      {"complete", Complete},     {"serveVerified", ServeVerified},
      {"progress", Progress},     {"swap", Swap},
      {"setChunks", SetChunks},   {"stats", Stats},
      {"setStatus", SetStatus},   {"status", Status},
      {"unmount", Unmount},       {"checkTable", CheckTable},
      {"trimMemory", TrimMemory}, {"missLatency", MissLatency},
  };
  for (const auto& [name, fn] : kFunctions) exports.Set(name, Napi::Function::New(env, fn, name));
  Napi::Object stat_names = Napi::Object::New(env);
  stat_names.Set("ops", Names(env, kOpNames));
  stat_names.Set("stats", Names(env, kStatNames));
  exports.Set("statNames", stat_names);
  Napi::Array stat_meta = Napi::Array::New(env, std::size(kStatMeta));
  for (size_t i = 0; i < std::size(kStatMeta); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", kStatMeta[i].name);
    m.Set("kind", kStatMeta[i].kind);
    m.Set("help", kStatMeta[i].help);
    stat_meta.Set(static_cast<uint32_t>(i), m);
  }
  exports.Set("statMeta", stat_meta);
  exports.Set("mountOptionNames", Names(env, kMountOptionNames));
}

}  // namespace aysfs
