// The agentmesh client: submit, watch, get, cancel and list tasks over mTLS.
//
// Payloads are plain JSON both ways; states lose their proto prefix (TASK_STATE_SUCCEEDED
// → "SUCCEEDED"); an RPC refusal becomes an AgentMeshError with its gRPC code and, when the
// orchestrator named one, the offending field.

import * as grpc from '@grpc/grpc-js';

import { RotatingCertificates } from './certificates.js';
import { agentmeshProtos, JsonValue } from './protos.js';
import { certFiles, channelCredentials } from './tls.js';

/** An RPC the orchestrator refused: `code` (e.g. "INVALID_ARGUMENT"), `field`, `details`. */
export class AgentMeshError extends Error {
  /** @param {grpc.ServiceError} error */
  constructor(error) {
    super(`${grpc.status[error.code]}: ${error.details}`);
    this.name = 'AgentMeshError';
    this.code = grpc.status[error.code];
    this.details = error.details;
    const field = error.metadata?.get('agentmesh-field-bin')?.[0];
    /** The field the orchestrator named, e.g. plan.steps[0].input.url ('' if none). */
    this.field = field ? Buffer.from(field).toString('utf8') : '';
  }
}

/** @param {string | undefined} state */
const bare = (state) => (state ?? '').replace(/^(TASK|STEP)_STATE_/, '');

/** @param {any} task */
function taskOut(task) {
  return { ...task, state: bare(task.state), steps: (task.steps ?? []).map((/** @type {any} */ s) => ({ ...s, state: bare(s.state) })) };
}

/** @param {any} event */
function eventOut(event) {
  const out = { ...event };
  if (out.taskState) out.taskState = { ...out.taskState, state: bare(out.taskState.state) };
  if (out.stepState) out.stepState = { ...out.stepState, state: bare(out.stepState.state) };
  return out;
}

/** Statuses after which a broken watch is resumed from the last event seen. */
const RESUMABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.INTERNAL, grpc.status.UNKNOWN]);

export class Client {
  /** False once the orchestrator answered WatchTaskBatches UNIMPLEMENTED (it is older). */
  #batchedWatch = true;

  /**
   * @param {{address?: string, certsDir?: string, kind?: 'client' | 'admin', name?: string, timeoutSeconds?: number}} [options]
   *   address: AGENTMESH_ADDRESS or localhost:50051; the identity is certsDir/<kind>/<name>.pem
   *   (client/cli by default, the identity `agentmesh certs init` issues).
   */
  constructor(options = {}) {
    const address = options.address ?? process.env.AGENTMESH_ADDRESS ?? 'localhost:50051';
    const files = certFiles(options.certsDir ?? process.env.AGENTMESH_CERTS_DIR ?? 'certs', options.kind ?? 'client', options.name ?? process.env.AGENTMESH_CLIENT_NAME ?? 'cli');
    this.certificates = new RotatingCertificates(files);
    this.timeoutMs = (options.timeoutSeconds ?? 30) * 1000;
    const { v1 } = agentmeshProtos();
    this.stub = new v1.Orchestrator(address, channelCredentials(this.certificates), {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    });
  }

  /** @param {string} method @param {object} request @returns {Promise<any>} */
  #call(method, request) {
    return new Promise((ok, fail) =>
      this.stub[method](request, { deadline: new Date(Date.now() + this.timeoutMs) }, (/** @type {any} */ err, /** @type {any} */ answer) =>
        err ? fail(new AgentMeshError(err)) : ok(answer),
      ),
    );
  }

  /**
   * Submit a task; resolves to its id. Exactly one of plan ({steps, aggregate}), workflow or goal.
   * @param {{plan?: object, workflow?: string, goal?: string, input?: Record<string, unknown>, priority?: number, timeoutSeconds?: number, labels?: Record<string, string>, idempotencyKey?: string}} request
   * @returns {Promise<string>}
   */
  async submit(request) {
    const answer = await this.#call('SubmitTask', { ...request, input: request.input ?? {} });
    return answer.taskId;
  }

  /** @param {string} taskId @param {{omitOutputs?: boolean}} [options] */
  async get(taskId, options = {}) {
    return taskOut(await this.#call('GetTask', { taskId, omitOutputs: options.omitOutputs ?? false }));
  }

  /** Cancel a task with a reason (the agents running its steps are told it); resolves to the final task. @param {string} taskId @param {string} [reason] */
  async cancel(taskId, reason = '') {
    return taskOut(await this.#call('CancelTask', { taskId, reason }));
  }

  /**
   * Answer a step waiting for input (a step of kind "input", or an agent's ctx.ask); the value
   * must match the step's answer schema. Resolves to the task.
   * @param {string} taskId @param {string} stepId @param {unknown} value
   */
  async provideInput(taskId, stepId, value) {
    return taskOut(await this.#call('ProvideInput', { taskId, stepId, value: new JsonValue(value) }));
  }

  /**
   * Tasks the caller may see, newest first, one page.
   * @param {{states?: string[], pageSize?: number, pageToken?: string, omitOutputs?: boolean}} [options]
   * @returns {Promise<{tasks: any[], nextPageToken: string}>}
   */
  async list(options = {}) {
    const states = (options.states ?? []).map((s) => (s.startsWith('TASK_STATE_') ? s : `TASK_STATE_${s.toUpperCase()}`));
    const answer = await this.#call('ListTasks', { ...options, states });
    return { tasks: answer.tasks.map(taskOut), nextPageToken: answer.nextPageToken };
  }

  /** The live agents, optionally only those offering one capability. @param {string} [capability] */
  async agents(capability = '') {
    return (await this.#call('ListAgents', { capability })).agents;
  }

  /**
   * The task's events in order, from afterSequence on, until its final event. A stream that
   * breaks (orchestrator restarting) is resumed from the last event seen, so none is missed.
   * @param {string} taskId @param {{afterSequence?: number, retrySeconds?: number}} [options]
   * @returns {AsyncGenerator<any>}
   */
  async *watch(taskId, options = {}) {
    let after = options.afterSequence ?? 0;
    const giveUpAt = Date.now() + (options.retrySeconds ?? 60) * 1000;
    while (true) {
      // WatchTaskBatches carries the same events, several to a message; an orchestrator
      // older than it answers UNIMPLEMENTED, and is watched one event a message from then on.
      const batched = this.#batchedWatch;
      const request = { taskId, afterSequence: after };
      const stream = batched ? this.stub.WatchTaskBatches(request) : this.stub.WatchTask(request);
      try {
        for await (const message of stream) {
          for (const event of batched ? message.events : [message]) {
            after = Number(event.sequence);
            yield eventOut(event);
          }
        }
        return;
      } catch (error) {
        const e = /** @type {grpc.ServiceError} */ (error);
        if (batched && e.code === grpc.status.UNIMPLEMENTED) {
          this.#batchedWatch = false;
          continue;
        }
        if (!RESUMABLE.has(e.code) || Date.now() > giveUpAt) throw new AgentMeshError(e);
        await new Promise((done) => setTimeout(done, 200));
      } finally {
        stream.cancel();
      }
    }
  }

  /** Watch until the task ends; resolves to the final task. @param {string} taskId */
  async wait(taskId) {
    for await (const _ of this.watch(taskId)) {
      // events are not needed here, only the end of the stream
    }
    return this.get(taskId);
  }

  close() {
    this.stub.close();
    this.certificates.close();
  }
}
