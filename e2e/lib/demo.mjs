// Builds the reservation demo once, starts it on 127.0.0.1 with a free port,
// waits until it answers, and stops it. Every wait is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let builtBinary = null;

/**
 * Path of the release build of `examples/reservation.rs`. Built once per test
 * process with `cargo build --release --example reservation` (a no-op when it is
 * up to date); `QG_DEMO_BIN` names a prebuilt binary instead.
 */
export function demoBinary() {
  if (builtBinary) return builtBinary;
  if (process.env.QG_DEMO_BIN) {
    builtBinary = process.env.QG_DEMO_BIN;
    return builtBinary;
  }
  const out = spawnSync(
    'cargo',
    ['build', '--release', '--example', 'reservation', '--message-format=json-render-diagnostics'],
    { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000, maxBuffer: 64 << 20 },
  );
  if (out.status !== 0) {
    throw new Error(`cargo build --release --example reservation failed (status ${out.status}, ${out.error ?? 'no spawn error'})`);
  }
  for (const line of out.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const msg = JSON.parse(line);
    if (msg.reason === 'compiler-artifact' && msg.target?.name === 'reservation' && msg.executable) {
      builtBinary = msg.executable;
    }
  }
  if (!builtBinary) throw new Error('cargo built no executable named reservation');
  return builtBinary;
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the demo with `flags` (an object: `{ 'admit-per-sec': 5 }` becomes
 * `--admit-per-sec 5`) and resolves once GET /metrics answers 200.
 * The secret goes in through QUEUEGATE_SECRET, not the process list.
 */
export async function startDemo(flags = {}) {
  // The free port can be taken between the probe and the demo's bind: try
  // another port if the demo exits at once saying so.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDemoOnce(flags);
    } catch (e) {
      if (attempt >= 3 || !/in use/i.test(String(e.message))) throw e;
    }
  }
}

async function startDemoOnce(flags) {
  const bin = demoBinary();
  const port = await freePort();
  const args = ['--addr', `127.0.0.1:${port}`];
  for (const [k, v] of Object.entries(flags)) args.push(`--${k}`, String(v));
  const env = { ...process.env, QUEUEGATE_SECRET: randomBytes(32).toString('hex') };
  const child = spawn(bin, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (chunk) => {
    log += chunk;
    if (log.length > 64_000) log = log.slice(-32_000);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const startedAt = Date.now();
  const base = `http://127.0.0.1:${port}`;
  const demo = {
    base,
    port,
    startedAt,
    args,
    log: () => log,
    async stop() {
      if (exited) return exited;
      child.kill('SIGTERM');
      const done = await Promise.race([exit, sleep(5000).then(() => null)]);
      if (done) return done;
      child.kill('SIGKILL');
      return Promise.race([exit, sleep(5000)]);
    },
    metrics: () => fetchMetrics(base),
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      throw new Error(`demo exited before it was ready (${JSON.stringify(exited)}): ${args.join(' ')}\n${log}`);
    }
    try {
      const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) {
        await res.text();
        return demo;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await demo.stop();
      throw new Error(`demo did not answer GET /metrics within 20 s: ${args.join(' ')}\n${log}`);
    }
    await sleep(100);
  }
}

/**
 * GET /metrics parsed into a Map from a series ("name" or 'name{code="x"}') to
 * its number, so a test can read `queuegate_rejections_total{code="missing"}`.
 */
export async function fetchMetrics(base) {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const text = await res.text();
  const series = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) series.set(m[1], Number(m[2]));
  }
  return { text, series, get: (key) => series.get(key) ?? 0 };
}

/**
 * People outside the browser who join and keep heart-beating (each with its
 * own qg_session cookie), so the person in the browser has a real queue ahead
 * of them. Heartbeats follow the server's retry_after_ms, at most every 1 s;
 * every loop stops at stop() or after `maxMs`.
 */
export class Crowd {
  constructor(base, { maxMs = 120_000 } = {}) {
    this.base = base;
    this.people = [];
    this.running = true;
    this.deadline = Date.now() + maxMs;
    this.loops = [];
  }

  /** Joins `n` people one after another; resolves with their join answers. */
  async join(n) {
    const joined = [];
    for (let i = 0; i < n; i++) {
      const res = await fetch(`${this.base}/queue/join`, {
        method: 'POST',
        headers: { 'queue-client-time': String(Date.now()) },
        signal: AbortSignal.timeout(5000),
      });
      const body = await res.json();
      if (res.status !== 200) throw new Error(`crowd join answered ${res.status}: ${JSON.stringify(body)}`);
      const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c.startsWith('qg_session='));
      const person = { cookie, last: body, first: body, rejection: null };
      this.people.push(person);
      joined.push(body);
      this.loops.push(this.#beat(person));
    }
    return joined;
  }

  async #beat(person) {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    while (this.running && Date.now() < this.deadline) {
      await sleep(Math.min(1000, Math.max(100, person.last.retry_after_ms ?? 500)));
      if (!this.running) return;
      try {
        const res = await fetch(`${this.base}/queue/heartbeat`, {
          method: 'POST',
          headers: { 'queue-ticket': person.last.ticket, cookie: person.cookie, 'queue-client-time': String(Date.now()) },
          signal: AbortSignal.timeout(5000),
        });
        const body = await res.json();
        if (res.status === 200) {
          person.last = body;
        } else {
          person.rejection = body;
          return;
        }
      } catch (e) {
        if (this.running) person.rejection = { code: 'network', detail: String(e) };
        return;
      }
    }
  }

  /** Whether every person of the crowd has been admitted. */
  allAdmitted() {
    return this.people.every((p) => p.last.admitted);
  }

  async stop() {
    this.running = false;
    await Promise.allSettled(this.loops);
  }
}
