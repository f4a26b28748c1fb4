// One orchestrator's Session stream, seen from the agent.
//
// The orchestrator writes Assignment, Cancel, Ping and Answer; the agent answers Accepted,
// Progress, Result, Failure, Pong, Draining and Ask on the same stream. Pings must be answered at once,
// even the first one: RegisterAgent only returns after the orchestrator got its first Pong.
//
// Batches (protocol: "Batches on the Session"): an OrchestratorMessage.batch is taken apart
// and each of its messages handled in order, as if it had come alone. Replies queued while a
// write is under way (or in the event-loop turn a lone one was queued in) go out as one
// AgentMessage.batch, once a Ping on this Session has said the orchestrator reads batches;
// until then, and for an agent made with `batches: false`, each reply goes alone.

import { batched, chunks, unbatched } from './batches.js';
import { agentmeshProtos } from './protos.js';

/**
 * @typedef {object} BatchStats  Batches on the agent's Sessions, counted as the orchestrator
 *   counts them (agentmesh_session_batches_total and _batched_messages_total).
 * @property {number} batchesReceived
 * @property {number} batchedMessagesReceived  the messages those carried (refused ones not counted)
 * @property {number} batchesSent
 * @property {number} batchedMessagesSent
 */

/** @returns {BatchStats} */
export function batchStats() {
  return { batchesReceived: 0, batchedMessagesReceived: 0, batchesSent: 0, batchedMessagesSent: 0 };
}

/**
 * The bytes `message` takes on the wire, to cut batches to size; Infinity when it cannot be
 * encoded, so that it goes alone and its failure (gRPC ends the stream with INTERNAL, as it
 * did before batches) takes no other reply with it.
 * @param {object} message
 */
function encodedSize(message) {
  try {
    return agentmeshProtos().v1.Agent.service.Session.responseSerialize(message).length;
  } catch {
    return Infinity;
  }
}

/**
 * @param {string} aid
 * @param {import('./executor.js').Outcome} outcome
 */
function outcomeMessage(aid, outcome) {
  if ('code' in outcome) {
    return {
      failure: { assignmentId: aid, code: outcome.code, message: outcome.message, retryable: outcome.retryable },
    };
  }
  return { result: { assignmentId: aid, output: outcome.output, followUps: outcome.followUps } };
}

export class Session {
  /** Replies queued and not yet handed to the stream, oldest first. @type {object[]} */
  #outbox = [];
  /** A write (or the wait for company, or for 'drain') is under way: the queue waits. */
  #busy = false;
  /** The lone reply at the head of the queue has had its event-loop turn for company. */
  #waited = false;
  /** call.end() was called (once the queue had been written). */
  #endCalled = false;

  /**
   * @param {import('@grpc/grpc-js').ServerDuplexStream<any, any>} call
   * @param {{executor?: import('./executor.js').Executor, log?: Function, batches?: boolean, stats?: BatchStats}} agent
   * @param {{uri: string}} peer
   */
  constructor(call, agent, peer) {
    this.call = call;
    this.executor = /** @type {import('./executor.js').Executor} */ (agent.executor);
    this.log = /** @type {Function} */ (agent.log);
    this.stats = agent.stats ?? batchStats();
    /** False for an agent that sends no batches, whatever the orchestrator reads. */
    this.mayBatch = agent.batches ?? true;
    /** Set by the first Ping that says the orchestrator reads batches. */
    this.batches = false;
    this.peer = peer;
    /** Assignments given on this Session and not answered yet. */
    this.pending = new Set();
    this.reading = true;
    /** False once closing: replies queued before are still written, later ones dropped. */
    this.open = true;
    /** @type {() => void} */
    let ended = () => {};
    /** Resolves when the stream has ended, however it ended. */
    this.closed = new Promise((done) => {
      ended = () => done(undefined);
    });
    this.ended = false;
    const end = () => {
      if (this.ended) return;
      this.open = false;
      this.ended = true;
      this.#outbox = [];
      this.executor.detach(this);
      ended();
    };
    call.on('data', (message) => this.#receive(message));
    call.on('end', () => {
      // The orchestrator half-closed: answer what it gave us, then end our side too.
      this.reading = false;
      this.#closeWhenDone();
    });
    call.on('cancelled', end);
    call.on('error', end);
    call.on('close', end);
    call.on('finish', end);
    this.log('session.opened', { orchestrator: peer.uri });
  }

  /** @param {any} message */
  #receive(message) {
    if (message.kind !== 'batch') {
      this.#dispatch(message);
      return;
    }
    const { carried, refused } = unbatched(message);
    this.stats.batchesReceived += 1;
    this.stats.batchedMessagesReceived += carried.length;
    for (const problem of refused) {
      // Logged, not fatal: the stream cannot carry a status for one message.
      this.log('session.invalid_batch', { reason: problem });
    }
    for (const inner of carried) this.#dispatch(inner);
  }

  /** @param {any} message */
  #dispatch(message) {
    switch (message.kind) {
      case 'ping':
        if (message.ping.readsBatches && this.mayBatch) this.batches = true;
        this.#send({ pong: { nonce: message.ping.nonce, active: this.executor.active } });
        break;
      case 'assignment':
        if (!message.assignment.assignmentId) {
          this.#send(outcomeMessage('', { code: 'invalid_input', message: 'assignment_id: required', retryable: false }));
          break;
        }
        this.executor.submit(message.assignment, this);
        break;
      case 'answer':
        this.executor.answer(message.answer.assignmentId, message.answer.value);
        break;
      case 'cancel':
        // No reply is needed; the Failure the executor sends is ignored by the orchestrator.
        this.executor.cancel(message.cancel.assignmentId, message.cancel.reason);
        break;
      default:
        this.log('session.empty_message', {});
    }
  }

  /**
   * Queue a reply; it is written after every reply queued before it. Unbounded on purpose,
   * as in the Python SDK: a run's outcome must never wait for a slow stream.
   * @param {object} message
   */
  #send(message) {
    if (!this.open) return;
    this.#outbox.push(message);
    this.#pump();
  }

  /** Hand queued replies to the stream until it must wait; what ends the wait calls again. */
  #pump() {
    while (!this.#busy && !this.ended) {
      if (this.#outbox.length === 0) {
        if (!this.open) this.#endStream();
        return;
      }
      if (this.batches) this.#writeBatch();
      else this.#writeAlone();
    }
  }

  /** The oldest reply alone, as before batches; a full stream holds the rest until 'drain'. */
  #writeAlone() {
    const message = /** @type {object} */ (this.#outbox.shift());
    if (!this.#write(message)) {
      this.#busy = true;
      this.call.once('drain', () => this.#resume());
    }
  }

  /**
   * The oldest replies as one message (a batch when more than one): as many as fit one
   * batch. The next write waits for this one's callback, so that what is queued meanwhile
   * goes in the next batch instead of in as many writes.
   */
  #writeBatch() {
    if (this.#outbox.length === 1 && !this.#waited) {
      // One event-loop turn for company: the replies other runs queue in this very turn
      // (a batch of assignments accepted, quick runs ending) go along.
      this.#waited = true;
      this.#busy = true;
      setImmediate(() => this.#resume());
      return;
    }
    this.#waited = false;
    // A lone reply needs no measuring (a big result would be encoded twice for nothing).
    const run =
      this.#outbox.length === 1
        ? [this.#outbox[0]]
        : /** @type {object[]} */ (chunks(this.#outbox, encodedSize).next().value);
    this.#outbox.splice(0, run.length);
    this.#busy = true;
    this.#write(batched(run), (error) => {
      if (error) {
        // The stream is broken: its 'error' ends the Session; nothing more will be written.
        this.log('session.write_failed', { error: String(error) });
      } else if (run.length > 1) {
        this.stats.batchesSent += 1;
        this.stats.batchedMessagesSent += run.length;
      }
      this.#resume();
    });
  }

  #resume() {
    this.#busy = false;
    this.#pump();
  }

  /**
   * @param {object} message
   * @param {(error?: Error | null) => void} [written]  called once the stream has sent it
   * @returns {boolean} false when the stream's buffer is full (wait for 'drain')
   */
  #write(message, written) {
    try {
      return this.call.write(message, written);
    } catch (error) {
      this.log('session.write_failed', { error: String(error) });
      if (written) setImmediate(written);
      return true;
    }
  }

  #endStream() {
    if (this.#endCalled) return;
    this.#endCalled = true;
    try {
      this.call.end();
    } catch {
      // already gone
    }
  }

  /** @param {string} assignmentId */
  accepted(assignmentId) {
    this.pending.add(assignmentId);
    this.#send({ accepted: { assignmentId } });
  }

  /** @param {string} assignmentId @param {number} fraction @param {string} message */
  progress(assignmentId, fraction, message) {
    this.#send({ progress: { assignmentId, fraction, message } });
  }

  /** @param {string} assignmentId @param {import('./executor.js').Outcome} outcome */
  finished(assignmentId, outcome) {
    this.pending.delete(assignmentId);
    this.#send(outcomeMessage(assignmentId, outcome));
    this.#closeWhenDone();
  }

  /** Ask the task's owner (ctx.ask). @param {string} assignmentId @param {string} prompt @param {Record<string, unknown>} schema */
  asked(assignmentId, prompt, schema) {
    this.#send({ ask: { assignmentId, prompt, answerSchema: schema } });
  }

  /** Say Draining: the orchestrator sends no more work but waits for what runs. */
  draining() {
    this.#send({ draining: {} });
  }

  /** End the stream (OK status) once the replies queued so far are written. */
  close() {
    if (!this.open) return;
    this.open = false;
    this.#pump();
  }

  #closeWhenDone() {
    if (!this.reading && this.pending.size === 0) this.close();
  }
}
