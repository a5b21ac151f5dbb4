// Module init and the bridge to JavaScript: the registry of sessions, the miss function (a
// thread-safe function living on the engine's miss worker), the exit notice (main thread), the
// committer that finishes verified blobs on native threads (commit.h) and the streaming `.bro`
// decoder (brotli.h).
#include <malloc.h>
#include <napi.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "brotli.h"
#include "commit.h"
#include "session.h"

namespace aysfs {

namespace {

struct MissCall {
  std::shared_ptr<Session> session;
  std::string md5;
  uint64_t size;
};

// What the native side knows of one mount. Lock order: g_mu before Bridge::mu.
struct Bridge {
  std::shared_ptr<Session> session;
  napi_env owner = nullptr;  // the env that mounted (its teardown unmounts)
  std::mutex mu;
  enum class Fetcher { kWaiting, kAttached, kGone } fetcher = Fetcher::kWaiting;  // guarded by mu
  Napi::ThreadSafeFunction miss_fn;                                               // guarded by mu
  std::vector<std::pair<std::string, uint64_t>> pending;  // misses before attach; guarded by mu
  Napi::ThreadSafeFunction exit_fn;                       // guarded by mu
  bool exit_live = false;                                 // guarded by mu

  void Dispatch(const std::string& md5, uint64_t size) {
    std::unique_lock<std::mutex> lock(mu);
    if (fetcher == Fetcher::kWaiting) {
      pending.emplace_back(md5, size);
      return;
    }
    if (fetcher == Fetcher::kAttached) {
      auto* call = new MissCall{session, md5, size};
      if (miss_fn.NonBlockingCall(call, CallMiss) == napi_ok) return;
      delete call;
    }
    lock.unlock();
    session->Complete(md5, EIO);  // nobody left to fetch it
  }

  static void CallMiss(Napi::Env env, Napi::Function fn, MissCall* call) {
    std::unique_ptr<MissCall> owned(call);
    if (env == nullptr || fn.IsEmpty()) {
      owned->session->Complete(owned->md5, EIO);
      return;
    }
    fn.Call({Napi::String::New(env, owned->md5), Napi::Number::New(env, double(owned->size))});
    if (env.IsExceptionPending()) {
      env.GetAndClearPendingException();
      owned->session->Complete(owned->md5, EIO);
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

void ThrowCoded(Napi::Env env, int err, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  const char* name = strerrorname_np(err);
  e.Set("code", Napi::String::New(env, name ? name : "EIO"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.ThrowAsJavaScriptException();
}

bool CheckArgs(const Napi::CallbackInfo& info, const char* fn,
               std::initializer_list<napi_valuetype> types) {
  size_t i = 0;
  for (napi_valuetype t : types) {
    if (info.Length() <= i || info[i].Type() != t) {
      Napi::TypeError::New(info.Env(), std::string(fn) + ": argument " + std::to_string(i + 1) +
                                           " has the wrong type")
          .ThrowAsJavaScriptException();
      return false;
    }
    i++;
  }
  return true;
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

std::string StringProp(Napi::Object o, const char* key, const std::string& fallback = "") {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}
bool BoolProp(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() && v.As<Napi::Boolean>().Value();
}

// mount(options, table, onExit) -> id
Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!CheckArgs(info, "mount", {napi_object, napi_object, napi_function})) return env.Undefined();
  Napi::Object o = info[0].As<Napi::Object>();
  SessionOptions opts;
  opts.mountpoint = StringProp(o, "mountpoint");
  opts.cache_dir = StringProp(o, "cacheDir");
  opts.fsname = StringProp(o, "fsname", "aysfs");
  if (opts.mountpoint.empty() || opts.mountpoint[0] != '/' || opts.cache_dir.empty()) {
    Napi::TypeError::New(env, "mount: mountpoint and cacheDir must be absolute paths")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (opts.fsname.find_first_of(",\\") != std::string::npos) {
    Napi::TypeError::New(env, "mount: fsname must not contain ',' or '\\'")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  opts.allow_other = BoolProp(o, "allowOther");
  opts.suid = BoolProp(o, "suid");
  opts.dev = BoolProp(o, "dev");
  opts.debug = BoolProp(o, "debug");
  if (o.Get("stallTimeoutMs").IsNumber())
    opts.stall_timeout_ms = o.Get("stallTimeoutMs").As<Napi::Number>().Uint32Value();
  if (o.Get("spliceMinSize").IsNumber())
    opts.splice_min_size =
        static_cast<uint64_t>(o.Get("spliceMinSize").As<Napi::Number>().DoubleValue());
  if (o.Get("readAheadKb").IsNumber())
    opts.read_ahead_kb = o.Get("readAheadKb").As<Napi::Number>().Uint32Value();
  if (o.Get("readAround").IsNumber())
    opts.read_around = o.Get("readAround").As<Napi::Number>().Uint32Value();
  if (o.Get("pushFiles").IsNumber())
    opts.push_files = o.Get("pushFiles").As<Napi::Number>().Uint32Value();
  auto table = TableArg(info, 1);
  if (!table) return env.Undefined();

  auto bridge = std::make_shared<Bridge>();
  bridge->owner = env;
  bridge->session = std::make_shared<Session>(opts, table);
  // The session's callbacks may outlive the registry's reference: they hold a weak one.
  std::weak_ptr<Bridge> weak = bridge;
  bridge->session->on_miss = [weak](const std::string& md5, uint64_t size) {
    if (auto b = weak.lock()) b->Dispatch(md5, size);
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
  std::vector<std::pair<std::string, uint64_t>> pending;
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
  for (auto& [md5, size] : pending) b->Dispatch(md5, size);
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
  if (b) abandoned = b->session->Progress(md5s);
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
    b->session->Complete(info[1].As<Napi::String>().Utf8Value(),
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
    b->session->ServeVerified(info[1].As<Napi::String>().Utf8Value(), data.Data(), data.Length());
  return env.Undefined();
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

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto b = BridgeArg(info, "stats");
  if (!b) return env.Undefined();
  Session& s = *b->session;
  Counters& c = s.counters;
  Napi::Object ops = Napi::Object::New(env);
#define AYSFS_SET(name) ops.Set(#name, double(c.name.load()));
  AYSFS_OPS(AYSFS_SET)
#undef AYSFS_SET
  Napi::Object out = Napi::Object::New(env);
  out.Set("ops", ops);
  out.Set("bytesRead", double(c.bytes_read.load()));
  out.Set("hits", double(c.hits.load()));
  out.Set("misses", double(c.misses.load()));
  out.Set("missCalls", double(c.miss_calls.load()));
  out.Set("missFailures", double(c.miss_failures.load()));
  out.Set("readAround", double(c.read_around.load()));
  out.Set("pushedFiles", double(c.pushed_files.load()));
  out.Set("missTimeouts", double(c.miss_timeouts.load()));
  out.Set("interrupted", double(c.interrupted.load()));
  out.Set("errors", double(c.errors.load()));
  out.Set("parked", double(s.misses.parked()));
  out.Set("fetching", double(s.misses.blobs()));
  out.Set("entries", double(s.table()->count()));
  out.Set("retiredTables", double(s.retired_tables()));
  out.Set("invalidations", double(c.invalidations.load()));
  out.Set("mounted", s.mounted() && s.loop_running());
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

Napi::Value Sessions(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_mu);
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (auto& [id, b] : *g_bridges) out.Set(i++, double(id));
  return out;
}

// The committer: `new Committer(done)` on the thread that runs a pipeline (the miss worker, or
// the main thread for prefetch); `write`/`finish` queue a blob for the pool, `push` a copy of a
// cached blob into a directory grid cache, and `done(token, errno, step, where)` is called back
// on that thread when it is in place (errno 0) or failed. A pending job keeps the event loop
// alive; an idle committer does not.
struct CommitState {
  Napi::ThreadSafeFunction fn;
  uint32_t pending = 0;  // jobs not yet reported; the JS thread's only
  bool closed = false;   // the JS side let go of `fn`; the JS thread's only
  // Node deletes a thread-safe function when its env ends, even while threads still hold it:
  // its finalizer sets `gone`, and nobody touches `fn` after that.
  std::mutex mu;
  bool gone = false;  // guarded by mu

  // Lets go of the JS side's hold on `fn` (once; not after the env ended).
  void Close() {
    if (closed) return;
    closed = true;
    std::lock_guard<std::mutex> lock(mu);
    if (!gone) fn.Release();
  }
};

struct CommitResult {
  std::shared_ptr<CommitState> state;
  uint32_t token;
  int err;
  const char* step;   // a string literal of commit.cc, or nullptr
  std::string where;  // a push's failing path (commit.h PushJob::done); empty otherwise
  bool push;
};

class Committer : public Napi::ObjectWrap<Committer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Committer",
        {InstanceMethod<&Committer::Write>("write"), InstanceMethod<&Committer::Finish>("finish"),
         InstanceMethod<&Committer::Push>("push"), InstanceMethod<&Committer::Close>("close")});
  }

  explicit Committer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Committer>(info) {
    if (!CheckArgs(info, "Committer", {napi_function})) return;
    state_ = std::make_shared<CommitState>();
    std::weak_ptr<CommitState> weak = state_;
    state_->fn = Napi::ThreadSafeFunction::New(info.Env(), info[0].As<Napi::Function>(),
                                               "aysfs-commit", 0, 1, [weak](Napi::Env) {
                                                 if (auto state = weak.lock()) {
                                                   std::lock_guard<std::mutex> lock(state->mu);
                                                   state->gone = true;
                                                 }
                                               });
    state_->fn.Unref(info.Env());
  }

  ~Committer() override {
    if (state_) state_->Close();
  }

 private:
  // write(token, tmp, dest, data, sync): create `tmp`, write `data` (copied), fsync, rename.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckArgs(info, "write",
                   {napi_number, napi_string, napi_string, napi_object, napi_boolean}))
      return env.Undefined();
    if (!info[3].IsBuffer()) {
      Napi::TypeError::New(env, "write: data must be a Buffer").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // A copy, not a reference to the Buffer: the job outlives the env when the miss worker is
    // terminated at unmount, and the Buffer's memory goes with the env (measured: writing from
    // the Buffer itself then put garbage under a blob's name).
    auto data = info[3].As<Napi::Buffer<char>>();
    CommitJob job;
    job.data.assign(data.Data(), data.Length());
    return Napi::Boolean::New(env, Submit(info, std::move(job), 1, 2, 4));
  }

  // finish(token, tmp, dest, sync): `tmp` is written and closed: fsync, rename.
  Napi::Value Finish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckArgs(info, "finish", {napi_number, napi_string, napi_string, napi_boolean}))
      return env.Undefined();
    CommitJob job;
    job.written = true;
    return Napi::Boolean::New(env, Submit(info, std::move(job), 1, 2, 3));
  }

  // push(token, root, rel, src, size, sync): copy `src` to `root/rel` (commit.h PushJob).
  Napi::Value Push(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!CheckArgs(info, "push",
                   {napi_number, napi_string, napi_string, napi_string, napi_number, napi_boolean}))
      return env.Undefined();
    double size = info[4].As<Napi::Number>().DoubleValue();
    if (!(size >= 0 && size <= 9007199254740991.0) || size != double(uint64_t(size))) {
      Napi::TypeError::New(env, "push: size must be a non-negative integer")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (!Hold(env)) return Napi::Boolean::New(env, false);
    PushJob job;
    job.root = info[1].As<Napi::String>().Utf8Value();
    job.rel = info[2].As<Napi::String>().Utf8Value();
    job.src = info[3].As<Napi::String>().Utf8Value();
    job.size = uint64_t(size);
    job.sync = info[5].As<Napi::Boolean>().Value();
    job.done = Reporter(info[0].As<Napi::Number>().Uint32Value(), true);
    SubmitPush(std::move(job));
    return Napi::Boolean::New(env, true);
  }

  // close(): no more jobs; those queued still report.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (state_) state_->Close();
    return info.Env().Undefined();
  }

  // Takes a hold on `fn` for one job (released by its report) and counts it; false when the
  // committer no longer takes jobs: closed, or this thread is ending (no exception: none can be
  // thrown then).
  bool Hold(Napi::Env env) {
    bool held = false;
    if (state_ && !state_->closed) {
      std::lock_guard<std::mutex> lock(state_->mu);
      held = !state_->gone && state_->fn.Acquire() == napi_ok;
    }
    if (!held) return false;
    if (state_->pending++ == 0) state_->fn.Ref(env);
    return true;
  }

  // The report of one held job, called once on a pool thread.
  std::function<void(int, const char*, const std::string&)> Reporter(uint32_t token, bool push) {
    std::shared_ptr<CommitState> state = state_;
    return [state, token, push](int err, const char* step, const std::string& where) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->gone) return;  // the env ended: nobody to tell
      auto* r = new CommitResult{state, token, err, step, where, push};
      if (state->fn.NonBlockingCall(r, Report) != napi_ok) delete r;  // the env is ending
      state->fn.Release();
    };
  }

  // Queues the job; false (and nothing queued) when the committer no longer takes jobs.
  bool Submit(const Napi::CallbackInfo& info, CommitJob job, size_t tmp_arg, size_t dest_arg,
              size_t sync_arg) {
    if (!Hold(info.Env())) return false;
    job.tmp = info[tmp_arg].As<Napi::String>().Utf8Value();
    job.dest = info[dest_arg].As<Napi::String>().Utf8Value();
    job.sync = info[sync_arg].As<Napi::Boolean>().Value();
    job.done = [report = Reporter(info[0].As<Napi::Number>().Uint32Value(), false)](
                   int err, const char* step) { report(err, step, std::string()); };
    SubmitCommit(std::move(job));
    return true;
  }

  static void Report(Napi::Env env, Napi::Function fn, CommitResult* r) {
    std::unique_ptr<CommitResult> owned(r);
    if (env == nullptr || fn.IsEmpty()) return;
    if (--owned->state->pending == 0) owned->state->fn.Unref(env);
    fn.Call({Napi::Number::New(env, owned->token), Napi::Number::New(env, owned->err),
             owned->step ? Napi::String::New(env, owned->step) : env.Null(),
             owned->push && owned->err != 0 ? Napi::String::New(env, owned->where) : env.Null()});
  }

  std::shared_ptr<CommitState> state_;
};

// The streaming `.bro` decoder (brotli.h), for the pipeline on the miss worker:
// `new BrotliDecoder()`, `push(chunk)` compressed bytes, `pull(out)` decompressed ones until it
// returns 0, `finished()` at the end of the body, `close()` to free its memory at once. A corrupt
// stream throws an Error coded `bro-corrupt`.
class BrotliDecoder : public Napi::ObjectWrap<BrotliDecoder> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "BrotliDecoder",
        {InstanceMethod<&BrotliDecoder::PushInput>("push"),
         InstanceMethod<&BrotliDecoder::Pull>("pull"),
         InstanceMethod<&BrotliDecoder::Finished>("finished"),
         InstanceMethod<&BrotliDecoder::PeakMemory>("peakMemory"),
         InstanceMethod<&BrotliDecoder::CloseStream>("close"),
         StaticValue("maxMemory", Napi::Number::New(env, double(BrotliStream::kMaxMemory)))});
  }

  explicit BrotliDecoder(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<BrotliDecoder>(info), stream_(std::make_unique<BrotliStream>()) {}

 private:
  // The stream's memory is freed by close(), at the latest when this object is collected.
  BrotliStream* Stream(const Napi::CallbackInfo& info, const char* fn, size_t buffers) {
    for (size_t i = 0; i < buffers; i++) {
      if (info.Length() <= i || !info[i].IsBuffer()) {
        Napi::TypeError::New(info.Env(), std::string(fn) + ": argument " + std::to_string(i + 1) +
                                             " must be a Buffer")
            .ThrowAsJavaScriptException();
        return nullptr;
      }
    }
    return stream_.get();
  }

  void ThrowCorrupt(Napi::Env env) {
    Napi::Error e = Napi::Error::New(env, stream_->error());
    e.Set("code", Napi::String::New(env, "bro-corrupt"));
    e.ThrowAsJavaScriptException();
  }

  // push(chunk): takes a copy of compressed bytes; throws while earlier ones are not pulled.
  Napi::Value PushInput(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BrotliStream* s = Stream(info, "push", 1);
    if (!s) return env.Undefined();
    auto chunk = info[0].As<Napi::Buffer<uint8_t>>();
    if (!s->Feed(chunk.Data(), chunk.Length()))
      Napi::Error::New(env, "push: pull the pending input first").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // pull(out): bytes decompressed into `out`; 0 when the input pushed is used up (or the stream
  // ended).
  Napi::Value Pull(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    BrotliStream* s = Stream(info, "pull", 1);
    if (!s) return env.Undefined();
    auto out = info[0].As<Napi::Buffer<uint8_t>>();
    ptrdiff_t n = s->Pull(out.Data(), out.Length());
    if (n < 0) {
      ThrowCorrupt(env);
      return env.Undefined();
    }
    return Napi::Number::New(env, double(n));
  }

  Napi::Value Finished(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), stream_->finished());
  }

  Napi::Value PeakMemory(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(stream_->peak_memory()));
  }

  Napi::Value CloseStream(const Napi::CallbackInfo& info) {
    stream_->Close();
    return info.Env().Undefined();
  }

  std::unique_ptr<BrotliStream> stream_;
};

// At the end of the env that mounted them (process exit, a worker that mounted ending).
void CleanupEnv(void* arg) {
  napi_env env = static_cast<napi_env>(arg);
  std::vector<uint32_t> ids;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto& [id, b] : *g_bridges)
      if (b->owner == env) ids.push_back(id);
  }
  for (uint32_t id : ids) UnmountBridge(id);
}

// Last line of defence when the process exits without the JavaScript 'exit' hook running:
// detach every mount so no "Transport endpoint is not connected" is left behind.
void DetachAllAtExit() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& [id, b] : *g_bridges)
    if (b->session->mounted()) umount2(b->session->options().mountpoint.c_str(), MNT_DETACH);
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(DetachAllAtExit); });
  napi_add_env_cleanup_hook(env, CleanupEnv, env);
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("attach", Napi::Function::New(env, Attach, "attach"));
  exports.Set("complete", Napi::Function::New(env, Complete, "complete"));
  exports.Set("serveVerified", Napi::Function::New(env, ServeVerified, "serveVerified"));
  exports.Set("progress", Napi::Function::New(env, Progress, "progress"));
  exports.Set("swap", Napi::Function::New(env, Swap, "swap"));
  exports.Set("stats", Napi::Function::New(env, Stats, "stats"));
  exports.Set("setStatus", Napi::Function::New(env, SetStatus, "setStatus"));
  exports.Set("status", Napi::Function::New(env, Status, "status"));
  exports.Set("unmount", Napi::Function::New(env, Unmount, "unmount"));
  exports.Set("checkTable", Napi::Function::New(env, CheckTable, "checkTable"));
  exports.Set("sessions", Napi::Function::New(env, Sessions, "sessions"));
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory, "trimMemory"));
  exports.Set("Committer", Committer::Define(env));
  exports.Set("BrotliDecoder", BrotliDecoder::Define(env));
  exports.Set("fuseVersion", Napi::Number::New(env, fuse_version()));
  return exports;
}

}  // namespace aysfs

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return aysfs::Init(env, exports);
}

NODE_API_MODULE(aysfs_native, InitModule)
