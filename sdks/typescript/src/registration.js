// Keeping an agent registered with one orchestrator for as long as it serves.
//
// RegisterAgent returns only after the orchestrator has dialled the agent's endpoint, opened
// the Session and had a Pong. The agent registers again whenever a Session ends (the
// orchestrator restarted, or dropped the agent after agent_timeout_seconds of silence), or
// when no Session is open sessionWaitSeconds after a registration.

import * as grpc from '@grpc/grpc-js';

import { RotatingCertificates } from './certificates.js';
import { agentmeshProtos } from './protos.js';
import { channelCredentials } from './tls.js';

/** Statuses that mean "not there right now": retried soon, with backoff. */
const TRANSIENT = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

/**
 * Milliseconds a busy orchestrator said to wait before registering again (RESOURCE_EXHAUSTED
 * with trailing metadata `agentmesh-retry-after-ms`), or undefined.
 * @param {grpc.ServiceError} error
 * @returns {number | undefined}
 */
function retryAfterMs(error) {
  if (error.code !== grpc.status.RESOURCE_EXHAUSTED || !error.metadata) return undefined;
  const [value] = error.metadata.get('agentmesh-retry-after-ms');
  const ms = Number(value);
  return value === undefined || !Number.isFinite(ms) ? undefined : Math.max(0, ms);
}
/** Longer than the orchestrator's dial-back wait (its agent timeout plus 2 s). */
const CALL_TIMEOUT_MS = 15_000;

/** @param {number} ms @param {AbortSignal} signal */
function sleep(ms, signal) {
  return new Promise((done) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      done(undefined);
    }, { once: true });
  });
}

export class Registration {
  /**
   * @param {string} address  host:port of one orchestrator
   * @param {{card: () => object, name: string}} agent
   * @param {RotatingCertificates} certificates  the agent's own (a rotated one is used for new connections)
   * @param {{sessionWaitSeconds: number, registerRetrySeconds: number, log: Function}} options
   */
  constructor(address, agent, certificates, options) {
    this.address = address;
    this.agent = agent;
    this.options = options;
    const { v1 } = agentmeshProtos();
    this.stub = new v1.Registry(address, channelCredentials(certificates), {
      // gRPC's own reconnect backoff (up to minutes) would outlast an orchestrator restart.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.min_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
    this.controller = new AbortController();
    /** @type {{ping_interval_seconds?: number, identity?: string, pingIntervalSeconds?: number, agentTimeoutSeconds?: number} | null} */
    this.answer = null;
    this.registrations = 0;
    this.sessionsOpen = 0;
    this.sessionsEnded = 0;
    /** @type {Set<() => void>} */
    this.changeWaiters = new Set();
    /** @type {(value?: undefined) => void} */
    let first = () => {};
    /** Resolves after the first accepted registration. */
    this.firstRegistration = new Promise((done) => {
      first = done;
    });
    this.markRegistered = first;
  }

  sessionOpened() {
    this.sessionsOpen += 1;
    this.#changed();
  }

  sessionEnded() {
    this.sessionsOpen -= 1;
    this.sessionsEnded += 1;
    this.#changed();
  }

  #changed() {
    for (const waiter of this.changeWaiters) waiter();
    this.changeWaiters.clear();
  }

  /** @param {() => boolean} condition @param {number} [ms] @returns {Promise<boolean>} */
  #until(condition, ms = Infinity) {
    const signal = this.controller.signal;
    return new Promise((done) => {
      /** @type {NodeJS.Timeout | undefined} */
      let timer;
      const check = () => {
        if (condition()) {
          clearTimeout(timer);
          signal.removeEventListener('abort', aborted);
          done(true);
        } else {
          this.changeWaiters.add(check);
        }
      };
      const aborted = () => {
        clearTimeout(timer);
        this.changeWaiters.delete(check);
        done(false);
      };
      if (Number.isFinite(ms)) {
        timer = setTimeout(() => {
          this.changeWaiters.delete(check);
          signal.removeEventListener('abort', aborted);
          done(false);
        }, ms);
      }
      signal.addEventListener('abort', aborted, { once: true });
      check();
    });
  }

  start() {
    this.loop = this.#keep().catch((error) => this.options.log('registration.crashed', { error: String(error) }));
  }

  async #keep() {
    const signal = this.controller.signal;
    while (!signal.aborted) {
      if (!(await this.#register())) return;
      const ended = this.sessionsEnded;
      const opened = await this.#until(
        () => this.sessionsOpen > 0 || this.sessionsEnded > ended,
        this.options.sessionWaitSeconds * 1000,
      );
      if (signal.aborted) return;
      if (!opened) {
        this.options.log('registration.no_session', { orchestrator: this.address });
        continue;
      }
      await this.#until(() => this.sessionsEnded > ended);
      if (!signal.aborted) this.options.log('registration.session_ended', { orchestrator: this.address });
    }
  }

  /** Register once, retrying until accepted; false when stopped first. */
  async #register() {
    const signal = this.controller.signal;
    let backoff = 100;
    let attempt = 0;
    while (!signal.aborted) {
      attempt += 1;
      try {
        this.answer = await new Promise((ok, fail) =>
          this.stub.RegisterAgent(
            { card: this.agent.card() },
            { deadline: new Date(Date.now() + CALL_TIMEOUT_MS) },
            (/** @type {any} */ err, /** @type {any} */ answer) => (err ? fail(err) : ok(answer)),
          ),
        );
        this.registrations += 1;
        this.options.log('registration.registered', {
          orchestrator: this.address,
          identity: this.answer?.identity,
          ping_interval_seconds: this.answer?.pingIntervalSeconds,
          agent_timeout_seconds: this.answer?.agentTimeoutSeconds,
        });
        this.markRegistered();
        return true;
      } catch (error) {
        const e = /** @type {grpc.ServiceError} */ (error);
        const hint = retryAfterMs(e);
        if (hint !== undefined) {
          // Busy, and it says when to come back: spread out, so that the agents told
          // together do not all come back together.
          if (attempt === 1 || attempt % 30 === 0) {
            this.options.log('registration.busy', { orchestrator: this.address, reason: e.details, attempt });
          }
          await sleep(hint * (1 + Math.random() * 0.5), signal);
        } else if (TRANSIENT.has(e.code)) {
          if (attempt === 1 || attempt % 30 === 0) {
            this.options.log('registration.unreachable', { orchestrator: this.address, code: grpc.status[e.code], attempt });
          }
          await sleep(backoff + Math.random() * 100, signal);
          backoff = Math.min(backoff * 2, 2000);
        } else {
          // Refused (INVALID_ARGUMENT, PERMISSION_DENIED, ...): the details name the field.
          this.options.log('registration.refused', {
            orchestrator: this.address,
            code: grpc.status[e.code],
            reason: e.details,
            retry_in: this.options.registerRetrySeconds,
          });
          await sleep(this.options.registerRetrySeconds * 1000, signal);
        }
      }
    }
    return false;
  }

  /** Stop re-registering (a drain begins). */
  stop() {
    this.controller.abort();
  }

  /** Tell the orchestrator the agent is gone; best effort. */
  async deregister() {
    if (this.registrations === 0) return;
    await new Promise((done) =>
      this.stub.DeregisterAgent(
        { name: this.agent.name },
        { deadline: new Date(Date.now() + 2000) },
        (/** @type {any} */ err) => {
          this.options.log(err ? 'registration.deregister_failed' : 'registration.deregistered', {
            orchestrator: this.address,
            ...(err ? { code: grpc.status[err.code] } : {}),
          });
          done(undefined);
        },
      ),
    );
  }

  close() {
    this.stub.close();
  }
}
