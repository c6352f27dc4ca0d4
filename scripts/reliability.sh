#!/usr/bin/env bash
# Repeats herd's fault tests (real Blender; namespace ones need root) and
# prints one Markdown row per fault: what was done, how many times, how many
# passed, median seconds, and the command that reproduces one run.
#
#   scripts/reliability.sh [REPS]        (default 10)
#
# Every test asserts the job completed with every frame exactly once, all
# decodable, no temp files left (see each test for its own assertions).
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-10}"
export HERD_LOOPBACK_ONLY=1
cargo test --no-run --quiet 2>/dev/null

faults=(
  "node_e2e|killed_blender_fails_its_frame_and_the_next_frame_renders|kill -9 of the Blender child mid-frame"
  "node_e2e|hung_blender_is_killed_after_the_frame_timeout|SIGSTOP of the Blender child (hang) → frame timeout"
  "render_e2e|a_node_killed_mid_job_loses_nothing|kill -9 of a node mid-job (loopback)"
  "render_e2e|a_killed_controller_resumes_without_rendering_done_frames_again|kill -9 of the controller, then restart"
  "faults|a_node_restarted_mid_job_has_its_frames_rendered_again|node restarted mid-job (forgets its renders)"
  "faults|a_node_with_a_full_disk_is_left_out_and_the_others_render_needs_root|node with a full disk (64 KiB tmpfs)"
  "lan_namespaces|a_job_across_hosts_survives_a_cut_link_and_the_node_rejoins_needs_root|node's link cut mid-job, then restored (namespaces)"
  "lan_namespaces|node_and_controller_killed_mid_job_then_resumed_by_hand_needs_root|kill -9 of a node, then of the controller, resumed (namespaces)"
)

echo "| fault | runs | passed | median s/run | reproduce one run |"
echo "|---|---|---|---|---|"
for entry in "${faults[@]}"; do
  IFS='|' read -r file test what <<<"$entry"
  passed=0
  times=()
  for _ in $(seq 1 "$reps"); do
    start=$EPOCHREALTIME
    if cargo test --quiet --test "$file" -- --exact "$test" >/dev/null 2>&1; then
      passed=$((passed + 1))
    fi
    times+=("$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}')
  echo "| $what | $reps | $passed | $median | \`cargo test --test $file -- --exact $test\` |"
done
