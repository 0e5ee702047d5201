// queuegate's browser client: joins the waiting room, keeps the place with
// heartbeats and tells the page what happens. One ES module, no dependencies,
// no build step; the crate serves it (queuegate::room::http::CLIENT_JS, the
// demo at GET /queue/client.js) and a host may bundle this file as it is.
//
//   import { WaitingRoom } from '/queue/client.js';
//   const room = new WaitingRoom({
//     onUpdate: (s) => { status.textContent = s.text; },
//     onAdmitted: async () => { await room.fetch('/reserve', { method: 'POST' }); room.leave(); },
//     onRefused: (r) => { status.textContent = r.text; rejoin.hidden = false; },
//   });
//   room.join();
//
// It fails closed. Only a successful answer of the room that says
// `admitted: true` and carries a ticket ever tells the page to go ahead. A
// network error, a timeout, an unreadable answer, an overloaded server or a
// refusal never does; and the server checks the ticket on every protected
// request anyway, so a page that goes ahead without one gets nothing.

/**
 * The texts shown to people. Replace any of them with the `messages` option
 * (a Korean set is in the README). `{name}` is filled in; a function gets the
 * values and returns the text. `codes` holds a text per refusal code; without
 * one the server's own `detail` is shown.
 */
export const defaultMessages = {
  joining: 'Joining the queue…',
  waiting: 'You are number {position} in line, {ahead} ahead of you. Estimated wait: {wait}.',
  opening: 'The queue opens in {wait}. Everyone who arrives before then gets a random place.',
  admitted: 'It is your turn.',
  paused: 'admission is paused',
  seconds: 'about {n} s',
  minutes: 'about {n} min',
  offline: 'Connection lost: retrying…',
  retrying: 'The queue is busy: trying again in {wait}.',
  door: 'Many people are joining right now: you join in {wait}. Keep this page open.',
  refused: 'You are no longer in the queue: please rejoin.',
  closed: 'The waiting room is closed.',
  codes: {},
};

const TIMEOUT_MS = 15_000; // a call that hangs longer counts as a network error
const MAX_BACKOFF_MS = 30_000; // backoff without Retry-After doubles up to this
const MAX_WAIT_MS = 600_000; // no wait is longer (setTimeout overflows past 2^31 ms)
const MIN_BEAT_MS = 500; // never call again sooner, whatever an answer says

// Never earlier than asked, up to half as long again later: millions of
// clients told "retry in 5 s" at once come back spread over 2.5 s.
const spread = (ms) => Math.min(MAX_WAIT_MS, ms + (Math.random() * ms) / 2);

/**
 * One person's place in the waiting room. Events (also callbacks `onUpdate`,
 * `onAdmitted`, ...): `update`, `admitted`, `retrying`, `offline`, `online`,
 * `refused`, `closed`, `left`; see the README for what each carries.
 */
export class WaitingRoom extends EventTarget {
  #options;
  #base;
  #messages;
  #state = 'idle';
  #ticket = null;
  #announced = false; // `admitted` was sent for this chain
  #running = false;
  #generation = 0; // answers to calls of an earlier join() are dropped
  #busy = null; // the call in flight, if any
  #timer = 0;
  #failures = 0;
  #sentAt = 0;
  #pass = null; // the join door's pass, sent with the next join

  /**
   * @param {object} [options]
   * @param {string} [options.base] the room's endpoints: `{base}/join`, `{base}/heartbeat`, `{base}/leave` (default `/queue`)
   * @param {object} [options.messages] texts replacing `defaultMessages`
   * @param {number} [options.timeoutMs] how long a call may take (default 15000)
   */
  constructor(options = {}) {
    super();
    this.#options = options;
    this.#base = (options.base ?? '/queue').replace(/\/+$/, '');
    const m = options.messages ?? {};
    this.#messages = { ...defaultMessages, ...m, codes: { ...defaultMessages.codes, ...m.codes } };
  }

  /** `idle`, `joining`, `waiting`, `admitted`, `refused`, `closed` or `left`. */
  get state() {
    return this.#state;
  }

  /** The newest admitted ticket, or null while not admitted. */
  get ticket() {
    return this.#state === 'admitted' ? this.#ticket : null;
  }

  /** The headers a protected request needs, or null while not admitted. */
  headers() {
    const ticket = this.ticket;
    return ticket && { 'queue-ticket': ticket, 'queue-client-time': String(Date.now()) };
  }

  /** Joins the queue (again, after a refusal: a rejoin). */
  join() {
    this.#stop();
    this.#ticket = null;
    this.#announced = false;
    this.#failures = 0;
    this.#pass = null;
    this.#running = true;
    this.#listen(true);
    this.#state = 'joining';
    this.#emit('update', { state: 'joining', admitted: false, text: this.#text('joining') });
    this.#send();
  }

  /**
   * Heart-beats now instead of at the scheduled time (after the call in
   * flight, if any): for a page that knows something changed, such as a
   * clock it just corrected. Does nothing once the place has ended.
   */
  beat() {
    if (!this.#running) return;
    if (!this.#busy) return this.#send();
    const generation = this.#generation;
    this.#busy.then(() => {
      if (generation === this.#generation) this.#send();
    });
  }

  /** Stops heart-beating and gives the place up (best effort: `POST {base}/leave`). */
  leave() {
    const ticket = this.#ticket;
    this.#stop();
    this.#ticket = null;
    this.#state = 'left';
    if (ticket) {
      const headers = { 'queue-ticket': ticket, 'queue-client-time': String(Date.now()) };
      fetch(this.#base + '/leave', { method: 'POST', headers, credentials: 'same-origin', keepalive: true }).catch(() => {});
    }
    this.#emit('left', {});
  }

  /**
   * `fetch` for a protected route, with the newest admitted ticket. Waits for
   * a heartbeat in flight (its answer may bring a newer ticket or end the
   * place) and rejects, sending nothing, while not admitted.
   */
  async fetch(input, init = {}) {
    if (this.#busy) await this.#busy;
    const extra = this.headers();
    if (!extra) throw new Error('queuegate: not admitted');
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(extra)) headers.set(k, v);
    return fetch(input, { credentials: 'same-origin', ...init, headers });
  }

  // --- the loop: one call at a time, the next one scheduled by its answer ---

  #send() {
    if (!this.#running || this.#busy) return;
    clearTimeout(this.#timer);
    const generation = this.#generation;
    this.#sentAt = Date.now();
    const call = this.#exchange(this.#ticket ? 'heartbeat' : 'join').then((outcome) => {
      if (this.#busy === call) this.#busy = null;
      if (generation === this.#generation) this.#handle(outcome);
    });
    this.#busy = call;
  }

  #schedule(ms) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#send(), ms);
  }

  // One call, judged: `{ answer }` (200 with a ticket), `{ lost }` (no usable
  // answer) or `{ status, code, detail, retryMs }` (an HTTP refusal).
  async #exchange(kind) {
    const headers = { 'queue-client-time': String(Date.now()) };
    if (kind === 'heartbeat') headers['queue-ticket'] = this.#ticket;
    if (kind === 'join' && this.#pass) headers['queue-door-pass'] = this.#pass;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#options.timeoutMs ?? TIMEOUT_MS);
    try {
      const res = await fetch(`${this.#base}/${kind}`, {
        method: 'POST',
        headers,
        credentials: 'same-origin',
        cache: 'no-store',
        signal: abort.signal,
      });
      let doc = null;
      try {
        doc = await res.json();
      } catch {
        // not JSON (a proxy's error page): judged by its status alone
      }
      if (res.ok) {
        const usable = doc && typeof doc.ticket === 'string' && doc.ticket !== '' && typeof doc.admitted === 'boolean';
        return usable ? { answer: doc } : { lost: 'unreadable answer' };
      }
      const code = typeof doc?.code === 'string' ? doc.code : null;
      const detail = typeof doc?.detail === 'string' ? doc.detail : null;
      const refusal = { status: res.status, code, detail, retryMs: retryAfterMs(res, doc) };
      // The join door: come back at the pass's time, with the pass.
      if (code === 'come_back' && typeof doc.pass === 'string' && Number.isFinite(doc.retry_after_ms)) {
        refusal.pass = doc.pass;
        refusal.retryMs = doc.retry_after_ms;
      }
      return refusal;
    } catch (e) {
      return { lost: e };
    } finally {
      clearTimeout(timer);
    }
  }

  #handle(o) {
    if (o.answer) return this.#answered(o.answer);
    if (o.code === 'room_closed') return this.#end('closed', o);
    if (o.pass) {
      // At the door: its time is already spread (jitter) and kept for this
      // page, so come back exactly then (no backoff, no extra spread).
      this.#pass = o.pass;
      const inMs = Math.min(MAX_WAIT_MS, Math.max(0, o.retryMs) + 50);
      this.#emit('retrying', { reason: 'door', code: o.code, detail: o.detail ?? null, inMs, text: this.#text('door', { wait: this.#words(inMs) }) });
      return this.#schedule(inMs);
    }
    // Worth retrying: no answer; the room overloaded (503) or asking to slow
    // down (429 with Retry-After); a gateway error that never reached it.
    const again = o.lost || o.status === 503 || (o.status === 429 && o.retryMs !== null) || (o.status >= 500 && !o.code);
    if (!again) return this.#end('refused', o);
    this.#failures += 1;
    const asked = o.retryMs ?? Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.#failures - 1));
    const inMs = spread(Math.max(MIN_BEAT_MS, asked));
    const text = o.lost ? this.#text('offline') : this.#text('retrying', { wait: this.#words(inMs) });
    this.#emit('retrying', { reason: o.lost ? 'network' : 'busy', code: o.code ?? null, detail: o.detail ?? null, inMs, text });
    this.#schedule(inMs);
  }

  #answered(r) {
    const generation = this.#generation; // a callback may call join() or leave()
    this.#failures = 0;
    this.#pass = null;
    this.#ticket = r.ticket;
    const admitted = r.admitted === true;
    this.#state = admitted ? 'admitted' : 'waiting';
    const place = {
      state: this.#state,
      admitted,
      position: r.position,
      ahead: r.ahead,
      estimatedWaitMs: r.estimated_wait_ms ?? null,
      opensInMs: r.opens_in_ms ?? 0,
    };
    if (admitted) place.text = this.#text('admitted');
    else if (r.position === 0) place.text = this.#text('opening', { wait: this.#words(r.opens_in_ms) });
    else place.text = this.#text('waiting', { ...place, wait: this.#words(r.estimated_wait_ms) });
    this.#emit('update', place);
    if (generation !== this.#generation) return;
    if (admitted && !this.#announced) {
      this.#announced = true;
      this.#emit('admitted', { ...place, ticket: r.ticket });
      if (generation !== this.#generation) return;
    }
    const next = Number(r.retry_after_ms);
    this.#schedule(Math.min(MAX_WAIT_MS, Math.max(MIN_BEAT_MS, Number.isFinite(next) ? next : 5000)));
  }

  // A refusal, or the room closed: the place is gone, the ticket with it.
  #end(state, o) {
    this.#stop();
    this.#ticket = null;
    this.#state = state;
    const code = o.code ?? 'unknown';
    const vars = { code, detail: o.detail ?? '' };
    const text = this.#messages.codes[code] ? this.#text(code, vars, this.#messages.codes) : o.detail || this.#text(state, vars);
    this.#emit(state, { code, status: o.status, detail: o.detail ?? null, retryAfterMs: o.retryMs ?? null, text });
  }

  #stop() {
    this.#running = false;
    this.#generation += 1;
    this.#busy = null;
    clearTimeout(this.#timer);
    this.#listen(false);
  }

  // --- the page's life: come back at once when it is looked at again ---

  #onPage = (e) => {
    if (!this.#running) return;
    if (e.type === 'offline') return this.#emit('offline', { text: this.#text('offline') });
    if (e.type === 'online') {
      this.#emit('online', {});
      // A whole network coming back at once: spread the return over a second.
      return this.#schedule(Math.random() * 1000);
    }
    if (e.type === 'visibilitychange' && document.visibilityState !== 'visible') return;
    if (e.type === 'pageshow' && !e.persisted) return;
    if (Date.now() - this.#sentAt >= 1000) this.#send();
  };

  #listen(on) {
    const method = on ? 'addEventListener' : 'removeEventListener';
    for (const type of ['online', 'offline', 'pageshow']) globalThis[method]?.(type, this.#onPage);
    if (typeof document !== 'undefined') {
      for (const type of ['visibilitychange', 'resume']) document[method](type, this.#onPage);
    }
  }

  // --- words ---

  #text(key, vars = {}, from = this.#messages) {
    const t = from[key];
    if (typeof t === 'function') return String(t(vars));
    return String(t ?? '').replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
  }

  #words(ms) {
    if (ms === null || ms === undefined) return this.#text('paused');
    const s = Math.max(1, Math.ceil(ms / 1000));
    return s < 60 ? this.#text('seconds', { n: s }) : this.#text('minutes', { n: Math.round(s / 60) });
  }

  #emit(type, detail) {
    const callback = this.#options['on' + type[0].toUpperCase() + type.slice(1)];
    try {
      callback?.call(this, detail);
    } catch (e) {
      setTimeout(() => {
        throw e; // the page's bug: reported, and the room keeps going
      });
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// Retry-After in seconds or as an HTTP date; else the problem's `retry_after`.
function retryAfterMs(res, doc) {
  const header = (res.headers.get('retry-after') ?? '').trim();
  if (/^\d+$/.test(header)) return Number(header) * 1000;
  const at = header ? Date.parse(header) : NaN;
  if (!Number.isNaN(at)) return Math.max(0, at - Date.now());
  return Number.isFinite(doc?.retry_after) ? doc.retry_after * 1000 : null;
}
