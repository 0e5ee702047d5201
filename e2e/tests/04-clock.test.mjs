// Scenario 4: the device clock is moved while waiting (Playwright's clock API).
// An hour off the server's clock is clock_skew; twenty seconds forward between
// two heartbeats (more than --max-jump-ms, far less than --max-skew-ms) is
// clock_jump. The page keeps its timers running: only Date.now() moves.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot, shownNumber, until, watchVisible } from '../lib/browser.mjs';

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

const flags = { 'admit-per-sec': 0, 'liveness-ms': 3000, 'max-jump-ms': 5000, 'max-skew-ms': 300_000, 'max-delay-ms': 10_000 };

/** Opens the page with Playwright's clock installed at the real time, waits until it heart-beats. */
async function waitingWithFakeClock(demo) {
  const device = await openDevice(browser);
  const { page } = device;
  // Installed before navigation: Date, timers and performance are the fake
  // clock's from the first script on; it runs at real speed until moved.
  await page.clock.install();
  await page.goto(demo.base + '/');
  await until('a position on the page', async () => (await shownNumber(page, ids.position)) !== null);
  await until('a heartbeat accepted', async () => {
    await device.settled();
    return device.answers.some((a) => a.path === '/queue/heartbeat' && a.status === 200);
  });
  return device;
}

async function movedClock(name, shiftMs, code) {
  const demo = await startDemo(flags);
  demos.push(demo);
  const device = await waitingWithFakeClock(demo);
  const { page } = device;
  const form = watchVisible(page, ids.bookForm);
  await shot(page, `04-${name}-before`);

  // Between heartbeats: only Date.now() moves, the page's timers keep going.
  const pageNow = await page.evaluate(() => Date.now());
  await page.clock.setSystemTime(pageNow + shiftMs);
  const rejection = await rejectionSeen(device, code, 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  assert.ok(rejection.status >= 400 && rejection.status < 500, `4xx, got ${rejection.status}`);
  await page.locator(ids.error).waitFor({ state: 'visible' });
  const errorText = await page.locator(ids.error).textContent();
  assert.ok(errorText.includes(rejection.body.detail) || errorText.includes(code), `the page shows the reason: ${errorText}`);
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  await shot(page, `04-${name}-rejected`);
  assert.equal(await form.stop(), false, 'the booking form was never shown');

  const m = await demo.metrics();
  assert.ok(m.get(`queuegate_rejections_total{code="${code}"}`) >= 1, `${code} counted in /metrics`);
  await device.context.close();
  return rejection;
}

test('device clock moved an hour ahead while waiting: clock_skew', { timeout: 60_000 }, async () => {
  await movedClock('skew', 60 * 60_000, 'clock_skew');
});

test('device clock moved twenty seconds ahead between heartbeats: clock_jump', { timeout: 60_000 }, async () => {
  await movedClock('jump', 20_000, 'clock_jump');
});

test('device clock moved an hour back while waiting: clock_skew', { timeout: 60_000 }, async () => {
  await movedClock('skew-back', -60 * 60_000, 'clock_skew');
});
