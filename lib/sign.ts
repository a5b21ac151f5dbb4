/**
 * Signed flists (docs/security.md): ed25519 key pairs, detached signatures of an flist's exact
 * bytes, and their verification against `main.trusted_keys`. Node's own crypto only.
 *
 * Keys are PEM files: the public key SPKI (`-----BEGIN PUBLIC KEY-----`), the private key PKCS#8
 * (`-----BEGIN PRIVATE KEY-----`), each after a few `#` comment lines that name the key id.
 *
 * A key id is the first 16 bytes of the SHA-256 of the raw 32-byte public key, as 32 lower-case
 * hex digits; anyone can recompute it with
 * `openssl pkey -pubin -in KEY.pub -outform DER | tail -c 32 | sha256sum | cut -c1-32`.
 *
 * `<id>.flist.sig` is UTF-8 text, one `name: value` a line (LF or CRLF; blank lines and lines
 * starting with `#` are skipped; names a version does not know are ignored). Version 2, what
 * `publish --sign` writes, carries the service id and a revision, and signs them with the bytes:
 *
 *     # aysfs-native flist signature
 *     version: 2
 *     algorithm: ed25519
 *     key: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
 *     id: jumpscale__base
 *     revision: 1764657000
 *     signature: <base64 of the 64-byte ed25519 signature (RFC 8032, pure) of the signed message>
 *
 * The signed message is `aysfs-native flist\0<id>\0<revision>\0` followed by the flist's exact
 * bytes (the revision in decimal, no leading zeros): neither an id (lib/paths.ts) nor a number
 * can hold a NUL, so no two (id, revision, bytes) make the same message, and a store cannot pass
 * service A's flist off as service B's, nor an old revision as a new one.
 *
 * Version 1 (before revisions) has no `id` or `revision`; its signature covers the flist's bytes
 * alone, and it counts as revision 0 (lib/revisions.ts).
 *
 * Only `signature` is cryptographic; `key` only says which trusted key to check it with.
 *
 * A start-up list (lib/startup.ts) is signed the same way in `<id>.startup.sig` (version 2 only),
 * its message starting `aysfs-native startup\0` instead: no signature of one kind is ever valid
 * for the other.
 *
 * Everything here is synchronous: it runs on the main thread at mount and reload (and in the CLI).
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { AysfsError, fromSystemError } from './errors'

/** The signature file format this module writes (it reads this one and version 1). */
const SIGNATURE_VERSION = 2
/** Largest revision: an integer a double holds exactly. */
export const MAX_REVISION = Number.MAX_SAFE_INTEGER
/** Largest signature file read (a v1 file is under 200 bytes; the pipeline caps it at 64 KiB). */
const MAX_SIG_TEXT = 64 * 1024

/** A public key from `main.trusted_keys`. */
export interface TrustedKey {
  /** Key id: 32 hex digits, see the module comment. */
  id: string
  /** The file it was read from, for messages. */
  file: string
  /** The key itself (ed25519). */
  key: crypto.KeyObject
}

/** What a `.flist.sig` says. */
export interface SignatureInfo {
  /** 1 (bytes only, revision 0) or 2 (id, revision and bytes). */
  version: number
  algorithm: 'ed25519'
  /** Key id of the signing key. */
  keyId: string
  /** The service id it was made for (version 2). */
  id?: string
  /** The revision it carries: 0 for version 1. */
  revision: number
  /** The 64-byte ed25519 signature. */
  signature: Buffer
}

/** What {@link signFlist} binds into a version 2 signature besides the bytes. */
export interface SignedRevision {
  /** The service id (`md/<id>.flist`). */
  id: string
  /** A non-negative integer, at most {@link MAX_REVISION}. */
  revision: number
}

/**
 * What a signature file signs: a flist (`<id>.flist.sig`), or a start-up list
 * (`<id>.startup.sig`, lib/startup.ts). The kind is the first word of the signed message, so a
 * signature of one is never one of the other.
 */
export type SignedKind = 'flist' | 'startup'

/** How each kind is named: in the signed message, the files, the messages. */
const KINDS: Record<SignedKind, { word: string; label: string; ext: string }> = {
  flist: { word: 'flist', label: 'flist', ext: 'flist' },
  startup: { word: 'startup', label: 'start-up list', ext: 'startup' },
}

/** The bytes a version 2 signature signs: see the module comment. */
function signedMessage(data: Buffer, rev: SignedRevision | undefined, kind: SignedKind = 'flist'): Buffer {
  if (rev === undefined) return data
  return Buffer.concat([Buffer.from(`aysfs-native ${KINDS[kind].word}\0${rev.id}\0${rev.revision}\0`), data])
}

/** Whether `n` can be a revision. */
export function isRevision(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
}

/** What {@link generateKeyPair} wrote. */
export interface KeyPairFiles {
  /** Path of `<dir>/<name>.pub` (mode 0644): copy it to nodes, list it in `main.trusted_keys`. */
  publicKey: string
  /** Path of `<dir>/<name>.key` (mode 0600): keep it where flists are published, never on nodes. */
  privateKey: string
  /** The key id signatures made with it carry. */
  keyId: string
}

/** The key id of an ed25519 public (or private) key. */
export function keyIdOf(key: crypto.KeyObject): string {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key
  const der = pub.export({ type: 'spki', format: 'der' })
  // An ed25519 SPKI is a fixed 12-byte header followed by the raw 32-byte key.
  const raw = der.subarray(der.length - 32)
  return crypto.createHash('sha256').update(raw).digest('hex').slice(0, 32)
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || /[/\0]/.test(name)) {
    throw new TypeError('name must be a non-empty file name (no "/")')
  }
  return name
}

/** Write a new file exclusively with exactly `mode` (whatever the umask). */
function writeNew(file: string, text: string, mode: number): void {
  const fd = fs.openSync(file, 'wx', mode)
  try {
    fs.fchmodSync(fd, mode)
    fs.writeFileSync(fd, text)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Make an ed25519 key pair for signing flists: writes `<dir>/<name>.pub` (0644) and
 * `<dir>/<name>.key` (0600). `dir` is created (0700) if missing. Never overwrites: if either file
 * exists, nothing is written and the error (`EEXIST`) names it.
 * @returns the paths written and the key id.
 * @throws AysfsError `EEXIST`, or the fs error code (`EACCES`, `ENOTDIR`, ...) naming the path.
 */
export function generateKeyPair(dir: string, name = 'aysfs'): KeyPairFiles {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a non-empty path')
  checkName(name)
  const pubFile = path.resolve(dir, `${name}.pub`)
  const keyFile = path.resolve(dir, `${name}.key`)
  const fsError = (err: unknown, file: string): AysfsError =>
    (err as NodeJS.ErrnoException).code === 'EEXIST'
      ? new AysfsError('EEXIST', `keygen: ${file}: already exists; refusing to overwrite a key`, { file, cause: err })
      : fromSystemError(err, `keygen: ${file}`, { file })
  try {
    fs.mkdirSync(path.resolve(dir), { recursive: true, mode: 0o700 })
  } catch (err) {
    throw fsError(err, path.resolve(dir))
  }
  for (const f of [pubFile, keyFile]) {
    if (fs.existsSync(f)) throw fsError(Object.assign(new Error('exists'), { code: 'EEXIST' }), f)
  }
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519')
  const keyId = keyIdOf(publicKey)
  const pubPem = publicKey.export({ type: 'spki', format: 'pem' }) as string
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string
  // Private key first: if the public one cannot be written, no half pair is left that could be
  // mistaken for a complete one (a .pub without its .key would be trusted for nothing).
  try {
    writeNew(keyFile, `# aysfs-native flist signing key (PRIVATE: keep it off the nodes)\n# key id: ${keyId}\n${keyPem}`, 0o600)
  } catch (err) {
    throw fsError(err, keyFile)
  }
  try {
    writeNew(pubFile, `# aysfs-native flist signing key (public: list it in main.trusted_keys)\n# key id: ${keyId}\n${pubPem}`, 0o644)
  } catch (err) {
    fs.rmSync(keyFile, { force: true })
    throw fsError(err, pubFile)
  }
  return { publicKey: pubFile, privateKey: keyFile, keyId }
}

/** Read a PEM key file; `what` names it in messages. */
function readKeyText(file: string, fail: (msg: string, cause?: unknown) => never): string {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message
    return fail(`cannot read: ${why}`, err)
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) fail('not a PEM key file (expected -----BEGIN PUBLIC KEY----- or -----BEGIN PRIVATE KEY-----)')
  return text
}

/**
 * Sign an flist: the contents of `<id>.flist.sig` for exactly these bytes (format in the module
 * comment), made with the ed25519 private key in `privateKeyFile` (PKCS#8 PEM, as written by
 * {@link generateKeyPair}). With `rev`, a version 2 signature that binds the service id and the
 * revision too (what `publish` writes); without, a version 1 signature (revision 0).
 * @throws AysfsError `EINVAL` naming the key file when it cannot be read or is not an ed25519
 *   private key.
 */
export function signFlist(data: Buffer, privateKeyFile: string | crypto.KeyObject, rev?: SignedRevision): Buffer {
  return sign('flist', data, privateKeyFile, rev)
}

/**
 * Sign a start-up list: the contents of `<id>.startup.sig` for exactly these bytes, a version 2
 * signature of the same format as a flist's whose signed message starts `aysfs-native startup`
 * (docs/format.md). `publish --sign --startup` gives it the flist's revision.
 * @throws AysfsError `EINVAL` naming the key file, as {@link signFlist}.
 */
export function signStartup(data: Buffer, privateKeyFile: string | crypto.KeyObject, rev: SignedRevision): Buffer {
  return sign('startup', data, privateKeyFile, rev)
}

function sign(kind: SignedKind, data: Buffer, privateKeyFile: string | crypto.KeyObject, rev: SignedRevision | undefined): Buffer {
  if (!Buffer.isBuffer(data)) throw new TypeError(`data must be a Buffer (the ${KINDS[kind].label}'s exact bytes)`)
  if (rev !== undefined && (typeof rev.id !== 'string' || rev.id === '' || /[\0\n\r]/.test(rev.id) || !isRevision(rev.revision))) {
    throw new TypeError('rev must be { id: a service id, revision: a non-negative safe integer }')
  }
  const key = typeof privateKeyFile === 'string' ? loadSigningKey(privateKeyFile) : privateKeyFile
  const signature = crypto.sign(null, signedMessage(data, rev, kind), key)
  return formatSignature(
    rev === undefined
      ? { version: 1, algorithm: 'ed25519', keyId: keyIdOf(key), revision: 0, signature }
      : { version: SIGNATURE_VERSION, algorithm: 'ed25519', keyId: keyIdOf(key), id: rev.id, revision: rev.revision, signature },
    kind,
  )
}

/**
 * Read and check the ed25519 private key {@link signFlist} signs with (publish checks it before
 * any work).
 * @throws AysfsError `EINVAL` naming the key file when it cannot be read or is not an ed25519
 *   private key.
 */
export function loadSigningKey(privateKeyFile: string): crypto.KeyObject {
  if (typeof privateKeyFile !== 'string' || privateKeyFile === '') throw new TypeError('privateKeyFile must be a path')
  const fail = (msg: string, cause?: unknown): never => {
    throw new AysfsError('EINVAL', `signing key ${privateKeyFile}: ${msg}`, { file: privateKeyFile, cause })
  }
  const text = readKeyText(privateKeyFile, fail)
  if (!/-----BEGIN (ENCRYPTED )?PRIVATE KEY-----/.test(text)) {
    fail(/PUBLIC KEY/.test(text) ? 'is a public key; sign with the private key (the .key file keygen wrote)' : 'not a PKCS#8 private key (-----BEGIN PRIVATE KEY-----)')
  }
  let key: crypto.KeyObject
  try {
    key = crypto.createPrivateKey(text)
  } catch (err) {
    return fail(/ENCRYPTED/.test(text) ? 'encrypted private keys are not supported' : `cannot parse the key: ${(err as Error).message}`, err)
  }
  if (key.asymmetricKeyType !== 'ed25519') fail(`an ${key.asymmetricKeyType ?? 'unknown'} key; flists are signed with ed25519 keys (aysfs-native keygen)`)
  return key
}

/** The text of a `.flist.sig` (version 1, or 2 with `id` and `revision`), or of a `.startup.sig`. */
export function formatSignature(sig: SignatureInfo, kind: SignedKind = 'flist'): Buffer {
  const bound = sig.version >= 2 ? `id: ${sig.id ?? ''}\nrevision: ${sig.revision}\n` : ''
  return Buffer.from(
    `# aysfs-native ${KINDS[kind].label} signature\nversion: ${sig.version}\nalgorithm: ${sig.algorithm}\nkey: ${sig.keyId}\n${bound}signature: ${sig.signature.toString('base64')}\n`,
  )
}

/**
 * Parse a `.flist.sig`.
 * @throws Error with a message saying what is wrong (the caller adds where).
 */
export function parseSignature(buf: Buffer): SignatureInfo {
  if (buf.length > MAX_SIG_TEXT) throw new Error(`larger than ${MAX_SIG_TEXT} bytes`)
  const text = buf.toString('utf8')
  const fields = new Map<string, string>()
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/\r$/, '').trim()
    if (line === '' || line.startsWith('#')) continue
    const m = /^([A-Za-z0-9_-]+)\s*:\s*(.*)$/.exec(line)
    if (!m) throw new Error(`line ${i + 1} is not "name: value"`)
    const name = m[1]!.toLowerCase()
    if (fields.has(name)) throw new Error(`line ${i + 1}: "${name}" given twice`)
    fields.set(name, m[2]!)
  }
  const version = fields.get('version')
  if (version === undefined) throw new Error('no "version" line (not an aysfs-native signature file?)')
  if (version !== '1' && version !== '2') throw new Error(`version ${JSON.stringify(version.slice(0, 20))}; this aysfs-native reads versions 1 and 2`)
  const algorithm = fields.get('algorithm')
  if (algorithm !== 'ed25519') throw new Error(algorithm === undefined ? 'no "algorithm" line' : `algorithm ${JSON.stringify(algorithm.slice(0, 20))}; only ed25519 is supported`)
  const keyId = fields.get('key')?.toLowerCase()
  if (keyId === undefined || !/^[0-9a-f]{32}$/.test(keyId)) throw new Error('"key" is not a key id of 32 hex digits')
  const b64 = fields.get('signature')
  if (b64 === undefined || !/^[A-Za-z0-9+/]{86}==$/.test(b64)) throw new Error('"signature" is not the base64 of 64 bytes')
  const signature = Buffer.from(b64, 'base64')
  if (version === '1') return { version: 1, algorithm: 'ed25519', keyId, revision: 0, signature }
  const id = fields.get('id')
  if (id === undefined || id === '') throw new Error('version 2 without an "id" line')
  const rev = fields.get('revision')
  if (rev === undefined) throw new Error('version 2 without a "revision" line')
  if (!/^(0|[1-9][0-9]{0,15})$/.test(rev) || !isRevision(Number(rev))) throw new Error(`"revision" ${JSON.stringify(rev.slice(0, 24))} is not an integer from 0 to ${MAX_REVISION}`)
  return { version: 2, algorithm: 'ed25519', keyId, id, revision: Number(rev), signature }
}

/**
 * Read the public keys `main.trusted_keys` lists (SPKI PEM, ed25519). The same key listed twice
 * counts once.
 * @throws AysfsError `EINVAL` with key `main.trusted_keys[i]` naming the file: unreadable, not a
 *   PEM public key, not ed25519, or a private key (a signing key never belongs on a node).
 */
export function loadTrustedKeys(files: string[]): TrustedKey[] {
  if (!Array.isArray(files)) throw new TypeError('files must be an array of paths')
  const out: TrustedKey[] = []
  files.forEach((file, i) => {
    const key = `main.trusted_keys[${i}]`
    const fail = (msg: string, cause?: unknown): never => {
      throw new AysfsError('EINVAL', `${key}: trusted key ${file}: ${msg}`, { key, file, cause })
    }
    if (typeof file !== 'string' || file === '') throw new TypeError(`${key} must be a path`)
    const text = readKeyText(file, fail)
    if (/PRIVATE KEY-----/.test(text)) {
      fail('is a private key; nodes need only the public key (the .pub file keygen wrote): keep the private key where flists are published')
    }
    let k: crypto.KeyObject
    try {
      k = crypto.createPublicKey(text)
    } catch (err) {
      return fail(`cannot parse the key: ${(err as Error).message}`, err)
    }
    if (k.asymmetricKeyType !== 'ed25519') fail(`an ${k.asymmetricKeyType ?? 'unknown'} key; flist signatures are ed25519`)
    const id = keyIdOf(k)
    if (!out.some((t) => t.id === id && t.key.equals(k))) out.push({ id, file, key: k })
  })
  return out
}

/**
 * Check that `signature` (the bytes of `<id>.flist.sig`) is a valid signature of `data` by one of
 * `keys`.
 * @param where `id`: the service; `source`: where the flist came from (`store[0] (https://…)`, or
 *   `the copy kept in /var/cache/aysfs/md/x.flist`), for the message.
 * @returns the id of the key that signed it, and the revision the signature carries (0 for a
 *   version 1 signature).
 * @throws AysfsError `EACCES` (key `main.trusted_keys`) whose message names the service, the
 *   source and the reason: no signature, an unreadable signature file, a key that is not trusted,
 *   a signature made for another service, or a signature that does not match the bytes.
 */
export function verifyFlist(data: Buffer, signature: Buffer | undefined, keys: TrustedKey[], where: { id: string; source: string }): Verified {
  return verify('flist', data, signature, keys, where)
}

/**
 * Check that `signature` (the bytes of `<id>.startup.sig`) is a valid version 2 signature of the
 * start-up list `data` for service `where.id` by one of `keys` ({@link signStartup}).
 * @returns as {@link verifyFlist}.
 * @throws AysfsError `EACCES` as {@link verifyFlist} (`service <id>: start-up list from <source>
 *   refused: …`); also for a version 1 signature, which would not say what it signs.
 */
export function verifyStartup(data: Buffer, signature: Buffer | undefined, keys: TrustedKey[], where: { id: string; source: string }): Verified {
  return verify('startup', data, signature, keys, where)
}

function verify(kind: SignedKind, data: Buffer, signature: Buffer | undefined, keys: TrustedKey[], where: { id: string; source: string }): Verified {
  if (!Buffer.isBuffer(data)) throw new TypeError('data must be a Buffer')
  if (!Array.isArray(keys) || keys.length === 0) throw new TypeError('keys must list at least one trusted key')
  const { label, ext } = KINDS[kind]
  const refuse = (reason: string): never => {
    throw new AysfsError('EACCES', `service ${where.id}: ${label} from ${where.source} refused: ${reason}`, { key: 'main.trusted_keys' })
  }
  if (signature === undefined) {
    return refuse(
      `it has no signature (${where.id}.${ext}.sig), and main.trusted_keys is set: only ${label}s signed by a trusted key ${kind === 'flist' ? 'mount' : 'are used'}; publish it with --sign KEY, the private key of one listed in main.trusted_keys`,
    )
  }
  let sig: SignatureInfo
  try {
    sig = parseSignature(signature)
  } catch (err) {
    return refuse(`its signature file ${where.id}.${ext}.sig is not valid: ${(err as Error).message}; publish it again with --sign`)
  }
  // A version 1 signature covers the bytes alone: as a start-up list's, it could be a flist's.
  if (kind !== 'flist' && sig.id === undefined) return refuse(`its signature file ${where.id}.${ext}.sig is version 1; a ${label} is signed with version 2 (publish it again with --sign)`)
  if (sig.id !== undefined && sig.id !== where.id) {
    return refuse(`its signature was made for service ${JSON.stringify(sig.id.slice(0, 200))}, not ${where.id} (a store cannot serve one service's ${label} as another's)`)
  }
  const candidates = keys.filter((k) => k.id === sig.keyId)
  if (candidates.length === 0) {
    return refuse(
      `signed by key ${sig.keyId}, which is not trusted (main.trusted_keys: ${keys.map((k) => `${k.file} = ${k.id}`).join(', ')}): if that key is yours, add its .pub file to main.trusted_keys; if not, the store holds a ${label} you did not sign`,
    )
  }
  const message = signedMessage(data, sig.id === undefined ? undefined : { id: sig.id, revision: sig.revision }, kind)
  for (const k of candidates) {
    if (crypto.verify(null, message, k.key, sig.signature)) return { keyId: k.id, revision: sig.revision }
  }
  return refuse(
    `bad signature: its bytes are not what key ${sig.keyId} (${candidates[0]!.file}) signed (changed after signing, or the signature is another ${label}'s): publish it again with --sign, and find out what changed the store's copy`,
  )
}

/** What {@link verifyFlist} vouches for. */
export interface Verified {
  /** The id of the trusted key that signed it. */
  keyId: string
  /** The revision the signature carries (0: a version 1 signature). */
  revision: number
}

/**
 * The `validate` to hand `Pipeline.fetchFlist` (with `{ signature: keys.length > 0 }`) wherever an
 * flist is fetched for use: with trusted keys, the signature is checked before `parse` sees a
 * byte (a refusal is the `EACCES` of {@link verifyFlist}, which makes `fetchFlist` try the next
 * store and never keep the copy); without keys, it only parses.
 * @param onVerified called with what the signature vouches for, and the bytes and their source,
 *   before `parse`; it may refuse them with a throw (an older revision: lib/revisions.ts).
 */
export function verifyThenParse<T>(
  keys: TrustedKey[],
  id: string,
  parse: (data: Buffer) => T,
  onVerified?: (verified: Verified, data: Buffer, source: string) => void,
): (data: Buffer, signature: Buffer | undefined, source: string) => T {
  return (data, signature, source) => {
    if (keys.length > 0) {
      // Not `onVerified?.(verifyFlist(…))`: an absent callback would skip the check with it.
      const verified = verifyFlist(data, signature, keys, { id, source })
      onVerified?.(verified, data, source)
    }
    return parse(data)
  }
}
