/**
 * Reading a small file the local cache keeps (`md/`: flist and start-up list copies, their
 * signatures, revision records) without trusting what is there: part of the local cache
 * (lib/local-cache/).
 */
import * as fs from 'node:fs'

/**
 * The bytes of `file` if it is a regular file of at most `maxBytes`: opened once with
 * `O_NOFOLLOW | O_NONBLOCK` (a link is `ELOOP`, a FIFO is not waited on), checked by its fd.
 * @throws the fs error; `EINVAL` for anything but a regular file, `EFBIG` when it is larger.
 */
export function readRegularFile(file: string, maxBytes: number): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  try {
    const st = fs.fstatSync(fd)
    if (!st.isFile()) throw Object.assign(new Error(`${file}: not a regular file`), { code: 'EINVAL' })
    if (st.size > maxBytes) throw Object.assign(new Error(`${file}: larger than ${maxBytes} bytes`), { code: 'EFBIG' })
    return fs.readFileSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
