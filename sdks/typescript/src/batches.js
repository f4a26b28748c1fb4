// Batches on the Session stream (protocol: "Batches on the Session"): several messages in
// one, read in order as if each had come alone. The rules and limits are those of the
// Python SDK and the orchestrator (agentmesh.wire.batches), so an orchestrator cannot tell
// which SDK an agent was written with. No I/O here: session.js writes and reads.

/**
 * Most messages in one batch: the receiver reads a batch in one go, and the first message
 * of a batch waits while the others are encoded.
 */
export const MAX_BATCH = 256;
/**
 * Most bytes of one batch, below the stream's own limit: past this, batching saves nothing,
 * and a peer configured for smaller messages than ours still takes what it took before.
 */
export const MAX_BATCH_BYTES = 1024 * 1024;
/** What a message costs inside a batch beyond its own bytes: its field tag and its length. */
const ENTRY_BYTES = 6;
/** The envelope of a batch: the outer message's tag and length. */
const ENVELOPE_BYTES = 16;
/** Why a batch inside a batch is refused (the protocol allows one level). */
export const NESTED = 'a batch may not hold a batch';

/**
 * `items` in order, in runs whose messages (of `size(item)` bytes each) fit one message of
 * `maxBytes` (and MAX_BATCH_BYTES), at most MAX_BATCH long. Lazy, so that a writer taking
 * only the first run measures no more than it takes (and one more).
 *
 * A message too large to share a batch makes a run of its own, as it would travel without
 * batches (and so does one that `size` says is Infinity: one that cannot be measured).
 * @template T
 * @param {Iterable<T>} items
 * @param {(item: T) => number} size
 * @param {number} [maxBytes]
 * @returns {Generator<T[], void, undefined>}
 */
export function* chunks(items, size, maxBytes = MAX_BATCH_BYTES) {
  const limit = Math.min(maxBytes, MAX_BATCH_BYTES);
  /** @type {T[]} */
  let run = [];
  let total = ENVELOPE_BYTES;
  for (const item of items) {
    const cost = size(item) + ENTRY_BYTES;
    if (run.length > 0 && (total + cost > limit || run.length >= MAX_BATCH)) {
      yield run;
      run = [];
      total = ENVELOPE_BYTES;
    }
    run.push(item);
    total += cost;
  }
  if (run.length > 0) yield run;
}

/**
 * The one message that carries `run`: the message itself when alone, else a batch.
 * @param {object[]} run
 * @returns {object}
 */
export function batched(run) {
  return run.length === 1 ? run[0] : { batch: { messages: run } };
}

/**
 * The messages `message` carries, in order (itself when it is no batch), and why any were
 * refused, each naming its field (`batch.messages[3]: ...`). `message` is as proto-loader
 * decodes it (oneofs: its `kind` names the field set).
 * @param {any} message
 * @returns {{carried: any[], refused: string[]}}
 */
export function unbatched(message) {
  if (message.kind !== 'batch') return { carried: [message], refused: [] };
  /** @type {any[]} */
  const carried = [];
  /** @type {string[]} */
  const refused = [];
  (message.batch?.messages ?? []).forEach((/** @type {any} */ inner, /** @type {number} */ index) => {
    if (inner.kind === 'batch') refused.push(`batch.messages[${index}]: ${NESTED}`);
    else carried.push(inner);
  });
  return { carried, refused };
}
