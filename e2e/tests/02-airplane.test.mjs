// Scenario 2: airplane mode. The person goes offline while waiting, longer
// than the liveness window; the queue opens while they are away. Back online,
// the page must not reach the booking form: the server rejects the resumed
// ticket as offline_resumed, the page says so and lets them rejoin at the back.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { joinFromOutside, startDemo } from '../lib/demo.mjs';
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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('offline past the liveness window while waiting: offline_resumed, rejoin at the back', { timeout: 120_000 }, async () => {
  const livenessMs = 3000;
  const opensInMs = 10_000;
  const demo = await startDemo({ 'admit-per-sec': 5, 'opens-in-ms': opensInMs, 'liveness-ms': livenessMs, 'max-jump-ms': 5000 });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page, context } = device;

  await page.goto(demo.base + '/');
  const form = watchVisible(page, ids.bookForm);
  await until('a position on the page', async () => (await shownNumber(page, ids.position)) !== null);
  await device.settled();
  const joined = device.answers.find((a) => a.path === '/queue/join' && a.status === 200);
  assert.ok(joined, 'the page joined');
  const firstPosition = joined.body.position;
  await shot(page, '02-waiting');

  // Airplane mode: offline for more than the liveness window, and until the
  // queue has opened, so the turn would have come while away.
  await context.setOffline(true);
  const offlineAt = Date.now();
  // Others join while the person is away.
  const others = [];
  for (let i = 0; i < 3; i++) others.push(await joinFromOutside(demo.base));
  const backAt = Math.max(offlineAt + 3 * livenessMs, demo.startedAt + opensInMs + 2000);
  await sleep(backAt - Date.now());
  await shot(page, '02-offline');
  await context.setOffline(false);

  const rejection = await rejectionSeen(device, 'offline_resumed', 20_000);
  assert.equal(rejection.path, '/queue/heartbeat');
  assert.ok(rejection.status >= 400 && rejection.status < 500, `4xx, got ${rejection.status}`);
  await page.locator(ids.error).waitFor({ state: 'visible' });
  const errorText = await page.locator(ids.error).textContent();
  assert.ok(errorText.includes(rejection.body.detail) || errorText.includes('offline_resumed'), `the page shows the reason: ${errorText}`);
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  assert.equal(await form.stop(), false, 'the booking form was never shown');
  assert.ok(
    !device.answers.some((a) => a.path === '/queue/heartbeat' && a.status === 200 && a.body.admitted === true),
    'no admitted ticket reached the page',
  );
  assert.ok(!device.answers.some((a) => a.path === '/reserve'), 'no booking call');
  await shot(page, '02-rejected-offline');

  // Rejoin: a new place behind everyone who joined meanwhile.
  const joinsBefore = device.answers.filter((a) => a.path === '/queue/join').length;
  await page.locator(ids.rejoin).click();
  const rejoined = await until('the rejoin answer', async () => {
    await device.settled();
    const joins = device.answers.filter((a) => a.path === '/queue/join');
    return joins.length > joinsBefore && joins[joins.length - 1];
  });
  assert.equal(rejoined.status, 200);
  const lastOther = Math.max(...others.map((o) => o.position));
  assert.ok(rejoined.body.position > firstPosition, `rejoined at ${rejoined.body.position}, first place was ${firstPosition}`);
  assert.ok(rejoined.body.position > lastOther, `rejoined at ${rejoined.body.position}, behind ${lastOther}`);
  await page.locator(ids.error).waitFor({ state: 'hidden' });
  await shot(page, '02-rejoined');

  const m = await demo.metrics();
  assert.ok(m.get('queuegate_rejections_total{code="offline_resumed"}') >= 1, 'counted in /metrics');
  assert.equal(m.get('queuegate_admissions_total'), 0, 'nothing protected was let through');
});
