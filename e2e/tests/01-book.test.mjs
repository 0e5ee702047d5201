// Scenario 1: a person waits, is admitted, sees the booking form and books once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, rejectionSeen, shot, shownNumber, until } from '../lib/browser.mjs';

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

test('waits, is admitted, sees the booking form and books once', { timeout: 120_000 }, async () => {
  // The queue opens 6 s after start, so the person is seen waiting first.
  const demo = await startDemo({ 'admit-per-sec': 5, 'opens-in-ms': 6000, 'liveness-ms': 3000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const device = await openDevice(browser);
  const { page } = device;

  await page.goto(demo.base + '/');
  await until('a position on the page', async () => (await shownNumber(page, ids.position)) !== null);
  await assert.rejects(page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 500 }), 'form shown before admission');
  await shot(page, '01-waiting');

  await page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 40_000 });
  await shot(page, '01-admitted-form');
  const before = await demo.metrics();
  assert.equal(before.get('queuegate_room_admitted_total'), 1, 'one person admitted by the room');
  assert.ok(device.answers.some((a) => a.path === '/queue/heartbeat' && a.status === 200 && a.body.admitted === true));

  await page.locator(ids.bookButton).click();
  await until('a reservation id on the page', async () => ((await page.locator(ids.reservation).textContent()) ?? '').trim());
  await shot(page, '01-booked');
  await device.settled();
  const reserves = device.answers.filter((a) => a.path === '/reserve');
  assert.equal(reserves.length, 1, 'one booking call');
  assert.equal(reserves[0].status, 200);
  const id = reserves[0].body.reservation_id;
  assert.ok(id, 'a reservation id');
  assert.match(await page.locator(ids.reservation).textContent(), new RegExp(String(id)));

  const afterBooking = await demo.metrics();
  assert.equal(
    afterBooking.get('queuegate_admissions_total') - before.get('queuegate_admissions_total'),
    1,
    'the booking was one protected request let through',
  );
  assert.equal(afterBooking.get('queuegate_room_admitted_total'), 1);
});
