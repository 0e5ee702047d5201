// Scenario 3: a fail-open queue script, like the one of July 2021: when the
// queue call hits a network error it lets the person through and calls the
// booking route straight away. The server must refuse it and book nothing.
//
// The script is served by the test at the demo's own origin (route
// interception), so it runs with the demo's cookies like a real page would.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { launchChromium, openDevice, rejectionSeen, shot, until } from '../lib/browser.mjs';

const failOpenPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Fail-open queue (2021)</title>
<style>body{font:16px system-ui,sans-serif;margin:2em} #result{white-space:pre-wrap;border:1px solid #999;padding:1em}</style>
</head><body>
<h1>Vaccine booking (fail-open queue script)</h1>
<p id="state">joining…</p>
<pre id="result"></pre>
<script>
let ticket = null;
const now = () => ({ 'queue-client-time': String(Date.now()) });
async function book() {
  const headers = now();
  if (ticket) headers['queue-ticket'] = ticket;
  const res = await fetch('/reserve', { method: 'POST', headers });
  document.getElementById('result').textContent = 'POST /reserve → ' + res.status + '\\n' + await res.text();
  document.body.dataset.done = 'yes';
}
async function waitInQueue() {
  try {
    const joined = await fetch('/queue/join', { method: 'POST', headers: now() });
    ticket = (await joined.json()).ticket;
    document.getElementById('state').textContent = 'waiting…';
    for (;;) {
      await new Promise((r) => setTimeout(r, 300));
      const hb = await fetch('/queue/heartbeat', { method: 'POST', headers: { ...now(), 'queue-ticket': ticket } });
      const body = await hb.json();
      if (hb.ok) ticket = body.ticket;
      if (body.admitted) break;
    }
  } catch (e) {
    // The 2021 bug: a network error in the queue means "go ahead".
    document.getElementById('state').textContent = 'network error (' + e + '): letting you through';
    if (navigator.onLine) return book();
    window.addEventListener('online', () => book(), { once: true });
  }
}
waitInQueue();
</script></body></html>`;

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

async function serveFailOpen(device, demo) {
  const url = demo.base + '/fail-open-2021';
  await device.context.route(url, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: failOpenPage }));
  return url;
}

test('queue server unreachable, script books without a ticket: missing, nothing booked', { timeout: 60_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 3000 });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page, context } = device;
  // The queue's join call fails at the network level.
  await context.route(demo.base + '/queue/join', (route) => route.abort('connectionrefused'));
  await page.goto(await serveFailOpen(device, demo));
  await page.locator('body[data-done="yes"]').waitFor({ timeout: 15_000 });
  await shot(page, '03-fail-open-missing');

  const rejected = await rejectionSeen(device, 'missing');
  assert.equal(rejected.path, '/reserve');
  assert.ok(rejected.status >= 400 && rejected.status < 500, `4xx, got ${rejected.status}`);
  assert.match(await page.locator('#result').textContent(), /"code"\s*:\s*"missing"/);
  assert.ok(!device.answers.some((a) => a.path === '/reserve' && a.status < 400), 'nothing booked');

  const m = await demo.metrics();
  assert.equal(m.get('queuegate_admissions_total'), 0, 'no protected request let through');
  assert.ok(m.get('queuegate_rejections_total{code="missing"}') >= 1);
});

test('airplane mode while waiting, script books with its waiting ticket: not_admitted, nothing booked', { timeout: 60_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 3000 });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page, context } = device;
  await page.goto(await serveFailOpen(device, demo));
  await until('a heartbeat answer', async () => {
    await device.settled();
    return device.answers.some((a) => a.path === '/queue/heartbeat' && a.status === 200 && a.body.admitted === false);
  });
  // Airplane mode: the next heartbeat fails; the script books once back online.
  await context.setOffline(true);
  await page.waitForFunction(() => document.getElementById('state').textContent.startsWith('network error'), null, { timeout: 10_000 });
  await context.setOffline(false);
  await page.locator('body[data-done="yes"]').waitFor({ timeout: 15_000 });
  await shot(page, '03-fail-open-not-admitted');

  const rejected = await rejectionSeen(device, 'not_admitted');
  assert.equal(rejected.path, '/reserve');
  assert.ok(rejected.status >= 400 && rejected.status < 500, `4xx, got ${rejected.status}`);
  assert.match(await page.locator('#result').textContent(), /"code"\s*:\s*"not_admitted"/);
  assert.ok(!device.answers.some((a) => a.path === '/reserve' && a.status < 400), 'nothing booked');

  const m = await demo.metrics();
  assert.equal(m.get('queuegate_admissions_total'), 0, 'no protected request let through');
  assert.ok(m.get('queuegate_rejections_total{code="not_admitted"}') >= 1);
});
