// The "minimal agent" of docs/protocol.rst ("An agent's life, for any language"), written
// from that page alone with @grpc/grpc-js and @grpc/proto-loader: no SDK code. It witnesses
// that the page is enough: serve, register (answering the first Ping meanwhile), run an
// assignment, stop on Cancel, and register again when the Session ends.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { agentNames, eventually, makeCerts, Orchestrator, PACKAGE } from './support.js';

const PROTOS = path.join(PACKAGE, '..', '..', 'protos');
const { agentmesh } = grpc.loadPackageDefinition(
  protoLoader.loadSync(['agentmesh/v1/agent.proto', 'agentmesh/v1/orchestrator.proto'], {
    includeDirs: [PROTOS],
    keepCase: true,
    oneofs: true,
    longs: String,
  }),
);
const v1 = agentmesh.v1;

// google.protobuf.Struct by hand: the SDK's converters are not used here. (proto-loader
// takes the well-known types from protobufjs, whose field names stay camelCase even with
// keepCase: stringValue, not string_value.)
const toValue = (v) =>
  typeof v === 'string' ? { stringValue: v } : typeof v === 'number' ? { numberValue: v } : { nullValue: 0 };
const toStruct = (o) => ({ fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])) });
const fromStruct = (s) =>
  Object.fromEntries(Object.entries(s?.fields ?? {}).map(([k, v]) => [k, v.stringValue ?? v.numberValue ?? null]));

/** The minimal agent: offers text.reverse; `hang: true` in the input waits for a Cancel. */
async function minimalAgent(certs, orchestratorAddress) {
  const read = (f) => fs.readFileSync(path.join(certs, f));
  const cancels = [];
  let sessions = 0;
  const server = new grpc.Server();
  server.addService(v1.Agent.service, {
    Describe: (_call, callback) => callback(null, card()),
    Session: (call) => {
      sessions += 1;
      // (The page says to accept only orchestrator identities; this sketch trusts the CA.)
      call.on('data', (message) => {
        if (message.kind === 'ping') call.write({ pong: { nonce: message.ping.nonce, active: 0 } });
        if (message.kind === 'cancel') cancels.push(message.cancel);
        if (message.kind === 'assignment') {
          const a = message.assignment;
          const input = fromStruct(a.input);
          if (input.hang) return; // answered by nothing: the orchestrator cancels it
          const output = toStruct({ text: [...input.text].reverse().join('') });
          call.write({ result: { assignment_id: a.assignment_id, output } });
        }
      });
      call.on('end', () => call.end());
      call.on('error', () => {});
      call.on('close', register); // the Session ended: register again
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(
    read('ca.pem'),
    [{ cert_chain: read('agent/minimal.pem'), private_key: read('agent/minimal.key') }],
    true,
  );
  const port = await new Promise((ok, fail) =>
    server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? fail(err) : ok(p))),
  );
  const card = () => ({
    name: 'minimal',
    endpoint: `127.0.0.1:${port}`,
    max_concurrency: 2,
    capabilities: [{ name: 'text.reverse', version: '1.0.0' }],
  });
  const registry = new v1.Registry(
    orchestratorAddress,
    grpc.credentials.createSsl(read('ca.pem'), read('agent/minimal.key'), read('agent/minimal.pem')),
  );
  let answer = null;
  let stopped = false;
  function register() {
    if (stopped) return;
    registry.RegisterAgent({ card: card() }, { deadline: Date.now() + 10_000 }, (err, a) => {
      if (err) setTimeout(register, 200); // unreachable for now: try again
      else answer = a;
    });
  }
  register();
  return {
    cancels,
    sessions: () => sessions,
    answer: () => answer,
    stop() {
      stopped = true;
      registry.close();
      server.forceShutdown();
    },
  };
}

describe('a minimal agent written from docs/protocol.rst alone', () => {
  let mesh;
  let orchestrator;
  let client;
  let agent;

  before(async () => {
    mesh = makeCerts('minimal');
    orchestrator = await Orchestrator.start(mesh.dir, mesh.certs);
    client = orchestrator.client();
    agent = await minimalAgent(mesh.certs, orchestrator.address);
  });

  after(async () => {
    agent?.stop();
    client?.close();
    await orchestrator?.stop();
  });

  test('registers, and the answer gives the ping interval and the drop timeout', async () => {
    const answer = await eventually(() => agent.answer(), { what: 'registered' });
    assert.equal(answer.identity, 'spiffe://agentmesh.test/agent/minimal');
    assert.equal(answer.ping_interval_seconds, 0.2);
    assert.equal(answer.agent_timeout_seconds, 3);
  });

  test('runs a step', async () => {
    const taskId = await client.submit({
      plan: { steps: [{ id: 'r', capability: 'text.reverse', input: { text: 'stressed' } }] },
    });
    const task = await client.wait(taskId);
    assert.equal(task.state, 'SUCCEEDED');
    assert.deepEqual(task.result, { r: { text: 'desserts' } });
  });

  test("hears the client's reason in Cancel", async () => {
    const taskId = await client.submit({
      plan: { steps: [{ id: 'h', capability: 'text.reverse', input: { text: 'x', hang: 'yes' } }] },
    });
    await eventually(async () => (await client.get(taskId)).steps[0].state === 'RUNNING', { what: 'running' });
    await client.cancel(taskId, 'enough');
    const cancel = await eventually(() => agent.cancels[0], { what: 'a Cancel' });
    assert.equal(cancel.reason, 'enough');
  });

  test('registers again after the orchestrator restarts, and runs steps again', async () => {
    const before = agent.sessions();
    await orchestrator.stop();
    await orchestrator.start();
    await eventually(async () => (await agentNames(client)).includes('minimal'), { what: 'minimal registered again' });
    assert.ok(agent.sessions() > before);
    const task = await client.wait(
      await client.submit({ plan: { steps: [{ id: 'r', capability: 'text.reverse', input: { text: 'live' } }] } }),
    );
    assert.deepEqual(task.result, { r: { text: 'evil' } });
  });
});
