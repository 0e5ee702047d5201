// Scenario 1: a person waits behind others, is admitted, sees the booking
// form and books once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Crowd, startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, shot, shownNumber, until } from '../lib/browser.mjs';

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

test('waits, is admitted, sees the booking form and books once', { timeout: 120_000 }, async () => {
  // One person per second, six people ahead who keep heart-beating.
  const demo = await startDemo({ 'admit-per-sec': 1, 'liveness-ms': 3000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  const ahead = await crowd.join(6);

  const device = await openDevice(browser);
  const { page } = device;
  await page.goto(demo.base + '/');
  const position = await until('a place on the page', () => shownNumber(page, ids.position));
  assert.ok(position > Math.max(...ahead.map((a) => a.position)), `behind the six who joined first (place ${position})`);
  const shownAhead = await shownNumber(page, ids.ahead);
  if (!(await page.locator(ids.bookForm).isVisible())) {
    // Waiting: the page shows who is ahead and a progress bar, and no form.
    assert.ok(shownAhead >= 1, `people ahead shown: ${shownAhead}`);
    assert.match(await page.locator(ids.wait).textContent(), /\d+\s*(s|min)/);
    const progress = Number(await page.locator(ids.progress).getAttribute('value'));
    assert.ok(progress >= 0 && progress < 100, `progress ${progress}`);
    await shot(page, '01-waiting');
    // A little later: fewer people ahead, the bar has moved.
    await until('the queue moving', async () => (await shownNumber(page, ids.ahead)) < shownAhead || (await page.locator(ids.bookForm).isVisible()), 20_000);
    if (!(await page.locator(ids.bookForm).isVisible())) {
      assert.ok(Number(await page.locator(ids.progress).getAttribute('value')) > 0, 'the progress bar moved');
      await shot(page, '01-waiting-later');
    }
  } else {
    assert.fail('admitted before the people ahead of them');
  }
  await device.settled();
  assert.ok(device.answers.every((a) => a.path !== '/slots'), 'no protected call while waiting');

  await page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 40_000 });
  assert.equal(Number(await page.locator(ids.progress).getAttribute('value')), 100);
  await shot(page, '01-admitted-form');
  await device.settled();
  const admittedAt = device.answers.findIndex((a) => a.status === 200 && a.body.admitted === true);
  const slotsAt = device.answers.findIndex((a) => a.path === '/slots');
  assert.ok(admittedAt >= 0 && slotsAt > admittedAt, 'the form came after an admitted answer');
  const beforeBooking = await demo.metrics();

  await page.locator(ids.bookButton).click();
  await page.locator(ids.reservation).waitFor({ state: 'visible' });
  await shot(page, '01-booked');
  await device.settled();
  const reserves = device.answers.filter((a) => a.path === '/reserve');
  assert.equal(reserves.length, 1, 'one booking call');
  assert.equal(reserves[0].status, 200);
  const id = reserves[0].body.reservation_id;
  assert.ok(id, 'a reservation id');
  assert.ok((await page.locator(ids.reservation).textContent()).includes(id), 'the page shows the reservation id');
  assert.equal(await page.locator(ids.bookForm).isVisible(), false, 'the form is gone once booked');

  const afterBooking = await demo.metrics();
  assert.equal(
    afterBooking.get('queuegate_admissions_total') - beforeBooking.get('queuegate_admissions_total'),
    1,
    'the booking was one protected request let through',
  );
  const slotCalls = device.answers.filter((a) => a.path === '/slots' && a.status === 200).length;
  assert.equal(afterBooking.get('queuegate_admissions_total'), slotCalls + 1, 'nothing else was let through');
  assert.ok(afterBooking.get('queuegate_room_admitted_total') >= 1);

  // Booking again from the same page (a double click, a retried request):
  // the same reservation, or replayed; never a second booking.
  const again = await page.evaluate(() =>
    call('POST', '/reserve', { slot: 'S12' }).then((r) => ({ id: r.reservation_id }), (e) => ({ code: e.code })),
  );
  assert.ok(again.id === id || again.code === 'replayed', `second booking attempt: ${JSON.stringify(again)}`);
});
