/**
 * MD5 in plain JavaScript, for the inode numbers of lib/table.ts.
 *
 * Why not node:crypto: a table of a million entries derives a million inode numbers from short
 * inputs, and node:crypto's per-call cost (argument checks, a Buffer for each digest) made that
 * 1.4 s; this unrolled version does it in about 0.3 s and allocates nothing. It is checked
 * against node:crypto in test/unit/table.test.ts. Not for anything security-related (nor is MD5).
 *
 * The rounds below are generated (RFC 1321's constants, fully unrolled); do not edit them by hand.
 */

/** Bytes {@link md5Words} may write after `len`: the padding and the bit length. */
export const MD5_PAD = 72

/**
 * MD5 of `buf[0..len)` as the four state words, little endian (word 0 = digest bytes 0..3).
 * Pads in place: `buf` must have {@link MD5_PAD} writable bytes after `len`, which are
 * overwritten. `len` < 2^29.
 */
export function md5Words(buf: Uint8Array, len: number, out: Int32Array): void {
  let end = len + 1
  buf[len] = 0x80
  while ((end & 63) !== 56) buf[end++] = 0
  const bits = len * 8
  buf[end] = bits & 255
  buf[end + 1] = (bits >>> 8) & 255
  buf[end + 2] = (bits >>> 16) & 255
  buf[end + 3] = (bits >>> 24) & 255
  buf[end + 4] = buf[end + 5] = buf[end + 6] = buf[end + 7] = 0
  end += 8
  let a0 = 0x67452301 | 0
  let b0 = 0xefcdab89 | 0
  let c0 = 0x98badcfe | 0
  let d0 = 0x10325476 | 0
  for (let i = 0; i < end; i += 64) {
    const w0 = buf[i + 0]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)
    const w1 = buf[i + 4]! | (buf[i + 5]! << 8) | (buf[i + 6]! << 16) | (buf[i + 7]! << 24)
    const w2 = buf[i + 8]! | (buf[i + 9]! << 8) | (buf[i + 10]! << 16) | (buf[i + 11]! << 24)
    const w3 = buf[i + 12]! | (buf[i + 13]! << 8) | (buf[i + 14]! << 16) | (buf[i + 15]! << 24)
    const w4 = buf[i + 16]! | (buf[i + 17]! << 8) | (buf[i + 18]! << 16) | (buf[i + 19]! << 24)
    const w5 = buf[i + 20]! | (buf[i + 21]! << 8) | (buf[i + 22]! << 16) | (buf[i + 23]! << 24)
    const w6 = buf[i + 24]! | (buf[i + 25]! << 8) | (buf[i + 26]! << 16) | (buf[i + 27]! << 24)
    const w7 = buf[i + 28]! | (buf[i + 29]! << 8) | (buf[i + 30]! << 16) | (buf[i + 31]! << 24)
    const w8 = buf[i + 32]! | (buf[i + 33]! << 8) | (buf[i + 34]! << 16) | (buf[i + 35]! << 24)
    const w9 = buf[i + 36]! | (buf[i + 37]! << 8) | (buf[i + 38]! << 16) | (buf[i + 39]! << 24)
    const w10 = buf[i + 40]! | (buf[i + 41]! << 8) | (buf[i + 42]! << 16) | (buf[i + 43]! << 24)
    const w11 = buf[i + 44]! | (buf[i + 45]! << 8) | (buf[i + 46]! << 16) | (buf[i + 47]! << 24)
    const w12 = buf[i + 48]! | (buf[i + 49]! << 8) | (buf[i + 50]! << 16) | (buf[i + 51]! << 24)
    const w13 = buf[i + 52]! | (buf[i + 53]! << 8) | (buf[i + 54]! << 16) | (buf[i + 55]! << 24)
    const w14 = buf[i + 56]! | (buf[i + 57]! << 8) | (buf[i + 58]! << 16) | (buf[i + 59]! << 24)
    const w15 = buf[i + 60]! | (buf[i + 61]! << 8) | (buf[i + 62]! << 16) | (buf[i + 63]! << 24)
    let a = a0
    let b = b0
    let c = c0
    let d = d0
    let t = 0
    t = (((b & c) | (~b & d)) + a + -680876936 + w0) | 0
    a = (b + ((t << 7) | (t >>> 25))) | 0
    t = (((a & b) | (~a & c)) + d + -389564586 + w1) | 0
    d = (a + ((t << 12) | (t >>> 20))) | 0
    t = (((d & a) | (~d & b)) + c + 606105819 + w2) | 0
    c = (d + ((t << 17) | (t >>> 15))) | 0
    t = (((c & d) | (~c & a)) + b + -1044525330 + w3) | 0
    b = (c + ((t << 22) | (t >>> 10))) | 0
    t = (((b & c) | (~b & d)) + a + -176418897 + w4) | 0
    a = (b + ((t << 7) | (t >>> 25))) | 0
    t = (((a & b) | (~a & c)) + d + 1200080426 + w5) | 0
    d = (a + ((t << 12) | (t >>> 20))) | 0
    t = (((d & a) | (~d & b)) + c + -1473231341 + w6) | 0
    c = (d + ((t << 17) | (t >>> 15))) | 0
    t = (((c & d) | (~c & a)) + b + -45705983 + w7) | 0
    b = (c + ((t << 22) | (t >>> 10))) | 0
    t = (((b & c) | (~b & d)) + a + 1770035416 + w8) | 0
    a = (b + ((t << 7) | (t >>> 25))) | 0
    t = (((a & b) | (~a & c)) + d + -1958414417 + w9) | 0
    d = (a + ((t << 12) | (t >>> 20))) | 0
    t = (((d & a) | (~d & b)) + c + -42063 + w10) | 0
    c = (d + ((t << 17) | (t >>> 15))) | 0
    t = (((c & d) | (~c & a)) + b + -1990404162 + w11) | 0
    b = (c + ((t << 22) | (t >>> 10))) | 0
    t = (((b & c) | (~b & d)) + a + 1804603682 + w12) | 0
    a = (b + ((t << 7) | (t >>> 25))) | 0
    t = (((a & b) | (~a & c)) + d + -40341101 + w13) | 0
    d = (a + ((t << 12) | (t >>> 20))) | 0
    t = (((d & a) | (~d & b)) + c + -1502002290 + w14) | 0
    c = (d + ((t << 17) | (t >>> 15))) | 0
    t = (((c & d) | (~c & a)) + b + 1236535329 + w15) | 0
    b = (c + ((t << 22) | (t >>> 10))) | 0
    t = (((d & b) | (~d & c)) + a + -165796510 + w1) | 0
    a = (b + ((t << 5) | (t >>> 27))) | 0
    t = (((c & a) | (~c & b)) + d + -1069501632 + w6) | 0
    d = (a + ((t << 9) | (t >>> 23))) | 0
    t = (((b & d) | (~b & a)) + c + 643717713 + w11) | 0
    c = (d + ((t << 14) | (t >>> 18))) | 0
    t = (((a & c) | (~a & d)) + b + -373897302 + w0) | 0
    b = (c + ((t << 20) | (t >>> 12))) | 0
    t = (((d & b) | (~d & c)) + a + -701558691 + w5) | 0
    a = (b + ((t << 5) | (t >>> 27))) | 0
    t = (((c & a) | (~c & b)) + d + 38016083 + w10) | 0
    d = (a + ((t << 9) | (t >>> 23))) | 0
    t = (((b & d) | (~b & a)) + c + -660478335 + w15) | 0
    c = (d + ((t << 14) | (t >>> 18))) | 0
    t = (((a & c) | (~a & d)) + b + -405537848 + w4) | 0
    b = (c + ((t << 20) | (t >>> 12))) | 0
    t = (((d & b) | (~d & c)) + a + 568446438 + w9) | 0
    a = (b + ((t << 5) | (t >>> 27))) | 0
    t = (((c & a) | (~c & b)) + d + -1019803690 + w14) | 0
    d = (a + ((t << 9) | (t >>> 23))) | 0
    t = (((b & d) | (~b & a)) + c + -187363961 + w3) | 0
    c = (d + ((t << 14) | (t >>> 18))) | 0
    t = (((a & c) | (~a & d)) + b + 1163531501 + w8) | 0
    b = (c + ((t << 20) | (t >>> 12))) | 0
    t = (((d & b) | (~d & c)) + a + -1444681467 + w13) | 0
    a = (b + ((t << 5) | (t >>> 27))) | 0
    t = (((c & a) | (~c & b)) + d + -51403784 + w2) | 0
    d = (a + ((t << 9) | (t >>> 23))) | 0
    t = (((b & d) | (~b & a)) + c + 1735328473 + w7) | 0
    c = (d + ((t << 14) | (t >>> 18))) | 0
    t = (((a & c) | (~a & d)) + b + -1926607734 + w12) | 0
    b = (c + ((t << 20) | (t >>> 12))) | 0
    t = ((b ^ c ^ d) + a + -378558 + w5) | 0
    a = (b + ((t << 4) | (t >>> 28))) | 0
    t = ((a ^ b ^ c) + d + -2022574463 + w8) | 0
    d = (a + ((t << 11) | (t >>> 21))) | 0
    t = ((d ^ a ^ b) + c + 1839030562 + w11) | 0
    c = (d + ((t << 16) | (t >>> 16))) | 0
    t = ((c ^ d ^ a) + b + -35309556 + w14) | 0
    b = (c + ((t << 23) | (t >>> 9))) | 0
    t = ((b ^ c ^ d) + a + -1530992060 + w1) | 0
    a = (b + ((t << 4) | (t >>> 28))) | 0
    t = ((a ^ b ^ c) + d + 1272893353 + w4) | 0
    d = (a + ((t << 11) | (t >>> 21))) | 0
    t = ((d ^ a ^ b) + c + -155497632 + w7) | 0
    c = (d + ((t << 16) | (t >>> 16))) | 0
    t = ((c ^ d ^ a) + b + -1094730640 + w10) | 0
    b = (c + ((t << 23) | (t >>> 9))) | 0
    t = ((b ^ c ^ d) + a + 681279174 + w13) | 0
    a = (b + ((t << 4) | (t >>> 28))) | 0
    t = ((a ^ b ^ c) + d + -358537222 + w0) | 0
    d = (a + ((t << 11) | (t >>> 21))) | 0
    t = ((d ^ a ^ b) + c + -722521979 + w3) | 0
    c = (d + ((t << 16) | (t >>> 16))) | 0
    t = ((c ^ d ^ a) + b + 76029189 + w6) | 0
    b = (c + ((t << 23) | (t >>> 9))) | 0
    t = ((b ^ c ^ d) + a + -640364487 + w9) | 0
    a = (b + ((t << 4) | (t >>> 28))) | 0
    t = ((a ^ b ^ c) + d + -421815835 + w12) | 0
    d = (a + ((t << 11) | (t >>> 21))) | 0
    t = ((d ^ a ^ b) + c + 530742520 + w15) | 0
    c = (d + ((t << 16) | (t >>> 16))) | 0
    t = ((c ^ d ^ a) + b + -995338651 + w2) | 0
    b = (c + ((t << 23) | (t >>> 9))) | 0
    t = ((c ^ (b | ~d)) + a + -198630844 + w0) | 0
    a = (b + ((t << 6) | (t >>> 26))) | 0
    t = ((b ^ (a | ~c)) + d + 1126891415 + w7) | 0
    d = (a + ((t << 10) | (t >>> 22))) | 0
    t = ((a ^ (d | ~b)) + c + -1416354905 + w14) | 0
    c = (d + ((t << 15) | (t >>> 17))) | 0
    t = ((d ^ (c | ~a)) + b + -57434055 + w5) | 0
    b = (c + ((t << 21) | (t >>> 11))) | 0
    t = ((c ^ (b | ~d)) + a + 1700485571 + w12) | 0
    a = (b + ((t << 6) | (t >>> 26))) | 0
    t = ((b ^ (a | ~c)) + d + -1894986606 + w3) | 0
    d = (a + ((t << 10) | (t >>> 22))) | 0
    t = ((a ^ (d | ~b)) + c + -1051523 + w10) | 0
    c = (d + ((t << 15) | (t >>> 17))) | 0
    t = ((d ^ (c | ~a)) + b + -2054922799 + w1) | 0
    b = (c + ((t << 21) | (t >>> 11))) | 0
    t = ((c ^ (b | ~d)) + a + 1873313359 + w8) | 0
    a = (b + ((t << 6) | (t >>> 26))) | 0
    t = ((b ^ (a | ~c)) + d + -30611744 + w15) | 0
    d = (a + ((t << 10) | (t >>> 22))) | 0
    t = ((a ^ (d | ~b)) + c + -1560198380 + w6) | 0
    c = (d + ((t << 15) | (t >>> 17))) | 0
    t = ((d ^ (c | ~a)) + b + 1309151649 + w13) | 0
    b = (c + ((t << 21) | (t >>> 11))) | 0
    t = ((c ^ (b | ~d)) + a + -145523070 + w4) | 0
    a = (b + ((t << 6) | (t >>> 26))) | 0
    t = ((b ^ (a | ~c)) + d + -1120210379 + w11) | 0
    d = (a + ((t << 10) | (t >>> 22))) | 0
    t = ((a ^ (d | ~b)) + c + 718787259 + w2) | 0
    c = (d + ((t << 15) | (t >>> 17))) | 0
    t = ((d ^ (c | ~a)) + b + -343485551 + w9) | 0
    b = (c + ((t << 21) | (t >>> 11))) | 0
    a0 = (a0 + a) | 0
    b0 = (b0 + b) | 0
    c0 = (c0 + c) | 0
    d0 = (d0 + d) | 0
  }
  out[0] = a0
  out[1] = b0
  out[2] = c0
  out[3] = d0
}
