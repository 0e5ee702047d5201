// Scenario 7 (issue 12 item 5): an honest clock correction. The device
// clock runs 8 s behind the server's and NTP corrects it while the person
// waits (Playwright's clock API moves only Date.now(); timers keep going).
//
// Settings: --admit-per-sec 0 (admission paused, so the person keeps
// waiting at a known place), two people ahead. The first test keeps every
// other flag at the demo's default (jump tolerance 60 s): the correction
// costs nothing. The second sets --max-jump-ms 5000: the corrected clock's
// next heartbeat is clock_jump; the person presses "Rejoin", which
// re-mints the chain's ticket with the corrected clock as its baseline, and
// keeps the same place.
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

/** A page whose clock is 8 s behind, waiting behind two people. */
async function waitingBehind(flags) {
  const demo = await startDemo(flags);
  demos.push(demo);
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  await crowd.join(2);
  const device = await openDevice(browser);
  const { page } = device;
  await page.clock.install({ time: Date.now() - 8_000 });
  await page.goto(demo.base + '/');
  const position = await until('a place on the page', () => shownNumber(page, ids.position));
  assert.equal(position, 3);
  return { demo, device, page, position };
}

/** Corrects the page's clock to the real time and heart-beats at once. */
async function correctAndBeat(device, page) {
  await page.clock.setSystemTime(Date.now());
  const from = (await device.settled()).length;
  await page.evaluate(() => beat());
  return until('the heartbeat after the correction', async () => {
    await device.settled();
    return device.answers.slice(from).find((a) => a.path === '/queue/heartbeat');
  });
}

test('a clock corrected by 8 s keeps its place under the demo defaults', { timeout: 60_000 }, async () => {
  const { demo, device, page, position } = await waitingBehind({ 'admit-per-sec': 0 });
  const answer = await correctAndBeat(device, page);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(answer.body.position, position);
  assert.ok(await page.locator(ids.error).isHidden(), 'no error shown');
  await shot(page, '07-corrected-default');
  const m = await demo.metrics();
  assert.equal(m.get('queuegate_rejections_total{code="clock_jump"}'), 0);
});

test('with a tight jump tolerance the refused page rejoins and keeps its place', { timeout: 60_000 }, async () => {
  const { demo, device, page, position } = await waitingBehind({ 'admit-per-sec': 0, 'max-jump-ms': 5000 });
  const refused = await correctAndBeat(device, page);
  assert.equal(refused.status, 403, JSON.stringify(refused.body));
  assert.equal(refused.body.code, 'clock_jump');
  await page.locator(ids.rejoin).waitFor({ state: 'visible' });
  await shot(page, '07-corrected-refused');

  const from = (await device.settled()).length;
  await page.locator(ids.rejoin).click();
  const rejoined = await until('the rejoin answer', async () => {
    await device.settled();
    return device.answers.slice(from).find((a) => a.path === '/queue/join');
  });
  assert.equal(rejoined.status, 200, JSON.stringify(rejoined.body));
  assert.equal(rejoined.body.position, position, 'the same place');
  await page.locator(ids.error).waitFor({ state: 'hidden' });
  assert.equal(await shownNumber(page, ids.position), position);

  // The re-minted chain heart-beats with the corrected clock.
  const next = await correctAndBeat(device, page);
  assert.equal(next.status, 200, JSON.stringify(next.body));
  assert.equal(next.body.position, position);
  await shot(page, '07-corrected-rejoined');
  const m = await demo.metrics();
  assert.equal(m.get('queuegate_rejections_total{code="clock_jump"}'), 1);
});
