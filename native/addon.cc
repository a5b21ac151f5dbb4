// Module init: the addon's exports, and the hooks that unmount what JavaScript mounted when its
// environment or the process ends. What each export does is in the bridge files (bridge.h).
#include <napi.h>

#include <cstdlib>
#include <mutex>

#include "bridge.h"

namespace aysfs {

namespace {

// At the end of the env that mounted them (process exit, a worker that mounted ending).
void CleanupEnv(void* arg) { UnmountSessionsOf(static_cast<napi_env>(arg)); }

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Last line of defence when the process exits without the JavaScript 'exit' hook running:
  // detach every mount so no "Transport endpoint is not connected" is left behind.
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(DetachAllMounts); });
  napi_add_env_cleanup_hook(env, CleanupEnv, env);
  ExportSessionFunctions(env, exports);
  exports.Set("Committer", DefineCommitter(env));
  exports.Set("BrotliDecoder", DefineBrotliDecoder(env));
  return exports;
}

}  // namespace aysfs

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return aysfs::Init(env, exports);
}

NODE_API_MODULE(aysfs_native, InitModule)
