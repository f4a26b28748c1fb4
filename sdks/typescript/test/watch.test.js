// Client.watch reads WatchTaskBatches, and falls back to WatchTask on an older orchestrator.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { Agent } from '../src/index.js';
import { makeCerts, memoryLog, Orchestrator } from './support.js';

const PLAN = {
  steps: [
    { id: 'a', capability: 'test.count', input: { n: 1 } },
    { id: 'b', capability: 'test.count', input: { n: '${steps.a.output.n}' } },
  ],
};

/** Run PLAN on an orchestrator (current or older); return a whole watch and a resumed one. */
async function watchedOn(options) {
  const mesh = makeCerts('node-w');
  const orchestrator = await Orchestrator.start(mesh.dir, mesh.certs, {}, options);
  const client = orchestrator.client();
  const agent = new Agent({ name: 'node-w', version: '1.0.0', maxConcurrency: 2 });
  agent.capability({ name: 'test.count', input: {}, output: {} }, async (input) => ({ n: input.n + 1 }));
  try {
    await agent.start({ orchestrators: [orchestrator.address], certsDir: mesh.certs, handleSignals: false, log: memoryLog() });
    await agent.registered();
    const taskId = await client.submit({ plan: PLAN });
    const events = [];
    for await (const event of client.watch(taskId)) events.push(event);
    const resumed = [];
    for await (const event of client.watch(taskId, { afterSequence: 2 })) resumed.push(event);
    return { events, resumed, task: await client.get(taskId) };
  } finally {
    await agent.stop();
    client.close();
    await orchestrator.stop();
  }
}

describe('watching a task', () => {
  let current;
  let older;

  before(async () => {
    current = await watchedOn({});
    older = await watchedOn({ older: true });
  });

  for (const [name, watched] of [['a current', () => current], ['an older', () => older]]) {
    test(`on ${name} orchestrator: every event once, in order, to the final state; resumable`, () => {
      const { events, resumed, task } = watched();
      assert.equal(task.state, 'SUCCEEDED');
      assert.deepEqual(task.result, { a: { n: 2 }, b: { n: 3 } });
      assert.deepEqual(events.map((e) => Number(e.sequence)), events.map((_, i) => i + 1));
      assert.equal(events.at(-1).kind, 'taskState');
      assert.equal(events.at(-1).taskState.state, 'SUCCEEDED');
      assert.deepEqual(resumed, events.slice(2));
    });
  }
});
