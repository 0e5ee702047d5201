// Scenario 10: the quickstart (examples/quickstart.rs), whose page uses only
// the client the crate ships and the room's endpoints the crate ships. The
// page waits behind a crowd, is admitted, and proceeds (POST /buy) exactly
// once; going offline past the deadline gets offline_resumed, which the
// client reports instead of proceeding.
//
// Settings: ADMIT_PER_SEC=1 and LIVENESS_MS=3000 (every deadline 3 s: the
// quickstart grants the same deadline near the front and far from it).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { Crowd, freePort } from '../lib/demo.mjs';
import { launchChromium, openDevice, rejectionSeen, shot, until } from '../lib/browser.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The quickstart's binary: `QG_QUICKSTART_BIN`, or a debug build with the
 * `axum` feature (`--all-features`, as the Rust tests build, so it reuses
 * their build).
 */
let built = null;
function quickstartBinary() {
  built ??= process.env.QG_QUICKSTART_BIN || buildQuickstart();
  return built;
}

function buildQuickstart() {
  const out = spawnSync(
    'cargo',
    ['build', '--all-features', '--example', 'quickstart', '--message-format=json-render-diagnostics'],
    { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000, maxBuffer: 64 << 20 },
  );
  if (out.status !== 0) throw new Error(`cargo build --example quickstart failed (status ${out.status})`);
  for (const line of out.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const msg = JSON.parse(line);
    if (msg.reason === 'compiler-artifact' && msg.target?.name === 'quickstart' && msg.executable) return msg.executable;
  }
  throw new Error('cargo built no executable named quickstart');
}

/** Starts the quickstart on a free port; resolves once GET / answers. */
async function startQuickstart(env) {
  const bin = quickstartBinary();
  const port = await freePort();
  const child = spawn(bin, [], {
    cwd: repoRoot,
    env: { ...process.env, ...env, ADDR: `127.0.0.1:${port}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.setEncoding('utf8').on('data', (c) => (log += c));
  child.stderr.setEncoding('utf8').on('data', (c) => (log += c));
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  const app = {
    base: `http://127.0.0.1:${port}`,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      if (!(await Promise.race([exit, sleep(5000).then(() => null)]))) child.kill('SIGKILL');
    },
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) throw new Error(`quickstart exited (${JSON.stringify(exited)}):\n${log}`);
    try {
      const res = await fetch(app.base + '/', { signal: AbortSignal.timeout(1000) });
      if (res.ok) return app;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await app.stop();
      throw new Error(`quickstart did not answer within 20 s:\n${log}`);
    }
    await sleep(100);
  }
}

/** A device on the quickstart's page, recording every protected call. */
async function openPage(app) {
  const device = await openDevice(browser);
  device.buys = [];
  device.page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/buy') device.buys.push({ ticket: req.headers()['queue-ticket'] ?? null });
  });
  await device.page.goto(app.base + '/');
  return device;
}

const text = (page, id) => page.locator('#' + id).textContent();

let browser;
const apps = [];
const crowds = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await Promise.all(crowds.map((c) => c.stop()));
  await browser?.close();
  await Promise.all(apps.map((a) => a.stop()));
});

test('the quickstart page waits, is admitted and proceeds once', { timeout: 120_000 }, async () => {
  const app = await startQuickstart({ ADMIT_PER_SEC: '1', LIVENESS_MS: '3000' });
  apps.push(app);
  const crowd = new Crowd(app.base);
  crowds.push(crowd);
  await crowd.join(4);

  const device = await openPage(app);
  const { page } = device;
  // Waiting: the client's words, with the place, and no protected call.
  const waiting = await until('a place in line', async () => {
    const t = await text(page, 'status');
    return /You are number \d+ in line/.test(t) && t;
  });
  assert.ok(Number(/number (\d+)/.exec(waiting)[1]) >= 5, `behind the crowd: ${waiting}`);
  assert.equal(await page.locator('#status').getAttribute('aria-live'), 'polite');
  assert.equal(device.buys.length, 0, 'no protected call while waiting');
  await shot(page, '10-quickstart-waiting');

  // Admitted: the page proceeds, once, with an admitted ticket.
  await until('the purchase', async () => (await text(page, 'result')).includes('You have a ticket'), 40_000);
  await device.settled();
  const admittedAt = device.answers.findIndex((a) => a.status === 200 && a.body.admitted === true);
  assert.ok(admittedAt >= 0, 'an admitted answer came first');
  assert.equal(device.buys.length, 1, 'one protected call');
  assert.ok(device.buys[0].ticket, 'with the ticket');
  assert.ok(
    device.answers.some((a) => a.status === 200 && a.body.admitted === true && a.body.ticket === device.buys[0].ticket),
    'the ticket sent is one the room handed out as admitted',
  );
  await shot(page, '10-quickstart-admitted');
  // And never again (the page left the room after its purchase).
  await sleep(4000);
  assert.equal(device.buys.length, 1, 'still one protected call');
});

test('the quickstart page offline past the deadline: offline_resumed, reported, never proceeds', { timeout: 120_000 }, async () => {
  const livenessMs = 3000;
  const app = await startQuickstart({ ADMIT_PER_SEC: '1', LIVENESS_MS: String(livenessMs) });
  apps.push(app);
  const crowd = new Crowd(app.base);
  crowds.push(crowd);
  await crowd.join(4);

  const device = await openPage(app);
  const { page, context } = device;
  await until('a place in line', async () => /You are number \d+ in line/.test(await text(page, 'status')));

  // Airplane mode until everyone ahead is admitted and well past the deadline:
  // the turn came while the person was away.
  await context.setOffline(true);
  const offlineAt = Date.now();
  await until('everyone ahead admitted', async () => crowd.allAdmitted(), 30_000, 200);
  await sleep(Math.max(2000, offlineAt + 3 * livenessMs - Date.now()));
  assert.match(await text(page, 'status'), /connection lost/i, 'the client says the connection is lost');
  await shot(page, '10-quickstart-offline');
  await context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  await until('the refusal on the page', async () => (await text(page, 'status')) === rejection.body.detail);
  await shot(page, '10-quickstart-offline-resumed');
  await sleep(2000);
  assert.equal(device.buys.length, 0, 'never proceeded');
  assert.equal(await text(page, 'result'), '');
  assert.ok(!device.answers.some((a) => a.status === 200 && a.body.admitted === true), 'no admitted ticket reached the page');
});
