#!/usr/bin/env bash
# Benchmarks against the local sandbox (127.0.0.1 only). Prints a markdown table.
#
#   scripts/bench.sh [import|export|adaptive|unpaced|million|all]     (default: all)
#
# Knobs (environment): RATE (200), LATENCY_MS (25), ORGS (2000), MEMBERS (10),
# PROPS (1), DESKS (1), CONCURRENCY (8), SEQ_ORGS (200: size of the --concurrency 1
# baseline, kept small because it runs at 1/latency requests per second),
# M_ORGS x M_MEMBERS (1000 x 1000 = 1M memberships), M_RATE (1000), M_CONCURRENCY (32).
#
# Columns: requests / minimal (the fewest calls the API allows for the job),
# wall / ideal (ideal = minimal requests / rate), peak RSS of the client,
# client CPU time (user+sys) per request. Figures are ratios measured in one run:
# the machines are shared and noisy, so compare columns, not absolute seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/jsm-orgs
WHAT=${1:-all}
RATE=${RATE:-200}
LATENCY_MS=${LATENCY_MS:-25}
ORGS=${ORGS:-2000}
MEMBERS=${MEMBERS:-10}
PROPS=${PROPS:-1}
DESKS=${DESKS:-1}
CONCURRENCY=${CONCURRENCY:-8}
SEQ_ORGS=${SEQ_ORGS:-200}
M_ORGS=${M_ORGS:-1000}
M_MEMBERS=${M_MEMBERS:-1000}
M_RATE=${M_RATE:-1000}
M_CONCURRENCY=${M_CONCURRENCY:-32}
PORT=${PORT:-18431}

(cd "$ROOT" && cargo build --release --quiet)
command -v python3 >/dev/null || { echo "bench.sh needs python3 (data generator)"; exit 2; }
[ -x /usr/bin/time ] || { echo "bench.sh needs GNU time (apt-get install time)"; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jsm-orgs-bench.XXXXXX")
SANDBOX_PID=""
cleanup() { [ -n "$SANDBOX_PID" ] && kill "$SANDBOX_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

export JSM_EMAIL=sandbox@example.com JSM_API_TOKEN=sandbox-token
SITE=http://127.0.0.1:$PORT

start_sandbox() { # args...
  stop_sandbox
  "$BIN" sandbox --listen "127.0.0.1:$PORT" "$@" >"$WORK/sandbox.log" 2>&1 &
  SANDBOX_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "$SITE/__sandbox/stats" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "sandbox did not start:"; cat "$WORK/sandbox.log"; exit 1
}
stop_sandbox() { if [ -n "$SANDBOX_PID" ]; then kill "$SANDBOX_PID" 2>/dev/null || true; wait "$SANDBOX_PID" 2>/dev/null || true; SANDBOX_PID=""; fi; }
stat_of() { curl -sf "$SITE/__sandbox/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
ceil_div() { echo $(( ($1 + $2 - 1) / $2 )); }

ROWS=()
# timed NAME MINIMAL RATE -- command...
timed() {
  local name=$1 minimal=$2 rate=$3; shift 4
  local out=$WORK/$name.time code=0
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$@" >"$WORK/$name.log" 2>&1 || code=$?
  read -r wall rss_kb user sys <"$out"
  local total r429
  total=$(stat_of total); r429=$(stat_of rate_limited)
  ROWS+=("$(python3 - "$name" "$minimal" "$rate" "$wall" "$rss_kb" "$user" "$sys" "$total" "$r429" "$code" <<'PY'
import sys
name, minimal, rate, wall, rss, user, sys_, total, r429, code = sys.argv[1:]
minimal, rate, wall, total, r429 = int(minimal), float(rate), float(wall), int(total), int(r429)
ideal = minimal / rate
cpu_us = (float(user) + float(sys_)) / max(total, 1) * 1e6
print(f"| {name} | {total} | {minimal} | {total/minimal:.3f} | {wall:.1f} s | {ideal:.1f} s | {wall/ideal:.2f} "
      f"| {int(rss)/1024:.0f} MB | {cpu_us:.0f} µs | {r429} ({100*r429/max(total,1):.1f} %) | {code} |")
PY
)")
  if [ "$code" -gt 1 ]; then echo "== $name exited $code:"; tail -20 "$WORK/$name.log"; fi
}

import_minimal() { # orgs members props desks -> minimal requests into an empty site
  local o=$1 m=$2 p=$3 d=$4 chunks
  chunks=$(( m == 0 ? 0 : $(ceil_div "$m" 50) ))
  echo $(( 1 + o + o * chunks + o * p + o * d ))  # desks of new orgs need no read
}

bench_import() {
  python3 "$ROOT/scripts/gen.py" import "$WORK/in" "$ORGS" "$MEMBERS" "$PROPS" "$DESKS"
  local desks; desks=$(seq -s, 10001 $((10000 + DESKS)))
  start_sandbox --latency-ms "$LATENCY_MS" --rate-limit "$RATE" --service-desks "$desks"
  timed "import ${ORGS}x${MEMBERS}x${PROPS}x${DESKS}" "$(import_minimal "$ORGS" "$MEMBERS" "$PROPS" "$DESKS")" "$RATE" -- \
    "$BIN" import "$WORK/in" --site "$SITE" --rate "$RATE" --concurrency "$CONCURRENCY" --report "$WORK/import.csv" --quiet
  # A re-run of the same input must make no writes.
  local writes_before; writes_before=$(stat_of writes)
  "$BIN" import "$WORK/in" --site "$SITE" --rate "$RATE" --concurrency "$CONCURRENCY" --report "$WORK/rerun.csv" --quiet >/dev/null 2>&1 || true
  echo "re-run of the import: $(( $(stat_of writes) - writes_before )) writes" >>"$WORK/notes"
  # Sequential baseline on a smaller set (it runs at ~1/latency requests per second).
  python3 "$ROOT/scripts/gen.py" import "$WORK/seq" "$SEQ_ORGS" "$MEMBERS" "$PROPS" "$DESKS"
  start_sandbox --latency-ms "$LATENCY_MS" --rate-limit "$RATE" --service-desks "$desks"
  timed "import ${SEQ_ORGS}x${MEMBERS}x${PROPS}x${DESKS} --concurrency 1" "$(import_minimal "$SEQ_ORGS" "$MEMBERS" "$PROPS" "$DESKS")" "$RATE" -- \
    "$BIN" import "$WORK/seq" --site "$SITE" --rate "$RATE" --concurrency 1 --report "$WORK/seq.csv" --quiet
  start_sandbox --latency-ms "$LATENCY_MS" --rate-limit "$RATE" --service-desks "$desks"
  timed "import ${SEQ_ORGS}x${MEMBERS}x${PROPS}x${DESKS} --concurrency $CONCURRENCY" "$(import_minimal "$SEQ_ORGS" "$MEMBERS" "$PROPS" "$DESKS")" "$RATE" -- \
    "$BIN" import "$WORK/seq" --site "$SITE" --rate "$RATE" --concurrency "$CONCURRENCY" --report "$WORK/seq2.csv" --quiet
}

bench_export() { # orgs members props desks
  local o=$1 m=$2 p=$3 d=$4
  rm -rf "$WORK/seed" "$WORK/out"
  python3 "$ROOT/scripts/gen.py" seed "$WORK/seed" "$o" "$m" "$p" "$d"
  start_sandbox --seed "$WORK/seed" --latency-ms "$LATENCY_MS" --rate-limit "$RATE"
  local pages member_pages minimal
  pages=$(ceil_div "$o" 50); member_pages=$(( m == 0 ? 1 : $(ceil_div "$m" 50) ))
  minimal=$(( pages + o * (member_pages + 1 + p) + 1 + d * pages ))
  timed "export ${o}x${m}x${p}x${d}" "$minimal" "$RATE" -- \
    "$BIN" export --out "$WORK/out" --site "$SITE" --rate "$RATE" --concurrency "$CONCURRENCY" --quiet
}

bench_adaptive() { # --rate 5x above the sandbox's limit
  local limit=$RATE o=$ORGS
  python3 "$ROOT/scripts/gen.py" import "$WORK/ad" "$o" "$MEMBERS" 1 1
  start_sandbox --latency-ms "$LATENCY_MS" --rate-limit "$limit" --service-desks 10001
  timed "import ${o}x${MEMBERS}x1x1 --rate $((limit * 5)) vs limit $limit" "$(import_minimal "$o" "$MEMBERS" 1 1)" "$limit" -- \
    "$BIN" import "$WORK/ad" --site "$SITE" --rate $((limit * 5)) --concurrency "$CONCURRENCY" --report "$WORK/ad.csv" --quiet
}

bench_unpaced() { # intrinsic client CPU per request: no latency, no rate limit
  local o=$ORGS
  rm -rf "$WORK/useed" "$WORK/uout"
  python3 "$ROOT/scripts/gen.py" seed "$WORK/useed" "$o" "$MEMBERS" "$PROPS" "$DESKS"
  start_sandbox --seed "$WORK/useed"
  local pages; pages=$(ceil_div "$o" 50)
  timed "export ${o}x${MEMBERS}x${PROPS}x${DESKS} unpaced" "$(( pages + o * (2 + PROPS) + 1 + DESKS * pages ))" 100000 -- \
    "$BIN" export --out "$WORK/uout" --site "$SITE" --rate 100000 --concurrency 16 --quiet
  python3 "$ROOT/scripts/gen.py" import "$WORK/uin" "$o" "$MEMBERS" "$PROPS" "$DESKS"
  start_sandbox --service-desks "$(seq -s, 10001 $((10000 + DESKS)))"
  timed "import ${o}x${MEMBERS}x${PROPS}x${DESKS} unpaced" "$(import_minimal "$o" "$MEMBERS" "$PROPS" "$DESKS")" 100000 -- \
    "$BIN" import "$WORK/uin" --site "$SITE" --rate 100000 --concurrency 16 --report "$WORK/uimport.csv" --quiet
}

bench_million() {
  python3 "$ROOT/scripts/gen.py" import "$WORK/m" "$M_ORGS" "$M_MEMBERS" 0 0
  rm -f "$WORK/m/properties.csv" "$WORK/m/service_desks.csv"
  start_sandbox --latency-ms "$LATENCY_MS" --rate-limit "$M_RATE"
  local rows=$((M_ORGS * M_MEMBERS))
  timed "import $rows memberships (${M_ORGS}x${M_MEMBERS}) at $M_RATE rps" "$(import_minimal "$M_ORGS" "$M_MEMBERS" 0 0)" "$M_RATE" -- \
    "$BIN" import "$WORK/m" --site "$SITE" --rate "$M_RATE" --concurrency "$M_CONCURRENCY" --report "$WORK/m.csv" --quiet
}

case "$WHAT" in
  import) bench_import ;;
  export) bench_export "$ORGS" "$MEMBERS" "$PROPS" "$DESKS"; bench_export "$ORGS" 10 2 3 ;;
  adaptive) bench_adaptive ;;
  million) bench_million ;;
  unpaced) bench_unpaced ;;
  all) bench_import; bench_export "$ORGS" "$MEMBERS" "$PROPS" "$DESKS"; bench_export "$ORGS" 10 2 3; bench_adaptive
       bench_unpaced; bench_million ;;
  *) echo "usage: $0 [import|export|adaptive|unpaced|million|all]"; exit 2 ;;
esac

echo
echo "jsm-orgs $("$BIN" --version | cut -d' ' -f2) on $(nproc) cores; sandbox latency ${LATENCY_MS} ms; rate ${RATE} rps unless named"
echo
echo "| run | requests | minimal | req ÷ min | wall | ideal | wall ÷ ideal | peak RSS | CPU / request | 429s | exit |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
[ -f "$WORK/notes" ] && { echo; cat "$WORK/notes"; }
exit 0
