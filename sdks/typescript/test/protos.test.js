// The SDK's JSON converters of google.protobuf types apply to its own protos only.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { agentmeshProtos, protosDir } from '../src/index.js';

const roundTrip = (method, message) => method.requestDeserialize(method.requestSerialize(message));

test('Struct, Value, ListValue and Timestamp travel as JSON and Dates in the SDK', () => {
  const session = agentmeshProtos().v1.Agent.service.Session;
  const input = { text: 'x', n: 2.5, ok: true, none: null, list: [1, ['a'], { deep: { er: 'y' } }] };
  const deadline = new Date('2026-12-01T12:00:00.250Z');
  const back = roundTrip(session, { assignment: { assignmentId: 'a', input, deadline } });
  assert.deepEqual(back.assignment.input, input);
  assert.deepEqual(back.assignment.deadline, deadline);
});

test("another proto-loader user in the same process keeps protobuf's own shapes", () => {
  agentmeshProtos();
  const { agentmesh } = grpc.loadPackageDefinition(
    protoLoader.loadSync(['agentmesh/v1/agent.proto'], { includeDirs: [protosDir()], oneofs: true }),
  );
  const session = agentmesh.v1.Agent.service.Session;
  const input = { fields: { text: { stringValue: 'x' } } };
  const back = roundTrip(session, { assignment: { assignmentId: 'a', input } });
  // A protobuf Value: its oneof says which field is set (JSON would have no "kind").
  assert.equal(back.assignment.input.fields.text.kind, 'stringValue');
  assert.equal(back.assignment.input.fields.text.stringValue, 'x');
});
