// Scenario 6 (issue 12 item 6): background tabs and phones. A page the
// browser freezes (the page lifecycle's "frozen": no timers, no tasks) for
// 20 s while next in line keeps its place under the demo's default
// deadlines (75 s near the front); a device away for longer than the
// longest deadline is offline_resumed.
//
// Settings: the first test runs the demo's defaults except the admission
// rate (--admit-per-sec 0.02: one admission every 50 s, so the person stays
// next in line, with the near-front deadline, through the test). The second
// uses --liveness-ms 4000 (every deadline at most 4 s) and --admit-per-sec 0
// so that "longer than the longest deadline" takes seconds, not minutes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Crowd, startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot, shownNumber, until } from '../lib/browser.mjs';

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

test('frozen for 20 s next in line: the place is kept under the default deadlines', { timeout: 120_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 0.02 });
  demos.push(demo);
  // The first arrival is admitted at once (a new bucket holds one
  // admission); the person in the browser is next, nobody ahead.
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  await crowd.join(1);

  const device = await openDevice(browser);
  const { page } = device;
  await page.goto(demo.base + '/');
  const position = await until('a place on the page', () => shownNumber(page, ids.position));
  assert.equal(await shownNumber(page, ids.ahead), 0, 'next in line');
  await device.settled();
  const joined = device.answers.find((a) => a.path === '/queue/join' && a.status === 200);
  assert.ok(joined && !joined.body.admitted, 'waiting');
  // Near the front: the near deadline, the retry hint 40-60 % of it.
  assert.ok(joined.body.retry_after_ms >= 30_000 && joined.body.retry_after_ms < 45_000, `retry ${joined.body.retry_after_ms}`);

  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
  const frozenAt = Date.now();
  const answersBefore = device.answers.length;
  await sleep(20_000);
  await device.settled();
  assert.equal(device.answers.length, answersBefore, 'a frozen page sends nothing');
  await cdp.send('Page.setWebLifecycleState', { state: 'active' });
  const frozeFor = Date.now() - frozenAt;
  assert.ok(frozeFor >= 20_000, `frozen for ${frozeFor} ms`);

  // Thawed: the page heart-beats and keeps its place. (A browser fires the
  // lifecycle's resume event on a real thaw and the page heart-beats at
  // once; headless Chromium does not fire it for the CDP freeze, so here
  // the heartbeat comes from the page's timer, due during the freeze.)
  const after = await until('a heartbeat after the thaw', async () => {
    await device.settled();
    return device.answers.slice(answersBefore).find((a) => a.path === '/queue/heartbeat');
  }, 45_000, 250);
  assert.equal(after.status, 200, JSON.stringify(after.body));
  assert.equal(after.body.position, position);
  assert.equal(after.body.ahead, 0);
  assert.ok(await page.locator(ids.error).isHidden(), 'no error shown');
  assert.equal(await shownNumber(page, ids.position), position);
  await shot(page, '06-thawed-kept-place');
  const m = await demo.metrics();
  assert.equal(m.get('queuegate_rejections_total{code="offline_resumed"}'), 0);
});

test('offline for longer than the longest deadline: offline_resumed', { timeout: 90_000 }, async () => {
  const maxDeadlineMs = 4000;
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': maxDeadlineMs });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page, context } = device;
  await page.goto(demo.base + '/');
  await until('a place on the page', () => shownNumber(page, ids.position));
  await until('a heartbeat accepted', async () => {
    await device.settled();
    return device.answers.some((a) => a.path === '/queue/heartbeat' && a.status === 200);
  });

  // Away (offline, page frozen: a phone in a pocket) for twice the longest
  // deadline, then back.
  const cdp = await page.context().newCDPSession(page);
  await context.setOffline(true);
  await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
  await sleep(2 * maxDeadlineMs);
  await cdp.send('Page.setWebLifecycleState', { state: 'active' });
  await context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  await page.locator(ids.error).waitFor({ state: 'visible' });
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  await shot(page, '06-away-too-long');
  const m = await demo.metrics();
  assert.ok(m.get('queuegate_rejections_total{code="offline_resumed"}') >= 1, 'counted in /metrics');
});
