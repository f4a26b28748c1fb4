// The Node SDK against a real orchestrator process, over mTLS.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Agent, AgentMeshError, StepFailed } from '../src/index.js';
import { agentNames, eventually, makeCerts, memoryLog, Orchestrator } from './support.js';

const text = { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] };

describe('an agent and a client on a live orchestrator', () => {
  let mesh;
  let orchestrator;
  let client;

  before(async () => {
    mesh = makeCerts('node-1', 'node-2', 'node-3', 'node-4');
    orchestrator = await Orchestrator.start(mesh.dir, mesh.certs);
    client = orchestrator.client();
  });

  after(async () => {
    client?.close();
    await orchestrator?.stop();
  });

  /** An agent with its handlers, started against the orchestrator; stopped by the test. */
  async function startAgent(name, declare, options = {}) {
    const agent = new Agent({ name, version: '1.0.0', maxConcurrency: 2 });
    declare(agent);
    await agent.start({
      orchestrators: [orchestrator.address],
      certsDir: mesh.certs,
      handleSignals: false,
      registerRetrySeconds: 0.5,
      log: memoryLog(),
      ...options,
    });
    await agent.registered();
    return agent;
  }

  test('a task runs on the agent: input and output as JSON, progress reaches watchers', async () => {
    const agent = await startAgent('node-1', (a) =>
      a.capability({ name: 'text.upper', input: text, output: text }, async (input, ctx) => {
        ctx.progress(0.5, `attempt ${ctx.attempt} of ${ctx.stepId}`);
        return { text: input.text.toUpperCase() };
      }),
    );
    try {
      const taskId = await client.submit({
        plan: { steps: [{ id: 'up', capability: 'text.upper', input: { text: '${input.words}' } }] },
        input: { words: 'quiet words' },
      });
      const events = [];
      for await (const event of client.watch(taskId)) events.push(event);
      const progress = events.filter((e) => e.kind === 'stepProgress').map((e) => e.stepProgress);
      assert.deepEqual(progress.map((p) => [p.fraction, p.message]), [[0.5, 'attempt 1 of up']]);
      const task = await client.get(taskId);
      assert.equal(task.state, 'SUCCEEDED');
      assert.deepEqual(task.result, { up: { text: 'QUIET WORDS' } });
      assert.equal(task.steps[0].agent, 'node-1');
      const listed = await client.list({ states: ['SUCCEEDED'] });
      assert.ok(listed.tasks.some((t) => t.taskId === taskId));
    } finally {
      await agent.stop();
    }
  });

  test("a cancelled task aborts the handler's signal with the client's reason", async () => {
    let heard = null;
    let started;
    const running = new Promise((done) => {
      started = done;
    });
    const agent = await startAgent('node-2', (a) =>
      a.capability({ name: 'test.wait', input: {}, output: {} }, async (_input, ctx) => {
        started();
        await new Promise((done) => ctx.signal.addEventListener('abort', done, { once: true }));
        heard = ctx.signal.reason;
        ctx.signal.throwIfAborted();
        return {};
      }),
    );
    try {
      const taskId = await client.submit({ plan: { steps: [{ id: 'w', capability: 'test.wait', input: {} }] } });
      await running;
      const task = await client.cancel(taskId, 'the user changed her mind');
      assert.equal(task.state, 'CANCELLED');
      await eventually(() => heard, { what: 'the handler saw the cancel' });
      assert.ok(heard instanceof StepFailed);
      assert.equal(heard.code, 'cancelled');
      assert.equal(heard.message, 'the user changed her mind');
    } finally {
      await agent.stop();
    }
  });

  test('a handler failure carries its code and retryability; the attempt count follows it', async () => {
    let calls = 0;
    const agent = await startAgent('node-3', (a) =>
      a.capability({ name: 'test.flaky', input: {}, output: {} }, async () => {
        calls += 1;
        if (calls === 1) throw new StepFailed('try me again', { code: 'busy_backend', retryable: true });
        if (calls === 2) throw new Error('a bug');
        throw new StepFailed('no use', { code: 'bad_input', retryable: false });
      }),
    );
    try {
      const taskId = await client.submit({
        plan: { steps: [{ id: 'f', capability: 'test.flaky', input: {}, retry: { maxAttempts: 5 } }] },
      });
      const task = await client.wait(taskId);
      assert.equal(task.state, 'FAILED');
      assert.equal(calls, 3);
      assert.match(task.steps[0].error, /bad_input: no use/);
    } finally {
      await agent.stop();
    }
  });

  test('ctx.ask waits INPUT_REQUIRED holding no slot, and goes on with the owner\'s answer', async () => {
    const agent = await startAgent('node-4', (a) =>
      a.capability({ name: 'test.approve', input: {}, output: {} }, async (_input, ctx) => {
        const approved = await ctx.ask('ship it?', { type: 'boolean' });
        return { approved };
      }),
    );
    try {
      const taskId = await client.submit({ plan: { steps: [{ id: 'ok', capability: 'test.approve', input: {} }] } });
      const waiting = await eventually(async () => {
        const task = await client.get(taskId);
        return task.steps[0].state === 'INPUT_REQUIRED' ? task : null;
      });
      assert.equal(waiting.steps[0].waitingFor, 'ship it?');
      // The waiting run holds no slot: Pong.active leaves it out.
      assert.equal(agent.executor.active, 0);
      await assert.rejects(client.provideInput(taskId, 'ok', 'yes'), (error) => error.code === 'INVALID_ARGUMENT' && error.field === 'value');
      await client.provideInput(taskId, 'ok', true);
      const task = await client.wait(taskId);
      assert.equal(task.state, 'SUCCEEDED', task.error);
      assert.deepEqual(task.steps[0].output, { approved: true });
    } finally {
      await agent.stop();
    }
  });

  test('refusals are AgentMeshErrors naming the field', async () => {
    await assert.rejects(
      client.submit({ plan: { steps: [{ id: 'x', capability: 'no.such', input: {} }] } }),
      (error) => {
        assert.ok(error instanceof AgentMeshError);
        assert.equal(error.code, 'INVALID_ARGUMENT');
        assert.equal(error.field, 'plan.steps[0].capability');
        return true;
      },
    );
    await assert.rejects(client.get('00000000-0000-4000-8000-000000000000'), (error) => error.code === 'NOT_FOUND');
  });

  test("an invalid schema's registration is refused with jsonschema's reason, and retried", async () => {
    const log = memoryLog();
    const agent = new Agent({ name: 'node-1', version: '1.0.0' });
    agent.capability({ name: 'text.bad', input: { type: 'strin' }, output: {} }, async () => ({}));
    await agent.start({
      orchestrators: [orchestrator.address],
      certsDir: mesh.certs,
      handleSignals: false,
      registerRetrySeconds: 0.2,
      log,
    });
    try {
      const refused = await eventually(
        () => log.entries.filter((e) => e.event === 'registration.refused').length >= 2 && log.entries.find((e) => e.event === 'registration.refused'),
        { what: 'two refusals' },
      );
      assert.equal(refused.code, 'INVALID_ARGUMENT');
      assert.match(refused.reason, /card\.capabilities\[0\]\.input_schema: not a valid JSON Schema/);
      assert.match(refused.reason, /'strin' is not valid under any of the given schemas/);
      assert.ok(!(await agentNames(client)).includes('node-1'));
    } finally {
      await agent.stop();
    }
  });
});
