// The agentmesh protos, loaded at run time with @grpc/proto-loader.
//
// google.protobuf.Struct, Value and ListValue travel as plain JSON, and Timestamp as a Date,
// in both directions: protobufjs "wrappers" convert them (see convertWellKnownTypes), so
// neither an agent nor a client ever builds {fields: {kind: ...}} by hand.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Where the .proto files are: $AGENTMESH_PROTOS, the package's own copy (protos/, put there
 * by `npm pack`), or the repository's protos/ two levels up.
 * @returns {string}
 */
export function protosDir() {
  const candidates = [
    process.env.AGENTMESH_PROTOS,
    path.join(here, '..', 'protos'),
    path.join(here, '..', '..', '..', 'protos'),
  ];
  for (const candidate of candidates) {
    if (candidate && fs.existsSync(path.join(candidate, 'agentmesh', 'v1', 'agent.proto'))) {
      return candidate;
    }
  }
  throw new Error(`agentmesh protos not found in ${candidates.filter(Boolean).join(', ')}`);
}

/**
 * Any JSON value for a google.protobuf.Value field of a request (ProvideInputRequest.value).
 * protobufjs checks that such a field holds an object before our converter sees it, so a
 * string, number or boolean must come wrapped: `{ value: new JsonValue('yes') }`.
 */
export class JsonValue {
  /** @param {unknown} value */
  constructor(value) {
    this.value = value;
  }
}

/** @param {unknown} json @param {protobuf.Type} valueType @returns {protobuf.Message} */
function valueMessage(json, valueType) {
  const root = valueType.root;
  if (json === null || json === undefined) return valueType.create({ nullValue: 0 });
  if (typeof json === 'number') return valueType.create({ numberValue: json });
  if (typeof json === 'string') return valueType.create({ stringValue: json });
  if (typeof json === 'boolean') return valueType.create({ boolValue: json });
  if (json instanceof Date) return valueType.create({ stringValue: json.toISOString() });
  if (Array.isArray(json)) {
    return valueType.create({ listValue: listMessage(json, root.lookupType('google.protobuf.ListValue')) });
  }
  if (typeof json === 'object') {
    const object = /** @type {Record<string, unknown>} */ (json);
    return valueType.create({ structValue: structMessage(object, root.lookupType('google.protobuf.Struct')) });
  }
  throw new TypeError(`${typeof json} is not JSON`);
}

/** @param {Record<string, unknown>} json @param {protobuf.Type} structType */
function structMessage(json, structType) {
  const valueType = structType.root.lookupType('google.protobuf.Value');
  /** @type {Record<string, protobuf.Message>} */
  const fields = {};
  for (const [key, value] of Object.entries(json)) {
    if (value !== undefined) fields[key] = valueMessage(value, valueType);
  }
  return structType.create({ fields });
}

/** @param {unknown[]} json @param {protobuf.Type} listType */
function listMessage(json, listType) {
  const valueType = listType.root.lookupType('google.protobuf.Value');
  return listType.create({ values: json.map((v) => valueMessage(v === undefined ? null : v, valueType)) });
}

/** @param {any} message @returns {unknown} */
function valueJson(message) {
  switch (message.kind) {
    case 'numberValue':
      return message.numberValue;
    case 'stringValue':
      return message.stringValue;
    case 'boolValue':
      return message.boolValue;
    case 'structValue':
      return structJson(message.structValue);
    case 'listValue':
      return listJson(message.listValue);
    default:
      return null;
  }
}

/** @param {any} message @returns {Record<string, unknown>} */
function structJson(message) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [key, value] of Object.entries(message.fields ?? {})) out[key] = valueJson(value);
  return out;
}

/** @param {any} message @returns {unknown[]} */
function listJson(message) {
  return (message.values ?? []).map(valueJson);
}

// `this` is the Type being converted (protobufjs binds it): see protobufjs's wrappers.js.
/** @type {Record<string, any>} */
const WRAPPERS = {
  '.google.protobuf.Struct': {
    fromObject(/** @type {any} */ object) {
      // Already a message (a Value wrapper building a nested Struct): leave it alone.
      if (object instanceof protobuf.Message) return object;
      return structMessage(object ?? {}, /** @type {any} */ (this));
    },
    toObject(/** @type {any} */ message) {
      return structJson(message);
    },
  },
  '.google.protobuf.Value': {
    fromObject(/** @type {any} */ object) {
      if (object instanceof protobuf.Message) return object;
      if (object instanceof JsonValue) return valueMessage(object.value, /** @type {any} */ (this));
      return valueMessage(object, /** @type {any} */ (this));
    },
    toObject(/** @type {any} */ message) {
      return valueJson(message);
    },
  },
  '.google.protobuf.ListValue': {
    fromObject(/** @type {any} */ object) {
      if (object instanceof protobuf.Message) return object;
      return listMessage(object ?? [], /** @type {any} */ (this));
    },
    toObject(/** @type {any} */ message) {
      return listJson(message);
    },
  },
  '.google.protobuf.Timestamp': {
    fromObject(/** @type {any} */ object) {
      if (object instanceof protobuf.Message) return object;
      const self = /** @type {any} */ (this);
      if (object instanceof Date) {
        const ms = object.getTime();
        return self.create({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
      }
      return self.fromObject(object);
    },
    toObject(/** @type {any} */ message) {
      const seconds = Number(message.seconds ?? 0);
      return new Date(seconds * 1000 + Math.floor((message.nanos ?? 0) / 1e6));
    },
  },
};

const LOADER_OPTIONS = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** @type {any} */
let loaded;

/**
 * Give our own copies of Struct, Value, ListValue and Timestamp their JSON converters, and
 * no one else's: protobufjs reads its global `wrappers` when a type is first used, so they
 * are set only while each of ours is used once here, then removed. Another proto-loader
 * user in the same process keeps protobuf's own shapes.
 * @param {any} v1
 */
function convertWellKnownTypes(v1) {
  Object.assign(protobuf.wrappers, WRAPPERS);
  try {
    const register = v1.Registry.service.RegisterAgent;
    const card = { capabilities: [{ inputSchema: { list: [1, 'a', null, true, { nested: {} }] } }] };
    const schema = register.requestDeserialize(register.requestSerialize({ card })).card.capabilities[0].inputSchema;
    const session = v1.Agent.service.Session;
    const deadline = new Date(1_000);
    const back = session.requestDeserialize(session.requestSerialize({ assignment: { deadline } }));
    if (schema.list[4].nested === undefined || back.assignment.deadline.getTime() !== 1_000) {
      throw new Error('the JSON converters of google.protobuf types did not take');
    }
  } finally {
    for (const name of Object.keys(WRAPPERS)) delete protobuf.wrappers[name];
  }
}

/**
 * The agentmesh.v1 package as gRPC service constructors and message types (loaded once).
 * @returns {{ v1: any }}
 */
export function agentmeshProtos() {
  if (!loaded) {
    const dir = protosDir();
    const definition = protoLoader.loadSync(
      ['agentmesh/v1/agent.proto', 'agentmesh/v1/orchestrator.proto'],
      { ...LOADER_OPTIONS, includeDirs: [dir] },
    );
    const v1 = /** @type {any} */ (grpc.loadPackageDefinition(definition)).agentmesh.v1;
    convertWellKnownTypes(v1);
    loaded = { v1 };
  }
  return loaded;
}
