// The Node-API side of the addon, shared by its files: what module init (addon.cc) takes from
// each bridge file, and the argument checks they all use. Only addon.cc and the bridge_*.cc
// files include napi.h; the core (session, tables, committer pool, decoder) never does.
#pragma once

#include <napi.h>

#include <initializer_list>
#include <string>

namespace aysfs {

// bridge_session.cc: mount, attach, complete, serveVerified, progress, swap, stats, setStatus,
// status, unmount, checkTable, trimMemory, and the lists binding.d.ts is checked against
// (statNames, mountOptionNames).
void ExportSessionFunctions(Napi::Env env, Napi::Object exports);
// Unmounts the sessions that `env` mounted (its cleanup hook: the process exits, or a worker
// that mounted ends).
void UnmountSessionsOf(napi_env env);
// Detaches every mount of the process (at exit, when the JavaScript hooks did not run).
void DetachAllMounts();

// bridge_committer.cc: the `Committer` class (commit.h's pool, for JavaScript).
Napi::Function DefineCommitter(Napi::Env env);
// bridge_brotli.cc: the `BrotliDecoder` class (brotli.h's stream, for JavaScript).
Napi::Function DefineBrotliDecoder(Napi::Env env);

// Throws an Error whose `code` names the errno (`EINVAL`) and whose `errno` is its negative.
void ThrowCoded(Napi::Env env, int err, const std::string& message);
// True when the first arguments have these types; else throws a TypeError naming `fn` and the
// argument, and returns false.
bool CheckArgs(const Napi::CallbackInfo& info, const char* fn,
               std::initializer_list<napi_valuetype> types);

}  // namespace aysfs
