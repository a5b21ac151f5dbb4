// Threadpool-free host name resolution: IP literals, hosts file, localhost, c-ares (against a
// tiny DNS server of our own on 127.0.0.1: no query leaves the machine).
import t, { type Test } from 'tap'
import * as dgram from 'node:dgram'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createResolver, lookup, parseHosts, type LookupAddress } from '../../lib/sources/resolve'
import { tmpdir } from '../helpers/tmp'

/** A DNS server that knows `names` (name → A/AAAA addresses) and says NXDOMAIN to the rest. */
async function dnsServer(t: Test, names: Record<string, string[]>): Promise<{ server: string; queries: string[] }> {
  const sock = dgram.createSocket('udp4')
  const queries: string[] = []
  sock.on('message', (msg, rinfo) => {
    let off = 12
    const labels: string[] = []
    while (msg[off] !== 0) {
      labels.push(msg.subarray(off + 1, off + 1 + msg[off]).toString())
      off += msg[off] + 1
    }
    off++
    const qtype = msg.readUInt16BE(off)
    const question = msg.subarray(12, off + 4)
    const name = labels.join('.').toLowerCase()
    queries.push(`${name}/${qtype === 1 ? 'A' : qtype === 28 ? 'AAAA' : qtype}`)
    const known = names[name]
    const addrs = (known ?? []).filter((a) => (qtype === 1 ? !a.includes(':') : qtype === 28 && a.includes(':')))
    const header = Buffer.alloc(12)
    msg.copy(header, 0, 0, 2)
    header.writeUInt16BE(known ? 0x8180 : 0x8183, 2) // response, RD, RA; rcode 0 or 3 (NXDOMAIN)
    header.writeUInt16BE(1, 4)
    header.writeUInt16BE(addrs.length, 6)
    const answers = addrs.map((a) => {
      const rdata = qtype === 1 ? Buffer.from(a.split('.').map(Number)) : ipv6Bytes(a)
      const rr = Buffer.alloc(12)
      rr.writeUInt16BE(0xc00c, 0)
      rr.writeUInt16BE(qtype, 2)
      rr.writeUInt16BE(1, 4)
      rr.writeUInt32BE(30, 6)
      rr.writeUInt16BE(rdata.length, 10)
      return Buffer.concat([rr, rdata])
    })
    sock.send(Buffer.concat([header, question, ...answers]), rinfo.port, rinfo.address)
  })
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => sock.close(() => resolve())))
  return { server: `127.0.0.1:${sock.address().port}`, queries }
}

function ipv6Bytes(a: string): Buffer {
  const [head, tail = ''] = a.split('::')
  const h = head ? head.split(':') : []
  const tl = tail ? tail.split(':') : []
  const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl]
  const b = Buffer.alloc(16)
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2))
  return b
}

function lookupAll(fn: typeof lookup, host: string, options: object = {}): Promise<LookupAddress[]> {
  return new Promise((resolve, reject) => {
    fn(host, { ...options, all: true }, ((err: Error | null, list: LookupAddress[]) => (err ? reject(err) : resolve(list))) as never)
  })
}

function lookupOne(fn: typeof lookup, host: string, options: object | number = {}): Promise<[string, number]> {
  return new Promise((resolve, reject) => {
    fn(host, options as never, ((err: Error | null, a: string, f: number) => (err ? reject(err) : resolve([a, f]))) as never)
  })
}

t.test('parseHosts', async (t) => {
  const m = parseHosts('127.0.0.1 localhost\n# c\n10.0.0.5  Cache.LAN cache # trailing\n::1 localhost ip6-localhost\nbogus line\nfe80::1%eth0 link\n')
  t.same(m.get('cache.lan'), [{ address: '10.0.0.5', family: 4 }])
  t.same(m.get('cache'), [{ address: '10.0.0.5', family: 4 }])
  t.same(m.get('localhost'), [
    { address: '127.0.0.1', family: 4 },
    { address: '::1', family: 6 },
  ])
  t.same(m.get('link'), [{ address: 'fe80::1', family: 6 }])
  t.notOk(m.has('line'))
})

t.test('IP literals, hosts file, localhost, without DNS', async (t) => {
  const dir = tmpdir(t)
  const hosts = path.join(dir, 'hosts')
  fs.writeFileSync(hosts, '10.1.2.3 store.example\n::2 store.example\n')
  const dns = await dnsServer(t, {})
  // The resolver's clock, moved by hand: the hosts file is looked at again at most once a second.
  let clock = 1_000_000
  const r = createResolver({ hostsFile: hosts, servers: [dns.server], resolvConf: '/nonexistent', now: () => clock })
  t.same(await lookupAll(r.lookup, '192.0.2.1'), [{ address: '192.0.2.1', family: 4 }])
  t.same(await lookupAll(r.lookup, '[::1]'), [{ address: '::1', family: 6 }])
  t.same(await lookupOne(r.lookup, 'STORE.example.'), ['10.1.2.3', 4])
  t.same(await lookupOne(r.lookup, 'store.example', 6), ['::2', 6])
  t.same(await lookupOne(r.lookup, 'store.example', { family: 6 }), ['::2', 6])
  t.same(await lookupAll(r.lookup, 'store.example'), [
    { address: '10.1.2.3', family: 4 },
    { address: '::2', family: 6 },
  ])
  t.same(await lookupOne(r.lookup, 'localhost'), ['127.0.0.1', 4])
  t.same(await lookupOne(r.lookup, 'x.localhost', { family: 6 }), ['::1', 6])
  t.same(dns.queries, [], 'no DNS query for any of these')
  // The hosts file is re-read when it changes (checked at most once a second).
  fs.writeFileSync(hosts, '10.9.9.9 store.example\n')
  const later = new Date(Date.now() + 5000)
  fs.utimesSync(hosts, later, later)
  t.same(await lookupOne(r.lookup, 'store.example'), ['10.1.2.3', 4], 'within a second of the last look, the file is not read again')
  clock += 1000
  t.same(await lookupOne(r.lookup, 'store.example'), ['10.9.9.9', 4], 'a second later, the changed file is read again')
})

t.test('c-ares: A, then AAAA, search domains, NXDOMAIN', async (t) => {
  const dir = tmpdir(t)
  const resolvConf = path.join(dir, 'resolv.conf')
  fs.writeFileSync(resolvConf, 'nameserver 127.0.0.1\nsearch lan.test\n')
  const dns = await dnsServer(t, {
    'v4.test': ['127.0.0.7'],
    'v6only.test': ['::7'],
    'cache.lan.test': ['127.0.0.8'],
  })
  let clock = 1_000_000
  const r = createResolver({ hostsFile: '/nonexistent', resolvConf, servers: [dns.server], timeoutMs: 500, tries: 1, now: () => clock })
  t.same(await lookupAll(r.lookup, 'v4.test'), [{ address: '127.0.0.7', family: 4 }])
  t.same(await lookupAll(r.lookup, 'v6only.test'), [{ address: '::7', family: 6 }])
  t.same(await lookupOne(r.lookup, 'cache'), ['127.0.0.8', 4], 'a single label goes through the search list')
  const err = await lookupOne(r.lookup, 'nope.test').catch((e: NodeJS.ErrnoException) => e)
  t.match(err, { code: 'ENOTFOUND', hostname: 'nope.test', syscall: 'getaddrinfo' })
  const before = dns.queries.length
  t.same(await lookupAll(r.lookup, 'v4.test'), [{ address: '127.0.0.7', family: 4 }])
  t.equal(dns.queries.length, before, 'answers are cached for their TTL')
  clock += 30_000 // the server's TTL (30 s) runs out
  t.same(await lookupAll(r.lookup, 'v4.test'), [{ address: '127.0.0.7', family: 4 }])
  t.same(dns.queries.slice(before), ['v4.test/A'], 'and asked again once it ran out')
  t.same(dns.queries.slice(0, 3), ['v4.test/A', 'v6only.test/A', 'v6only.test/AAAA'])
})

t.test('the shared lookup works as an http.Agent lookup', async (t) => {
  const http = await import('node:http')
  const srv = http.createServer((_req, res) => res.end('hi'))
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => srv.close(() => resolve())))
  const port = (srv.address() as { port: number }).port
  const agent = new http.Agent({ lookup: lookup as never })
  t.teardown(() => agent.destroy())
  const body = await new Promise<string>((resolve, reject) => {
    http
      .get(`http://localhost:${port}/`, { agent }, (res) => {
        let s = ''
        res.on('data', (d) => (s += d))
        res.on('end', () => resolve(s))
      })
      .on('error', reject)
  })
  t.equal(body, 'hi')
})
