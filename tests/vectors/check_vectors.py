#!/usr/bin/env python3
"""An independent check of the test vectors, written from SPEC.md alone.

Recomputes, with the Python standard library only, every derived key, queue
and scope id and binding in keys.json, and every ticket in tickets.json from
its claims (layout, MAC input, tag, text). Exits non-zero on any difference.

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

    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("all vectors match")


if __name__ == "__main__":
    main()
