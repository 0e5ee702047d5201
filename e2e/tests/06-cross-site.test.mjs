// Scenario 6: a page on another site (here http://localhost:PORT2, while the
// demo is on http://127.0.0.1:PORT — another host, so another site) makes
// the waiting person's browser post a form to the room's join. The browser
// leaves the SameSite=Strict session cookie behind; a room that answered
// with a new session would replace the person's cookie and their next
// heartbeat would be binding_mismatch. The room refuses the post as
// cross_site and sets no cookie: the person keeps their cookie and place.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { startDemo } from '../lib/demo.mjs';
import { ids, launchChromium, openDevice, shot, shownNumber, until } from '../lib/browser.mjs';

let browser;
const demos = [];
const servers = [];
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await Promise.all(demos.map((d) => d.stop()));
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** Serves one page, on 127.0.0.1, that posts a form to `action` on load. */
async function attackerSite(action) {
  const page = `<!doctype html><meta charset="utf-8"><title>Win a prize</title>
<form method="post" action="${action}"><input type="hidden" name="prize" value="1"><button>Claim</button></form>
<script>document.forms[0].submit();</script>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(page);
  });
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://localhost:${server.address().port}/`;
}

test('a form on another site posting to the join: refused, the person keeps cookie and place', { timeout: 90_000 }, async () => {
  // Nobody is admitted, so the person stays in line and heart-beats often.
  const demo = await startDemo({ 'admit-per-sec': 0, 'liveness-ms': 3000 });
  demos.push(demo);
  const victim = await openDevice(browser);
  await victim.page.goto(demo.base + '/');
  const place = await until('a place on the page', () => shownNumber(victim.page, ids.position));
  const [before] = (await victim.context.cookies(demo.base)).filter((c) => c.name === 'qg_session');
  assert.ok(before, 'the person has a session cookie');

  // The same browser (same cookie jar) opens the other site in a new tab.
  const evil = await attackerSite(`${demo.base}/queue/join`);
  const tab = await victim.context.newPage();
  const [joinAnswer] = await Promise.all([
    tab.waitForResponse((r) => r.url() === `${demo.base}/queue/join` && r.request().method() === 'POST', { timeout: 15_000 }),
    tab.goto(evil),
  ]);
  const sent = await joinAnswer.request().allHeaders();
  assert.equal(sent['sec-fetch-site'], 'cross-site', 'Chromium says the post is cross-site');
  assert.equal(sent.cookie, undefined, 'the SameSite=Strict cookie stayed behind');
  assert.equal(joinAnswer.status(), 403);
  const body = await joinAnswer.json();
  assert.equal(body.code, 'cross_site', JSON.stringify(body));
  assert.equal(joinAnswer.headers()['set-cookie'], undefined, 'no cookie in the answer');
  await shot(tab, '06-cross-site-refused');
  await tab.close();

  // The cookie is the person's own still.
  const [afterAttack] = (await victim.context.cookies(demo.base)).filter((c) => c.name === 'qg_session');
  assert.equal(afterAttack?.value, before.value, 'the session cookie was not replaced');

  // The page's next heartbeats keep working, at the same place.
  await victim.settled();
  const seen = victim.answers.length;
  await until('two heartbeats after the attack', async () => {
    await victim.settled();
    return victim.answers.slice(seen).filter((a) => a.path === '/queue/heartbeat').length >= 2;
  }, 20_000);
  const beats = victim.answers.slice(seen).filter((a) => a.path === '/queue/heartbeat');
  for (const b of beats) assert.equal(b.status, 200, JSON.stringify(b.body));
  assert.equal(await victim.page.locator(ids.error).isVisible(), false, 'no error on the page');
  assert.equal(await shownNumber(victim.page, ids.position), place, 'the same place');
  await shot(victim.page, '06-victim-keeps-place');
});
