// Certificate files as a grpc-js CertificateProvider that notices rotation.
//
// grpc-js ships a FileWatcherCertificateProvider, but its timer holds the process open
// forever; this one polls on an unref'd timer and is closed with the agent or client.

import fs from 'node:fs';

/** How often the files are read again to notice a rotated certificate. */
export const REFRESH_MS = 5_000;

/**
 * The CA, certificate and key of one workload, re-read every {@link REFRESH_MS}; listeners
 * hear the new files when any of them changed (a rotation writes all three atomically).
 * A grpc-js experimental.CertificateProvider.
 */
export class RotatingCertificates {
  /**
   * @param {{ca: string, cert: string, key: string}} files
   * @param {number} [refreshMs]  how often to look for rotated files
   */
  constructor(files, refreshMs = REFRESH_MS) {
    this.files = files;
    /** @type {Set<Function>} */
    this.caListeners = new Set();
    /** @type {Set<Function>} */
    this.identityListeners = new Set();
    this.current = this.read();
    /** How many times new files were taken after the first read. */
    this.rotations = 0;
    this.timer = setInterval(() => this.refresh(), refreshMs);
    this.timer.unref();
  }

  read() {
    return {
      ca: fs.readFileSync(this.files.ca),
      cert: fs.readFileSync(this.files.cert),
      key: fs.readFileSync(this.files.key),
    };
  }

  refresh() {
    let next;
    try {
      next = this.read();
    } catch {
      return; // mid-rotation (a file missing for a moment): keep the current ones
    }
    const same = ['ca', 'cert', 'key'].every((k) =>
      /** @type {any} */ (next)[k].equals(/** @type {any} */ (this.current)[k]),
    );
    if (same) return;
    this.current = next;
    this.rotations += 1;
    for (const listener of this.caListeners) listener({ caCertificate: next.ca });
    for (const listener of this.identityListeners) {
      listener({ certificate: next.cert, privateKey: next.key });
    }
  }

  /** @param {Function} listener */
  addCaCertificateListener(listener) {
    this.caListeners.add(listener);
    // Later, not now: grpc-js adds its own watcher only after this call returns, and an
    // update it cannot see would leave a server dropping every connection.
    setImmediate(() => this.caListeners.has(listener) && listener({ caCertificate: this.current.ca }));
  }

  /** @param {Function} listener */
  removeCaCertificateListener(listener) {
    this.caListeners.delete(listener);
  }

  /** @param {Function} listener */
  addIdentityCertificateListener(listener) {
    this.identityListeners.add(listener);
    setImmediate(
      () =>
        this.identityListeners.has(listener) &&
        listener({ certificate: this.current.cert, privateKey: this.current.key }),
    );
  }

  /** @param {Function} listener */
  removeIdentityCertificateListener(listener) {
    this.identityListeners.delete(listener);
  }

  /** Stop looking for rotated files. */
  close() {
    clearInterval(this.timer);
  }
}
