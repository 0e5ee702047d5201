// Debian's Chromium driven by playwright-core: launch, pages that record what
// the server answered, screenshots as artifacts. Every wait is bounded.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const artifactsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');

/** The demo page's element ids (examples/reservation.rs). */
export const ids = {
  status: '#status',
  position: '#position',
  ahead: '#ahead',
  wait: '#wait',
  progress: '#progress',
  bookForm: '#book-form',
  bookButton: '#book-button',
  reservation: '#reservation',
  error: '#error',
  rejoin: '#rejoin',
};

/** The routes the page calls; their answers are recorded per page. */
const apiPaths = new Set(['/queue/join', '/queue/heartbeat', '/slots', '/reserve']);

/**
 * Launches /usr/bin/chromium (or CHROMIUM_PATH) headless with the flags that
 * keep it off the network: this machine has no route out, and Playwright's own
 * browser download does not work here.
 */
export async function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A fresh browser context (its own cookies: another device) with one page.
 * `answers` lists every answer the page got from the queue and booking routes:
 * `{ path, status, body }` with the JSON body (problem+json for rejections).
 */
export async function openDevice(browser) {
  const context = await browser.newContext({ viewport: { width: 720, height: 560 } });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const answers = [];
  const pending = new Set();
  page.on('response', (res) => {
    const url = new URL(res.url());
    if (!apiPaths.has(url.pathname)) return;
    const p = res
      .text()
      .then((text) => {
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
        answers.push({ path: url.pathname, method: res.request().method(), status: res.status(), body });
      })
      .catch(() => {
        answers.push({ path: url.pathname, method: res.request().method(), status: res.status(), body: null });
      })
      .finally(() => pending.delete(p));
    pending.add(p);
  });
  const settled = async () => {
    await Promise.allSettled([...pending]);
    return answers;
  };
  return { context, page, answers, settled };
}

/** Full-page PNG under e2e/artifacts/. */
export async function shot(page, name) {
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 15_000 });
  return file;
}

/** Polls `fn` until it returns a truthy value, or throws after `ms`. */
export async function until(what, fn, ms = 15_000, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** The first rejection (a 4xx/5xx problem+json) the page got with `code`. */
export async function rejectionSeen(device, code, ms = 15_000) {
  return until(`a ${code} rejection`, async () => {
    await device.settled();
    return device.answers.find((a) => a.status >= 400 && a.body && a.body.code === code);
  }, ms);
}

/** The number shown in an element (e.g. #position), or null. */
export async function shownNumber(page, selector) {
  const text = await page.locator(selector).textContent({ timeout: 5000 });
  const m = /-?\d+/.exec((text ?? '').replace(/[,\u00a0\s](?=\d{3})/g, ''));
  return m ? Number(m[0]) : null;
}

/**
 * Watches whether `selector` is ever visible on `page` (checked every 150 ms
 * from Node, plus once at stop). Returns `{ stop }`; `stop()` resolves to true
 * if it was ever seen.
 */
export function watchVisible(page, selector) {
  let seen = false;
  let running = true;
  const loop = (async () => {
    while (running && !page.isClosed()) {
      try {
        seen ||= await page.locator(selector).isVisible();
      } catch {
        // the page is navigating; look again next round
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  })();
  // A test that fails before calling stop() must not leave this loop running.
  page.once('close', () => {
    running = false;
  });
  return {
    async stop() {
      running = false;
      await loop;
      try {
        seen ||= await page.locator(selector).isVisible();
      } catch {
        // page gone
      }
      return seen;
    },
  };
}
