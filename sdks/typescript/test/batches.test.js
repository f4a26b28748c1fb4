// Batches on the Session (protocol: "Batches on the Session"): the cutting rules on their
// own, then a wide task on a live orchestrator, whose /metrics counts the batches it sent and
// took apart, for an agent that batches and for one that does not.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Agent } from '../src/index.js';
import { batched, chunks, MAX_BATCH, MAX_BATCH_BYTES, unbatched } from '../src/batches.js';
import { eventually, freePort, makeCerts, memoryLog, Orchestrator } from './support.js';

describe('cutting replies into batches', () => {
  const lengths = (/** @type {number[][]} */ runs) => runs.map((run) => run.length);

  test('a batch holds at most 256 messages, in order', () => {
    const items = Array.from({ length: 600 }, (_, i) => i);
    const runs = [...chunks(items, () => 10)];
    assert.deepEqual(lengths(runs), [MAX_BATCH, MAX_BATCH, 600 - 2 * MAX_BATCH]);
    assert.deepEqual(runs.flat(), items);
  });

  test('a batch holds at most 1 MiB; a message too big to share one goes alone', () => {
    const kib = 1024;
    const sizes = [400 * kib, 400 * kib, 400 * kib, 10, 2 * MAX_BATCH_BYTES, 10, 10];
    const runs = [...chunks(sizes.keys(), (i) => sizes[i])];
    assert.deepEqual(runs, [[0, 1], [2, 3], [4], [5, 6]]);
    // A smaller limit of the stream's own counts too.
    assert.deepEqual(lengths([...chunks(sizes.keys(), (i) => sizes[i], 500 * kib)]), [1, 1, 2, 1, 2]);
    // A message that cannot be measured goes alone.
    assert.deepEqual([...chunks([1, 2, 3], (i) => (i === 2 ? Infinity : 1))], [[1], [2], [3]]);
  });

  test('one message travels as itself, several as a batch', () => {
    assert.deepEqual(batched([{ pong: { nonce: 1 } }]), { pong: { nonce: 1 } });
    assert.deepEqual(batched([{ pong: { nonce: 1 } }, { draining: {} }]), {
      batch: { messages: [{ pong: { nonce: 1 } }, { draining: {} }] },
    });
  });

  test('a batch is taken apart in order; a batch inside it is refused, naming its place', () => {
    const ping = (nonce) => ({ kind: 'ping', ping: { nonce } });
    const inner = { kind: 'batch', batch: { messages: [ping(9)] } };
    assert.deepEqual(unbatched(ping(1)), { carried: [ping(1)], refused: [] });
    assert.deepEqual(unbatched({ kind: 'batch', batch: { messages: [ping(1), inner, ping(2)] } }), {
      carried: [ping(1), ping(2)],
      refused: ['batch.messages[1]: a batch may not hold a batch'],
    });
  });
});

describe('a wide task on a live orchestrator', () => {
  const STEPS = 200;
  let mesh;
  let orchestrator;
  let client;
  let metricsUrl;

  before(async () => {
    mesh = makeCerts('node-wide', 'node-single');
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    orchestrator = await Orchestrator.start(mesh.dir, mesh.certs, {
      AGENTMESH_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
    });
    client = orchestrator.client();
  });

  after(async () => {
    client?.close();
    await orchestrator?.stop();
  });

  /** The orchestrator's batch counters for one agent, by direction (0 when never counted). */
  async function counted(agent) {
    const text = await (await fetch(metricsUrl)).text();
    const value = (/** @type {string} */ metric, /** @type {string} */ direction) => {
      const line = text
        .split('\n')
        .find((l) => l.startsWith(`${metric}{agent="${agent}",direction="${direction}"}`));
      return line ? Number(line.split(' ').at(-1)) : 0;
    };
    return {
      batchesSent: value('agentmesh_session_batches_total', 'sent'),
      batchedMessagesSent: value('agentmesh_session_batched_messages_total', 'sent'),
      batchesReceived: value('agentmesh_session_batches_total', 'received'),
      batchedMessagesReceived: value('agentmesh_session_batched_messages_total', 'received'),
    };
  }

  /** An agent of `name` that echoes each step's number; registered with the orchestrator. */
  async function startAgent(name, options = {}) {
    const agent = new Agent({ name, version: '1.0.0', maxConcurrency: STEPS, ...options });
    agent.capability({ name: 'test.echo', input: {}, output: {} }, async (input, ctx) => {
      ctx.progress(0.5, 'half way');
      // A turn of the event loop: the runs overlap, as real work would.
      await new Promise((done) => setImmediate(done));
      return { n: input.n };
    });
    await agent.start({
      orchestrators: [orchestrator.address],
      certsDir: mesh.certs,
      handleSignals: false,
      log: memoryLog(),
    });
    await agent.registered();
    return agent;
  }

  /** A task of STEPS steps that need nothing from each other, run to its end. */
  async function wideTask() {
    const steps = Array.from({ length: STEPS }, (_, n) => ({ id: `s${n}`, capability: 'test.echo', input: { n } }));
    const task = await client.wait(await client.submit({ plan: { steps } }));
    assert.equal(task.state, 'SUCCEEDED');
    assert.deepEqual(
      Object.entries(task.result).map(([id, output]) => [id, output.n]).sort((a, b) => a[1] - b[1]),
      steps.map((s) => [s.id, s.input.n]),
    );
    return task;
  }

  test(`${STEPS} parallel steps on one agent succeed, with assignments and replies in batches both ways`, async (t) => {
    const agent = await startAgent('node-wide');
    try {
      const [listed] = await client.agents('test.echo');
      assert.equal(listed.card.readsBatches, true);
      await wideTask();
      t.diagnostic(`batches: ${JSON.stringify(agent.stats)}`);
      assert.ok(agent.stats.batchesReceived >= 1, `no batch received: ${JSON.stringify(agent.stats)}`);
      assert.ok(agent.stats.batchesSent >= 1, `no batch sent: ${JSON.stringify(agent.stats)}`);
      assert.ok(agent.stats.batchedMessagesSent > agent.stats.batchesSent);
    } finally {
      await agent.stop();
    }
    // The orchestrator saw the same batches: it took apart every one the agent sent, and the
    // agent took apart every one it sent (nothing more is written once the agent stopped).
    await eventually(
      async () => {
        const seen = await counted('node-wide');
        return seen.batchesReceived === agent.stats.batchesSent &&
          seen.batchedMessagesReceived === agent.stats.batchedMessagesSent &&
          seen.batchesSent === agent.stats.batchesReceived &&
          seen.batchedMessagesSent === agent.stats.batchedMessagesReceived;
      },
      { within: 10, what: `the orchestrator's counters matching the agent's ${JSON.stringify(agent.stats)}` },
    );
  });

  test('an agent whose card does not say reads_batches gets every message alone, and sends them alone', async () => {
    const agent = await startAgent('node-single', { batches: false });
    try {
      const [listed] = await client.agents('test.echo');
      assert.equal(listed.card.name, 'node-single');
      assert.equal(listed.card.readsBatches, false);
      await wideTask();
    } finally {
      await agent.stop();
    }
    assert.deepEqual(agent.stats, { batchesReceived: 0, batchedMessagesReceived: 0, batchesSent: 0, batchedMessagesSent: 0 });
    assert.deepEqual(await counted('node-single'), {
      batchesReceived: 0,
      batchedMessagesReceived: 0,
      batchesSent: 0,
      batchedMessagesSent: 0,
    });
  });
});
