#!/bin/sh
# update_readme_keys.sh: regenerate README.md's configuration key table from `lcm config keys --markdown`
# (tests/test_docs.sh fails while the two differ). Usage: tools/update_readme_keys.sh [path/to/lcm]
set -eu
LCM=${1:-./lcm}
tmp=$(mktemp)
"$LCM" config keys --markdown >"$tmp"
awk -v keys="$tmp" '
  /^<!-- keys:begin/ { print; while ((getline line < keys) > 0) print line; skip = 1; next }
  /^<!-- keys:end/ { skip = 0 }
  !skip { print }
' README.md >README.md.new
mv README.md.new README.md
rm -f "$tmp"
