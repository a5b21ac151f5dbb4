// The soak's fault server, in a process of its own so that nothing the driver does (dropping the
// page cache, sampling /proc) can stall it into timeouts that are not the mount's doing.
//
//   node dist/bench/soak/server.js '<json>'    json: FaultServerOptions
//
// Prints `{"type":"ready","url":...}`; SIGUSR2 prints `{"type":"faults","served":{...}}`;
// SIGTERM closes it.
import { startFaultServer, type FaultServerOptions } from '../faults'

async function main(): Promise<void> {
  const opts = JSON.parse(process.argv[2] ?? '{}') as FaultServerOptions
  const srv = await startFaultServer({ ...opts, keepRequests: false })
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ type: 'faults', served: srv.randomServed }) + '\n'))
  process.on('SIGTERM', () => void srv.close().then(() => process.exit(0)))
  process.stdout.write(JSON.stringify({ type: 'ready', url: srv.url }) + '\n')
}

void main()
