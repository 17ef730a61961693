#!/usr/bin/env bash
# The main job on the embedded default (local directory store): a workspace, a signed release
# with three variants approved by a release manager, a fleet, and devices fetching their own
# configuration through a real TUF client (python-tuf ngclient over HTTP on 127.0.0.1).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="${DEMO_DIR:-$HERE/demo-workspace}"
# Demo passphrase for the demo's keys only; real use: a prompt, or a CI secret in this variable.
export OTACTL_KEY_PASSPHRASE="${OTACTL_KEY_PASSPHRASE:-demo-only-passphrase}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$DEMO"
step "otactl init: keys, trust configuration, TUF repository (root, targets, snapshot, timestamp, releases, rollouts, devices bins)"
# Lab mode: one passphrase for every key, the release manager's key made here (a product gives each
# release manager their own key on their own machine: docs/key-custody.md)
otactl init "$DEMO" --shared-passphrase
cd "$DEMO"
otactl repo status

step "CI builds release 2.0.0 (two hardware revisions, three horsepower variants) and signs it with the CI key"
otactl release build "$HERE/manifests/t9-engine-2.0.0.yaml"
step "Publishing with only the CI signature is refused"
if otactl release publish 2.0.0; then echo "unexpected: published without approval"; exit 1; fi
step "The release manager reviews and approves with their own key; then it is published"
otactl release review 2.0.0
otactl release approve 2.0.0 --key release-manager
otactl release publish 2.0.0
otactl release list

step "Fleet: import 12 devices (signed records in hash bins), move one to the 500 hp tier"
otactl fleet import "$HERE/examples/fleet/inventory.csv"
otactl fleet set t9-0004 --variant hp-500

step "Serve the repository on 127.0.0.1 and let one device of each variant fetch its own configuration"
PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
otactl repo serve --port "$PORT" & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do python -c "import httpx,sys; httpx.get('http://127.0.0.1:$PORT/metadata/timestamp.json').raise_for_status()" 2>/dev/null && break; sleep 0.1; done
for dev in t9-0000 t9-0001 t9-0004; do
  rm -rf ".otactl/client-$dev"
  record=$(otactl repo fetch "devices/$dev.json" --url "http://127.0.0.1:$PORT" --client-dir ".otactl/client-$dev")
  # the variant a device installs is the one its offline-signed entitlement grants (decision 0406)
  variant=$(python -c 'import json,sys; r=json.loads(sys.argv[1]); print((r.get("entitlement") or {}).get("statement", r)["variant"])' "$record")
  config=$(otactl repo fetch "config/t9-engine/2.0.0/$variant.json" --url "http://127.0.0.1:$PORT" --client-dir ".otactl/client-$dev")
  echo "$dev ($variant): $config"
done

step "Verify the whole repository as a TUF client would"
otactl repo verify
kill $SERVER 2>/dev/null || true

step "CI builds 2.1.0 (with signed deltas from 2.0.0: its images change one table) and 2.2.0, both staged at once"
otactl release build "$HERE/manifests/t9-engine-2.1.0.yaml" --delta-from 2.0.0 >/dev/null
otactl release build "$HERE/manifests/t9-engine-2.2.0.yaml" >/dev/null
otactl release list
step "The release manager approves 2.2.0 first, then 2.1.0; each is its own signed role, so neither goes stale"
for v in 2.2.0 2.1.0; do
  otactl release approve "$v" --key release-manager >/dev/null
  otactl release publish "$v"
done
otactl release list
echo "   (rollout plan on the workspace's own 12 example devices: it warns that the demo plan's rings are made"
echo "    for a larger fleet, as they are; the simulated fleet below has 160)"
otactl rollout plan t9-engine 2.1.0 --plan "$HERE/canary/demo.yaml"

step "A simulated fleet of 160 engines (real TUF clients on 127.0.0.1, signed reports into SQLite) under the rollout controller:"
echo "   2.1.0 is as good as 2.0.0 and should walk to 100%; 2.2.0 crashes five times as often and should be rolled back"
set +e
otactl sim rollout "$HERE/examples/scenarios/t9-demo-rollouts.yaml" --plan "$HERE/canary/demo.yaml" \
  --baseline 2.0.0 --release 2.1.0 --release 2.2.0 --workspace . --work-dir "$DEMO/sim"
code=$?
set -e
echo "otactl sim rollout exited $code (3: a gate rolled a release back, as the story expects)"
[ "$code" = 3 ] || { echo "unexpected exit code"; exit 1; }

echo "   devices that installed 2.1.0 from a delta (the full image only where the delta could not be used):"
python - "$DEMO/sim/telemetry.db" <<'PY'
import json, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT payload FROM reports WHERE event = 'downloaded' AND release = '2.1.0'").fetchall()
modes = [json.loads(p).get("transfer", {}) for (p,) in rows]
for mode in ("delta", "full"):
    got = [m for m in modes if m.get("mode") == mode]
    print(f"   {mode}: {len(got)} downloads, {sum(m.get('bytes', 0) for m in got):,} bytes")
PY

step "The audit log verifies; the rollout report is written (Markdown, and an HTML page with charts)"
otactl audit verify t9-engine
otactl rollout status t9-engine
TELEMETRY="sqlite:$DEMO/sim/telemetry.db"
otactl rollout report t9-engine --telemetry "$TELEMETRY" -o md --out "$DEMO/rollout-report.md"
otactl rollout report t9-engine --telemetry "$TELEMETRY" -o html --out "$DEMO/rollout-report.html"

step "The fleet report: what each device runs against its target (the 12 example devices never reported)"
otactl report fleet --telemetry "$TELEMETRY" -o markdown --out "$DEMO/fleet-report.md"
otactl report fleet --telemetry "$TELEMETRY" -o html --out "$DEMO/fleet-report.html"
step "Install windows (decision 1202): devices download at any time, install only inside their window with the engine off"
# the example scenario, with a nightly window that opens 30 minutes from now (UTC): every device downloads
# 2.1.0 and waits, and says so in its signed health reports
OPENS=$(python -c 'import datetime as d; t=d.datetime.now(d.UTC)+d.timedelta(minutes=30); print(t.minute, t.hour)')
sed -e "s|^  preconditions: .*|&\n  install_windows: [{cron: \"$OPENS * * *\", duration_minutes: 120, timezone: UTC}]|" \
    -e "s|^rounds: .*|rounds: 3|" -e "s|\.\./\.\./manifests|$HERE/manifests|" \
    "$HERE/examples/scenarios/t9-install-windows.yaml" > "$DEMO/t9-windows.yaml"
otactl sim run "$DEMO/t9-windows.yaml" --work-dir "$DEMO/windows" >/dev/null
python - "$DEMO/windows/telemetry.db" <<'PY'
import json, sqlite3, sys
(payload,) = sqlite3.connect(sys.argv[1]).execute("SELECT payload FROM reports WHERE kind = 'health' AND"
    " json_extract(payload, '$.waiting') IS NOT NULL ORDER BY device_id, seq DESC LIMIT 1").fetchone()
r = json.loads(payload)
print(f"   {r['device_id']} runs {r['release']}, waiting for {r['waiting']['release']}: {r['waiting']['reason']}")
PY

echo
echo "demo finished: workspace in $DEMO"
echo "  rollout report: $DEMO/rollout-report.html (Markdown: $DEMO/rollout-report.md)"
echo "  fleet report:   $DEMO/fleet-report.html (Markdown: $DEMO/fleet-report.md)"
echo "  open the HTML files in a browser; docs/screenshots/ shows what they look like"
