# json2tree.awk: a JSON document -> a file tree, the way CirrOS's json2fstree lets shell
# scripts read metadata with `read` and `cat`. Written for this benchmark (no CirrOS code).
#
#   awk -v out=DIR -f json2tree.awk FILE
#
# Objects become directories, arrays directories with entries 0, 1, …; strings, numbers and
# booleans become files holding the value and a newline (strings unescaped; \uXXXX as UTF-8,
# surrogate pairs not joined); null is left out. Key characters other than [A-Za-z0-9._-]
# become `_` (and `.`/`..` become `_`), so keys cannot leave DIR. Strict: malformed input or
# nesting deeper than 32 prints one line on stderr and exits 1 without writing anything.
# All directories are made with one `mkdir -p`, then the files are written.

function fail(msg) {
  printf "json2tree: %s at byte %d\n", msg, pos > "/dev/stderr"
  bad = 1
  exit 1
}
function ws(c) {
  while (pos <= n) {
    c = substr(doc, pos, 1)
    if (c == " " || c == "\t" || c == "\n" || c == "\r") pos++
    else break
  }
}
function safe(k) {
  gsub(/[^A-Za-z0-9._-]/, "_", k)
  if (k == "" || k == "." || k == "..") k = "_"
  return k
}
function hexval(h, i, v, d) {
  v = 0
  for (i = 1; i <= 4; i++) {
    d = index("0123456789abcdef", tolower(substr(h, i, 1)))
    if (d == 0) fail("bad \\u escape")
    v = v * 16 + d - 1
  }
  return v
}
function utf8(c) {
  if (c < 128) return sprintf("%c", c)
  if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
  return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
}
function str(s, r, c) {
  pos++
  s = ""
  while (1) {
    r = substr(doc, pos)
    if (!match(r, /["\\]/)) fail("unterminated string")
    s = s substr(r, 1, RSTART - 1)
    pos += RSTART
    if (substr(r, RSTART, 1) == "\"") return s
    c = substr(doc, pos, 1)
    pos++
    if (c == "n") s = s "\n"
    else if (c == "t") s = s "\t"
    else if (c == "r") s = s "\r"
    else if (c == "b") s = s "\b"
    else if (c == "f") s = s "\f"
    else if (c == "\"" || c == "\\" || c == "/") s = s c
    else if (c == "u") { s = s utf8(hexval(substr(doc, pos, 4))); pos += 4 }
    else fail("bad escape")
  }
}
function scalar(path, r, t) {
  r = substr(doc, pos)
  if (!match(r, /^(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null)/)) fail("unexpected character")
  t = substr(r, 1, RLENGTH)
  pos += RLENGTH
  if (t != "null") files[path] = t
}
function value(path, depth, c) {
  if (depth > 32) fail("nesting deeper than 32")
  ws()
  c = substr(doc, pos, 1)
  if (c == "{") object(path, depth)
  else if (c == "[") array(path, depth)
  else if (c == "\"") files[path] = str()
  else scalar(path)
}
function object(path, depth, k, c) {
  dirs[path] = 1
  pos++
  ws()
  if (substr(doc, pos, 1) == "}") { pos++; return }
  while (1) {
    ws()
    if (substr(doc, pos, 1) != "\"") fail("expected a key")
    k = safe(str())
    ws()
    if (substr(doc, pos, 1) != ":") fail("expected :")
    pos++
    value(path "/" k, depth + 1)
    ws()
    c = substr(doc, pos, 1)
    pos++
    if (c == "}") return
    if (c != ",") fail("expected , or }")
  }
}
function array(path, depth, i, c) {
  dirs[path] = 1
  pos++
  ws()
  if (substr(doc, pos, 1) == "]") { pos++; return }
  for (i = 0; ; i++) {
    value(path "/" i, depth + 1)
    ws()
    c = substr(doc, pos, 1)
    pos++
    if (c == "]") return
    if (c != ",") fail("expected , or ]")
  }
}
{ doc = doc $0 "\n" }
END {
  if (bad) exit 1
  if (out == "") { pos = 0; fail("usage: awk -v out=DIR -f json2tree.awk FILE") }
  n = length(doc)
  pos = 1
  value(out, 0)
  ws()
  if (pos <= n) fail("trailing data")
  cmd = "mkdir -p '" out "'"
  for (d in dirs) cmd = cmd " '" d "'"
  if (system(cmd) != 0) { pos = 0; fail("mkdir failed") }
  for (f in files) {
    printf "%s\n", files[f] > f
    close(f)
  }
}
