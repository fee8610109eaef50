#!/usr/bin/env bash
# Unikernel benchmark (issue 5): image size per target, boot time (unikernel vs the virga Linux
# image under the same QEMU TCG, hvt monitor start-up vs fork/exec), HTTP requests/s per target vs
# the same application as a Linux process. One run; prints Markdown tables.
#
#   bench/unikernel.sh [--runs N] [--seconds S] [--concurrency C]
#
# The Linux boot baseline uses the image in $VIRGA_OUT (default: out/, made by `virga build`) and
# is reported as skipped when it is absent. The hvt HTTP row needs root (network namespace + TAP)
# and /dev/kvm. Everything talks only to loopback or to a namespace created here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p virga-cli
out="${VIRGA_OUT:-out}"
echo "# virga unikernel benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(qemu-system-x86_64 --version | head -1)"
echo
exec "$CARGO_TARGET_DIR/release/virga" unikernel bench --out "$out" "$@"
