// The reference agent: one capability, text.shout, written with @agentmesh/sdk.
//
//   agentmesh certs issue agent shouter-js
//   AGENTMESH_AGENT_ORCHESTRATORS=localhost:50051 node examples/shouter.js
//
// It registers with every orchestrator (and again when a Session ends), answers pings,
// reports progress, stops when cancelled, and drains on SIGTERM.
import { Agent, StepFailed } from '../src/index.js';

const text = { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] };

const agent = new Agent({ name: process.env.AGENTMESH_AGENT_NAME ?? 'shouter-js', version: '1.0.0', maxConcurrency: 4 });

agent.capability(
  { name: 'text.shout', version: '1.0.0', description: 'The text in capitals, with a bang.', input: text, output: text },
  async ({ text: words }, ctx) => {
    if (words.length > 10_000) throw new StepFailed('text longer than 10,000 characters', { code: 'invalid_input' });
    let shouted = '';
    for (const [i, word] of words.split(' ').entries()) {
      ctx.signal.throwIfAborted(); // a Cancel, the deadline or a drain stops the work here
      shouted += (i ? ' ' : '') + word.toUpperCase();
      ctx.progress((i + 1) / words.split(' ').length, `shouted ${i + 1} words`);
      await new Promise((done) => setTimeout(done, Number(process.env.SHOUTER_WORD_DELAY_MS ?? 0)));
    }
    return { text: `${shouted}!` };
  },
);

await agent.run();
