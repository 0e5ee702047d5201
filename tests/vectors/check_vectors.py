#!/usr/bin/env python3
"""An independent check of the test vectors, written from SPEC.md alone.

Recomputes, with the Python standard library only, every derived key, queue
and scope id and binding in keys.json, every ticket in tickets.json from its
claims (layout, MAC input, tag, text), and every renewal in renew.json from
the ticket it renews (the rules of SPEC.md section 9.2). Exits non-zero on any
difference.

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

    check_retention(check)

    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("all vectors match")


if __name__ == "__main__":
    main()
