#!/usr/bin/env bash
# The one-way layering of include/seqswap (docs/architecture.md), checked on the #include lines:
#
#   rank 0  core (core/, backend/, config.hpp)
#   rank 1  ops, io, halting          (each knows only core)
#   rank 2  layers (layers/, attention/)
#   rank 3  mixers
#   rank 4  model                     (pipelines, ViT, the halting combinator, the arena)
#   rank 5  train, analysis, distill  (distill may use train; nothing else sideways)
#   rank 6  zoo                       (the drivers' name registry, above the library)
#   rank 7  seqswap.hpp               (the umbrella)
#
# An include is allowed when it points to a lower rank, stays in its own part, or is one of the
# sideways edges listed in SIDEWAYS. Any other edge fails the check, naming file, line and why.
# Usage: check_layering.sh INCLUDE_DIR   (the folder that holds seqswap/)
set -u
root=${1:?usage: check_layering.sh INCLUDE_DIR}
SIDEWAYS=" distill>train "

part_of() {  # path relative to INCLUDE_DIR -> part name ("" = not a library file)
  case "$1" in
    seqswap/core/*|seqswap/backend/*|seqswap/config.hpp) echo core ;;
    seqswap/ops/*) echo ops ;;
    seqswap/io/*) echo io ;;
    seqswap/halting/*) echo halting ;;
    seqswap/layers/*|seqswap/attention/*) echo layers ;;
    seqswap/mixers/*) echo mixers ;;
    seqswap/model/*) echo model ;;
    seqswap/train/*) echo train ;;
    seqswap/analysis/*) echo analysis ;;
    seqswap/distill/*) echo distill ;;
    seqswap/zoo/*) echo zoo ;;
    seqswap/seqswap.hpp) echo umbrella ;;
    *) echo "" ;;
  esac
}
rank_of() {
  case "$1" in
    core) echo 0 ;; ops|io|halting) echo 1 ;; layers) echo 2 ;; mixers) echo 3 ;; model) echo 4 ;;
    train|analysis|distill) echo 5 ;; zoo) echo 6 ;; umbrella) echo 7 ;; *) echo -1 ;;
  esac
}

cd "$root" || { echo "layering: no folder $root" >&2; exit 2; }
bad=0 edges=0 files=0
while IFS= read -r file; do
  files=$((files + 1))
  from=$(part_of "$file")
  if [ -z "$from" ]; then
    echo "layering: $root/$file: a header outside every part (add it to a part in $0)"
    bad=$((bad + 1))
    continue
  fi
  while IFS=: read -r line target; do
    [ -n "$target" ] || continue
    edges=$((edges + 1))
    to=$(part_of "$target")
    if [ -z "$to" ]; then
      echo "layering: $root/$file:$line includes $target, which belongs to no part"
      bad=$((bad + 1))
      continue
    fi
    [ "$to" = "$from" ] && continue
    [ "$(rank_of "$to")" -lt "$(rank_of "$from")" ] && continue
    case "$SIDEWAYS" in *" $from>$to "*) continue ;; esac
    echo "layering: $root/$file:$line: $from must not include $to ($target): dependencies run" \
         "core <- ops/io/halting <- layers <- mixers <- model <- train/analysis/distill <- zoo"
    bad=$((bad + 1))
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"seqswap/' "$file" |
           sed -E 's/^([0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1:\2/')
done < <(find seqswap -type f \( -name '*.hpp' -o -name '*.cuh' \) | sort)
if [ "$bad" -gt 0 ]; then
  echo "layering: $bad edge(s) against the layering ($edges includes in $files headers)"
  exit 1
fi
echo "layering: $edges includes in $files headers, all one way"
