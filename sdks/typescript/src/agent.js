// An agentmesh agent: capabilities with JSON schemas, served over mTLS, registered with
// every orchestrator, kept registered, drained on SIGTERM. docs/protocol.rst is the contract
// this follows; the comments name the parts of it that shape the code.

import * as grpc from '@grpc/grpc-js';

import { RotatingCertificates } from './certificates.js';
import { Executor, StepFailed } from './executor.js';
import { agentmeshProtos } from './protos.js';
import { Registration } from './registration.js';
import { batchStats, Session } from './session.js';
import { certFiles, identityOf, serverCredentials, trustDomainOf } from './tls.js';

export { StepFailed };

/**
 * @typedef {object} CapabilityOptions
 * @property {string} name          dotted lowercase, e.g. text.upper
 * @property {string} [version]     the capability contract's semantic version (1.0.0)
 * @property {string} [description]
 * @property {Record<string, unknown>} [input]   JSON Schema (draft 2020-12) of the input
 * @property {Record<string, unknown>} [output]  JSON Schema of the output
 * @property {string[]} [tags]
 */

/**
 * @typedef {object} RunOptions  Each falls back to its AGENTMESH_AGENT_* variable.
 * @property {string[]} [orchestrators]  host:port of each orchestrator replica (ORCHESTRATORS, comma-separated)
 * @property {string} [listen]       where the Agent service listens (LISTEN; 127.0.0.1:0)
 * @property {string} [advertise]    the endpoint registered; its host must be in the certificate's SAN (ADVERTISE)
 * @property {string} [certsDir]     ca.pem and agent/<name>.pem/.key (CERTS_DIR; certs)
 * @property {string} [trustDomain]  callers of another trust domain are refused (TRUST_DOMAIN; the CA's)
 * @property {number} [drainTimeoutSeconds]  how long a drain waits for running work (DRAIN_TIMEOUT_SECONDS; 10)
 * @property {number} [sessionWaitSeconds]   re-register when no Session opens this long after registering (3)
 * @property {number} [registerRetrySeconds] pause after a refused registration (REGISTER_RETRY_SECONDS; 30)
 * @property {number} [resultCacheSize]  finished outcomes remembered for re-sent assignments (1024)
 * @property {number} [certificateRefreshSeconds]  how often rotated certificate files are looked for (5)
 * @property {boolean} [handleSignals]   drain and stop on SIGTERM and SIGINT (run() only; true)
 * @property {(event: string, fields: Record<string, unknown>) => void} [log]  structured log sink (JSON lines on stderr)
 */

const env = process.env;

/** @param {string} event @param {Record<string, unknown>} fields */
function defaultLog(event, fields) {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

/**
 * An agent: declare capabilities, then `await agent.run()`.
 *
 * ```js
 * const agent = new Agent({ name: 'shouter', version: '1.0.0', maxConcurrency: 4 });
 * agent.capability({ name: 'text.upper', input: {...}, output: {...} },
 *   async (input, ctx) => ({ text: input.text.toUpperCase() }));
 * await agent.run();
 * ```
 */
export class Agent {
  /**
   * `batches: false` makes an agent as agents of earlier protos were: its card does not say
   * it reads batches (so the orchestrator sends it none) and it sends none either.
   * @param {{name: string, version?: string, maxConcurrency?: number, labels?: Record<string, string>, batches?: boolean}} options
   */
  constructor({ name, version = '0.0.0', maxConcurrency = 1, labels = {}, batches = true }) {
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) {
      throw new RangeError(`maxConcurrency must be a whole number of at least 1, not ${maxConcurrency}`);
    }
    this.name = name;
    this.version = version;
    this.maxConcurrency = maxConcurrency;
    this.labels = labels;
    this.batches = batches;
    /** Batches on this agent's Sessions, both ways (see session.js). */
    this.stats = batchStats();
    /** @type {Map<string, {spec: Required<CapabilityOptions>, handler: Function}>} */
    this.capabilities = new Map();
    /** Where the Agent service listens once started (host:port). */
    this.endpoint = '';
    /** @type {grpc.Server | null} */
    this.server = null;
    /** @type {Registration[]} */
    this.registrations = [];
    /** @type {Set<import('./session.js').Session>} */
    this.sessions = new Set();
    /** @type {RotatingCertificates | null} */
    this.certificates = null;
    /** @type {Promise<void> | null} */
    this.stopping = null;
    /** @type {(value?: undefined) => void} */
    let stopped = () => {};
    /** Resolves once stop() has finished. */
    this.stopped = new Promise((done) => {
      stopped = done;
    });
    this.markStopped = stopped;
  }

  /**
   * Offer a capability. The handler gets the input (already checked against the input
   * schema by the orchestrator) and a context: progress(), signal (aborted on Cancel, the
   * deadline or a drain), followUp(), ids and deadline. It returns the output object (or
   * throws StepFailed(message, {code, retryable}); any other error is a retryable "error").
   * @param {CapabilityOptions} options
   * @param {(input: any, ctx: import('./executor.js').Context) => Promise<Record<string, unknown>> | Record<string, unknown>} handler
   * @returns {this}
   */
  capability(options, handler) {
    const spec = {
      name: options.name,
      version: options.version ?? '1.0.0',
      description: options.description ?? '',
      input: options.input ?? {},
      output: options.output ?? {},
      tags: options.tags ?? [],
    };
    if (this.capabilities.has(spec.name)) throw new Error(`capability ${spec.name} is declared twice`);
    this.capabilities.set(spec.name, { spec, handler });
    return this;
  }

  /** The card this agent registers (protocol: AgentCard). */
  card() {
    return {
      name: this.name,
      endpoint: this.endpoint,
      maxConcurrency: this.maxConcurrency,
      version: this.version,
      labels: this.labels,
      // The SDK's Session reads batches, whatever the agent's handlers are.
      readsBatches: this.batches,
      capabilities: [...this.capabilities.values()].map(({ spec }) => ({
        name: spec.name,
        version: spec.version,
        description: spec.description,
        inputSchema: spec.input,
        outputSchema: spec.output,
        tags: spec.tags,
      })),
    };
  }

  /**
   * Serve and register with every orchestrator; resolves once the Agent service listens
   * (registration goes on in the background, retried until accepted, and again whenever a
   * Session ends). Stop with {@link stop}.
   * @param {RunOptions} [options]
   */
  async start(options = {}) {
    if (this.server) throw new Error('already started');
    if (this.capabilities.size === 0) throw new Error('an agent must offer at least one capability');
    const o = resolve(options);
    this.name = o.name || this.name;
    this.log = o.log;
    const files = certFiles(o.certsDir, 'agent', this.name);
    const trustDomain = o.trustDomain || trustDomainOf(files.ca);
    const certificates = new RotatingCertificates(files, o.certificateRefreshSeconds * 1000);
    this.certificates = certificates;
    this.executor = new Executor(this, { cacheSize: o.resultCacheSize, log: o.log });
    const { v1 } = agentmeshProtos();
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
    server.addService(v1.Agent.service, {
      Session: (/** @type {grpc.ServerDuplexStream<any, any>} */ call) => {
        const peer = identityOf(call.getAuthContext()?.sslPeerCertificate?.subjectaltname);
        // Only orchestrators of this mesh may open a Session (they send the work).
        if (!peer || peer.kind !== 'orchestrator' || peer.trustDomain !== trustDomain) {
          call.emit('error', {
            code: grpc.status.PERMISSION_DENIED,
            details: `only orchestrators of ${trustDomain} may open a Session, not ${peer?.uri ?? 'an unnamed peer'}`,
          });
          return;
        }
        const session = new Session(call, this, peer);
        this.sessions.add(session);
        for (const r of this.registrations) r.sessionOpened();
        session.closed.then(() => {
          this.sessions.delete(session);
          for (const r of this.registrations) r.sessionEnded();
        });
      },
      Describe: (/** @type {any} */ _call, /** @type {Function} */ callback) => callback(null, this.card()),
    });
    const port = await new Promise((ok, fail) =>
      server.bindAsync(o.listen, serverCredentials(certificates), (err, bound) =>
        err ? fail(err) : ok(bound),
      ),
    );
    this.server = server;
    const host = o.listen.slice(0, o.listen.lastIndexOf(':'));
    this.endpoint = o.advertise || `${host}:${port}`;
    this.registrations = o.orchestrators.map(
      (/** @type {string} */ address) =>
        new Registration(address, this, certificates, {
          sessionWaitSeconds: o.sessionWaitSeconds,
          registerRetrySeconds: o.registerRetrySeconds,
          log: o.log,
        }),
    );
    this.drainTimeoutSeconds = o.drainTimeoutSeconds;
    for (const r of this.registrations) r.start();
    o.log('agent.serving', { agent: this.name, endpoint: this.endpoint, orchestrators: o.orchestrators });
    return this;
  }

  /** Resolves once every orchestrator has accepted a registration. */
  async registered() {
    await Promise.all(this.registrations.map((r) => r.firstRegistration));
  }

  /**
   * Drain and stop: refuse new work (and say Draining on every Session), give running
   * work drainTimeoutSeconds, hand the rest back as retryable "draining" failures,
   * deregister, close. Calling it again returns the same promise.
   * @param {{drainTimeoutSeconds?: number}} [options]
   */
  stop(options = {}) {
    this.stopping ??= this.#stop(options.drainTimeoutSeconds ?? this.drainTimeoutSeconds ?? 10);
    return this.stopping;
  }

  /** @param {number} grace */
  async #stop(grace) {
    try {
      await this.#shutdown(grace);
    } finally {
      this.markStopped();
    }
  }

  /** @param {number} grace */
  async #shutdown(grace) {
    if (!this.server) return;
    const log = this.log ?? defaultLog;
    log('agent.draining', { agent: this.name, running: this.executor?.active ?? 0 });
    for (const r of this.registrations) r.stop();
    for (const session of this.sessions) session.draining();
    await this.executor?.drain(grace);
    await Promise.all(this.registrations.map((r) => r.deregister()));
    for (const session of this.sessions) session.close();
    const server = this.server;
    await new Promise((done) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        done(undefined);
      }, 2_000);
      force.unref();
      server.tryShutdown(() => {
        clearTimeout(force);
        done(undefined);
      });
    });
    for (const r of this.registrations) r.close();
    this.certificates?.close();
    log('agent.stopped', { agent: this.name });
  }

  /**
   * Start, then run until SIGTERM or SIGINT (which drain and stop), or until stop().
   * @param {RunOptions} [options]
   */
  async run(options = {}) {
    await this.start(options);
    if (options.handleSignals ?? true) {
      const onSignal = (/** @type {string} */ signal) => {
        (this.log ?? defaultLog)('agent.signal', { signal });
        this.stop();
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      try {
        await this.stopped; // the server's socket keeps the process alive meanwhile
      } finally {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
    } else {
      await this.stopped;
    }
  }
}

/** @param {RunOptions & {name?: string}} options */
function resolve(options) {
  const number = (/** @type {string | undefined} */ value, /** @type {number} */ fallback) =>
    value === undefined || value === '' ? fallback : Number(value);
  // Comma-separated or a JSON list, as for the Python SDK.
  const listed = (env.AGENTMESH_AGENT_ORCHESTRATORS ?? 'localhost:50051').trim();
  const orchestrators =
    options.orchestrators ??
    (listed.startsWith('[')
      ? JSON.parse(listed)
      : listed
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean));
  return {
    orchestrators,
    name: options.name ?? env.AGENTMESH_AGENT_NAME ?? '',
    listen: options.listen ?? env.AGENTMESH_AGENT_LISTEN ?? '127.0.0.1:0',
    advertise: options.advertise ?? env.AGENTMESH_AGENT_ADVERTISE ?? '',
    certsDir: options.certsDir ?? env.AGENTMESH_AGENT_CERTS_DIR ?? 'certs',
    trustDomain: options.trustDomain ?? env.AGENTMESH_AGENT_TRUST_DOMAIN ?? '',
    drainTimeoutSeconds:
      options.drainTimeoutSeconds ?? number(env.AGENTMESH_AGENT_DRAIN_TIMEOUT_SECONDS, 10),
    sessionWaitSeconds: options.sessionWaitSeconds ?? number(env.AGENTMESH_AGENT_SESSION_WAIT_SECONDS, 3),
    registerRetrySeconds:
      options.registerRetrySeconds ?? number(env.AGENTMESH_AGENT_REGISTER_RETRY_SECONDS, 30),
    resultCacheSize: options.resultCacheSize ?? number(env.AGENTMESH_AGENT_RESULT_CACHE_SIZE, 1024),
    certificateRefreshSeconds:
      options.certificateRefreshSeconds ?? number(env.AGENTMESH_AGENT_CERTIFICATE_REFRESH_SECONDS, 5),
    log: options.log ?? defaultLog,
  };
}
