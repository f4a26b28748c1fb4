// Mutual TLS with the mesh's certificate folder, and identities from peer certificates.
//
// The folder is the one `agentmesh certs` writes: ca.pem (the mesh CA) and
// <kind>/<name>.pem / .key per workload (agent/shouter.pem, client/alice.pem). The
// credentials follow these files (see certificates.js): a certificate rotated on disk is
// used for new connections and handshakes without a restart.

import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { RotatingCertificates } from './certificates.js';

/**
 * The files of one workload's identity.
 * @param {string} certsDir
 * @param {'agent' | 'client' | 'admin' | 'orchestrator'} kind
 * @param {string} name
 */
export function certFiles(certsDir, kind, name) {
  const files = {
    ca: path.join(certsDir, 'ca.pem'),
    cert: path.join(certsDir, kind, `${name}.pem`),
    key: path.join(certsDir, kind, `${name}.key`),
  };
  for (const file of Object.values(files)) {
    if (!fs.existsSync(file)) {
      throw new Error(`${file} is missing: issue it with \`agentmesh certs issue ${kind} ${name}\``);
    }
  }
  return files;
}

/**
 * Client-side credentials (towards an orchestrator), following rotated files.
 * @param {RotatingCertificates} certificates
 * @returns {grpc.ChannelCredentials}
 */
export function channelCredentials(certificates) {
  return grpc.experimental.createCertificateProviderChannelCredentials(certificates, certificates);
}

/**
 * Server-side credentials that require a client certificate of the mesh CA.
 * @param {RotatingCertificates} certificates
 * @returns {grpc.ServerCredentials}
 */
export function serverCredentials(certificates) {
  return grpc.experimental.createCertificateProviderServerCredentials(
    certificates,
    certificates,
    true,
  );
}

/**
 * The SPIFFE ID of the trust domain in the CA certificate (its URI SAN, spiffe://DOMAIN).
 * @param {string} caFile
 * @returns {string}
 */
export function trustDomainOf(caFile) {
  const cert = new X509Certificate(fs.readFileSync(caFile));
  const uri = (cert.subjectAltName ?? '').split(', ').find((/** @type {string} */ s) => s.startsWith('URI:spiffe://'));
  if (!uri) throw new Error(`${caFile} carries no spiffe:// URI SAN`);
  return uri.slice('URI:spiffe://'.length).split('/')[0];
}

/**
 * A peer's identity, from the URI SAN of its certificate: spiffe://DOMAIN/KIND/NAME.
 * @param {string | undefined} subjectAltName  as node's tls.PeerCertificate gives it
 * @returns {{uri: string, trustDomain: string, kind: string, name: string} | null}
 */
export function identityOf(subjectAltName) {
  for (const entry of (subjectAltName ?? '').split(', ')) {
    if (!entry.startsWith('URI:spiffe://')) continue;
    const uri = entry.slice(4);
    const [trustDomain, kind, name, ...rest] = uri.slice('spiffe://'.length).split('/');
    if (trustDomain && kind && name && rest.length === 0) return { uri, trustDomain, kind, name };
  }
  return null;
}
