#!/usr/bin/env bash
# Runs a benchmark command and writes what it prints to stdout into docs/benchmarks.md, between
# `<!-- NAME:start -->` and `<!-- NAME:end -->` (added under the heading TITLE when missing),
# with the command and the date. Figures in docs/benchmarks.md are only ever written this way.
#
#   bash bench/record.sh NAME "TITLE" -- COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: bench/record.sh NAME TITLE -- COMMAND..." >&2; exit 2; }
name=$1
title=$2
shift 3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" | tee "$out"
python3 - "$name" "$title" "$out" "$*" <<'PY'
import sys, pathlib, datetime
name, title, out, cmd = sys.argv[1:5]
doc = pathlib.Path("docs/benchmarks.md")
text = doc.read_text() if doc.exists() else "# Benchmarks\n"
load = open("/proc/loadavg").read().split()[0]
body = pathlib.Path(out).read_text().rstrip()
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
block = (f"{start}\nRecorded {datetime.date.today()} (load average {load} at the end) by "
         f"`bash bench/record.sh {name} ... -- {cmd}`:\n\n{body}\n{end}")
if start in text:
    pre, rest = text.split(start, 1)
    text = pre + block + rest.split(end, 1)[1]
else:
    text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
doc.write_text(text)
PY
