// The agent's end of the Session, driven by the test as an orchestrator would (over mTLS,
// with the orchestrator's certificate): pings, re-sent assignments, who may open a Session,
// batches both ways.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { Agent, agentmeshProtos } from '../src/index.js';
import { certFiles, channelCredentials } from '../src/tls.js';
import { RotatingCertificates } from '../src/certificates.js';
import { eventually, makeCerts, memoryLog } from './support.js';

/**
 * A Session opened with the certificate kind/name; collects every message the agent sends
 * (`received`, a batch's messages each on its own) and what travelled (`wire`, batches whole).
 */
function openSession(certs, endpoint, kind = 'orchestrator', name = 'orchestrator') {
  const certificates = new RotatingCertificates(certFiles(certs, kind, name));
  const { v1 } = agentmeshProtos();
  const stub = new v1.Agent(endpoint, channelCredentials(certificates));
  const call = stub.Session();
  const received = [];
  const wire = [];
  const status = new Promise((done) => {
    call.on('status', done);
    call.on('error', () => {});
  });
  call.on('data', (message) => {
    wire.push(message);
    received.push(...(message.kind === 'batch' ? message.batch.messages : [message]));
  });
  return {
    call,
    received,
    wire,
    status,
    of: (kind) => received.filter((m) => m.kind === kind).map((m) => m[kind]),
    close() {
      call.cancel();
      stub.close();
      certificates.close();
    },
  };
}

describe("the agent's end of the Session", () => {
  let mesh;
  let agent;
  const log = memoryLog();
  let runs = 0;
  let release;
  const gate = new Promise((done) => {
    release = done;
  });

  before(async () => {
    mesh = makeCerts('node-s', 'intruder');
    agent = new Agent({ name: 'node-s', maxConcurrency: 1 });
    agent.capability({ name: 'test.count', input: {}, output: {} }, async (input) => {
      runs += 1;
      if (input.wait) await gate;
      return { runs };
    });
    agent.capability({ name: 'test.hang', input: {}, output: {} }, async (_input, ctx) => {
      await new Promise((done) => ctx.signal.addEventListener('abort', done, { once: true }));
      ctx.signal.throwIfAborted();
      return {};
    });
    // No orchestrator to register with: the test plays the orchestrator's part itself.
    await agent.start({ orchestrators: [], certsDir: mesh.certs, handleSignals: false, log });
  });

  after(async () => {
    await agent?.stop({ drainTimeoutSeconds: 0 });
  });

  test('a Ping is answered with its nonce and the number of running assignments', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    try {
      session.call.write({ ping: { nonce: 41 } });
      const [pong] = await eventually(() => session.of('pong').length && session.of('pong'));
      assert.deepEqual(pong, { nonce: 41, active: 0 });
    } finally {
      session.close();
    }
  });

  test('the same idempotency key sent again is answered from the first run, running or done', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    const assignment = (id) => ({
      assignment: { assignmentId: id, idempotencyKey: 't/s/1', taskId: 't', stepId: 's', capability: 'test.count', input: { wait: true }, attempt: 1 },
    });
    try {
      session.call.write(assignment('first'));
      await eventually(() => runs === 1, { what: 'the run started' });
      // Re-sent while it runs (an orchestrator restarted): joined, not run twice, no "busy".
      session.call.write(assignment('again'));
      await eventually(() => session.of('accepted').length === 2, { what: 'both accepted' });
      release();
      await eventually(() => session.of('result').length === 2, { what: 'both answered' });
      // Re-sent after it ended: the remembered result.
      session.call.write(assignment('late'));
      await eventually(() => session.of('result').length === 3, { what: 'the replay' });
      assert.equal(runs, 1);
      const results = session.of('result').map((r) => [r.assignmentId, r.output]);
      assert.deepEqual(results.sort(), [
        ['again', { runs: 1 }],
        ['first', { runs: 1 }],
        ['late', { runs: 1 }],
      ]);
      assert.deepEqual(session.of('failure'), []);
    } finally {
      session.close();
    }
  });

  test('an assignment for a capability the agent lacks fails at once, saying why', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    try {
      session.call.write({ assignment: { assignmentId: 'x1', idempotencyKey: 'u/1/1', capability: 'no.such', input: {} } });
      const [failure] = await eventually(() => session.of('failure').length && session.of('failure'));
      assert.equal(failure.assignmentId, 'x1');
      assert.equal(failure.code, 'unknown_capability');
      assert.equal(failure.retryable, false);
    } finally {
      session.close();
    }
  });

  test('a run past its deadline fails as a retryable timeout', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    try {
      const deadline = new Date(Date.now() + 300);
      session.call.write({ assignment: { assignmentId: 'd1', idempotencyKey: 'd/1/1', capability: 'test.hang', input: {}, deadline } });
      const [failure] = await eventually(() => session.of('failure').length && session.of('failure'));
      assert.equal(failure.assignmentId, 'd1');
      assert.equal(failure.code, 'timeout');
      assert.equal(failure.retryable, true);
    } finally {
      session.close();
    }
  });

  test('beyond max_concurrency an assignment is refused as busy; Cancel stops a run with its reason', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    try {
      session.call.write({ assignment: { assignmentId: 'c1', idempotencyKey: 'c/1/1', capability: 'test.hang', input: {} } });
      await eventually(() => session.of('accepted').length === 1, { what: 'c1 accepted' });
      session.call.write({ assignment: { assignmentId: 'c2', idempotencyKey: 'c/2/1', capability: 'test.hang', input: {} } });
      const [busy] = await eventually(() => session.of('failure').length && session.of('failure'));
      assert.deepEqual([busy.assignmentId, busy.code, busy.retryable], ['c2', 'busy', true]);
      session.call.write({ cancel: { assignmentId: 'c1', reason: 'the user changed her mind' } });
      await eventually(() => session.of('failure').length === 2, { what: 'c1 ended' });
      const cancelled = session.of('failure')[1];
      assert.deepEqual(
        [cancelled.assignmentId, cancelled.code, cancelled.message, cancelled.retryable],
        ['c1', 'cancelled', 'the user changed her mind', false],
      );
    } finally {
      session.close();
    }
  });

  test('only orchestrators of the mesh may open a Session', async () => {
    const session = openSession(mesh.certs, agent.endpoint, 'agent', 'intruder');
    try {
      session.call.write({ ping: { nonce: 1 } });
      const status = await session.status;
      assert.equal(status.code, grpc.status.PERMISSION_DENIED);
      assert.match(status.details, /only orchestrators of agentmesh\.test/);
      assert.deepEqual(session.received, []);
    } finally {
      session.close();
    }
  });

  test('Describe answers with the card the agent registers', async () => {
    const certificates = new RotatingCertificates(certFiles(mesh.certs, 'orchestrator', 'orchestrator'));
    const { v1 } = agentmeshProtos();
    const stub = new v1.Agent(agent.endpoint, channelCredentials(certificates));
    try {
      const card = await new Promise((ok, fail) => stub.Describe({}, (err, answer) => (err ? fail(err) : ok(answer))));
      assert.equal(card.name, 'node-s');
      assert.equal(card.maxConcurrency, 1);
      assert.equal(card.endpoint, agent.endpoint);
      assert.equal(card.readsBatches, true);
      assert.deepEqual(card.capabilities.map((c) => [c.name, c.version]), [
        ['test.count', '1.0.0'],
        ['test.hang', '1.0.0'],
      ]);
    } finally {
      stub.close();
      certificates.close();
    }
  });

  test('a batch is handled message by message, in order; a batch inside it is refused and logged', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    const unknown = (id) => ({ assignment: { assignmentId: id, idempotencyKey: `${id}/1`, capability: 'no.such', input: {} } });
    try {
      session.call.write({
        batch: { messages: [{ ping: { nonce: 1 } }, unknown('b1'), { batch: { messages: [{ ping: { nonce: 2 } }] } }, unknown('b2'), { ping: { nonce: 3 } }] },
      });
      await eventually(() => session.of('pong').length === 2, { what: 'two pongs' });
      assert.deepEqual(
        session.received.map((m) => [m.kind, m.pong?.nonce ?? m.failure?.assignmentId]),
        [['pong', 1], ['failure', 'b1'], ['failure', 'b2'], ['pong', 3]],
      );
      const refusals = log.entries.filter((e) => e.event === 'session.invalid_batch');
      assert.deepEqual(refusals.map((e) => e.reason), ['batch.messages[2]: a batch may not hold a batch']);
      assert.ok(agent.stats.batchesReceived >= 1);
    } finally {
      session.close();
    }
  });

  test("a quick run's Accepted and Result share one message", async () => {
    // A lone reply waits one event-loop turn for company; a run that ends at once settles
    // within it, so the orchestrator reads one message for the step instead of two.
    const session = openSession(mesh.certs, agent.endpoint);
    try {
      session.call.write({ ping: { nonce: 7, readsBatches: true } });
      await eventually(() => session.of('pong').length === 1, { what: 'the pong' });
      session.call.write({ assignment: { assignmentId: 'quick', idempotencyKey: 'quick/1', capability: 'test.count', input: {} } });
      await eventually(() => session.of('result').length === 1, { what: 'the result' });
      const together = session.wire.filter((m) => m.kind === 'batch');
      assert.deepEqual(together.map((m) => m.batch.messages.map((inner) => inner.kind)), [['accepted', 'result']]);
    } finally {
      session.close();
    }
  });

  test('replies go alone until a Ping says reads_batches, then in batches of at most 256, in order', async () => {
    const session = openSession(mesh.certs, agent.endpoint);
    const unknown = (id) => ({ assignment: { assignmentId: id, idempotencyKey: `${id}/1`, capability: 'no.such', input: {} } });
    const ids = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    try {
      // An orchestrator of earlier protos: every reply alone, however many come at once.
      session.call.write({ batch: { messages: [{ ping: { nonce: 1 } }, ...ids('a', 5).map(unknown)] } });
      await eventually(() => session.received.length === 6, { what: 'six replies' });
      assert.deepEqual(session.wire.map((m) => m.kind), ['pong', ...Array(5).fill('failure')]);
      // One that reads batches: 301 replies queued at once travel as 256 and 45.
      const sentBefore = agent.stats.batchesSent;
      session.call.write({ batch: { messages: [{ ping: { nonce: 2, readsBatches: true } }, ...ids('b', 300).map(unknown)] } });
      await eventually(() => session.received.length === 6 + 301, { what: '301 more replies' });
      const batches = session.wire.slice(6);
      assert.deepEqual(batches.map((m) => [m.kind, m.batch.messages.length]), [['batch', 256], ['batch', 45]]);
      assert.deepEqual(
        session.received.slice(6).map((m) => m.pong?.nonce ?? m.failure.assignmentId),
        [2, ...ids('b', 300)],
      );
      assert.equal(agent.stats.batchesSent - sentBefore, 2);
    } finally {
      session.close();
    }
  });
});
