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
 * `<id>.flist.sig` (format version 1) is UTF-8 text, one `name: value` a line (LF or CRLF; blank
 * lines and lines starting with `#` are skipped; names this version does not know are ignored):
 *
 *     # aysfs-native flist signature
 *     version: 1
 *     algorithm: ed25519
 *     key: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
 *     signature: <base64 of the 64-byte ed25519 signature (RFC 8032, pure) of the flist's bytes>
 *
 * Only `signature` is cryptographic; `key` only says which trusted key to check it with.
 *
 * Everything here is synchronous: it runs on the main thread at mount and reload (and in the CLI).
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { AysfsError, fromSystemError } from './errors'

/** The signature file format this module writes and reads. */
const SIGNATURE_VERSION = 1
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

/** What a `.flist.sig` says (format version 1). */
export interface SignatureInfo {
  version: number
  algorithm: 'ed25519'
  /** Key id of the signing key. */
  keyId: string
  /** The 64-byte ed25519 signature. */
  signature: Buffer
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
 * {@link generateKeyPair}).
 * @throws AysfsError `EINVAL` naming the key file when it cannot be read or is not an ed25519
 *   private key.
 */
export function signFlist(data: Buffer, privateKeyFile: string | crypto.KeyObject): Buffer {
  if (!Buffer.isBuffer(data)) throw new TypeError('data must be a Buffer (the flist\'s exact bytes)')
  const key = typeof privateKeyFile === 'string' ? loadSigningKey(privateKeyFile) : privateKeyFile
  return formatSignature({ version: SIGNATURE_VERSION, algorithm: 'ed25519', keyId: keyIdOf(key), signature: crypto.sign(null, data, key) })
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

/** The text of a `.flist.sig` (format version 1). */
export function formatSignature(sig: SignatureInfo): Buffer {
  return Buffer.from(
    `# aysfs-native flist signature\nversion: ${sig.version}\nalgorithm: ${sig.algorithm}\nkey: ${sig.keyId}\nsignature: ${sig.signature.toString('base64')}\n`,
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
  if (version !== String(SIGNATURE_VERSION)) throw new Error(`version ${JSON.stringify(version.slice(0, 20))}; this aysfs-native reads version ${SIGNATURE_VERSION}`)
  const algorithm = fields.get('algorithm')
  if (algorithm !== 'ed25519') throw new Error(algorithm === undefined ? 'no "algorithm" line' : `algorithm ${JSON.stringify(algorithm.slice(0, 20))}; only ed25519 is supported`)
  const keyId = fields.get('key')?.toLowerCase()
  if (keyId === undefined || !/^[0-9a-f]{32}$/.test(keyId)) throw new Error('"key" is not a key id of 32 hex digits')
  const b64 = fields.get('signature')
  if (b64 === undefined || !/^[A-Za-z0-9+/]{86}==$/.test(b64)) throw new Error('"signature" is not the base64 of 64 bytes')
  return { version: SIGNATURE_VERSION, algorithm: 'ed25519', keyId, signature: Buffer.from(b64, 'base64') }
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
 * @returns the id of the key that signed it.
 * @throws AysfsError `EACCES` (key `main.trusted_keys`) whose message names the service, the
 *   source and the reason: no signature, an unreadable signature file, a key that is not trusted,
 *   or a signature that does not match the bytes.
 */
export function verifyFlist(data: Buffer, signature: Buffer | undefined, keys: TrustedKey[], where: { id: string; source: string }): { keyId: string } {
  if (!Buffer.isBuffer(data)) throw new TypeError('data must be a Buffer')
  if (!Array.isArray(keys) || keys.length === 0) throw new TypeError('keys must list at least one trusted key')
  const refuse = (reason: string): never => {
    throw new AysfsError('EACCES', `service ${where.id}: flist from ${where.source} refused: ${reason}`, { key: 'main.trusted_keys' })
  }
  if (signature === undefined) {
    return refuse(
      `it has no signature (${where.id}.flist.sig), and main.trusted_keys is set: only flists signed by a trusted key mount; publish it with --sign KEY, the private key of one listed in main.trusted_keys`,
    )
  }
  let sig: SignatureInfo
  try {
    sig = parseSignature(signature)
  } catch (err) {
    return refuse(`its signature file ${where.id}.flist.sig is not valid: ${(err as Error).message}; publish it again with --sign`)
  }
  const candidates = keys.filter((k) => k.id === sig.keyId)
  if (candidates.length === 0) {
    return refuse(
      `signed by key ${sig.keyId}, which is not trusted (main.trusted_keys: ${keys.map((k) => `${k.file} = ${k.id}`).join(', ')}): if that key is yours, add its .pub file to main.trusted_keys; if not, the store holds a flist you did not sign`,
    )
  }
  for (const k of candidates) {
    if (crypto.verify(null, data, k.key, sig.signature)) return { keyId: k.id }
  }
  return refuse(
    `bad signature: its bytes are not what key ${sig.keyId} (${candidates[0]!.file}) signed (changed after signing, or the signature is another flist's): publish it again with --sign, and find out what changed the store's copy`,
  )
}

/**
 * The `validate` to hand `Pipeline.fetchFlist` (with `{ signature: keys.length > 0 }`) wherever an
 * flist is fetched for use: with trusted keys, the signature is checked before `parse` sees a
 * byte (a refusal is the `EACCES` of {@link verifyFlist}, which makes `fetchFlist` try the next
 * store and never keep the copy); without keys, it only parses.
 * @param onVerified called with the id of the key that signed it.
 */
export function verifyThenParse<T>(
  keys: TrustedKey[],
  id: string,
  parse: (data: Buffer) => T,
  onVerified?: (keyId: string) => void,
): (data: Buffer, signature: Buffer | undefined, source: string) => T {
  return (data, signature, source) => {
    if (keys.length > 0) {
      const { keyId } = verifyFlist(data, signature, keys, { id, source })
      onVerified?.(keyId)
    }
    return parse(data)
  }
}
