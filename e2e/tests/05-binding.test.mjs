// Scenario 5: a ticket copied out of one browser into another device (another
// browser context, so another qg_session cookie) is binding_mismatch, on the
// heartbeat and on the booking route, and the owner can still book.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, shot, shownNumber, until } from '../lib/browser.mjs';

let browser;
const demos = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
});

/** Sends `ticket` from inside `page` (its origin, its cookies) to a queue or booking route. */
function presentFrom(page, path, ticket) {
  return page.evaluate(
    async ({ path, ticket }) => {
      const res = await fetch(path, {
        method: 'POST',
        headers: { 'queue-ticket': ticket, 'queue-client-time': String(Date.now()) },
      });
      const text = await res.text();
      let body = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      return { status: res.status, contentType: res.headers.get('content-type'), body };
    },
    { path, ticket },
  );
}

test('a ticket copied into another browser context: binding_mismatch, the owner still books', { timeout: 90_000 }, async () => {
  const demo = await startDemo({ 'admit-per-sec': 5, 'liveness-ms': 3000, 'max-jump-ms': 5000 });
  demos.push(demo);
  const owner = await openDevice(browser);
  const other = await openDevice(browser);

  await owner.page.goto(demo.base + '/');
  await owner.page.locator(ids.bookForm).waitFor({ state: 'visible', timeout: 30_000 });
  await owner.settled();
  const admittedAnswer = owner.answers.findLast((a) => a.path === '/queue/heartbeat' && a.status === 200 && a.body.admitted === true);
  assert.ok(admittedAnswer, 'the owner was admitted');
  const copied = admittedAnswer.body.ticket;

  // The other device has the site open too: its own session cookie.
  await other.page.goto(demo.base + '/');
  await until('the other device joined', async () => (await shownNumber(other.page, ids.position)) !== null || (await other.page.locator(ids.bookForm).isVisible()));
  const [ownerCookie] = (await owner.context.cookies()).filter((c) => c.name === 'qg_session');
  const [otherCookie] = (await other.context.cookies()).filter((c) => c.name === 'qg_session');
  assert.ok(ownerCookie && otherCookie, 'both devices have a qg_session cookie');
  assert.notEqual(ownerCookie.value, otherCookie.value);

  const onHeartbeat = await presentFrom(other.page, '/queue/heartbeat', copied);
  assert.ok(onHeartbeat.status >= 400 && onHeartbeat.status < 500, `4xx, got ${onHeartbeat.status}`);
  assert.match(onHeartbeat.contentType, /application\/problem\+json/);
  assert.equal(onHeartbeat.body.code, 'binding_mismatch');

  const onReserve = await presentFrom(other.page, '/reserve', copied);
  assert.ok(onReserve.status >= 400 && onReserve.status < 500, `4xx, got ${onReserve.status}`);
  assert.equal(onReserve.body.code, 'binding_mismatch');
  await other.page.evaluate((r) => {
    const pre = document.createElement('pre');
    pre.id = 'copied-ticket-result';
    pre.textContent = 'Copied ticket sent from this device:\nPOST /reserve → ' + r.status + '\n' + JSON.stringify(r.body, null, 2);
    document.body.appendChild(pre);
  }, onReserve);
  await shot(other.page, '05-other-device-rejected');

  // The copy cost the owner nothing: they book.
  await owner.page.locator(ids.bookButton).click();
  await until('a reservation id on the owner page', async () => ((await owner.page.locator(ids.reservation).textContent()) ?? '').trim());
  await owner.settled();
  const reserve = owner.answers.find((a) => a.path === '/reserve');
  assert.equal(reserve.status, 200);
  await shot(owner.page, '05-owner-booked');

  const m = await demo.metrics();
  assert.ok(m.get('queuegate_rejections_total{code="binding_mismatch"}') >= 2, 'both attempts counted');
});
