// An agent's life beyond one task: the reference agent drained by SIGTERM, registering again
// after an orchestrator restart, and a rotated certificate served without a restart.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';

import { Agent } from '../src/index.js';
import { agentNames, eventually, issue, makeCerts, memoryLog, Orchestrator, PACKAGE } from './support.js';

/** The serial number of the certificate served at host:port (as the orchestrator sees it). */
function servedSerial(endpoint, certs) {
  const [host, port] = [endpoint.slice(0, endpoint.lastIndexOf(':')), Number(endpoint.slice(endpoint.lastIndexOf(':') + 1))];
  return new Promise((ok, fail) => {
    const socket = tls.connect({
      host,
      port,
      ca: fs.readFileSync(path.join(certs, 'ca.pem')),
      cert: fs.readFileSync(path.join(certs, 'orchestrator', 'orchestrator.pem')),
      key: fs.readFileSync(path.join(certs, 'orchestrator', 'orchestrator.key')),
      ALPNProtocols: ['h2'],
    });
    socket.once('secureConnect', () => {
      ok(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.once('error', fail);
  });
}

/** The serial number of a PEM certificate file. */
function fileSerial(file) {
  return new X509Certificate(fs.readFileSync(file)).serialNumber;
}

// A test that hangs fails by name (the file as a whole would only time out, unnamed).
describe('an agent over its life', { timeout: 120_000 }, () => {
  let mesh;
  let orchestrator;
  let client;

  before(async () => {
    mesh = makeCerts('shouter-js', 'node-r');
    orchestrator = await Orchestrator.start(mesh.dir, mesh.certs);
    client = orchestrator.client();
  });

  after(async () => {
    client?.close();
    await orchestrator?.stop();
  });

  test('the reference agent, sent SIGTERM mid-task, finishes it, deregisters and exits 0', async () => {
    const log = path.join(mesh.dir, 'shouter.log');
    const out = fs.openSync(log, 'w');
    const child = spawn(process.execPath, [path.join(PACKAGE, 'examples', 'shouter.js')], {
      stdio: ['ignore', out, out],
      env: {
        ...process.env,
        AGENTMESH_AGENT_ORCHESTRATORS: orchestrator.address,
        AGENTMESH_AGENT_CERTS_DIR: mesh.certs,
        SHOUTER_WORD_DELAY_MS: '300',
      },
    });
    fs.closeSync(out);
    const exited = new Promise((done) => child.once('exit', (code, signal) => done({ code, signal })));
    try {
      await eventually(async () => (await agentNames(client)).includes('shouter-js'), { what: 'shouter-js registered' });
      const taskId = await client.submit({
        plan: { steps: [{ id: 's', capability: 'text.shout', input: { text: 'one two three four five' } }] },
      });
      const events = client.watch(taskId);
      for await (const event of events) {
        if (event.kind === 'stepProgress') break; // it runs: now stop the agent
      }
      child.kill('SIGTERM');
      const task = await client.wait(taskId);
      assert.equal(task.state, 'SUCCEEDED', fs.readFileSync(log, 'utf8'));
      assert.deepEqual(task.result, { s: { text: 'ONE TWO THREE FOUR FIVE!' } });
      assert.deepEqual(await exited, { code: 0, signal: null });
      const said = fs.readFileSync(log, 'utf8');
      assert.match(said, /"event":"agent.draining"/);
      assert.match(said, /"event":"registration.deregistered"/);
      assert.ok(!(await agentNames(client)).includes('shouter-js'));
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('an agent registers again when its Session ends (the orchestrator restarted)', async () => {
    const log = memoryLog();
    const agent = new Agent({ name: 'node-r' });
    agent.capability({ name: 'test.ok', input: {}, output: {} }, async () => ({ ok: true }));
    await agent.start({ orchestrators: [orchestrator.address], certsDir: mesh.certs, handleSignals: false, log });
    try {
      await agent.registered();
      await orchestrator.stop();
      await orchestrator.start();
      await eventually(async () => (await agentNames(client)).includes('node-r'), { what: 'node-r registered again' });
      assert.ok(log.entries.filter((e) => e.event === 'registration.registered').length >= 2);
      const task = await client.wait(await client.submit({ plan: { steps: [{ id: 'k', capability: 'test.ok', input: {} }] } }));
      assert.equal(task.state, 'SUCCEEDED');
    } finally {
      await agent.stop();
    }
  });

  test('a certificate rotated on disk is served without a restart', async () => {
    const agent = new Agent({ name: 'node-r' });
    agent.capability({ name: 'test.ok', input: {}, output: {} }, async () => ({ ok: true }));
    await agent.start({
      orchestrators: [orchestrator.address],
      certsDir: mesh.certs,
      handleSignals: false,
      certificateRefreshSeconds: 0.2,
      log: memoryLog(),
    });
    try {
      await agent.registered();
      const pem = path.join(mesh.certs, 'agent', 'node-r.pem');
      const before = fileSerial(pem);
      assert.equal(await servedSerial(agent.endpoint, mesh.certs), before);
      issue(mesh.certs, 'agent', 'node-r');
      const rotated = fileSerial(pem);
      assert.notEqual(rotated, before);
      await eventually(async () => (await servedSerial(agent.endpoint, mesh.certs)) === rotated, { what: 'the new certificate served' });
      // And the orchestrator still takes work to it (its Session stayed up).
      const task = await client.wait(await client.submit({ plan: { steps: [{ id: 'k', capability: 'test.ok', input: {} }] } }));
      assert.equal(task.state, 'SUCCEEDED');
    } finally {
      await agent.stop();
    }
  });
});
