#!/usr/bin/env bash
# Mutation testing of what a change touched in the security-critical code: the mutants on the lines that differ
# between BASE (default: the previous commit) and HEAD under src/policy, src/network, src/credential and src/layer,
# each tested with the unit tests and the integration tests (`tests/it`; the layer's steps are tested there), about
# a minute a mutant. Fails when a mutant survives or times out.
#
#   scripts/mutants-changed.sh [BASE]
#
# MUTANTS_CAP (default 20) bounds the mutants run, to keep CI within its time budget: a larger change runs one shard
# of ceil(count / cap), chosen by the commit, and says so. The full run is in docs/testing.md.
#
# The tree is mutated in place (cargo-mutants restores each file after its mutant), so that the mutants reuse the
# test build already in target/: run it on a clean checkout with nothing else building.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${1:-HEAD~1}"
cap="${MUTANTS_CAP:-20}"
paths=(src/policy src/network src/credential src/layer)

if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "mutants: NOT RUN: '$base' is not in this clone (a shallow clone?); fetch its history to test the change" >&2
  exit 0
fi
diff="$(mktemp)"
trap 'rm -f "$diff"' EXIT
git diff "$base" HEAD -- "${paths[@]}" > "$diff"
if [ ! -s "$diff" ]; then
  echo "mutants: the change since $(git rev-parse --short "$base") touches none of ${paths[*]}: nothing to test"
  exit 0
fi

args=(--all-features --in-diff "$diff")
count="$(cargo mutants "${args[@]}" --list | wc -l)"
echo "mutants: $count on the lines changed since $(git rev-parse --short "$base")"
if [ "$count" -eq 0 ]; then
  exit 0
fi
if [ "$count" -gt "$cap" ]; then
  shards=$(( (count + cap - 1) / cap ))
  shard=$(( 16#$(git rev-parse --short=8 HEAD) % shards ))
  echo "mutants: MORE THAN THE CAP OF $cap: running shard $shard of $shards only (chosen by the commit);" \
    "the others: git diff $base HEAD -- ${paths[*]} > change.diff &&" \
    "cargo mutants --all-features --in-diff change.diff -C=--lib -C=--test=it --shard K/$shards"
  args+=(--shard "$shard/$shards")
fi
cargo mutants "${args[@]}" -C=--lib -C=--test=it --in-place --baseline skip --timeout 300 --output target
