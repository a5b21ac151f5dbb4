// Messages that must say what to do (issue 15, "Errors that mislead or say nothing"): a mistyped
// subcommand, every config mistake at once, as a shell user sees them. No mount succeeds here.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { tmpdir } from '../helpers/mount'
import { run } from '../helpers/cli'

t.test('a mistyped subcommand: did you mean, exit 2', async (t) => {
  let r = await run(['stauts', '/mnt'])
  t.equal(r.code, 2)
  t.match(r.stderr, /unknown command 'stauts' \(did you mean 'status'\?/)
  r = await run(['umont', '/mnt'])
  t.equal(r.code, 2)
  t.match(r.stderr, /did you mean 'umount' or 'unmount'\?/, 'aliases count')
  r = await run(['frobnicate'])
  t.equal(r.code, 2)
  t.notMatch(r.stderr, /did you mean/, 'nothing close: no guess')
})

t.test('every config mistake at once, each with its line', async (t) => {
  const dir = tmpdir(t)
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, `[main]\ncahce = "/x"\ntimeout = 10\n\n[[ays]]\nid = "x"\n\n[[stores]]\nurl = "/s"\n`)
  const r = await run(['--mount', mnt, '--config', bad])
  t.equal(r.code, 2)
  t.match(r.stderr, `config ${bad} line 2: main.cahce: unknown key (did you mean "cache"?)\nconfig ${bad} line 3: main.timeout: expected a duration`)
  t.match(r.stderr, `\nconfig ${bad} line 8: stores: unknown key (the arrays are [[ays]], [[cache]] and [[store]])`)
})
