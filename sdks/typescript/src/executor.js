// Runs assignments: admission, the concurrency limit, idempotency, deadlines, cancel, drain.
//
// Runs belong to the agent, not to the Session an assignment came on: when a Session ends
// its runs go on, and their outcomes are remembered by idempotency key, so that an
// orchestrator that restarted and sends the same attempt again (same idempotency_key, new
// assignment_id) gets the result instead of a second run (protocol: "a re-sent assignment").

/** A failure a handler reports on purpose: a short code, a message, whether to retry. */
export class StepFailed extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, retryable?: boolean}} [options]
   */
  constructor(message, { code = 'error', retryable = false } = {}) {
    super(message);
    this.name = 'StepFailed';
    this.code = code;
    this.retryable = retryable;
  }
}

/** @typedef {{code: string, message: string, retryable: boolean}} Failure */
/** @typedef {{output: Record<string, unknown>, followUps: object[]} | Failure} Outcome */

/**
 * @typedef {object} Context  What a handler knows about its assignment.
 * @property {string} assignmentId
 * @property {string} idempotencyKey
 * @property {string} taskId
 * @property {string} stepId
 * @property {number} attempt
 * @property {Date | null} deadline
 * @property {boolean} compensation   true when this undoes an earlier step (input has .output)
 * @property {AbortSignal} signal     aborted on Cancel, at the deadline or when handed back by a drain
 * @property {(fraction: number, message?: string) => void} progress  0..1, or negative when unknown
 * @property {(step: object) => void} followUp  a StepSpec to add to the running plan after this step
 * @property {(prompt: string, schema?: Record<string, unknown>) => Promise<unknown>} ask
 *   ask the task's owner mid-step (the step shows INPUT_REQUIRED); resolves to their answer,
 *   which matched `schema` (a JSON Schema; empty for any value). The run holds no
 *   concurrency slot while it waits.
 */

/** Outcomes not remembered: the same attempt sent again runs again instead (as in Python). */
const INTERRUPTIONS = new Set(['cancelled', 'draining']);

/** @param {string} code @param {string} message @param {boolean} retryable @returns {Failure} */
function failed(code, message, retryable) {
  return { code, message, retryable };
}

/** Remembers the latest outcomes by idempotency key (oldest forgotten first). */
class OutcomeCache {
  /** @param {number} size */
  constructor(size) {
    this.size = size;
    /** @type {Map<string, Outcome>} */
    this.entries = new Map();
  }

  /** @param {string} key */
  get(key) {
    return this.entries.get(key);
  }

  /** @param {string} key @param {Outcome} outcome */
  put(key, outcome) {
    if (this.size <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, outcome);
    while (this.entries.size > this.size) {
      this.entries.delete(/** @type {string} */ (this.entries.keys().next().value));
    }
  }
}

/**
 * @typedef {object} Replies  Whoever must hear about an assignment: the Session it came on.
 * @property {(assignmentId: string) => void} accepted
 * @property {(assignmentId: string, fraction: number, message: string) => void} progress
 * @property {(assignmentId: string, outcome: Outcome) => void} finished
 * @property {(assignmentId: string, prompt: string, schema: Record<string, unknown>) => void} asked
 */

/**
 * @typedef {object} Run  One execution of a handler, which several assignments may await.
 * @property {any} assignment
 * @property {Map<string, Replies>} listeners  assignment id → where to report it
 * @property {AbortController} controller
 * @property {Failure | null} interruption  set when the executor itself stops the run
 * @property {object[]} followUps
 * @property {((value: unknown) => void) | null} asking  resolves the open question, if any
 */

export class Executor {
  /**
   * @param {{maxConcurrency: number, capabilities: Map<string, {spec: any, handler: Function}>}} agent
   * @param {{cacheSize: number, log: (event: string, fields: Record<string, unknown>) => void}} options
   */
  constructor(agent, { cacheSize, log }) {
    this.agent = agent;
    this.log = log;
    /** @type {Set<Run>} */
    this.runs = new Set();
    /** @type {Map<string, Run>} */
    this.byKey = new Map();
    /** @type {Map<string, Run>} */
    this.byAssignment = new Map();
    this.outcomes = new OutcomeCache(cacheSize);
    this.accepting = true;
    /** @type {Set<() => void>} */
    this.idleWaiters = new Set();
  }

  /** Handlers running right now (Pong.active): not those waiting for an answer to `ctx.ask`. */
  get active() {
    let active = 0;
    for (const run of this.runs) if (!run.asking) active += 1;
    return active;
  }

  /**
   * The answer to the question of the run behind `assignmentId` (protocol: Answer): it goes on.
   * @param {string} assignmentId @param {unknown} value
   */
  answer(assignmentId, value) {
    const run = this.byAssignment.get(assignmentId);
    if (!run?.asking) {
      this.log('answer.ignored', { assignment_id: assignmentId });
      return;
    }
    const resolve = run.asking;
    run.asking = null;
    resolve(value);
  }

  /**
   * Take an assignment or refuse it; either way `replies` hears the answer.
   * @param {any} assignment @param {Replies} replies
   */
  submit(assignment, replies) {
    const aid = assignment.assignmentId;
    const fields = { assignment_id: aid, task_id: assignment.taskId, step_id: assignment.stepId };
    const refuse = (/** @type {string} */ code, /** @type {string} */ message, /** @type {boolean} */ retryable) => {
      this.log('assignment.refused', { ...fields, code, reason: message });
      replies.finished(aid, failed(code, message, retryable));
    };
    if (!this.accepting) return refuse('draining', 'the agent is draining', true);
    const declared = this.agent.capabilities.get(assignment.capability);
    if (!declared) {
      return refuse('unknown_capability', `this agent does not offer ${JSON.stringify(assignment.capability)}`, false);
    }
    const key = assignment.idempotencyKey;
    const done = key ? this.outcomes.get(key) : undefined;
    if (done) {
      replies.accepted(aid);
      replies.finished(aid, done);
      this.log('assignment.replayed', { ...fields, idempotency_key: key });
      return;
    }
    const running = (key && this.byKey.get(key)) || this.byAssignment.get(aid);
    if (running?.interruption) {
      // Being stopped (cancelled, then sent again): joining would report the cancellation.
      return refuse('busy', 'the previous run of this work is stopping', true);
    }
    if (running) {
      // The same attempt sent again: Accepted now, and the run's outcome when it ends.
      running.listeners.set(aid, replies);
      this.byAssignment.set(aid, running);
      replies.accepted(aid);
      this.log('assignment.attached', { ...fields, idempotency_key: key });
      return;
    }
    if (this.active >= this.agent.maxConcurrency) {
      return refuse('busy', `already running ${this.agent.maxConcurrency} assignments`, true);
    }
    /** @type {Run} */
    const run = {
      assignment,
      listeners: new Map([[aid, replies]]),
      controller: new AbortController(),
      interruption: null,
      followUps: [],
      asking: null,
    };
    this.runs.add(run);
    this.byAssignment.set(aid, run);
    if (key) this.byKey.set(key, run);
    replies.accepted(aid);
    this.log('assignment.accepted', { ...fields, attempt: assignment.attempt });
    this.#invoke(run, declared.handler).then((outcome) => this.#finish(run, outcome));
  }

  /**
   * Stop the run behind an assignment (protocol: Cancel); false when there is none.
   * @param {string} assignmentId @param {string} reason
   */
  cancel(assignmentId, reason) {
    const run = this.byAssignment.get(assignmentId);
    if (!run || run.interruption) return false;
    this.log('assignment.cancelling', { assignment_id: assignmentId, reason });
    this.#interrupt(run, failed('cancelled', reason || 'cancelled by orchestrator', false));
    return true;
  }

  /** Forget a Session's listeners (it ended); its runs go on. @param {Replies} replies */
  detach(replies) {
    for (const run of this.runs) {
      for (const [aid, r] of run.listeners) {
        if (r === replies) {
          run.listeners.delete(aid);
          this.byAssignment.delete(aid);
        }
      }
      if (run.asking && run.listeners.size === 0 && !run.interruption) {
        // Its answer would come on that Session only; its orchestrator has failed the
        // attempt (agent_lost) and tries it again.
        this.#interrupt(run, failed('cancelled', 'the session that asked ended', false));
      }
    }
  }

  /**
   * Refuse new work, give running handlers `graceSeconds`, then hand the rest back as
   * retryable "draining" failures.
   * @param {number} graceSeconds
   */
  async drain(graceSeconds) {
    this.accepting = false;
    if (this.runs.size === 0) return;
    this.log('executor.draining', { running: this.runs.size, grace: graceSeconds });
    if (await this.#idleWithin(graceSeconds)) return;
    for (const run of this.runs) {
      this.#interrupt(run, failed('draining', 'the agent shut down before the work finished', true));
    }
    await this.#idleWithin(1);
  }

  /** @param {number} seconds @returns {Promise<boolean>} */
  #idleWithin(seconds) {
    if (this.runs.size === 0) return Promise.resolve(true);
    return new Promise((done) => {
      const waiter = () => {
        clearTimeout(timer);
        done(true);
      };
      const timer = setTimeout(() => {
        this.idleWaiters.delete(waiter);
        done(false);
      }, seconds * 1000);
      this.idleWaiters.add(waiter);
    });
  }

  /** @param {Run} run @param {Failure} why */
  #interrupt(run, why) {
    run.interruption = why;
    // The signal's reason is a StepFailed: `ctx.signal.throwIfAborted()` reports it as is.
    run.controller.abort(new StepFailed(why.message, { code: why.code, retryable: why.retryable }));
  }

  /** @param {Run} run @param {Function} handler @returns {Promise<Outcome>} */
  async #invoke(run, handler) {
    const a = run.assignment;
    const signal = run.controller.signal;
    const deadline = a.deadline instanceof Date && a.deadline.getTime() > 0 ? a.deadline : null;
    let timer;
    if (deadline) {
      timer = setTimeout(
        () => this.#interrupt(run, failed('timeout', `deadline ${deadline.toISOString()} passed`, true)),
        Math.max(0, deadline.getTime() - Date.now()),
      );
    }
    /** @type {Context} */
    const ctx = {
      assignmentId: a.assignmentId,
      idempotencyKey: a.idempotencyKey,
      taskId: a.taskId,
      stepId: a.stepId,
      attempt: a.attempt,
      deadline,
      compensation: a.compensation,
      signal,
      progress: (fraction, message = '') => this.#progress(run, fraction, message),
      followUp: (step) => {
        run.followUps.push(step);
      },
      ask: (prompt, schema = {}) => this.#ask(run, prompt, schema),
    };
    // A handler that ignores its signal cannot be stopped in JavaScript; the interruption
    // is reported all the same and whatever it returns later is dropped.
    const interrupted = new Promise((done) => {
      if (signal.aborted) done(undefined);
      signal.addEventListener('abort', () => done(undefined), { once: true });
    });
    try {
      const value = await Promise.race([Promise.resolve().then(() => handler(a.input ?? {}, ctx)), interrupted]);
      if (run.interruption) return run.interruption;
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        return failed('invalid_output', `a handler must return an object, not ${JSON.stringify(value)}`, true);
      }
      return { output: /** @type {Record<string, unknown>} */ (value), followUps: run.followUps };
    } catch (error) {
      if (run.interruption) return run.interruption;
      if (error instanceof StepFailed) return failed(error.code, error.message, error.retryable);
      const e = /** @type {Error} */ (error);
      this.log('assignment.crashed', { assignment_id: a.assignmentId, error: `${e?.name}: ${e?.message}` });
      return failed('error', `${e?.name ?? 'Error'}: ${e?.message ?? String(error)}`, true);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * @param {Run} run @param {string} prompt @param {Record<string, unknown>} schema
   * @returns {Promise<unknown>}
   */
  #ask(run, prompt, schema) {
    if (run.asking) {
      return Promise.reject(new StepFailed('ask one question at a time', { code: 'ask_failed' }));
    }
    if (run.listeners.size === 0) {
      return Promise.reject(new StepFailed('no orchestrator to ask', { code: 'ask_failed', retryable: true }));
    }
    const answered = new Promise((resolve) => {
      run.asking = resolve;
    });
    for (const [aid, replies] of run.listeners) replies.asked(aid, String(prompt), schema);
    return answered;
  }

  /** @param {Run} run @param {number} fraction @param {string} message */
  #progress(run, fraction, message) {
    if (run.interruption) return;
    // The protocol's range: 0..1, or negative for unknown (the orchestrator drops the rest).
    const clamped = Number.isNaN(fraction) || fraction < 0 ? -1 : Math.min(fraction, 1);
    for (const [aid, replies] of run.listeners) replies.progress(aid, clamped, String(message));
  }

  /** @param {Run} run @param {Outcome} outcome */
  #finish(run, outcome) {
    if (!this.runs.delete(run)) return;
    const key = run.assignment.idempotencyKey;
    if (key && this.byKey.get(key) === run) this.byKey.delete(key);
    if (key && !('code' in outcome && INTERRUPTIONS.has(outcome.code))) this.outcomes.put(key, outcome);
    for (const [aid, replies] of run.listeners) {
      this.byAssignment.delete(aid);
      replies.finished(aid, outcome);
    }
    const fields = { assignment_id: run.assignment.assignmentId };
    if ('code' in outcome) {
      this.log('assignment.failed', { ...fields, code: outcome.code, retryable: outcome.retryable, reason: outcome.message });
    } else {
      this.log('assignment.succeeded', fields);
    }
    if (this.runs.size === 0) {
      for (const waiter of this.idleWaiters) waiter();
      this.idleWaiters.clear();
    }
  }
}
