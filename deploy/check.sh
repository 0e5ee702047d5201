#!/usr/bin/env bash
# Checks the deployment files: the alerting rules (promtool check + unit
# tests), the PromQL of every Grafana panel (promtool, as recording rules),
# and that every metric they name is one the crate exports.
#
#   bash deploy/check.sh        (needs promtool: Debian's `prometheus` package)
set -euo pipefail
cd "$(dirname "$0")"

promtool check rules prometheus/queuegate.rules.yml
(cd prometheus && promtool test rules queuegate.rules.test.yml)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/dashboard.rules.yml" <<'PY'
import json, re, sys, pathlib

here = pathlib.Path(".")
dash = json.loads((here / "grafana/queuegate.json").read_text())
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "no panel queries"
# Grafana's variables, replaced by what they expand to.
subst = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
lines = ["groups:", "  - name: dashboard", "    rules:"]
for i, e in enumerate(exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    assert "$" not in e, f"unknown variable in {e}"
    lines += [f"      - record: dashboard:panel_{i}", f"        expr: {json.dumps(e)}"]
pathlib.Path(sys.argv[1]).write_text("\n".join(lines) + "\n")

# Every metric named in the rules and the dashboard is exported by the crate
# (a string literal in src/), so a renamed metric fails here, not on the night.
src = "\n".join(p.read_text() for p in pathlib.Path("../src").rglob("*.rs"))
text = (here / "prometheus/queuegate.rules.yml").read_text() + "\n".join(exprs)
names = set(re.findall(r"\bqueuegate_[a-z_]+", text))
missing = sorted(
    n for n in names
    if f'"{n}"' not in src and f'"{re.sub(r"_(bucket|count|sum)$", "", n)}"' not in src
)
assert not missing, f"metrics not exported by the crate: {missing}"
print(f"dashboard: {len(exprs)} queries; metrics named: {', '.join(sorted(names))}")
PY
promtool check rules "$tmp/dashboard.rules.yml"
