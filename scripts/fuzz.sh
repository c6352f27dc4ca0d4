#!/usr/bin/env bash
# Runs herd's fuzz targets (fuzz/, cargo fuzz with libFuzzer) one after the
# other, each for a fixed time, and prints one Markdown row per target:
# seconds, executions, executions per second, crashes, hangs.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 300 s; all targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a nightly
# toolchain. Each run starts from fuzz/seeds/TARGET plus what earlier runs
# left in fuzz/corpus/TARGET; a crash or a hang (an input running longer
# than 5 s) stops its target and is saved in fuzz/artifacts/TARGET/.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(beacon frames api_json api_router manifest)
fi

cargo +nightly fuzz build || exit 1
echo "| target | seconds | executions | exec/s | crashes | hangs |"
echo "|---|---|---|---|---|---|"
for target in "${targets[@]}"; do
  dict=fuzz/json.dict
  [ "$target" = frames ] && dict=fuzz/frames.dict
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="$(mktemp)"
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=5 -dict="$dict" >"$log" 2>&1
  runs="$(grep -a '^Done [0-9]* runs' "$log" | awk '{ print $2 }')"
  crashes="$(grep -ac 'Test unit written to .*/\(crash\|oom\|leak\)-' "$log")"
  hangs="$(grep -ac 'Test unit written to .*/timeout-' "$log")"
  rate=""
  [ -n "$runs" ] && rate=$((runs / seconds))
  echo "| $target | $seconds | ${runs:-stopped} | ${rate:--} | $crashes | $hangs |"
  rm -f "$log"
done
