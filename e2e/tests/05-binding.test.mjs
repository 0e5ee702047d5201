// Scenario 5: a ticket copied out of one browser (say, from its developer
// tools) into another device (another browser context, so another qg_session
// cookie) is binding_mismatch, on the heartbeat and on the booking route; the
// owner loses nothing and books.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot } from '../lib/browser.mjs';

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

test('a ticket copied into another browser context: binding_mismatch, the owner still books', { timeout: 90_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 5, 'liveness-ms': 3000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const owner = await openDevice(browser);
  const other = await openDevice(browser);

  await owner.page.goto(demo.base + '/');
  await owner.page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 30_000 });
  // The page's current (admitted) ticket, as someone would copy it out.
  const copied = await owner.page.evaluate(() => ticket);
  assert.ok(typeof copied === 'string' && copied.length > 20, 'an admitted ticket on the owner page');

  // The other device has the site open too: its own session cookie.
  await other.page.goto(demo.base + '/');
  await other.page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 30_000 });
  const [ownerCookie] = (await owner.context.cookies()).filter((c) => c.name === 'qg_session');
  const [otherCookie] = (await other.context.cookies()).filter((c) => c.name === 'qg_session');
  assert.ok(ownerCookie && otherCookie, 'both devices have a qg_session cookie');
  assert.notEqual(ownerCookie.value, otherCookie.value);

  // The other page's own heartbeat loop now carries the copied ticket.
  // (Re-planted a few times in case an answer in flight overwrites it.)
  let onHeartbeat = null;
  for (let i = 0; i < 5 && !onHeartbeat; i++) {
    await other.page.evaluate((t) => {
      ticket = t;
    }, copied);
    onHeartbeat = await rejectionSeen(other, 'binding_mismatch', 4000).catch(() => null);
  }
  assert.ok(onHeartbeat, 'the copied ticket was refused on the heartbeat');
  assert.equal(onHeartbeat.path, '/queue/heartbeat');
  assert.ok(onHeartbeat.status >= 400 && onHeartbeat.status < 500, `4xx, got ${onHeartbeat.status}`);
  await other.page.locator(ids.error).waitFor({ state: 'visible' });
  assert.ok((await other.page.locator(ids.error).textContent()).includes(onHeartbeat.body.detail), 'the page shows the reason');
  assert.equal(await other.page.locator(ids.bookForm).isVisible(), false, 'no booking form on the other device');

  // Straight to the booking route with the copied ticket, from the other device.
  const onReserve = await other.page.evaluate((t) => {
    ticket = t;
    return call('POST', '/reserve', { slot: 'S11' }).then((r) => ({ id: r.reservation_id }), (e) => ({ code: e.code, detail: e.message }));
  }, copied);
  assert.equal(onReserve.code, 'binding_mismatch', JSON.stringify(onReserve));
  await other.settled();
  const reserveAnswer = other.answers.find((a) => a.path === '/reserve');
  assert.ok(reserveAnswer.status >= 400 && reserveAnswer.status < 500, `4xx, got ${reserveAnswer.status}`);
  await shot(other.page, '05-other-device-rejected');

  // The copy cost the owner nothing: they book.
  await owner.page.locator(ids.bookButton).click();
  await owner.page.locator(ids.reservation).waitFor({ state: 'visible' });
  await owner.settled();
  const reserve = owner.answers.find((a) => a.path === '/reserve');
  assert.equal(reserve.status, 200);
  assert.ok((await owner.page.locator(ids.reservation).textContent()).includes(reserve.body.reservation_id));
  await shot(owner.page, '05-owner-booked');

  const m = await demo.metrics();
  assert.ok(m.get('queuegate_rejections_total{code="binding_mismatch"}') >= 2, 'both attempts counted');
});
