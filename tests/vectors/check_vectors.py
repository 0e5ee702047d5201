#!/usr/bin/env python3
"""An independent check of the test vectors, written from SPEC.md alone.

Recomputes, with the Python standard library only, every derived key, queue
and scope id and binding in keys.json, every ticket in tickets.json from its
claims (layout, MAC input, tag, text), and every renewal in renew.json from
the ticket it renews (the rules of SPEC.md section 9.2) with the outcome of
each retry (9.3). It also verifies
every case of verify.json (section 8, with the Retry-After rounding of 8.6),
heartbeat.json (section 9.4: the ticket's checks, then `ended`) and
consume.json (section 10: single-use consumption and the same-client rule)
with its own verifier. Exits non-zero on any difference.

    python3 tests/vectors/check_vectors.py
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE_OF_VECTORS = "vaccine-53-54"


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return json.load(f)


def derive(secret, purpose):
    return hmac.new(secret, b"queuegate/1 key:" + purpose.encode(), hashlib.sha256).digest()


def short_id(prefix, name):
    return hashlib.sha256(prefix + name.encode("utf-8")).digest()[:8]


def binding(secret, queue_id, material):
    return hmac.new(derive(secret, "binding"), queue_id + material, hashlib.sha256).digest()[:16]


def claims_bytes(c):
    measured = c["clock_offset_ms"] is not None
    return (
        struct.pack(">BBBB", 1, {"waiting": 0, "admitted": 1}[c["kind"]], int(measured), c["key_id"])
        + bytes.fromhex(c["queue_id"])
        + bytes.fromhex(c["ticket_id"])
        + struct.pack(">III", c["epoch"], c["sequence"], c["position"])
        + struct.pack(
            ">qqqqq",
            c["joined_at_ms"],
            c["issued_at_ms"],
            c["live_until_ms"],
            c["admitted_from_ms"],
            c["expires_at_ms"],
        )
        + struct.pack(">i", c["clock_offset_ms"] if measured else 0)
        + bytes.fromhex(c["binding"])
    )


def parse_claims(b):
    version, kind, flags, key_id = struct.unpack(">BBBB", b[0:4])
    assert version == 1 and kind in (0, 1) and flags in (0, 1)
    epoch, sequence, position = struct.unpack(">III", b[28:40])
    joined, issued, live, admitted_from, expires = struct.unpack(">qqqqq", b[40:80])
    (offset,) = struct.unpack(">i", b[80:84])
    return {
        "kind": ("waiting", "admitted")[kind],
        "key_id": key_id,
        "queue_id": b[4:12].hex(),
        "ticket_id": b[12:28].hex(),
        "epoch": epoch,
        "sequence": sequence,
        "position": position,
        "joined_at_ms": joined,
        "issued_at_ms": issued,
        "live_until_ms": live,
        "admitted_from_ms": admitted_from,
        "expires_at_ms": expires,
        "clock_offset_ms": offset if flags & 1 else None,
        "binding": b[84:100].hex(),
    }


B64URL = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
STATUS = {"malformed": 400, "not_admitted": 429, "replayed": 409, "store_unavailable": 503, "ended": 410}


def sat(v):
    return max(I64_MIN, min(I64_MAX, v))


def sat32(v):
    return max(-(2**31), min(2**31 - 1, v))


def retry_after_header(ms):
    """SPEC.md 8.6: whole seconds, rounded up."""
    return str(-(-ms // 1000))


def parse_client_time(h):
    """SPEC.md 8: optional '-' then 1 to 16 ASCII digits."""
    if h is None:
        return "absent"
    digits = h[1:] if h.startswith("-") else h
    if not 1 <= len(digits) <= 16 or not all(c in "0123456789" for c in digits):
        return "invalid"
    return -int(digits) if h.startswith("-") else int(digits)


class Refused(Exception):
    def __init__(self, code, reason=None, retry_after_ms=None):
        super().__init__(code)
        self.code, self.reason, self.retry_after_ms = code, reason, retry_after_ms


def verify(text, queue, now, material, client_time, ring, policy, protected=True, monitored=()):
    """SPEC.md 8.1 steps 1-17 (no replay state). `ring` maps key id to secret.
    Returns (claims, first monitored finding, binding verified); raises Refused."""
    found = []

    def flag(code, **kw):
        if code in monitored:
            found.append(code)
        else:
            raise Refused(code, **kw)

    if text is None:
        raise Refused("missing")
    raw = text.encode()
    if len(raw) != 176:
        raise Refused("malformed", "length")
    if not set(raw) <= B64URL:
        raise Refused("malformed", "encoding")
    b = base64.urlsafe_b64decode(raw + b"==")
    claims, tag = b[:100], b[100:]
    if claims[0] != 1:
        raise Refused("malformed", "version")
    key_id = claims[3]
    if key_id not in ring:
        raise Refused("unknown_key")
    if claims[1] not in (0, 1):
        raise Refused("malformed", "field")
    want = hmac.new(derive(ring[key_id], ("waiting", "admitted")[claims[1]]), b"queuegate/1" + claims, hashlib.sha256).digest()
    if not hmac.compare_digest(want, tag):
        raise Refused("bad_signature")
    if claims[2] & 0xFE or (not claims[2] & 1 and claims[80:84] != b"\0\0\0\0"):
        raise Refused("malformed", "field")
    c = parse_claims(claims)
    if bytes.fromhex(c["queue_id"]) != short_id(b"queuegate/1 queue:", queue):
        flag("wrong_queue")
    if protected and (c["kind"] != "admitted" or now < c["admitted_from_ms"]):
        flag("not_admitted", retry_after_ms=max(sat(c["admitted_from_ms"] - now), 1000))
    if now >= c["expires_at_ms"]:
        flag("expired")
    if now >= c["live_until_ms"]:
        flag("offline_resumed")
    bound = material is not None and hmac.compare_digest(
        binding(ring[key_id], bytes.fromhex(c["queue_id"]), material), bytes.fromhex(c["binding"])
    )
    if not bound:
        flag("binding_mismatch")
    t = parse_client_time(client_time)
    if t == "invalid":
        flag("malformed", reason="client_time")
    elif t == "absent":
        if policy.get("client_time_required"):
            flag("malformed", reason="client_time_missing")
    else:
        offset = sat(t - now)
        skew, jump, delay = policy["max_skew_ms"], policy["max_jump_ms"], policy["max_delay_ms"]
        if offset > skew or offset < -(skew + delay):
            flag("clock_skew")
        if c["clock_offset_ms"] is not None:
            moved = sat32(offset) - c["clock_offset_ms"]
            if moved > jump or moved < -(jump + delay):
                flag("clock_jump")
    return c, (found[0] if found else None), bound


DEFAULT_POLICY = {"max_skew_ms": 300_000, "max_jump_ms": 60_000, "max_delay_ms": 10_000}


def check_retention(check):
    """SPEC.md section 10: a chain's record is kept until the latest
    liveness deadline seen, each bounded by its ticket's expiry, plus the
    tolerance."""
    retention = load("retention.json")
    tolerance = retention["tolerance_ms"]
    for c in retention["cases"]:
        keep = max(min(s["live_until_ms"], s["expires_at_ms"]) for s in c["steps"]) + tolerance
        check(f"retention {c['name']}", keep, c["expect_keep_until_ms"])


def main():
    failures = []

    def check(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    keys = load("keys.json")
    secrets = {}
    for k in keys["keys"]:
        s = bytes.fromhex(k["secret"])
        secrets[k["key_id"]] = s
        for p in ("waiting", "admitted", "binding"):
            check(f"key {k['key_id']} k_{p}", derive(s, p).hex(), k[f"k_{p}"])
    for i in keys["ids"]:
        check(f"queue id {i['name']!r}", short_id(b"queuegate/1 queue:", i["name"]).hex(), i["queue_id"])
        check(f"scope id {i['name']!r}", short_id(b"queuegate/1 scope:", i["name"]).hex(), i["scope_id"])
    for b in keys["bindings"]:
        qid = short_id(b"queuegate/1 queue:", b["queue"])
        got = binding(secrets[b["key_id"]], qid, bytes.fromhex(b["material_hex"]))
        check(f"binding {b}", got.hex(), b["binding"])

    for t in load("tickets.json")["tickets"]:
        c = t["claims"]
        name = t["name"]
        cb = claims_bytes(c)
        check(f"{name} claims", cb.hex(), t["claims_hex"])
        check(f"{name} queue id", short_id(b"queuegate/1 queue:", t["queue"]).hex(), c["queue_id"])
        secret = secrets[c["key_id"]]
        material = bytes.fromhex(t["binding_material_hex"])
        check(f"{name} binding", binding(secret, bytes.fromhex(c["queue_id"]), material).hex(), c["binding"])
        mac_input = b"queuegate/1" + cb
        check(f"{name} mac input", mac_input.hex(), t["mac_input_hex"])
        check(f"{name} mac input length", len(mac_input), 111)
        tag = hmac.new(derive(secret, c["kind"]), mac_input, hashlib.sha256).digest()
        check(f"{name} tag", tag.hex(), t["tag_hex"])
        text = base64.urlsafe_b64encode(cb + tag).decode().rstrip("=")
        check(f"{name} text", text, t["ticket"])
        check(f"{name} text length", len(text), 176)

    renew = load("renew.json")
    ttl = renew["issuer"]["admitted_ttl_ms"]
    signer = renew["issuer"]["signing_key_id"]
    for c in renew["cases"]:
        name = c["name"]
        raw = base64.urlsafe_b64decode(c["from_ticket"] + "==")
        prev = parse_claims(raw[:100])
        d = c["decision"]
        now = c["now_ms"]
        header = c["client_time_header"]
        measured = None if header is None else int(header) - now
        # SPEC.md section 9.2, the table of the next claims.
        nxt = dict(prev)
        if prev["kind"] == "admitted":
            pass
        elif d["admit"]:
            nxt.update(kind="admitted", admitted_from_ms=now, expires_at_ms=now + ttl)
        else:
            nxt.update(admitted_from_ms=now + d["estimated_wait_ms"])
        samples = [o for o in (prev["clock_offset_ms"], measured) if o is not None]
        baseline = max(samples) if samples else None
        if baseline is not None:
            baseline = max(-(2**31), min(2**31 - 1, baseline))
        nxt.update(
            key_id=signer,
            sequence=prev["sequence"] + 1,
            position=d["position"],
            issued_at_ms=now,
            live_until_ms=now + d["live_for_ms"],
            clock_offset_ms=baseline,
            binding=binding(
                secrets[signer],
                bytes.fromhex(prev["queue_id"]),
                bytes.fromhex(c["binding_material_hex"]),
            ).hex(),
        )
        cb = claims_bytes(nxt)
        check(f"renew {name} claims", cb.hex(), claims_bytes(c["expect_claims"]).hex())
        tag = hmac.new(derive(secrets[signer], nxt["kind"]), b"queuegate/1" + cb, hashlib.sha256).digest()
        text = base64.urlsafe_b64encode(cb + tag).decode().rstrip("=")
        check(f"renew {name} text", text, c["expect_ticket"])
        # Section 9.3: a retry of ticket n while n + 1 is unused gets the same
        # successor until the grace ends (exclusive), then replayed. These
        # retries send the same client offset, so the baseline is unchanged.
        grace = renew["issuer"]["renewal_grace_ms"]
        for r in c["retries"]:
            r_header = r["client_time_header"]
            r_offset = None if r_header is None else int(r_header) - r["now_ms"]
            check(f"renew {name} retry offset", r_offset, measured)
            want = "same" if r["now_ms"] < now + grace else "replayed"
            check(f"renew {name} retry at {r['now_ms']}", want, r["expect"])

    # verify.json: SPEC.md section 8, and the Retry-After of 8.6.
    vf = load("verify.json")
    ring = {i: secrets[i] for i in [vf["ring"]["signing_key_id"]] + vf["ring"]["verify_only_key_ids"]}
    for row in vf["retry_after"]:
        check(f"retry after {row['retry_after_ms']}", retry_after_header(row["retry_after_ms"]), row["header"])
    for c in vf["cases"]:
        name = c["name"]
        material = None if c["binding_material_hex"] is None else bytes.fromhex(c["binding_material_hex"])
        policy = dict(vf["policy"], client_time_required=c["client_time_required"])
        try:
            verify(c["ticket"], c["queue"], c["now_ms"], material, c["client_time_header"], ring, policy)
            got, reason, retry = "ok", None, None
        except Refused as r:
            got, reason, retry = r.code, r.reason, r.retry_after_ms
        check(f"verify {name}", got, c["expect"])
        if "malformed_reason" in c:
            check(f"verify {name} reason", reason, c["malformed_reason"])
        if "retry_after_ms" in c:
            check(f"verify {name} retry_after_ms", retry, c["retry_after_ms"])
            check(f"verify {name} Retry-After", retry_after_header(retry or 0), c["retry_after_header"])

    # heartbeat.json: SPEC.md section 9.4. The room knows no chain, so a
    # ticket that passes its checks (step 10 excepted; step 18 the epoch) is
    # ended.
    hb = load("heartbeat.json")
    ring = {i: secrets[i] for i in [hb["issuer"]["signing_key_id"]] + hb["issuer"]["verify_only_key_ids"]}
    for c in hb["cases"]:
        name = c["name"]
        try:
            t, _, _ = verify(
                c["ticket"], c["queue"], c["now_ms"], bytes.fromhex(c["binding_material_hex"]),
                c["client_time_header"], ring, DEFAULT_POLICY, protected=False,
            )
            if t["epoch"] != c["store_epoch"]:
                raise Refused("replayed", "state_reset")
            raise Refused("ended")
        except Refused as r:
            check(f"heartbeat {name}", r.code, c["expect"])
            check(f"heartbeat {name} status", STATUS.get(r.code, 403), c["status"])
            check(f"heartbeat {name} Retry-After", None, c["retry_after_header"])

    # consume.json: SPEC.md section 10, single_use.
    cf = load("consume.json")
    ring = {1: secrets[1], 2: secrets[2], 3: secrets[3]}
    for c in cf["cases"]:
        monitored = ("binding_mismatch",) if c["binding_mismatch"] == "monitor" else ()
        highest, consumed = None, False
        for i, st in enumerate(c["steps"]):
            what = f"consume {c['name']} step {i}"
            material = None if st["binding_material_hex"] is None else bytes.fromhex(st["binding_material_hex"])
            got = {"expect": "ok", "monitored": None, "replay_reason": None}
            try:
                t, finding, bound = verify(
                    st["ticket"], QUEUE_OF_VECTORS, st["now_ms"], material,
                    st["client_time_header"], ring, DEFAULT_POLICY, monitored=monitored,
                )
                if t["epoch"] != cf["store_epoch"]:
                    raise Refused("replayed", "state_reset")
                # Sequences in these cases only rise (no renewal grace needed).
                if highest is not None and t["sequence"] < highest:
                    raise Refused("replayed", "stale_sequence")
                if consumed:
                    # Same chain; the same client iff its binding verified now.
                    raise Refused("replayed", "consumed_by_same_client" if bound else "consumed_by_other_client")
                highest = t["sequence"] if highest is None else max(highest, t["sequence"])
                consumed = True
                got["monitored"] = finding
            except Refused as r:
                got = {"expect": r.code, "monitored": None, "replay_reason": r.reason if r.code == "replayed" else None}
            for k in got:
                check(f"{what} {k}", got[k], st[k])

    check_retention(check)

    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("all vectors match")


if __name__ == "__main__":
    main()
