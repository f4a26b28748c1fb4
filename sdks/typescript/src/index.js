// @agentmesh/sdk: agents and clients of an agentmesh mesh, for Node.js.
export { Agent, StepFailed } from './agent.js';
export { AgentMeshError, Client } from './client.js';
export { agentmeshProtos, protosDir } from './protos.js';
