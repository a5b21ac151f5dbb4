// lib/sign.ts without a mount: key pairs, the signature format, verification and its refusals.
import { execFileSync } from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { formatSignature, generateKeyPair, keyIdOf, loadTrustedKeys, parseSignature, signFlist, verifyFlist } from '../../lib/sign'
import { tmpdir } from '../helpers/tmp'

const FLIST = Buffer.from('/opt/x/bin/tool|8a3e5e03a10ecc3601a1f14fbc371019|4857\n/opt/x/etc/conf|d41d8cd98f00b204e9800998ecf8427e|0\n')
const where = { id: 'jumpscale__base', source: 'store[0] (http://stor/x)' }

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

t.test('generateKeyPair writes a .pub (0644) and a .key (0600) and never overwrites', async (t) => {
  const dir = path.join(tmpdir(t), 'keys')
  const old = process.umask(0o077) // modes must not depend on the umask
  t.teardown(() => process.umask(old))
  const kp = generateKeyPair(dir)
  t.equal(kp.publicKey, path.join(dir, 'aysfs.pub'))
  t.equal(kp.privateKey, path.join(dir, 'aysfs.key'))
  t.match(kp.keyId, /^[0-9a-f]{32}$/)
  t.equal(fs.statSync(kp.publicKey).mode & 0o777, 0o644)
  t.equal(fs.statSync(kp.privateKey).mode & 0o777, 0o600)
  t.equal(fs.statSync(dir).mode & 0o777, 0o700, 'a directory it creates is private')
  const pub = fs.readFileSync(kp.publicKey, 'utf8')
  t.match(pub, new RegExp(`# key id: ${kp.keyId}\n-----BEGIN PUBLIC KEY-----`))
  t.match(fs.readFileSync(kp.privateKey, 'utf8'), /-----BEGIN PRIVATE KEY-----/)
  t.equal(keyIdOf(crypto.createPublicKey(pub)), kp.keyId)

  const before = fs.readFileSync(kp.privateKey)
  t.throws(() => generateKeyPair(dir), { code: 'EEXIST', message: /aysfs\.pub: already exists; refusing to overwrite/ })
  fs.rmSync(kp.publicKey)
  t.throws(() => generateKeyPair(dir), { code: 'EEXIST', message: /aysfs\.key: already exists/ }, 'either file blocks')
  t.same(fs.readFileSync(kp.privateKey), before, 'the private key is untouched')
  t.notOk(fs.existsSync(kp.publicKey), 'and no half pair was written')
  const other = generateKeyPair(dir, 'ops-2025')
  t.equal(path.basename(other.publicKey), 'ops-2025.pub')
  t.not(other.keyId, kp.keyId)
  t.throws(() => generateKeyPair(dir, '../evil'), TypeError)
})

t.test('sign and verify; the signature file format', async (t) => {
  const dir = tmpdir(t)
  const kp = generateKeyPair(dir)
  const sig = signFlist(FLIST, kp.privateKey)
  const text = sig.toString('utf8')
  t.match(text, new RegExp(`^# aysfs-native flist signature\nversion: 1\nalgorithm: ed25519\nkey: ${kp.keyId}\nsignature: [A-Za-z0-9+/]{86}==\n$`))
  const parsed = parseSignature(sig)
  t.equal(parsed.keyId, kp.keyId)
  t.equal(parsed.signature.length, 64)
  t.same(formatSignature(parsed), sig, 'format and parse round-trip')
  // A pure ed25519 signature of the exact bytes: any ed25519 implementation checks it.
  const pub = crypto.createPublicKey(fs.readFileSync(kp.publicKey))
  t.ok(crypto.verify(null, FLIST, pub, parsed.signature))

  const keys = loadTrustedKeys([kp.publicKey])
  t.same(verifyFlist(FLIST, sig, keys, where), { keyId: kp.keyId, revision: 0 })
  // CRLF, comments, blank lines, upper-case hex, unknown fields: still the same signature.
  const loose = Buffer.from(`\r\n# made by hand\r\nversion: 1\r\nalgorithm: ed25519\r\ncomment: ops key\r\nkey: ${kp.keyId.toUpperCase()}\r\nsignature: ${parsed.signature.toString('base64')}\r\n`)
  t.same(verifyFlist(FLIST, loose, keys, where), { keyId: kp.keyId, revision: 0 })
})

t.test('refusals name the service, the source and the reason', async (t) => {
  const dir = tmpdir(t)
  const trusted = generateKeyPair(dir, 'trusted')
  const stranger = generateKeyPair(dir, 'stranger')
  const keys = loadTrustedKeys([trusted.publicKey])
  const sig = signFlist(FLIST, trusted.privateKey)
  const refused = (msg: RegExp) => ({ name: 'AysfsError', code: 'EACCES', key: 'main.trusted_keys', message: msg })
  const head = /^service jumpscale__base: flist from store\[0\] \(http:\/\/stor\/x\) refused: /

  const flipped = Buffer.from(FLIST)
  flipped[20] ^= 1
  t.throws(() => verifyFlist(flipped, sig, keys, where), refused(new RegExp(`${head.source}bad signature: its bytes are not what key ${trusted.keyId} \\(${trusted.publicKey}\\) signed`)))
  t.throws(() => verifyFlist(Buffer.concat([FLIST, Buffer.from('\n')]), sig, keys, where), refused(/bad signature/), 'one byte more')
  t.throws(() => verifyFlist(FLIST.subarray(1), sig, keys, where), refused(/bad signature/), 'one byte less')
  t.throws(
    () => verifyFlist(FLIST, signFlist(FLIST, stranger.privateKey), keys, where),
    refused(new RegExp(`${head.source}signed by key ${stranger.keyId}, which is not trusted \\(main.trusted_keys: ${trusted.publicKey} = ${trusted.keyId}\\)`)),
  )
  t.throws(() => verifyFlist(FLIST, undefined, keys, where), refused(new RegExp(`${head.source}it has no signature \\(jumpscale__base.flist.sig\\)`)))
  t.throws(() => verifyFlist(FLIST, Buffer.from('hello'), keys, where), refused(/signature file jumpscale__base.flist.sig is not valid: line 1 is not "name: value"/))
  t.throws(() => verifyFlist(FLIST, Buffer.alloc(0), keys, where), refused(/not valid: no "version" line/))
  t.throws(() => verifyFlist(FLIST, Buffer.from(sig.toString().replace('version: 1', 'version: 3')), keys, where), refused(/version "3"; this aysfs-native reads versions 1 and 2/))
  t.throws(() => verifyFlist(FLIST, Buffer.from(sig.toString().replace('version: 1', 'version: 2')), keys, where), refused(/version 2 without an "id" line/))
  // The key line only says which trusted key to check with: claiming a trusted key with another
  // key's signature is a bad signature, not a pass.
  const strangerSig = parseSignature(signFlist(FLIST, stranger.privateKey))
  const claim = formatSignature({ ...strangerSig, keyId: trusted.keyId })
  t.throws(() => verifyFlist(FLIST, claim, keys, where), refused(/bad signature/))
  // A signature of another flist by the trusted key.
  t.throws(() => verifyFlist(FLIST, signFlist(Buffer.from('/opt/x/other|d41d8cd98f00b204e9800998ecf8427e|0\n'), trusted.privateKey), keys, where), refused(/bad signature/))
  t.throws(() => verifyFlist(FLIST, sig, [], where), TypeError)
})

t.test('loadTrustedKeys: errors name the file and main.trusted_keys[i]', async (t) => {
  const dir = tmpdir(t)
  const a = generateKeyPair(dir, 'a')
  const b = generateKeyPair(dir, 'b')
  const keys = loadTrustedKeys([a.publicKey, b.publicKey, a.publicKey])
  t.same(keys.map((k) => [k.id, k.file]), [[a.keyId, a.publicKey], [b.keyId, b.publicKey]], 'a key listed twice counts once')
  t.same(loadTrustedKeys([]), [])
  const bad = (file: string, i: number, msg: RegExp) => ({ code: 'EINVAL', key: `main.trusted_keys[${i}]`, file, message: msg })
  const missing = path.join(dir, 'nope.pub')
  t.throws(() => loadTrustedKeys([a.publicKey, missing]), bad(missing, 1, new RegExp(`^main.trusted_keys\\[1\\]: trusted key ${missing}: cannot read: no such file`)))
  t.throws(() => loadTrustedKeys([a.privateKey]), bad(a.privateKey, 0, /is a private key; nodes need only the public key/))
  const junk = path.join(dir, 'junk.pub')
  fs.writeFileSync(junk, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI hello\n')
  t.throws(() => loadTrustedKeys([junk]), bad(junk, 0, /not a PEM key file/))
  const rsa = path.join(dir, 'rsa.pub')
  fs.writeFileSync(rsa, crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }))
  t.throws(() => loadTrustedKeys([rsa]), bad(rsa, 0, /an rsa key; flist signatures are ed25519/))
  const broken = path.join(dir, 'broken.pub')
  fs.writeFileSync(broken, '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')
  t.throws(() => loadTrustedKeys([broken]), bad(broken, 0, /cannot parse the key/))
  t.throws(() => loadTrustedKeys([dir]), bad(dir, 0, /cannot read: is a directory/))
})

t.test('signFlist: errors name the key file', async (t) => {
  const dir = tmpdir(t)
  const kp = generateKeyPair(dir)
  t.throws(() => signFlist(FLIST, kp.publicKey), { code: 'EINVAL', file: kp.publicKey, message: /is a public key; sign with the private key/ })
  t.throws(() => signFlist(FLIST, path.join(dir, 'x.key')), { code: 'EINVAL', message: /x\.key: cannot read: no such file/ })
  const rsa = path.join(dir, 'rsa.key')
  fs.writeFileSync(rsa, crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.throws(() => signFlist(FLIST, rsa), { code: 'EINVAL', message: /an rsa key; flists are signed with ed25519 keys/ })
  t.throws(() => signFlist('text' as unknown as Buffer, kp.privateKey), TypeError)
  t.ok(signFlist(FLIST, kp.privateKey) instanceof Buffer)
})

t.test('interoperable: openssl recomputes the key id and checks the signature', { skip: !hasOpenssl() && 'no openssl' }, async (t) => {
  const dir = tmpdir(t)
  const kp = generateKeyPair(dir)
  // The recipe docs/security.md gives for the key id.
  const id = execFileSync('sh', ['-c', `openssl pkey -pubin -in '${kp.publicKey}' -outform DER | tail -c 32 | sha256sum | cut -c1-32`], { encoding: 'utf8' }).trim()
  t.equal(id, kp.keyId)
  const flist = path.join(dir, 'x.flist')
  fs.writeFileSync(flist, FLIST)
  const raw = path.join(dir, 'x.sig.bin')
  fs.writeFileSync(raw, parseSignature(signFlist(FLIST, kp.privateKey)).signature)
  const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', kp.publicKey, '-rawin', '-in', flist, '-sigfile', raw], { encoding: 'utf8' })
  t.match(out, /Signature Verified Successfully/)
})
