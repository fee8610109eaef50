#!/usr/bin/env bash
# Cloud metadata benchmark: datasource detect + fetch + apply time per datasource, virga's guest
# against a CirrOS-style baseline (BusyBox init + shell scripts doing the same datasource work:
# a blkid-like label probe, mount and awk for seed disks, udhcpc + wget for metadata services)
# built in the same run, on the same kernel, booted the same way with the same host side.
#
#   bash bench/cloud.sh [--runs N] [--record]
#
# Datasources: nocloud (cidata ISO on a CD-ROM), configdrive (config-2 ISO on a CD-ROM), ec2
# and openstack (virga's metadata server behind QEMU guestfwd: the host never sends anything to
# 169.254.169.254). Every boot is `virga run --expect-ready --json --datasource DS --user-data
# <script>`, bounded by --timeout; virga and baseline boots alternate; figures are medians of N
# boots each. Guest figures are the guest's own stage timings from its ready line:
#   detect + fetch + apply = datasource-local + datasource-net + apply + user-data-early + user-data
# (the baseline has no user-data-early stage), network (DHCP) reported apart. --record also
# writes the tables into docs/benchmarks.md (between the cloud-bench markers).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --record) record=1; shift ;;
    *) echo "usage: bench/cloud.sh [--runs N] [--record]" >&2; exit 2 ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) echo "bench/cloud.sh: --runs needs a positive number" >&2; exit 2 ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q -p virga-cli
virga="${CARGO_TARGET_DIR:-target}/debug/virga"
datasources=(nocloud configdrive ec2 openstack)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# The baseline spec is derived from virga.toml as bench/boot.sh derives its own (same kernel and
# modules, BusyBox init + bench/baseline/rcS), plus the cloud scripts of bench/baseline-cloud.
python3 bench/baseline-spec.py baseline-busybox-cloud "$work" \
  /etc/init.d/cloud=bench/baseline-cloud/cloud:0644 /lib/cloud/ds=bench/baseline-cloud/ds:0755 \
  /lib/cloud/ds-nocloud=bench/baseline-cloud/ds-seedfs:0755 /lib/cloud/ds-configdrive=bench/baseline-cloud/ds-seedfs:0755 \
  /lib/cloud/ds-ec2=bench/baseline-cloud/ds-ec2:0755 /lib/cloud/ds-openstack=bench/baseline-cloud/ds-openstack:0755 \
  /lib/cloud/ds-none=bench/baseline-cloud/ds-none:0755 /lib/cloud/json2tree.awk=bench/baseline-cloud/json2tree.awk:0644 \
  /lib/cloud/udhcpc.script=bench/baseline-cloud/udhcpc.script:0755 > "$work/baseline.toml"

# The user-data both sides run (once per instance, `#!`): it reports what apply did.
cat >"$work/user-data" <<'EOF'
#!/bin/sh
echo "cloud-bench: user-data ran: hostname=$(hostname) keys=$(grep -c . /root/.ssh/authorized_keys)" >/dev/console
EOF

echo "building images..." >&2
$virga build -q --out "$work/virga" >/dev/null
$virga build -q --spec "$work/baseline.toml" --out "$work/baseline" >/dev/null

for i in $(seq 1 "$runs"); do
  for ds in "${datasources[@]}"; do
    for img in virga baseline; do
      f="$work/$img.$ds.$i"
      if ! $virga run --expect-ready --quiet --json --timeout 120 --out "$work/$img" \
          --datasource "$ds" --user-data "$work/user-data" --log "$f.log" >"$f.json" 2>"$f.err"; then
        echo "boot $i of $img with $ds failed:" >&2; cat "$f.err" >&2; tail -20 "$f.log" >&2; exit 1
      fi
    done
  done
  echo "run $i/$runs done" >&2
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$work" "$runs" "$record" "$load_before" "$load_after" "${datasources[@]}" <<'PY'
import sys, json, re, statistics, pathlib, datetime
work, runs, record = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
load_before, load_after, dss = sys.argv[4], sys.argv[5], sys.argv[6:]
SUM = ["datasource-local", "datasource-net", "apply", "user-data-early", "user-data"]
DETAIL = ["datasource-local", "network", "datasource-net", "apply", "user-data-early", "ssh", "user-data"]
NET = {"ec2", "openstack"}
med = statistics.median

def load(img, ds):
    out = []
    for i in range(1, runs + 1):
        f = work / f"{img}.{ds}.{i}"
        r = json.loads(f.with_suffix(f.suffix + ".json").read_text())
        where = f"{img} {ds} boot {i}"
        assert r["powered_off"], f"{where}: no clean power-off"
        rd = r["ready"]
        st = {s["name"]: s for s in rd["stages"]}
        # The datasource must really have answered, and user-data must have run after apply
        # set the hostname and the keys from the metadata.
        want = "datasource-net" if ds in NET else "datasource-local"
        assert st.get(want, {}).get("result") == "ok", f"{where}: {want} {st.get(want)}"
        for s in ("apply", "user-data", "network"):
            assert st.get(s, {}).get("result") == "ok", f"{where}: {s} {st.get(s)}"
        if img == "virga":
            assert rd["errors"] == 0, f"{where}: {rd['errors']} errors"
        log = f.with_suffix(f.suffix + ".log").read_text(errors="replace")
        m = re.search(r"cloud-bench: user-data ran: hostname=(\S*) keys=(\d+)", log)
        assert m, f"{where}: the user-data script did not report"
        assert m.group(1) == "virga-vm" and int(m.group(2)) >= 1, f"{where}: {m.group(0)}"
        retries.append(len(re.findall(r"ds-ec2: instance-id after \d+ tries", log)))
        ms = {n: s["ms"] for n, s in st.items()}
        out.append({"ds": sum(ms.get(n, 0.0) for n in SUM), "net": ms.get("network", 0.0),
                    "init": rd["init_ms"], "wall": r["wall_ms"], "stages": ms})
    return out

retries = []
res = {(img, ds): load(img, ds) for ds in dss for img in ("virga", "baseline")}
def m(img, ds, key):
    return med([r[key] for r in res[(img, ds)]])

rows = []
for ds in dss:
    rows.append((f"{ds}: detect + fetch + apply", m("virga", ds, "ds"), m("baseline", ds, "ds")))
for ds in dss:
    if ds in NET:
        rows.append((f"{ds}: network (DHCP)", m("virga", ds, "net"), m("baseline", ds, "net")))
for ds in dss:
    rows.append((f"{ds}: launch → ready (wall)", m("virga", ds, "wall"), m("baseline", ds, "wall")))
lines = ["| datasource | virga ms | baseline ms | virga/baseline |", "|---|---:|---:|---:|"]
for name, v, b in rows:
    lines.append(f"| {name} | {v:,.0f} | {b:,.0f} | {v / b:.2f} |")
table = "\n".join(lines)

dl = ["| datasource | side | " + " | ".join(DETAIL) + " | PID 1 → ready |",
      "|---|---|" + "---:|" * (len(DETAIL) + 1)]
for ds in dss:
    for img in ("virga", "baseline"):
        cells = []
        for n in DETAIL:
            xs = [r["stages"][n] for r in res[(img, ds)] if n in r["stages"]]
            cells.append(f"{med(xs):,.1f}" if xs else "–")
        dl.append(f"| {ds} | {img} | " + " | ".join(cells) + f" | {m(img, ds, 'init'):,.0f} |")
detail = "\n".join(dl)

kernel = json.loads((work / "virga" / "manifest.json").read_text())["kernel"]["release"]
head = (f"Cloud metadata benchmark, {datetime.date.today()}, kernel {kernel}, QEMU TCG (software "
        f"emulation), 256 MiB, 1 vCPU, medians of {runs} boots per datasource and side, "
        f"alternating; load average {load_before} before, {load_after} after; baseline boots "
        f"whose EC2 instance-id needed a retry (2 s each): {sum(1 for n in retries if n)}.\n"
        f"Command: `bash bench/cloud.sh --runs {runs}`\n")
note = ("\ndetect + fetch + apply = stages datasource-local + datasource-net + apply + "
        "user-data-early + user-data (guest clocks). Per-stage medians (ms):\n")
print(head); print(table); print(note); print(detail)
if record:
    doc = pathlib.Path("docs/benchmarks.md")
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = "<!-- cloud-bench:start -->", "<!-- cloud-bench:end -->"
    block = f"{start}\n{head}\n{table}\n{note}\n{detail}\n{end}"
    if start in text:
        pre, rest = text.split(start, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text += "\n## Cloud metadata: virga vs CirrOS-style shell scripts\n\n" + block + "\n"
    doc.write_text(text)
PY
