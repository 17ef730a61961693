#!/usr/bin/env bash
# Runs every benchmark with the settings quoted in docs/benchmarks.md. Long: 30-60 minutes on 2 cores.
# Figures go to stdout; each section of docs/benchmarks.md names the command that produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/hash_bench.py
python benchmarks/fleet_bench.py
python benchmarks/ingest_bench.py --devices 2000 --reports 100000 --batch 500 --clients 2 --workers 2
python benchmarks/ingest_bench.py --devices 2000 --reports 60000 --batch 500 --clients 2 --shards 2 --compare --rounds 2
python benchmarks/sim_bench.py --devices 100 200 400 --workers 4 16
python benchmarks/telemetry_step_bench.py --sizes 100000 1000000 3000000 --devices 10000 --repeats 5
python benchmarks/rollout_step_bench.py --sizes 100000 1000000 3000000 10000000 --devices 10000 --runs 5
python benchmarks/gate_quality.py --trials-good 1000 --trials-bad 300 --seed 1 --devices 100000
