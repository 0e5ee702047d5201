// Scenario 8: a page that uses only the browser client shipped in the crate
// (GET /queue/client.js). The host page is served by the test at the demo's
// own origin (route interception), so its calls are same-origin and carry the
// demo's cookie like a real host page. The page books (POST /reserve through
// room.fetch) as soon as the client says `admitted`, and never otherwise:
// whatever goes wrong, it must never proceed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Crowd, startDemo } from '../lib/demo.mjs';
import { launchChromium, openDevice, rejectionSeen, shot, until } from '../lib/browser.mjs';

const hostPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host page using the shipped client</title>
<style>body{font:16px system-ui,sans-serif;margin:2em} #booking{white-space:pre-wrap}</style>
</head><body>
<h1>Booking (queuegate client)</h1>
<p id="text" aria-live="polite">loading…</p>
<p id="booking"></p>
<script type="module">
import { WaitingRoom } from '/queue/client.js';
window.events = [];
window.proceeded = 0;
const korean = {
  joining: '대기열에 들어가는 중입니다…',
  waiting: '대기 순번 {position}번, 앞에 {ahead}명이 있습니다. 예상 대기 시간: {wait}.',
  admitted: '차례가 되었습니다. 지금 예약하세요.',
  paused: '입장이 잠시 멈췄습니다',
  seconds: '약 {n}초',
  minutes: '약 {n}분',
  refused: '대기열에서 빠졌습니다. 다시 줄을 서 주세요.',
  codes: { ended: '대기 순번이 끝났습니다. 다시 줄을 서 주세요.' },
};
const room = new WaitingRoom({
  base: '/queue',
  messages: location.search === '?lang=ko' ? korean : undefined,
  onAdmitted: async () => {
    // The host's protected call: once, with the admitted ticket.
    window.proceeded += 1;
    const res = await room.fetch('/reserve', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ slot: 'S12' }),
    });
    window.bookingResult = { status: res.status, body: await res.json() };
    document.getElementById('booking').textContent = JSON.stringify(window.bookingResult);
    room.leave();
  },
});
for (const type of ['update', 'admitted', 'retrying', 'offline', 'online', 'refused', 'closed', 'left']) {
  room.addEventListener(type, (e) => {
    window.events.push({ type, at: Date.now(), ...e.detail });
    if (e.detail.text) document.getElementById('text').textContent = e.detail.text;
  });
}
window.room = room;
room.join();
</script></body></html>`;

let browser;
const demos = [];
const crowds = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await Promise.all(crowds.map((c) => c.stop()));
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A device whose page is the host page above, on the demo's origin. */
async function openHost(demo) {
  const device = await openDevice(browser);
  const url = demo.base + '/client-host';
  await device.context.route((u) => u.href.startsWith(url), (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: hostPage }));
  // Every protected call the page makes, with the ticket it sent.
  device.protectedCalls = [];
  device.page.on('request', (req) => {
    const path = new URL(req.url()).pathname;
    if (path === '/reserve' || path === '/slots') device.protectedCalls.push({ path, ticket: req.headers()['queue-ticket'] ?? null });
  });
  device.events = () => device.page.evaluate(() => window.events);
  device.open = (query = '') => device.page.goto(url + query);
  return device;
}

const okAnswers = (device) => device.answers.filter((a) => (a.path === '/queue/join' || a.path === '/queue/heartbeat') && a.status === 200);

test('the shipped client is served as a JavaScript module', async () => {
  const demo = await startDemo({ 'admit-per-sec': 0 });
  demos.push(demo);
  const res = await fetch(demo.base + '/queue/client.js');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.match(res.headers.get('cache-control') ?? '', /max-age=\d+/);
  assert.match(await res.text(), /export class WaitingRoom/);
});

test('waits, is admitted, proceeds once with the admitted ticket', { timeout: 90_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 1, 'liveness-ms': 3000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  await crowd.join(3);

  const device = await openHost(demo);
  await device.open();
  const waiting = await until('a waiting update', async () =>
    (await device.events()).find((e) => e.type === 'update' && e.state === 'waiting'));
  assert.ok(waiting.ahead >= 1 && waiting.position > 1, JSON.stringify(waiting));
  assert.equal(waiting.admitted, false);
  assert.match(waiting.text, new RegExp(`number ${waiting.position} in line, ${waiting.ahead} ahead`));
  assert.match(waiting.text, /about \d+ (s|min)/);
  assert.equal(await device.page.evaluate(() => window.room.ticket), null, 'no ticket for the page while waiting');
  assert.equal(device.protectedCalls.length, 0, 'no protected call while waiting');
  await shot(device.page, '08-client-waiting');

  await device.page.waitForFunction(() => window.bookingResult, null, { timeout: 40_000 });
  await shot(device.page, '08-client-booked');
  const booking = await device.page.evaluate(() => window.bookingResult);
  assert.equal(booking.status, 200, JSON.stringify(booking));
  assert.ok(booking.body.reservation_id, 'a reservation id');
  await device.settled();
  const events = await device.events();
  assert.equal(events.filter((e) => e.type === 'admitted').length, 1, 'admitted once');
  assert.equal(await device.page.evaluate(() => window.proceeded), 1, 'proceeded once');
  assert.equal(device.protectedCalls.length, 1, 'one protected call');
  const sent = device.protectedCalls[0].ticket;
  const admittedAnswer = okAnswers(device).find((a) => a.body.admitted === true && a.body.ticket === sent);
  assert.ok(admittedAnswer, 'the ticket sent is the one of an admitted answer');
  assert.ok(events.findIndex((e) => e.type === 'update' && e.state === 'waiting') < events.findIndex((e) => e.type === 'admitted'));

  // leave(): no more heartbeats.
  assert.equal(await device.page.evaluate(() => window.room.state), 'left');
  const beats = device.answers.filter((a) => a.path === '/queue/heartbeat').length;
  await sleep(3000);
  await device.settled();
  assert.equal(device.answers.filter((a) => a.path === '/queue/heartbeat').length, beats, 'no heartbeat after leave()');
  const m = await demo.metrics();
  assert.equal(m.get('queuegate_admissions_total'), 1, 'one protected request let through');
});

test('offline past the deadline: the client reports offline_resumed and never proceeds', { timeout: 120_000 }, async () => {
  const livenessMs = 3000;
  const demo = await startDemo({ 'admit-per-sec': 1, 'liveness-ms': livenessMs, 'max-jump-ms': 5000 });
  demos.push(demo);
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  await crowd.join(4);

  const device = await openHost(demo);
  await device.open();
  await until('a waiting update', async () => (await device.events()).some((e) => e.type === 'update' && e.state === 'waiting'));

  // Airplane mode until everyone ahead is admitted and well past the deadline:
  // the turn came while the person was away.
  await device.context.setOffline(true);
  const offlineAt = Date.now();
  await until('everyone ahead admitted', async () => crowd.allAdmitted(), 30_000, 200);
  await sleep(Math.max(2000, offlineAt + 3 * livenessMs - Date.now()));
  const whileOffline = await device.events();
  assert.ok(whileOffline.some((e) => e.type === 'offline'), 'the client reported going offline');
  assert.ok(whileOffline.some((e) => e.type === 'retrying' && e.reason === 'network'), 'the client reported the lost connection');
  assert.match(await device.page.locator('#text').textContent(), /connection lost/i);
  await shot(device.page, '08-client-offline');
  await device.context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  const refused = await until('the refused event', async () => (await device.events()).find((e) => e.type === 'refused'));
  assert.equal(refused.code, 'offline_resumed');
  assert.equal(refused.detail, rejection.body.detail);
  assert.equal(refused.text, rejection.body.detail, "the server's words when no message replaces them");
  assert.equal(await device.page.locator('#text').textContent(), rejection.body.detail);
  await shot(device.page, '08-client-offline-resumed');
  const events = await device.events();
  assert.ok(!events.some((e) => e.type === 'admitted'), 'never admitted');
  assert.equal(await device.page.evaluate(() => window.proceeded), 0, 'never proceeded');
  assert.equal(device.protectedCalls.length, 0, 'no protected call');
  assert.equal(await device.page.evaluate(() => [window.room.state, window.room.ticket].join()), 'refused,');
  // Nothing can be sent on the page's behalf any more.
  const attempt = await device.page.evaluate(() => window.room.fetch('/slots').then(() => 'sent', (e) => e.message));
  assert.match(attempt, /not admitted/);
  assert.equal(device.protectedCalls.length, 0);
  assert.equal((await demo.metrics()).get('queuegate_admissions_total'), 0);
});

test('a 503 with Retry-After is retried after the delay, with jitter, and never proceeds', { timeout: 90_000 }, async () => {
  // The heartbeat's retries must fit in its deadline (10 s near the front
  // here): most of the overload hits the join, which has none yet.
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 20000 });
  demos.push(demo);
  const device = await openHost(demo);
  const calls = []; // { path, at, injected }
  const inject = { '/queue/join': 3, '/queue/heartbeat': 1 };
  const overloaded = JSON.stringify({
    type: 'urn:queuegate:problem:store_unavailable',
    title: 'Queue state unavailable',
    status: 503,
    detail: 'the queue is overloaded: please retry',
    code: 'store_unavailable',
    retry_after: 1,
  });
  for (const path of Object.keys(inject)) {
    await device.context.route(demo.base + path, (route) => {
      const injected = inject[path] > 0;
      calls.push({ path, at: Date.now(), injected });
      if (!injected) return route.continue();
      inject[path] -= 1;
      return route.fulfill({ status: 503, contentType: 'application/problem+json', headers: { 'retry-after': '1' }, body: overloaded });
    });
  }
  await device.open();
  await until('the injected 503s and a real heartbeat after them', () =>
    calls.filter((c) => c.path === '/queue/heartbeat' && !c.injected).length >= 1, 40_000);
  await device.settled();

  // Every call after an injected 503 came at least Retry-After (1 s) later,
  // and at most half as long again (plus scheduling slack).
  const gaps = [];
  for (let i = 0; i + 1 < calls.length; i++) {
    if (calls[i].injected) gaps.push(calls[i + 1].at - calls[i].at);
  }
  assert.equal(gaps.length, 4, JSON.stringify(calls));
  for (const gap of gaps) assert.ok(gap >= 1000 && gap <= 2300, `retried after ${gap} ms: ${JSON.stringify(gaps)}`);
  const events = await device.events();
  const retries = events.filter((e) => e.type === 'retrying');
  assert.equal(retries.length, 4);
  for (const r of retries) {
    assert.equal(r.reason, 'busy');
    assert.equal(r.code, 'store_unavailable');
    assert.ok(r.inMs >= 1000 && r.inMs <= 1500, `waits ${r.inMs} ms`);
  }
  const waits = retries.map((r) => r.inMs);
  assert.ok(Math.max(...waits) - Math.min(...waits) > 1, `jittered: ${waits.join(', ')}`);
  // After the overload: still waiting in line, the place kept, nothing let through.
  await until('a waiting update after the retries', async () =>
    (await device.events()).some((e, i, all) => e.type === 'update' && e.state === 'waiting' && i > all.indexOf(all.findLast((x) => x.type === 'retrying'))));
  assert.ok(!events.some((e) => e.type === 'admitted' || e.type === 'refused'));
  assert.equal(await device.page.evaluate(() => window.proceeded), 0);
  assert.equal(device.protectedCalls.length, 0);
  await shot(device.page, '08-client-after-503');
});

test('network errors and unreadable answers never make the page proceed', { timeout: 90_000 }, async () => {
  // Anyone is admitted at once: the only thing between the page and the
  // booking is a successful answer of the room.
  const demo = await startDemo({ 'admit-per-sec': 50, 'liveness-ms': 3000 });
  demos.push(demo);
  const device = await openHost(demo);
  const broken = [
    (route) => route.abort('internetdisconnected'),
    (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<html><body>OK</body></html>' }),
    (route) => route.fulfill({ status: 200, contentType: 'application/json', body: '{"admitted":true,"ticket":""}' }),
    (route) => route.fulfill({ status: 502, contentType: 'text/html', body: '<h1>Bad gateway</h1>' }),
  ];
  const seen = [];
  await device.context.route(demo.base + '/queue/join', (route) => {
    const next = broken.shift();
    seen.push({ at: Date.now(), broken: Boolean(next) });
    return next ? next(route) : route.continue();
  });
  await device.open();
  // While the room cannot be reached, the page holds nothing and sends nothing.
  await until('three failures reported', async () =>
    (await device.events()).filter((e) => e.type === 'retrying').length >= 3, 30_000);
  assert.equal(await device.page.evaluate(() => window.room.fetch('/reserve', { method: 'POST' }).then(() => 'sent', (e) => e.message)), 'queuegate: not admitted');
  assert.equal(device.protectedCalls.length, 0, 'no protected call before a real answer');
  assert.equal(await device.page.evaluate(() => window.room.ticket), null);

  await device.page.waitForFunction(() => window.bookingResult, null, { timeout: 40_000 });
  const events = await device.events();
  const retries = events.filter((e) => e.type === 'retrying');
  assert.equal(retries.length, 4, JSON.stringify(retries));
  assert.deepEqual(retries.map((r) => r.reason), ['network', 'network', 'network', 'busy']);
  // Backoff without Retry-After: 1 s, 2 s, 4 s, 8 s, each up to half again.
  retries.forEach((r, i) => assert.ok(r.inMs >= 1000 * 2 ** i && r.inMs <= 1500 * 2 ** i, `retry ${i}: ${r.inMs} ms`));
  const admittedAt = events.findIndex((e) => e.type === 'admitted');
  assert.ok(admittedAt > events.indexOf(retries[3]), 'admitted only after the real answer');
  assert.equal(events.filter((e) => e.type === 'admitted').length, 1);
  assert.equal(await device.page.evaluate(() => window.proceeded), 1);
  assert.equal(device.protectedCalls.length, 1, 'proceeded once');
  await device.settled();
  const realJoin = okAnswers(device).find((a) => a.path === '/queue/join' && a.body.ticket);
  assert.equal(realJoin.body.admitted, true);
  assert.ok(okAnswers(device).some((a) => a.body.ticket === device.protectedCalls[0].ticket), 'sent the ticket the room issued');
  assert.equal((await device.page.evaluate(() => window.bookingResult)).status, 200);
  assert.equal(seen.filter((s) => !s.broken).length, 1, 'one real join');
});

test('a page looked at again, or resumed from frozen, heart-beats at once', { timeout: 60_000 }, async () => {
  // Deadline 10 s near the front: the next heartbeat is 4-6 s away.
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 30000 });
  demos.push(demo);
  const device = await openHost(demo);
  const beats = [];
  device.page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/queue/heartbeat') beats.push(Date.now());
  });
  await device.open();
  await until('a waiting update', async () => (await device.events()).some((e) => e.type === 'update' && e.state === 'waiting'));
  await sleep(1200);
  assert.equal(beats.length, 0, 'no heartbeat due yet');

  // Hidden, then visible again, as the browser reports a tab switched away
  // from and back to (headless Chromium keeps its pages visible, so the test
  // sets the document's visibility and sends the event itself).
  const setVisibility = (state) => device.page.evaluate((s) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => s === 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  }, state);
  await setVisibility('hidden');
  await sleep(500);
  assert.equal(beats.length, 0, 'no heartbeat when hidden');
  const shownAt = Date.now();
  await setVisibility('visible');
  await until('a heartbeat on becoming visible', () => beats.length === 1, 3000, 20);
  assert.ok(beats[0] - shownAt < 1000, `heartbeat ${beats[0] - shownAt} ms after becoming visible`);
  await until('its answer', async () => (await device.events()).filter((e) => e.type === 'update' && e.state === 'waiting').length >= 2);

  // A page the browser froze and resumed (page lifecycle `resume`).
  // Chromium headless here fires no lifecycle events for
  // Page.setWebLifecycleState, so the event is dispatched as the browser would.
  await sleep(1200);
  const resumedAt = Date.now();
  await device.page.evaluate(() => document.dispatchEvent(new Event('resume')));
  await until('a heartbeat on resume', () => beats.length === 2, 3000, 20);
  assert.ok(beats[1] - resumedAt < 1000, `heartbeat ${beats[1] - resumedAt} ms after resume`);
  await device.settled();
  const refusals = device.answers.filter((a) => a.status >= 400);
  assert.equal(refusals.length, 0, `early heartbeats are fine: ${JSON.stringify(refusals)}`);
  assert.equal(device.protectedCalls.length, 0);
});

test('a room closed by the operator, unknown refusals and Korean texts', { timeout: 60_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 3000 });
  demos.push(demo);
  const device = await openHost(demo);
  const operator = '오늘 예약은 마감되었습니다. 내일 09:00에 다시 열립니다.';
  const problem = (status, code, detail) => (route) =>
    route.fulfill({ status, contentType: 'application/problem+json', body: JSON.stringify({ status, code, detail }) });
  // The first join reaches the room; then the operator closes it; later
  // joins meet refusals the client has never heard of.
  const joins = [
    (route) => route.continue(),
    problem(418, 'brand_new_code', 'a refusal from a newer server'),
    (route) => route.fulfill({ status: 404, contentType: 'text/plain', body: 'not found' }),
    problem(410, 'ended', 'this place in the queue has ended: please rejoin the queue'),
  ];
  await device.context.route(demo.base + '/queue/join', (route) => joins.shift()(route));
  await device.context.route(demo.base + '/queue/heartbeat', problem(403, 'room_closed', operator));
  await device.open('?lang=ko');

  const waiting = await until('a waiting update', async () => (await device.events()).find((e) => e.type === 'update' && e.state === 'waiting'));
  assert.equal(waiting.text, `대기 순번 ${waiting.position}번, 앞에 ${waiting.ahead}명이 있습니다. 예상 대기 시간: 입장이 잠시 멈췄습니다.`);
  const closed = await until('the closed event', async () => (await device.events()).find((e) => e.type === 'closed'));
  assert.deepEqual([closed.code, closed.status, closed.detail, closed.text], ['room_closed', 403, operator, operator]);
  assert.equal(await device.page.locator('#text').textContent(), operator);
  await shot(device.page, '08-client-closed');
  assert.equal(await device.page.evaluate(() => window.room.state), 'closed');

  const rejoin = async () => {
    const before = (await device.events()).length;
    await device.page.evaluate(() => window.room.join());
    return until('the refusal', async () => (await device.events()).slice(before).find((e) => e.type === 'refused'));
  };
  const unknown = await rejoin();
  assert.deepEqual([unknown.code, unknown.status, unknown.text], ['brand_new_code', 418, 'a refusal from a newer server']);
  const bare = await rejoin();
  assert.deepEqual([bare.code, bare.status, bare.detail, bare.text], ['unknown', 404, null, '대기열에서 빠졌습니다. 다시 줄을 서 주세요.']);
  const ended = await rejoin();
  assert.deepEqual([ended.code, ended.text], ['ended', '대기 순번이 끝났습니다. 다시 줄을 서 주세요.']);

  await sleep(1500);
  const events = await device.events();
  assert.equal(events.filter((e) => e.type === 'retrying').length, 0, 'refusals are not retried');
  assert.ok(!events.some((e) => e.type === 'admitted'));
  assert.equal(await device.page.evaluate(() => window.proceeded), 0);
  assert.equal(device.protectedCalls.length, 0);
  await device.settled();
  assert.equal(device.answers.filter((a) => a.path === '/queue/heartbeat').length, 1, 'no heartbeat after the room closed');
});
