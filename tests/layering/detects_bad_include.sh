#!/usr/bin/env bash
# The layering check must fail on a bad edge: a copy of include/ where a mixer includes the
# ViT (mixers know no pipeline) must be refused, naming the file and the line.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${1:?usage: detects_bad_include.sh INCLUDE_DIR WORK_DIR}
work=${2:?usage: detects_bad_include.sh INCLUDE_DIR WORK_DIR}
rm -rf "$work" && mkdir -p "$work" && cp -r "$src/seqswap" "$work/" || exit 2
victim="$work/seqswap/mixers/min_gru.hpp"
printf '#include "seqswap/model/vit.hpp"\n' >> "$victim"
line=$(wc -l < "$victim")
out=$(bash "$here/check_layering.sh" "$work" 2>&1)
rc=$?
rm -rf "$work"
if [ "$rc" -eq 0 ]; then
  echo "the layering check passed a mixer that includes model/vit.hpp:"; echo "$out"; exit 1
fi
if ! grep -q "seqswap/mixers/min_gru.hpp:$line: mixers must not include model" <<<"$out"; then
  echo "the layering check failed without naming min_gru.hpp:$line:"; echo "$out"; exit 1
fi
echo "bad include refused as promised: $(grep min_gru <<<"$out")"
