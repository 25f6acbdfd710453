#!/usr/bin/env bash
# Benchmarks against the local sandbox (127.0.0.1 only). Prints a markdown table.
#
#   scripts/bench.sh [import|export|large|adaptive|sequential|unpaced|million|diff|email|all]     (default: all)
#
# The sandbox models Jira Cloud: a token bucket per endpoint x method (GET and POST
# 100/s, PUT and DELETE 50/s, answered 429 jira-burst-based) and LATENCY_MS (150) per
# request, a normal round trip to Atlassian Cloud. The client runs with default flags
# unless a row names one.
#
# Columns: requests / minimal (the fewest calls the API allows for the job);
# wall / floor, where the floor is the busiest endpoint's requests divided by that
# endpoint's limit (each endpoint is limited on its own, so no client can finish
# sooner; for a site-wide limit it is minimal / limit); peak RSS of the client;
# client CPU time (user+sys) per request; 429s; exit code; check = the site's state
# (import) or the snapshot's row counts (export) are exactly what the job asked for.
# Figures are ratios measured in one run: the machines are shared and noisy, so
# compare columns, not absolute seconds.
#
# Knobs (environment): LATENCY_MS (150), ORGS (400), MEMBERS (10), BIG_ORGS (2000),
# SEQ_ORGS (40, the --concurrency 1 baseline), QUOTA (100: the site-wide limit of the
# adaptive row), CEILING (500: its --rate), M_ORGS x M_MEMBERS (1000 x 1000), M_LIMIT (1000),
# E_PEOPLE (10000 emails, half of them new to the site) into E_ORGS (500) for `email`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/jsm-orgs
WHAT=${1:-all}
LATENCY_MS=${LATENCY_MS:-150}
ORGS=${ORGS:-400}
MEMBERS=${MEMBERS:-10}
BIG_ORGS=${BIG_ORGS:-2000}
SEQ_ORGS=${SEQ_ORGS:-40}
QUOTA=${QUOTA:-100}
CEILING=${CEILING:-500}
M_ORGS=${M_ORGS:-1000}
M_MEMBERS=${M_MEMBERS:-1000}
M_LIMIT=${M_LIMIT:-1000}
E_PEOPLE=${E_PEOPLE:-10000}
E_ORGS=${E_ORGS:-500}
PORT=${PORT:-18431}
JIRA="GET=100,POST=100,PUT=50,DELETE=50"

(cd "$ROOT" && cargo build --release --quiet)
command -v python3 >/dev/null || { echo "bench.sh needs python3 (data generator)"; exit 2; }
[ -x /usr/bin/time ] || { echo "bench.sh needs GNU time (apt-get install time)"; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jsm-orgs-bench.XXXXXX")
SANDBOX_PID=""
cleanup() { [ -n "$SANDBOX_PID" ] && kill "$SANDBOX_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

export JSM_EMAIL=sandbox@example.com JSM_API_TOKEN=sandbox-token
unset JSM_RATE JSM_CONCURRENCY
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

# The site holds exactly O orgs, O*M members, O*P properties, O*D links.
check_state() { # O M P D
  curl -sf "$SITE/__sandbox/state" | python3 -c "
import json,sys; s=json.load(sys.stdin); o,m,p,d=map(int,sys.argv[1:])
got=(len(s['organizations']),len(s['members']),len(s['properties']),len(s['service_desks']))
print('ok' if got==(o,o*m,o*p,o*d) else 'MISMATCH %s' % (got,))" "$@"
}
# The snapshot in DIR matches its manifest (sha256 of every file) and holds the
# expected row counts.
check_snapshot() { # DIR O M P D
  python3 - "$@" <<'PY'
import hashlib,json,sys
d=sys.argv[1]; o,m,p,k=map(int,sys.argv[2:])
try:
    man=json.load(open(f"{d}/manifest.json"))
except OSError as e:
    print(f"NO SNAPSHOT ({e.strerror})"); sys.exit()
files=man.get("files", {})
bad=[n for n,f in files.items() if hashlib.sha256(open(f"{d}/{n}","rb").read()).hexdigest()!=f.get("sha256")]
rows={n.split(".")[0]: f.get("rows") for n,f in files.items()}
want={"organizations":o,"members":o*m,"properties":o*p,"service_desks":o*k}
print("SHA256 MISMATCH %s" % bad if bad else "ok" if all(rows.get(n)==v for n,v in want.items()) else f"MISMATCH {rows}")
PY
}

ROWS=()
# timed NAME MINIMAL FLOOR_SECS CHECK_CMD... -- command...
timed() {
  local name=$1 minimal=$2 floor=$3; shift 3
  local check=()
  while [ "$1" != "--" ]; do check+=("$1"); shift; done
  shift
  local out=$WORK/time.out code=0
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$@" >"$WORK/run.log" 2>&1 || code=$?
  read -r wall rss_kb user sys <"$out"
  local total r429 verdict
  total=$(stat_of total); r429=$(stat_of rate_limited)
  verdict=$("${check[@]}")
  ROWS+=("$(python3 - "$name" "$minimal" "$floor" "$wall" "$rss_kb" "$user" "$sys" "$total" "$r429" "$code" "$verdict" <<'PY'
import sys
name, minimal, floor, wall, rss, user, sys_, total, r429, code, verdict = sys.argv[1:]
minimal, floor, wall, total, r429 = int(minimal), float(floor), float(wall), int(total), int(r429)
cpu_us = (float(user) + float(sys_)) / max(total, 1) * 1e6
print(f"| {name} | {total} | {minimal} | {total/minimal:.3f} | {wall:.1f} s | {floor:.1f} s | {wall/floor:.2f} "
      f"| {int(rss)/1024:.0f} MB | {cpu_us:.0f} µs | {r429} ({100*r429/max(total,1):.1f} %) | {code} | {verdict} |")
PY
)")
  grep -h "busiest endpoint" "$WORK/run.log" | sed "s|^ *|  $name: |" >>"$WORK/notes" || true
  if [ "$code" -gt 1 ]; then echo "== $name exited $code:"; tail -20 "$WORK/run.log"; fi
}

# Per endpoint into an empty site: POST /organization O, POST .../user O*chunks,
# PUT .../property/{key} O*P, POST /servicedesk/{id}/organization O*D, plus one
# GET /organization (desks of new organizations need no read).
import_minimal() { local o=$1 m=$2 p=$3 d=$4; echo $(( 1 + o + o * $(ceil_div "$m" 50) * (m > 0) + o * p + o * d )); }
import_floor() { # O M P D -> the busiest endpoint's requests / its limit (GET/POST 100, PUT 50)
  python3 -c "import math,sys; o,m,p,d=map(int,sys.argv[1:]); print(max(o/100, o*math.ceil(m/50)/100, o*p/50, o*d/100))" "$@"
}
# Reads of a seeded site: org pages, per org its member pages, key list and values,
# the desk list and each desk's org pages (each a GET endpoint at 100/s).
export_minimal() { local o=$1 m=$2 p=$3 d=$4 pages mp; pages=$(ceil_div "$o" 50); mp=$(( m == 0 ? 1 : $(ceil_div "$m" 50) ))
  echo $(( pages + o * (mp + 1 + p) + 1 + d * pages )); }
export_floor() { python3 -c "import math,sys; o,m,p,d=map(int,sys.argv[1:]); print(max(o*max(1,math.ceil(m/50)), o, o*p, d*math.ceil(o/50))/100)" "$@"; }

run_import() { # NAME O M P D [client flags...]
  local name=$1 o=$2 m=$3 p=$4 d=$5; shift 5
  rm -rf "$WORK/in"; python3 "$ROOT/scripts/gen.py" import "$WORK/in" "$o" "$m" "$p" "$d"
  start_sandbox --latency-ms "$LATENCY_MS" --endpoint-limits "$JIRA" --service-desks "$(seq -s, 10001 $((10000 + d)))"
  timed "$name" "$(import_minimal "$o" "$m" "$p" "$d")" "$(import_floor "$o" "$m" "$p" "$d")" check_state "$o" "$m" "$p" "$d" -- \
    "$BIN" import "$WORK/in" --site "$SITE" --report "$WORK/import.csv" --quiet "$@"
}

run_export() { # NAME O M P D [client flags...]
  local name=$1 o=$2 m=$3 p=$4 d=$5; shift 5
  rm -rf "$WORK/seed" "$WORK/out"; python3 "$ROOT/scripts/gen.py" seed "$WORK/seed" "$o" "$m" "$p" "$d"
  start_sandbox --seed "$WORK/seed" --latency-ms "$LATENCY_MS" --endpoint-limits "$JIRA"
  timed "$name" "$(export_minimal "$o" "$m" "$p" "$d")" "$(export_floor "$o" "$m" "$p" "$d")" check_snapshot "$WORK/out" "$o" "$m" "$p" "$d" -- \
    "$BIN" export --out "$WORK/out" --site "$SITE" --quiet "$@"
}

bench_import() {
  run_import "import ${ORGS}x${MEMBERS}x1x1" "$ORGS" "$MEMBERS" 1 1
  # A re-run of the same input must make no writes.
  # It reads members, property keys and values, one endpoint each, side by side:
  # its floor is ORGS reads at 100/s.
  local before reads t0 t1; before=$(stat_of writes); reads=$(stat_of reads); t0=$(date +%s.%N)
  "$BIN" import "$WORK/in" --site "$SITE" --report "$WORK/rerun.csv" --quiet >/dev/null 2>&1 || true
  t1=$(date +%s.%N)
  echo "re-run of import ${ORGS}x${MEMBERS}x1x1: $(( $(stat_of writes) - before )) writes, $(( $(stat_of reads) - reads )) reads in $(python3 -c "print(f'{$t1-$t0:.1f} s (floor {$ORGS/100:.1f} s)')")" >>"$WORK/notes"
}
bench_export() { run_export "export ${ORGS}x${MEMBERS}x2x1" "$ORGS" "$MEMBERS" 2 1; }
bench_large() {
  run_import "import ${BIG_ORGS}x${MEMBERS}x1x1" "$BIG_ORGS" "$MEMBERS" 1 1
  run_export "export ${BIG_ORGS}x${MEMBERS}x1x1" "$BIG_ORGS" "$MEMBERS" 1 1
  run_export "export ${BIG_ORGS}x${MEMBERS}x2x3" "$BIG_ORGS" "$MEMBERS" 2 3
}
bench_sequential() { # one request at a time against the same site
  run_import "import ${SEQ_ORGS}x${MEMBERS}x1x1 --concurrency 1" "$SEQ_ORGS" "$MEMBERS" 1 1 --concurrency 1
  run_import "import ${SEQ_ORGS}x${MEMBERS}x1x1" "$SEQ_ORGS" "$MEMBERS" 1 1
}
bench_adaptive() { # --rate far above a site whose whole budget is QUOTA/s (a tenant quota)
  local o=$ORGS
  rm -rf "$WORK/ad"; python3 "$ROOT/scripts/gen.py" import "$WORK/ad" "$o" "$MEMBERS" 1 1
  start_sandbox --latency-ms "$LATENCY_MS" --endpoint-limits "$JIRA" --rate-limit "$QUOTA" --service-desks 10001
  local minimal; minimal=$(import_minimal "$o" "$MEMBERS" 1 1)
  timed "import ${o}x${MEMBERS}x1x1 --rate $CEILING vs a $QUOTA/s site" "$minimal" "$(python3 -c "print($minimal/$QUOTA)")" \
    check_state "$o" "$MEMBERS" 1 1 -- \
    "$BIN" import "$WORK/ad" --site "$SITE" --rate "$CEILING" --report "$WORK/ad.csv" --quiet
}
bench_unpaced() { # intrinsic client CPU per request: no latency, limits the client learns as 100000/s
  local o=$BIG_ORGS fast="GET=100000,POST=100000,PUT=100000,DELETE=100000"
  rm -rf "$WORK/useed" "$WORK/uout"; python3 "$ROOT/scripts/gen.py" seed "$WORK/useed" "$o" "$MEMBERS" 1 1
  start_sandbox --seed "$WORK/useed" --endpoint-limits "$fast"
  local minimal; minimal=$(export_minimal "$o" "$MEMBERS" 1 1)
  timed "export ${o}x${MEMBERS}x1x1 unpaced" "$minimal" "$(python3 -c "print($minimal/100000)")" check_snapshot "$WORK/uout" "$o" "$MEMBERS" 1 1 -- \
    "$BIN" export --out "$WORK/uout" --site "$SITE" --quiet
  rm -rf "$WORK/uin"; python3 "$ROOT/scripts/gen.py" import "$WORK/uin" "$o" "$MEMBERS" 1 1
  start_sandbox --service-desks 10001 --endpoint-limits "$fast"
  minimal=$(import_minimal "$o" "$MEMBERS" 1 1)
  timed "import ${o}x${MEMBERS}x1x1 unpaced" "$minimal" "$(python3 -c "print($minimal/100000)")" check_state "$o" "$MEMBERS" 1 1 -- \
    "$BIN" import "$WORK/uin" --site "$SITE" --report "$WORK/uimport.csv" --quiet
}
bench_million() {
  rm -rf "$WORK/m"; python3 "$ROOT/scripts/gen.py" import "$WORK/m" "$M_ORGS" "$M_MEMBERS" 0 0
  rm -f "$WORK/m/properties.csv" "$WORK/m/service_desks.csv"
  start_sandbox --latency-ms 25 --endpoint-limits "GET=$M_LIMIT,POST=$M_LIMIT,PUT=$M_LIMIT,DELETE=$M_LIMIT"
  local rows=$((M_ORGS * M_MEMBERS)) chunks; chunks=$(( M_ORGS * $(ceil_div "$M_MEMBERS" 50) ))
  timed "import $rows memberships (${M_ORGS}x${M_MEMBERS}), endpoints at $M_LIMIT/s, 25 ms" "$(import_minimal "$M_ORGS" "$M_MEMBERS" 0 0)" \
    "$(python3 -c "print($chunks/$M_LIMIT)")" check_state "$M_ORGS" "$M_MEMBERS" 0 0 -- \
    "$BIN" import "$WORK/m" --site "$SITE" --report "$WORK/m.csv" --quiet
}

bench_diff() { # two snapshots of M_ORGS x M_MEMBERS memberships, a night apart; no site involved
  rm -rf "$WORK/d1" "$WORK/d2"
  python3 "$ROOT/scripts/gen.py" seed "$WORK/d1" "$M_ORGS" "$M_MEMBERS" 1 1
  python3 "$ROOT/scripts/gen.py" night "$WORK/d2" "$M_ORGS" "$M_MEMBERS" 1 1
  local out=$WORK/diff.time code=0 wall rss_kb user sys rows
  /usr/bin/time -f '%e %M %U %S' -o "$out" "$BIN" diff "$WORK/d1" "$WORK/d2" --report "$WORK/diff.csv" --quiet \
    >"$WORK/diff.log" 2>&1 || code=$?
  read -r wall rss_kb user sys < <(tail -n1 "$out")  # time prepends "Command exited with non-zero status" on exit 1
  rows=$(( $(wc -l <"$WORK/diff.csv") - 1 ))
  echo "diff of $((M_ORGS * M_MEMBERS)) memberships (${M_ORGS}x${M_MEMBERS}, 1 property and 1 desk link per org): ${wall} s wall, $((rss_kb / 1024)) MB peak RSS, ${rows} change rows, exit $code (1 = different)" >>"$WORK/notes"
}

# The site holds exactly N memberships in O orgs, each with the person's email.
check_email() { # O N
  curl -sf "$SITE/__sandbox/state" | python3 -c "
import json,sys; s=json.load(sys.stdin); o,n=map(int,sys.argv[1:])
ms=s['members']; ok=len(ms)==n and len({m['organization'] for m in ms})==o and all(m.get('email') for m in ms)
print('ok' if ok else 'MISMATCH %d members' % len(ms))" "$@"
}

bench_email() { # a CRM file naming people by email, half of them new, into new organizations
  rm -rf "$WORK/crm"; python3 "$ROOT/scripts/gen.py" crm "$WORK/crm" "$E_ORGS" "$E_PEOPLE"
  start_sandbox --latency-ms "$LATENCY_MS" --endpoint-limits "$JIRA" --customers "$WORK/crm/customers.csv"
  local new=$((E_PEOPLE / 2)) chunks
  chunks=$(( E_ORGS * $(ceil_div $(( E_PEOPLE / E_ORGS )) 50) ))
  # 1 list + a user search per email + a create per new person + org creates + member adds;
  # the floor is the busiest endpoint, the user search, at 100/s.
  timed "import $E_PEOPLE emails ($new new) into $E_ORGS orgs" "$(( 1 + E_PEOPLE + new + E_ORGS + chunks ))" \
    "$(python3 -c "print($E_PEOPLE/100)")" check_email "$E_ORGS" "$E_PEOPLE" -- \
    "$BIN" import "$WORK/crm/crm.csv" --site "$SITE" --create-customers --report "$WORK/email.csv" --quiet
  local writes_before; writes_before=$(stat_of writes)
  "$BIN" import "$WORK/crm/crm.csv" --site "$SITE" --create-customers --report "$WORK/email-rerun.csv" --quiet >/dev/null 2>&1 || true
  echo "re-run of the email import: $(( $(stat_of writes) - writes_before )) writes" >>"$WORK/notes"
}

case "$WHAT" in
  import) bench_import ;;
  export) bench_export ;;
  large) bench_large ;;
  adaptive) bench_adaptive ;;
  sequential) bench_sequential ;;
  million) bench_million ;;
  diff) bench_diff ;;
  unpaced) bench_unpaced ;;
  email) bench_email ;;
  all) bench_import; bench_export; bench_adaptive; bench_large; bench_sequential; bench_unpaced; bench_million; bench_diff
       bench_email ;;
  *) echo "usage: $0 [import|export|large|adaptive|sequential|unpaced|million|diff|email|all]"; exit 2 ;;
esac

echo
echo "jsm-orgs $("$BIN" --version | cut -d' ' -f2) on $(nproc) cores; sandbox latency ${LATENCY_MS} ms; endpoint limits $JIRA unless named"
echo
echo "| run | requests | minimal | req ÷ min | wall | floor | wall ÷ floor | peak RSS | CPU / request | 429s | exit | check |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
[ -f "$WORK/notes" ] && { echo; cat "$WORK/notes"; }
exit 0
