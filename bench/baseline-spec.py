#!/usr/bin/env python3
"""Writes the spec of a CirrOS-style baseline image, derived from virga.toml so that it carries
the same kernel and modules: BusyBox init running bench/baseline/rcS, plus extra files.

    python3 bench/baseline-spec.py NAME WORKDIR [IMAGE_PATH=SOURCE:MODE ...] > WORKDIR/baseline.toml
"""
import pathlib
import sys
import tomllib

name, work, extra = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
text = pathlib.Path("virga.toml").read_text()
spec = tomllib.loads(text)
text = text.replace('name = "virga-default"', f'name = "{name}"')
text = text.replace('init = "virga"', 'init = "busybox"')
assert 'init = "busybox"' in text, "virga.toml must set userland.init"
(work / "modules").write_text("\n".join(spec["kernel"]["modules"]) + "\n")
base = pathlib.Path("bench/baseline").resolve()
files = [("/etc/inittab", base / "inittab", "0644"),
         ("/etc/init.d/rcS", base / "rcS", "0755"),
         ("/etc/acpi/PWRF/00000080", base / "acpi-power", "0755"),
         ("/etc/modules", work / "modules", "0644")]
for arg in extra:
    path, rest = arg.split("=", 1)
    src, mode = rest.rsplit(":", 1)
    files.append((path, pathlib.Path(src).resolve(), mode))
for path, src, mode in files:
    text += f'\n[[files]]\npath = "{path}"\nsource = "{src}"\nmode = "{mode}"\n'
sys.stdout.write(text)
