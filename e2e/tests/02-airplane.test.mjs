// Scenario 2: airplane mode. The person goes offline while waiting, for longer
// than the liveness window, and their turn comes while they are away. Back
// online, the page must not reach the booking form: the server rejects the
// resumed ticket as offline_resumed, the page says so and lets them rejoin at
// the back of the queue.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Crowd, startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot, shownNumber, until, watchVisible } from '../lib/browser.mjs';

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

test('offline past the liveness window while waiting: offline_resumed, rejoin at the back', { timeout: 120_000 }, async () => {
  const livenessMs = 3000;
  const demo = await startDemo({ 'admit-per-sec': 1, 'liveness-ms': livenessMs, 'max-jump-ms': 5000 });
  demos.push(demo);
  const before = new Crowd(demo.base);
  crowds.push(before);
  await before.join(5);

  const device = await openDevice(browser);
  const { page, context } = device;
  await page.goto(demo.base + '/');
  const form = watchVisible(page, ids.bookForm);
  const firstPosition = await until('a place on the page', () => shownNumber(page, ids.position));
  assert.ok((await shownNumber(page, ids.ahead)) >= 1, 'someone ahead');
  await shot(page, '02-waiting');

  // Airplane mode, until well past the liveness window and until everyone who
  // was ahead has been admitted: the person's turn came while they were away.
  await context.setOffline(true);
  const offlineAt = Date.now();
  const behind = new Crowd(demo.base);
  crowds.push(behind);
  const joinedMeanwhile = await behind.join(3);
  await until('everyone ahead admitted', async () => before.allAdmitted(), 30_000, 200);
  await sleep(Math.max(2000, offlineAt + 3 * livenessMs - Date.now()));
  await page.getByText(/connection lost/i).first().waitFor({ timeout: 5000 });
  await shot(page, '02-offline');
  await context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  assert.ok(rejection.status >= 400 && rejection.status < 500, `4xx, got ${rejection.status}`);
  await page.locator(ids.error).waitFor({ state: 'visible' });
  const errorText = await page.locator(ids.error).textContent();
  assert.ok(errorText.includes(rejection.body.detail), `the page shows the server's reason: ${errorText}`);
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  assert.equal(await form.stop(), false, 'the booking form was never shown');
  assert.ok(!device.answers.some((a) => a.status === 200 && a.body.admitted === true), 'no admitted ticket reached the page');
  assert.ok(!device.answers.some((a) => a.path === '/slots' || a.path === '/reserve'), 'no protected call');
  await shot(page, '02-rejected-offline');
  const m = await demo.metrics();
  assert.ok(m.get('queuegate_rejections_total{code="offline_resumed"}') >= 1, 'counted in /metrics');
  assert.equal(m.get('queuegate_admissions_total'), 0, 'nothing protected was let through');

  // Rejoin: a new place behind everyone who joined while the person was away.
  await page.locator(ids.rejoin).click();
  await device.settled();
  const rejoined = await until('the rejoin answer', async () => {
    await device.settled();
    const joins = device.answers.filter((a) => a.path === '/queue/join');
    return joins.length === 2 && joins[1];
  });
  assert.equal(rejoined.status, 200);
  const lastBehind = Math.max(...joinedMeanwhile.map((j) => j.position));
  assert.ok(rejoined.body.position > firstPosition, `rejoined at ${rejoined.body.position}, first place was ${firstPosition}`);
  assert.ok(rejoined.body.position > lastBehind, `rejoined at ${rejoined.body.position}, behind ${lastBehind}`);
  await page.locator(ids.error).waitFor({ state: 'hidden' });
  assert.equal(await shownNumber(page, ids.position), rejoined.body.position);
  await shot(page, '02-rejoined');

  // From the back of the queue, their turn comes again the honest way.
  await page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 40_000 });
  await shot(page, '02-rejoined-admitted');
});

test('offline past the liveness window on the booking form: offline_resumed, cannot book', { timeout: 90_000 }, async () => {
  const livenessMs = 3000;
  const demo = await startDemo({ 'admit-per-sec': 5, 'liveness-ms': livenessMs, 'max-jump-ms': 5000 });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page, context } = device;
  await page.goto(demo.base + '/');
  await page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 30_000 });
  const slotsBefore = (await demo.metrics()).get('queuegate_admissions_total');

  await context.setOffline(true);
  await sleep(3 * livenessMs);
  await context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  await page.locator(ids.error).waitFor({ state: 'visible' });
  assert.ok((await page.locator(ids.error).textContent()).includes(rejection.body.detail));
  await page.locator(ids.bookForm).waitFor({ state: 'hidden' });
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  await shot(page, '02-admitted-offline-rejected');

  // The stale admitted ticket cannot book either.
  const booking = await page.evaluate(() =>
    call('POST', '/reserve', { slot: 'S11' }).then((r) => ({ id: r.reservation_id }), (e) => ({ code: e.code })),
  );
  assert.equal(booking.code, 'offline_resumed', JSON.stringify(booking));
  const m = await demo.metrics();
  assert.equal(m.get('queuegate_admissions_total'), slotsBefore, 'no booking let through');
});
