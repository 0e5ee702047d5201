// The operator's page (/admin, queuegate::room::http::admin) in a real
// browser: it shows a wave of offline_resumed refusals within 2 s; pausing
// from the page keeps a waiting browser waiting and resuming lets it
// through; closing the room shows the operator's message on a waiting page;
// a missing or wrong token gets 401 and changes nothing; no token
// configured: no page at all.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot, until, watchVisible } from '../lib/browser.mjs';

const docsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs');
const TOKEN = randomBytes(24).toString('hex');
const tokenFile = path.join(mkdtempSync(path.join(tmpdir(), 'qg-admin-')), 'token');
writeFileSync(tokenFile, TOKEN + '\n', { mode: 0o600 });

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function demo(flags) {
  const d = await startDemo({ 'admin-token-file': tokenFile, ...flags });
  demos.push(d);
  return d;
}

/** The operator page, signed in with `token`. */
async function operator(base, token = TOKEN) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  await page.goto(base + '/admin');
  await page.locator('#token').fill(token);
  await page.locator('#login-form button').click();
  return page;
}

async function roomState(base, token = TOKEN) {
  const res = await fetch(base + '/admin/api/room', { headers: { authorization: 'Bearer ' + token } });
  assert.equal(res.status, 200);
  return res.json();
}

/** Someone outside the browser: joins, and heart-beats only when told. */
async function person(base) {
  const res = await fetch(base + '/queue/join', { method: 'POST', headers: { 'queue-client-time': String(Date.now()) } });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c.startsWith('qg_session='));
  return {
    body,
    slots: (offsetMs) => fetch(base + '/slots', {
      headers: { 'queue-ticket': body.ticket, cookie, 'queue-client-time': String(Date.now() + offsetMs) },
    }).then(async (r) => ({ status: r.status, body: await r.text() })),
    beat: () => fetch(base + '/queue/heartbeat', {
      method: 'POST',
      headers: { 'queue-ticket': body.ticket, cookie, 'queue-client-time': String(Date.now()) },
    }).then(async (r) => ({ status: r.status, body: await r.json() })),
  };
}

test('the page shows a wave of offline_resumed refusals within 2 s', { timeout: 90_000 }, async () => {
  const d = await demo({ 'admit-per-sec': 50, 'liveness-ms': 1000 });
  const page = await operator(d.base);
  await page.locator('#dash').waitFor({ state: 'visible' });
  // Two updates in: the page has a previous sample to take rates from.
  await until('the page updating', async () => (await page.locator('#refusals tr[data-code="offline_resumed"]').count()) > 0);
  await sleep(1200);
  const rateShown = async () => Number(await page.locator('#refusals tr[data-code="offline_resumed"] .rate').textContent());
  assert.equal(await rateShown(), 0, 'no refusals before the wave');

  // Thirty people are let in and look at the slots (their clocks a few
  // seconds apart, for the offset chart), go quiet past their 1 s deadline,
  // then come back at once.
  const crowd = [];
  for (let i = 0; i < 30; i++) crowd.push(await person(d.base));
  assert.ok(crowd.every((p) => p.body.admitted), 'an empty room at 50/s lets them in');
  for (const [i, p] of crowd.entries()) {
    const res = await p.slots(((i % 5) - 2) * 1500);
    assert.equal(res.status, 200, res.body);
  }
  await sleep(1500);
  const waveAt = Date.now();
  const answers = await Promise.all(crowd.map((p) => p.beat()));
  assert.ok(answers.every((a) => a.body.code === 'offline_resumed'), JSON.stringify(answers.map((a) => a.body.code)));
  await until('the wave on the page', async () => (await rateShown()) > 0, 2000, 50);
  const seenAfter = Date.now() - waveAt;
  assert.ok(seenAfter <= 2000, `shown after ${seenAfter} ms`);
  await page.locator('#chart-refusals polyline').first().waitFor({ state: 'attached', timeout: 2000 });
  const file = await shot(page, '09-admin-wave');
  copyFileSync(file, path.join(docsDir, 'admin-page.png'));
});

test('pausing from the page keeps a waiting browser waiting; resuming lets it through', { timeout: 90_000 }, async () => {
  const d = await demo({ 'admit-per-sec': 5, 'liveness-ms': 3000 });
  const admin = await operator(d.base);
  await admin.locator('#dash').waitFor({ state: 'visible' });
  await admin.locator('#pause').click();
  await until('paused', async () => (await roomState(d.base)).paused);
  await until('the page says paused', async () => (await admin.locator('#paused-state').textContent()) === 'paused');

  const device = await openDevice(browser);
  const form = watchVisible(device.page, ids.bookForm);
  await device.page.goto(d.base + '/');
  await until('a place on the page', async () => /\d/.test(await device.page.locator(ids.position).textContent()));
  // Several heartbeats while paused: still waiting, never the form.
  await sleep(5000);
  assert.equal(await device.page.locator(ids.wait).textContent(), 'admission is paused');
  assert.ok(device.answers.filter((a) => a.path === '/queue/heartbeat' && a.status === 200).length >= 2, 'heart-beating');
  assert.ok(device.answers.every((a) => !(a.body && a.body.admitted)), 'nobody admitted while paused');
  assert.equal((await roomState(d.base)).admitted, 0);

  await admin.locator('#resume').click();
  await device.page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 10_000 });
  assert.ok(await form.stop(), 'the form appeared after resuming');
  assert.equal((await roomState(d.base)).paused, false);
  await device.context.close();
});

test('closing the room shows its message on a waiting page', { timeout: 90_000 }, async () => {
  const d = await demo({ 'admit-per-sec': 0, 'liveness-ms': 3000 });
  const admin = await operator(d.base);
  await admin.locator('#dash').waitFor({ state: 'visible' });
  const device = await openDevice(browser);
  await device.page.goto(d.base + '/');
  await until('a place on the page', async () => /\d/.test(await device.page.locator(ids.position).textContent()));

  const message = 'Sold out: every slot of this round is booked. The next round opens on Monday.';
  await admin.locator('#close-message').fill(message);
  await admin.locator('#close').click();
  await until('the page says closed', async () => (await admin.locator('#closed-state').textContent()).startsWith('closed'));
  const refusal = await rejectionSeen(device, 'room_closed', 10_000);
  assert.equal(refusal.status, 410);
  assert.equal(refusal.body.detail, message);
  await device.page.locator(ids.error).waitFor({ state: 'visible' });
  assert.equal(await device.page.locator(ids.error).textContent(), message);
  assert.equal(await device.page.locator(ids.status).textContent(), 'The queue is closed.');
  assert.ok(await device.page.locator(ids.rejoin).isHidden(), 'no rejoin button on a closed room');
  await shot(device.page, '09-closed');
  // New joins are refused too.
  const late = await fetch(d.base + '/queue/join', { method: 'POST' });
  assert.equal(late.status, 410);
  assert.equal((await late.json()).code, 'room_closed');
  await device.context.close();
});

test('a missing or wrong admin token gets 401 and changes nothing; no token configured: 404', { timeout: 60_000 }, async () => {
  const d = await demo({ 'admit-per-sec': 7 });
  const beforeState = await roomState(d.base);
  const wrong = TOKEN.slice(0, -1) + (TOKEN.endsWith('0') ? '1' : '0');
  for (const auth of [null, 'Bearer ' + wrong, 'Bearer ', wrong, 'Basic ' + TOKEN]) {
    const headers = { 'content-type': 'application/json' };
    if (auth !== null) headers.authorization = auth;
    for (const [method, p, body] of [
      ['GET', '/admin/api/room', undefined],
      ['POST', '/admin/api/room', { paused: true, admit_per_sec: 0 }],
      ['POST', '/admin/api/close', { message: 'closed by nobody' }],
      ['POST', '/admin/api/amnesty', { from_ms: 0, until_ms: 1 }],
    ]) {
      const res = await fetch(d.base + p, { method, headers, body: body && JSON.stringify(body) });
      assert.equal(res.status, 401, `${method} ${p} with ${auth && auth.slice(0, 6)}`);
      assert.ok(!(await res.text()).includes(TOKEN));
    }
  }
  const afterState = await roomState(d.base);
  assert.deepEqual(
    { ...afterState, waiting: 0, admitted: 0 },
    { ...beforeState, waiting: 0, admitted: 0 },
  );
  assert.equal(afterState.admit_per_sec, 7);
  assert.equal(afterState.paused, false);
  // The page with a wrong token: refused, back to the sign-in form.
  const page = await operator(d.base, wrong);
  await until('the refusal on the page', async () => (await page.locator('#login-error').textContent()).includes('refused'));
  assert.ok(await page.locator('#dash').isHidden());

  // A demo without an admin token has no /admin at all.
  const plain = await startDemo({});
  demos.push(plain);
  for (const p of ['/admin', '/admin/api/room']) {
    const res = await fetch(plain.base + p, { headers: { authorization: 'Bearer ' + TOKEN } });
    assert.equal(res.status, 404, p);
  }
});
