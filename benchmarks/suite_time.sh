#!/bin/bash
# Issue 11's suite-time target ("no worse than today"), measured as a ratio in one run:
# each named commit is cloned fresh from this repository, `../shared` is linked beside the
# clone as CI has it, and `.ci/run` (setup + the test suite, as CI runs it) is timed; the
# commits run one after the other on the same machine, so compare their times, not the
# absolute seconds. One JSON line per commit goes to stdout (and to JSON if given).
#
#   bash benchmarks/suite_time.sh HEAD 1e84894            # HEAD against the issue's commit
#   JSON=benchmarks/results/suite_time.jsonl bash benchmarks/suite_time.sh HEAD 1e84894
#
# Stop other jobs on the machine first: the suite uses every core.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared}
if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMIT [COMMIT ...]" >&2
  exit 2
fi
for commit in "$@"; do
  sha=$(git -C "$REPO" rev-parse -q --verify "$commit^{commit}") || {
    echo "unknown commit: $commit" >&2
    exit 2
  }
  work=$(mktemp -d)
  git clone -q "$REPO" "$work/clone"
  git -C "$work/clone" checkout -q "$sha"
  if [ -d "$SHARED" ]; then ln -s "$(cd "$SHARED" && pwd)" "$work/shared"; fi
  start=$(date +%s.%N)
  set +e
  (cd "$work/clone" && bash .ci/run > "$work/log" 2>&1)
  status=$?
  set -e
  end=$(date +%s.%N)
  summary=$(grep -E "passed|failed|error" "$work/log" | tail -1)
  line=$(python3 -c 'import json, sys; print(json.dumps({"commit": sys.argv[1], "name": sys.argv[2], "exit_code": int(sys.argv[3]), "seconds": round(float(sys.argv[5]) - float(sys.argv[4]), 1), "pytest": sys.argv[6], "cores": int(sys.argv[7])}))' \
    "$sha" "$commit" "$status" "$start" "$end" "$summary" "$(nproc)")
  echo "$line"
  if [ -n "${JSON:-}" ]; then echo "$line" >> "$JSON"; fi
  rm -rf "$work"
done
