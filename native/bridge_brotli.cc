// The `BrotliDecoder` class: JavaScript's handle on a streaming `.bro` decoder (brotli.h).
#include <napi.h>

#include <memory>
#include <string>

#include "bridge.h"
#include "brotli.h"

namespace aysfs {

namespace {

// The streaming `.bro` decoder (brotli.h), for the pipeline on the miss worker:
// `new BrotliDecoder(maxMemory?)`, `push(chunk)` compressed bytes, `pull(out)` decompressed ones
// until it returns 0, `finished()` at the end of the body, `close()` to free its memory at once. A
// corrupt stream throws an Error coded `bro-corrupt`.
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

  explicit BrotliDecoder(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BrotliDecoder>(info) {
    size_t limit = BrotliStream::kMaxMemory;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      double v = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
      if (!(v >= 1 && v <= double(BrotliStream::kMaxMemory))) {
        Napi::TypeError::New(info.Env(),
                             "BrotliDecoder: maxMemory must be a number of bytes from 1 to " +
                                 std::to_string(BrotliStream::kMaxMemory))
            .ThrowAsJavaScriptException();
        return;
      }
      limit = size_t(v);
    }
    stream_ = std::make_unique<BrotliStream>(limit);
  }

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
    if (!stream_)
      Napi::Error::New(info.Env(), std::string(fn) + ": no decoder").ThrowAsJavaScriptException();
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
    return Napi::Boolean::New(info.Env(), stream_ && stream_->finished());
  }

  Napi::Value PeakMemory(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), stream_ ? double(stream_->peak_memory()) : 0.0);
  }

  Napi::Value CloseStream(const Napi::CallbackInfo& info) {
    if (stream_) stream_->Close();
    return info.Env().Undefined();
  }

  std::unique_ptr<BrotliStream> stream_;
};

}  // namespace

Napi::Function DefineBrotliDecoder(Napi::Env env) { return BrotliDecoder::Define(env); }

}  // namespace aysfs
