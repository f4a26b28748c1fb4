// One orchestrator's Session stream, seen from the agent.
//
// The orchestrator writes Assignment, Cancel, Ping and Answer; the agent answers Accepted,
// Progress, Result, Failure, Pong, Draining and Ask on the same stream. Pings must be answered at once,
// even the first one: RegisterAgent only returns after the orchestrator got its first Pong.

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
  /**
   * @param {import('@grpc/grpc-js').ServerDuplexStream<any, any>} call
   * @param {{executor?: import('./executor.js').Executor, log?: Function}} agent
   * @param {{uri: string}} peer
   */
  constructor(call, agent, peer) {
    this.call = call;
    this.executor = /** @type {import('./executor.js').Executor} */ (agent.executor);
    this.log = /** @type {Function} */ (agent.log);
    this.peer = peer;
    /** Assignments given on this Session and not answered yet. */
    this.pending = new Set();
    this.reading = true;
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
      this.executor.detach(this);
      ended();
    };
    call.on('data', (message) => this.#dispatch(message));
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
  #dispatch(message) {
    switch (message.kind) {
      case 'ping':
        this.#write({ pong: { nonce: message.ping.nonce, active: this.executor.active } });
        break;
      case 'assignment':
        if (!message.assignment.assignmentId) {
          this.#write(outcomeMessage('', { code: 'invalid_input', message: 'assignment_id: required', retryable: false }));
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

  /** @param {object} message */
  #write(message) {
    if (!this.open) return;
    try {
      this.call.write(message);
    } catch (error) {
      this.log('session.write_failed', { error: String(error) });
    }
  }

  /** @param {string} assignmentId */
  accepted(assignmentId) {
    this.pending.add(assignmentId);
    this.#write({ accepted: { assignmentId } });
  }

  /** @param {string} assignmentId @param {number} fraction @param {string} message */
  progress(assignmentId, fraction, message) {
    this.#write({ progress: { assignmentId, fraction, message } });
  }

  /** @param {string} assignmentId @param {import('./executor.js').Outcome} outcome */
  finished(assignmentId, outcome) {
    this.pending.delete(assignmentId);
    this.#write(outcomeMessage(assignmentId, outcome));
    this.#closeWhenDone();
  }

  /** Ask the task's owner (ctx.ask). @param {string} assignmentId @param {string} prompt @param {Record<string, unknown>} schema */
  asked(assignmentId, prompt, schema) {
    this.#write({ ask: { assignmentId, prompt, answerSchema: schema } });
  }

  /** Say Draining: the orchestrator sends no more work but waits for what runs. */
  draining() {
    this.#write({ draining: {} });
  }

  /** End the stream (OK status) after what was written so far. */
  close() {
    if (!this.open) return;
    this.open = false;
    try {
      this.call.end();
    } catch {
      // already gone
    }
  }

  #closeWhenDone() {
    if (!this.reading && this.pending.size === 0) this.close();
  }
}
