// Scenario 11: the join door (`--join-rate`). A page that arrives beyond the
// door's rate is answered `come_back` with a pass; the browser client says
// so on the page, comes back with the pass at its time and gets a place, then
// waits and books as anyone does.
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

test('sent back by the join door, the page comes back with its pass and books', { timeout: 120_000 }, async () => {
  // Four joins a second through the door. The crowd's joins use up the
  // burst; 80 more newcomers (who never come back) take the door's next
  // twenty seconds, so the page, however slow to load, arrives at a busy door.
  const demo = await startDemo({ 'join-rate': 4, 'admit-per-sec': 2, 'liveness-ms': 5000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const crowd = new Crowd(demo.base);
  crowds.push(crowd);
  await crowd.join(4);
  for (let i = 0; i < 80; i++) {
    const res = await fetch(demo.base + '/queue/join', { method: 'POST', headers: { 'queue-client-time': String(Date.now()) } });
    assert.equal(res.status, 429);
    assert.equal((await res.json()).code, 'come_back');
  }

  const device = await openDevice(browser);
  const { page } = device;
  await page.goto(demo.base + '/');
  // At the door: the page says so, with no place and no error.
  await until('the door text', async () => /joining right now/.test(await page.locator(ids.status).textContent()), 5000);
  assert.equal(await page.locator(ids.error).isVisible(), false, 'the door is not an error');
  await shot(page, '11-at-the-door');
  const position = await until('a place on the page', () => shownNumber(page, ids.position), 45_000);
  assert.ok(position >= 5, `behind the crowd's joins (place ${position})`);
  await device.settled();
  const joins = device.answers.filter((a) => a.path === '/queue/join');
  assert.equal(joins[0].status, 429);
  assert.equal(joins[0].body.code, 'come_back');
  assert.equal(typeof joins[0].body.pass, 'string');
  assert.equal(joins.at(-1).status, 200, 'the join with the pass went through');
  const stats = await (await fetch(demo.base + '/stats')).json();
  assert.equal(stats.door_honoured, 1);

  await page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 40_000 });
  await page.locator(ids.bookButton).click();
  await page.locator(ids.reservation).waitFor({ state: 'visible', timeout: 15_000 });
  assert.match(await page.locator(ids.reservation).textContent(), /R-[0-9a-f]+/);
});
