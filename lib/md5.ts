/**
 * MD5 (RFC 1321) in plain JavaScript, for the inode numbers of lib/table.ts.
 *
 * Why not node:crypto: a table of a million entries derives a million inode numbers from short
 * inputs, and node:crypto's per-call cost (argument checks, a Buffer for each digest) made that
 * 1.4 s; this does it in about 0.5 s and allocates nothing. (A fully unrolled version, generated
 * by a script, hashed a third faster alone but made no measurable difference to a whole table
 * build.) It is checked against node:crypto in test/unit/table.test.ts. Not for anything
 * security-related (nor is MD5).
 */

/** Bytes {@link md5Words} may write after `len`: the padding and the bit length. */
export const MD5_PAD = 72

/** Left-rotation amounts, four per round. */
const SHIFT = new Uint8Array([7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21])
/** The 64 constants: floor(|sin(i + 1)| × 2^32). */
const K = new Int32Array(64)
/** The message word each of the 64 steps adds. */
const WORD = new Uint8Array(64)
for (let i = 0; i < 64; i++) {
  K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) | 0
  WORD[i] = i < 16 ? i : i < 32 ? (5 * i + 1) & 15 : i < 48 ? (3 * i + 5) & 15 : (7 * i) & 15
}
/** The current block's 16 words (one thread runs one hash at a time). */
const M = new Int32Array(16)

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
    for (let j = 0; j < 16; j++) {
      const o = i + 4 * j
      M[j] = buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24)
    }
    let a = a0
    let b = b0
    let c = c0
    let d = d0
    // Four rounds of 16 steps; each step mixes one word into `a` and rotates the roles of a-d.
    for (let round = 0; round < 4; round++) {
      for (let k = round << 4, last = k + 16; k < last; k++) {
        let f: number
        switch (round) {
          case 0:
            f = (b & c) | (~b & d)
            break
          case 1:
            f = (d & b) | (~d & c)
            break
          case 2:
            f = b ^ c ^ d
            break
          default:
            f = c ^ (b | ~d)
        }
        const t = (f + a + K[k]! + M[WORD[k]!]!) | 0
        const s = SHIFT[(round << 2) | (k & 3)]!
        a = d
        d = c
        c = b
        b = (b + ((t << s) | (t >>> (32 - s)))) | 0
      }
    }
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
