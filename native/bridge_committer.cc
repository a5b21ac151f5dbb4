// The `Committer` class: JavaScript's handle on the committer pool (commit.h), which finishes
// verified blobs and pushes copies to directory grid caches on native threads, reporting back
// through a thread-safe function.
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "bridge.h"
#include "commit.h"

namespace aysfs {

namespace {

// The committer: `new Committer(done)` on the thread that runs a pipeline (the miss worker, or
// the main thread for prefetch); `write`/`finish` queue a blob for the pool, `push` a copy of a
// cached blob into a directory grid cache, and `done(token, errno, step, where)` is called back
// on that thread when it is in place (errno 0) or failed. A pending job keeps the event loop
// alive; an idle committer does not.
struct CommitState {
  Napi::ThreadSafeFunction fn;
  uint32_t pending = 0;  // jobs not yet reported; the JS thread's only
  // Node deletes a thread-safe function when its env ends, even while threads still hold it:
  // its finalizer sets `gone`, and nobody touches `fn` after that. A leaf lock.
  std::mutex mu;
  bool gone = false;  // guarded by mu
};

struct CommitResult {
  std::shared_ptr<CommitState> state;
  uint32_t token;
  int err;
  const char* step;   // a string literal of commit.cc, or nullptr
  std::string where;  // a push's failing path (commit.h GridPush::done); empty otherwise
  bool push;
};

class Committer : public Napi::ObjectWrap<Committer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Committer",
        {InstanceMethod<&Committer::Write>("write"), InstanceMethod<&Committer::Finish>("finish"),
         InstanceMethod<&Committer::Push>("push")});
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

  // Lets go of the JS side's hold on `fn` (not after the env ended: it is gone then).
  ~Committer() override {
    if (!state_) return;
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->gone) state_->fn.Release();
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

  // push(token, root, rel, src, size, sync): copy `src` to `root/rel` (commit.h GridPush).
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
    GridPush job;
    job.root = info[1].As<Napi::String>().Utf8Value();
    job.rel = info[2].As<Napi::String>().Utf8Value();
    job.src = info[3].As<Napi::String>().Utf8Value();
    job.size = uint64_t(size);
    job.sync = info[5].As<Napi::Boolean>().Value();
    job.done = Reporter(info[0].As<Napi::Number>().Uint32Value(), true);
    SubmitPush(std::move(job));
    return Napi::Boolean::New(env, true);
  }

  // Takes a hold on `fn` for one job (released by its report) and counts it; false when the
  // committer no longer takes jobs: this thread is ending (no exception: none can be thrown
  // then).
  bool Hold(Napi::Env env) {
    bool held = false;
    if (state_) {
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

}  // namespace

Napi::Function DefineCommitter(Napi::Env env) { return Committer::Define(env); }

}  // namespace aysfs
