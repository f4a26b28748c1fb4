// Test support: a real mesh (certificates and an `agentmesh serve` process) for node --test.
//
// The orchestrator is the Python one, found as $AGENTMESH_BIN, the repository's
// .venv/bin/agentmesh or `agentmesh` on PATH. Nothing is mocked.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE = path.join(here, '..');
const REPO = path.join(PACKAGE, '..', '..');

export const TRUST_DOMAIN = 'agentmesh.test';

/** The agentmesh command. */
export function agentmeshBin() {
  const candidates = [process.env.AGENTMESH_BIN, path.join(REPO, '.venv', 'bin', 'agentmesh')];
  for (const c of candidates) if (c && fs.existsSync(c)) return c;
  return 'agentmesh';
}

/** The Python beside the agentmesh command (its virtualenv's), which can import agentmesh. */
function python() {
  const bin = agentmeshBin();
  return bin.includes(path.sep) ? path.join(path.dirname(bin), 'python') : 'python3';
}

/**
 * Issue certificates with agentmesh's own CA code, all in one Python process (each
 * `agentmesh certs` command would pay the interpreter's start-up again).
 * @param {string} certs @param {boolean} init @param {[string, string][]} workloads
 */
function certify(certs, init, workloads) {
  const script = [
    'import sys',
    'from agentmesh.security import IdentityKind, create_ca, issue',
    'certs, init, *pairs = sys.argv[1:]',
    `if init == "1": create_ca(certs, "${TRUST_DOMAIN}")`,
    'for kind, name in zip(pairs[::2], pairs[1::2]): issue(certs, IdentityKind(kind), name)',
  ].join('\n');
  execFileSync(python(), ['-c', script, certs, init ? '1' : '0', ...workloads.flat()], { stdio: 'inherit' });
}

/** A fresh mesh CA in a temporary folder, with certificates for `agents`, an orchestrator and client cli. */
export function makeCerts(...agents) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentmesh-node-'));
  const certs = path.join(dir, 'certs');
  certify(certs, true, [['orchestrator', 'orchestrator'], ['client', 'cli'], ...agents.map((a) => ['agent', a])]);
  return { dir, certs };
}

/** Issue (or issue again: a rotation) the certificate of one workload. */
export function issue(certs, kind, name) {
  certify(certs, false, [[kind, name]]);
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const server = net.createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => ok(port));
    });
  });
}

/** Poll `probe` until it returns a truthy value; throw after `within` seconds. */
export async function eventually(probe, { within = 60, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + within * 1000;
  let last;
  while (Date.now() < end) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((done) => setTimeout(done, interval));
  }
  throw new Error(`${what} not met within ${within}s; last: ${last}`);
}

/**
 * A running `agentmesh serve` on its own port and SQLite file; start() again after stop().
 * `env` adds to (or overrides) its AGENTMESH_* settings.
 */
/**
 * `agentmesh serve` as an orchestrator built from protos older than WatchTaskBatches would
 * serve it: that method answers UNIMPLEMENTED, as gRPC does for a method a server lacks.
 */
const OLDER_SERVE = [
  'import sys, grpc',
  'from agentmesh.orchestrator.api.servicers import OrchestratorServicer',
  'async def unimplemented(self, request, context):',
  '    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")',
  '    yield',
  'OrchestratorServicer.WatchTaskBatches = unimplemented',
  'from agentmesh.cli import main',
  'sys.argv = ["agentmesh", *sys.argv[1:]]',
  'main()',
].join('\n');

export class Orchestrator {
  /** `options.older`: serve as an orchestrator without WatchTaskBatches (see OLDER_SERVE). */
  constructor(dir, certs, port, env = {}, options = {}) {
    this.dir = dir;
    this.certs = certs;
    this.port = port;
    this.env = env;
    this.older = options.older ?? false;
    this.address = `localhost:${port}`;
    this.log = path.join(dir, 'orchestrator.log');
    this.process = null;
  }

  static async start(dir, certs, env = {}, options = {}) {
    const orchestrator = new Orchestrator(dir, certs, await freePort(), env, options);
    await orchestrator.start();
    return orchestrator;
  }

  async start() {
    const out = fs.openSync(this.log, 'a');
    const serve = ['serve', '--log-level', 'info'];
    const [command, args] = this.older ? [python(), ['-c', OLDER_SERVE, ...serve]] : [agentmeshBin(), serve];
    this.process = spawn(command, args, {
      cwd: this.dir,
      stdio: ['ignore', out, out],
      env: {
        ...process.env,
        AGENTMESH_LISTEN: `127.0.0.1:${this.port}`,
        AGENTMESH_CERTS_DIR: this.certs,
        AGENTMESH_TRUST_DOMAIN: TRUST_DOMAIN,
        AGENTMESH_REDIS_URL: '',
        AGENTMESH_DATABASE_URL: `sqlite+aiosqlite:///${path.join(this.dir, 'mesh.db')}`,
        AGENTMESH_PING_INTERVAL_SECONDS: '0.2',
        AGENTMESH_AGENT_TIMEOUT_SECONDS: '3',
        ...this.env,
      },
    });
    fs.closeSync(out);
    const client = this.client();
    try {
      await eventually(
        async () => {
          if (this.process.exitCode !== null) throw new Error(fs.readFileSync(this.log, 'utf8'));
          await client.agents();
          return true;
        },
        { what: 'orchestrator serving' },
      );
    } finally {
      client.close();
    }
  }

  /** A client as client/cli. */
  client() {
    return new Client({ address: this.address, certsDir: this.certs, timeoutSeconds: 30 });
  }

  /** SIGTERM and wait for the exit. */
  async stop() {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    await new Promise((done) => {
      child.once('exit', done);
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
    });
  }
}

/** The names of the agents the orchestrator lists. */
export async function agentNames(client) {
  return (await client.agents()).map((a) => a.card.name);
}

/** A log sink that keeps entries, for assertions. */
export function memoryLog() {
  const entries = [];
  const log = (event, fields) => entries.push({ event, ...fields });
  log.entries = entries;
  return log;
}
