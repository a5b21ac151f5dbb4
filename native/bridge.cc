#include "bridge.h"

#include <string.h>

namespace aysfs {

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

}  // namespace aysfs
