// Start-up lists without a mount: the file format (lib/startup.ts), their signatures (lib/sign.ts),
// and which blobs of a list a mount keeps (lib/pipeline/startup.ts).
import * as path from 'node:path'
import t from 'tap'
import { mergeServices, parseFlist } from '../../lib/flist'
import { startupSet, startupValidator } from '../../lib/pipeline/startup'
import { generateKeyPair, loadTrustedKeys, signFlist, signStartup, verifyFlist, verifyStartup } from '../../lib/sign'
import { formatStartupList, MAX_STARTUP_SIZE, parseStartupList, STARTUP_HEADER } from '../../lib/startup'
import { fakeMd5 as md5 } from '../helpers/flist-lines'
import { memLog } from '../helpers/store'
import { tmpdir } from '../helpers/tmp'

const A = 'd604a220708aa59433ba410986cd4ffa'
const B = 'b3decc0193adffac1811e1ae1920a7c3'

t.test('the format: a header, then one MD5 a line, in order', async (t) => {
  const text = `${STARTUP_HEADER}\r\n${A.toUpperCase()}\r\n\n# trimmed by hand\n${B}\n${A}\n${md5(7)}`
  t.same(parseStartupList(Buffer.from(text), 'x.startup'), [
    { md5: A, line: 2 },
    { md5: B, line: 5 },
    { md5: md5(7), line: 7 },
  ], 'CR LF, blank and # lines, either case, a blob listed twice keeps its first place, no final LF')
  t.same(parseStartupList(formatStartupList([A, B]), 'f'), [
    { md5: A, line: 2 },
    { md5: B, line: 3 },
  ])
  t.equal(formatStartupList([A]).toString(), `aysfs-native startup 1\n${A}\n`)
  t.same(parseStartupList(Buffer.from(`${STARTUP_HEADER}\n`), 'f'), [], 'an empty list')
})

t.test('bad lists are refused with the file and the line', async (t) => {
  const bad = (text: string, line: number | undefined, msg: RegExp): void => {
    t.throws(() => parseStartupList(Buffer.from(text), 'rec.txt'), { code: 'EINVAL', file: 'rec.txt', line, message: msg }, JSON.stringify(text.slice(0, 50)))
  }
  bad(`${STARTUP_HEADER}\n${A}\nabc\n`, 3, /^start-up list rec\.txt line 3: "abc": expected an MD5 \(32 hex digits\) alone on its line$/)
  bad(`${STARTUP_HEADER}\n${A} \n`, 2, /line 2: ".{33}": expected an MD5/)
  bad(`${STARTUP_HEADER}\n${A.slice(0, 31)}g\n`, 2, /line 2/)
  bad(`${STARTUP_HEADER}\n${A}|12\n`, 2, /line 2/)
  bad(`${STARTUP_HEADER}\n\0\n`, 2, /line 2/)
  bad(`${A}\n`, 1, /line 1: expected the header "aysfs-native startup 1"/)
  bad(`aysfs-native startup 2\n${A}\n`, 1, /line 1: version "2"; this aysfs-native reads version 1/)
  bad('', undefined, /^start-up list rec\.txt: empty/)
  t.throws(() => parseStartupList(Buffer.alloc(MAX_STARTUP_SIZE + 1, 0x41), 'big'), { code: 'EINVAL', message: /larger than 16777216 bytes/ })
})

t.test('a start-up list has its own signature, never valid as a flist\'s, and version 2 only', async (t) => {
  const kp = generateKeyPair(path.join(tmpdir(t), 'keys'))
  const keys = loadTrustedKeys([kp.publicKey])
  const list = formatStartupList([A, B])
  const where = { id: 'svc', source: 'store[0] (http://s/x)' }
  const sig = signStartup(list, kp.privateKey, { id: 'svc', revision: 5 })
  t.match(sig.toString(), /^# aysfs-native start-up list signature\nversion: 2\n/)
  t.same(verifyStartup(list, sig, keys, where), { keyId: kp.keyId, revision: 5 })
  const refused = (re: RegExp) => ({ code: 'EACCES', key: 'main.trusted_keys', message: re })
  t.throws(() => verifyStartup(formatStartupList([B, A]), sig, keys, where), refused(/^service svc: start-up list from store\[0\] \(http:\/\/s\/x\) refused: bad signature/), 'other bytes')
  t.throws(() => verifyStartup(list, sig, keys, { ...where, id: 'other' }), refused(/made for service "svc", not other/))
  t.throws(() => verifyStartup(list, undefined, keys, where), refused(/it has no signature \(svc\.startup\.sig\)/))
  // The same bytes signed as a flist (either version) are no start-up list's signature, and back.
  t.throws(() => verifyStartup(list, signFlist(list, kp.privateKey, { id: 'svc', revision: 5 }), keys, where), refused(/bad signature/))
  t.throws(() => verifyStartup(list, signFlist(list, kp.privateKey), keys, where), refused(/is version 1; a start-up list is signed with version 2/))
  t.throws(() => verifyFlist(list, sig, keys, where), refused(/^service svc: flist from .* bad signature/))
})

t.test('a mount validates a list: signature first (a signed service), then its lines; a refusal is one warning', async (t) => {
  const kp = generateKeyPair(path.join(tmpdir(t), 'keys'))
  const other = generateKeyPair(path.join(tmpdir(t), 'other'))
  const keys = loadTrustedKeys([kp.publicKey])
  const list = formatStartupList([A, B])
  const log = memLog()
  t.same(startupValidator([], 'svc', log as never)(list, undefined, 'store[0]'), [A, B], 'an unsigned service takes an unsigned list')
  t.same(startupValidator(keys, 'svc', log as never)(list, signStartup(list, kp.privateKey, { id: 'svc', revision: 1 }), 'store[0]'), [A, B])
  t.equal(log.lines.length, 0)
  t.equal(startupValidator(keys, 'svc', log as never)(list, undefined, 'store[0]'), undefined, 'unsigned on a signed service')
  t.equal(startupValidator(keys, 'svc', log as never)(list, signStartup(list, other.privateKey, { id: 'svc', revision: 1 }), 'store[0]'), undefined, 'another key')
  t.equal(startupValidator([], 'svc', log as never)(Buffer.from('nope\n'), undefined, 'store[0]'), undefined, 'bad lines')
  t.same(log.lines.map((l) => [l.level, l.msg]), [
    ['warn', 'service svc: start-up list from store[0] refused: it has no signature (svc.startup.sig), and main.trusted_keys is set: only start-up lists signed by a trusted key are used; publish it with --sign KEY, the private key of one listed in main.trusted_keys; the start-up list is ignored'],
    ['warn', `service svc: start-up list from store[0] refused: signed by key ${other.keyId}, which is not trusted (main.trusted_keys: ${kp.publicKey} = ${kp.keyId}): if that key is yours, add its .pub file to main.trusted_keys; if not, the store holds a start-up list you did not sign; the start-up list is ignored`],
    ['warn', 'start-up list svc.startup from store[0] line 1: expected the header "aysfs-native startup 1", got "nope"; the start-up list is ignored'],
  ])
})

t.test('a mount keeps the listed blobs its tree names, in list order, at the tree\'s size', async (t) => {
  const lines = [
    `/opt/x/a|${md5(1)}|10`,
    `/opt/x/b|${md5(2)}|20`,
    `/opt/x/c|${md5(3)}|30`,
    `/opt/x/empty|d41d8cd98f00b204e9800998ecf8427e|0`,
    `/opt/x/big|${md5(4)}|600000|root|root|644|2|0|0|chunks=${md5(5)}`,
    `/opt/elsewhere|${md5(6)}|60`,
    `/opt/x/dir||0|root|root|755|4|0|0|`,
  ]
  const tree = mergeServices([parseFlist(Buffer.from(lines.join('\n') + '\n'), { name: 'svc', prefix: '/opt/x' })])
  const set = startupSet(tree, [
    [md5(3), md5(9), md5(1), 'd41d8cd98f00b204e9800998ecf8427e'],
    [md5(1), md5(4), md5(6), md5(5), md5(2)],
  ])
  t.same(set, { md5: [md5(3), md5(1), md5(2)], size: [30, 10, 20], listed: 8, dropped: 5 },
    'dropped: not in the tree, outside the prefix, empty, read by chunks, a chunk index')
  t.same(startupSet(tree, []), { md5: [], size: [], listed: 0, dropped: 0 })
  // Many blobs sharing their first four bytes: each still matched by its whole MD5.
  const many = Array.from({ length: 50 }, (_, i) => `/opt/x/m${i}|ffffffff${md5(i).slice(8)}|${i + 1}`)
  const t2 = mergeServices([parseFlist(Buffer.from(many.join('\n') + '\n'), { name: 'svc', prefix: '/opt/x' })])
  const s2 = startupSet(t2, [[`ffffffff${md5(49).slice(8)}`, `ffffffff${md5(7).slice(8)}`, `ffffffff${md5(99).slice(8)}`]])
  t.same(s2, { md5: [`ffffffff${md5(49).slice(8)}`, `ffffffff${md5(7).slice(8)}`], size: [50, 8], listed: 3, dropped: 1 })
})
