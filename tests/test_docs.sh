#!/bin/sh
# test_docs.sh: the README stays true to the binary: its key table is what `lcm config keys --markdown`
# prints, and every command of `lcm --help` is documented. Prints PASS/FAIL lines; needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-docs-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

sed -n '/^<!-- keys:begin/,/^<!-- keys:end/p' README.md | sed '1d;$d' >"$tmp/readme_keys"
"$LCM" config keys --markdown >"$tmp/keys"
if cmp -s "$tmp/readme_keys" "$tmp/keys"; then
  echo "PASS readme_key_table_is_current"
else
  echo "FAIL readme_key_table_is_current"
  echo "  README.md's key table differs from \`lcm config keys --markdown\`; regenerate it with tools/update_readme_keys.sh" >&2
fi

missing=""
for cmd in $("$LCM" --help | sed -n '/^commands:/,/^$/p' | awk 'NF > 1 {print $1}'); do
  grep -q "^| \`lcm $cmd" README.md || missing="$missing $cmd"
done
if [ -z "$missing" ]; then echo "PASS readme_documents_every_command"; else
  echo "FAIL readme_documents_every_command"
  echo "  not in README.md's command table:$missing" >&2
fi

# The repository is self-contained: nothing points at files outside it (the patterns are split so
# that this file does not match itself).
outside=$(grep -rIn -e '/wo''rk/' -e '\.\./sha''red' -e 'sha''red/docs' src include tools tests docs conf README.md Makefile .ci 2>/dev/null)
if [ -z "$outside" ]; then echo "PASS no_paths_outside_the_repository"; else
  echo "FAIL no_paths_outside_the_repository"
  echo "$outside" >&2
fi
