#!/usr/bin/env bash
# Repeats herd's fault tests (real Blender; namespace ones need root) and
# prints one Markdown row per fault: what was done, how many times, how many
# passed, median seconds, and the command that reproduces one run.
#
#   scripts/reliability.sh [REPS] [FILTER]   (default 10; FILTER: only the
#                                            tests whose name contains it)
#
# Every test asserts the job completed with every frame exactly once, all
# decodable, no temp files left (see each test for its own assertions).
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-10}"
filter="${2:-}"
export HERD_LOOPBACK_ONLY=1

faults=(
  "node_e2e|killed_blender_fails_its_frame_and_the_next_frame_renders|kill -9 of the Blender child mid-frame"
  "node_e2e|hung_blender_is_killed_after_the_frame_timeout|SIGSTOP of the Blender child (hang) → frame timeout"
  "render_e2e|a_node_killed_mid_job_loses_nothing|kill -9 of a node mid-job (loopback)"
  "render_e2e|a_killed_controller_resumes_without_rendering_done_frames_again|kill -9 of the controller, then restart"
  "faults|a_node_restarted_mid_job_has_its_frames_rendered_again|node restarted mid-job (forgets its renders)"
  "faults|a_node_with_a_full_disk_is_left_out_and_the_others_render_needs_root|node with a full disk (64 KiB tmpfs)"
  "lan_namespaces|a_job_across_hosts_survives_a_cut_link_and_the_node_rejoins_needs_root|node's link cut mid-job, then restored (namespaces)"
  "lan_namespaces|node_and_controller_killed_mid_job_then_resumed_by_hand_needs_root|kill -9 of a node, then of the controller, resumed (namespaces)"
  "lan_namespaces|a_link_cut_mid_upload_then_restored_never_uses_a_half_upload_needs_root|node's link cut mid-upload for 4 s, 256 kbit/s link (namespaces)"
  "lan_namespaces|a_link_cut_mid_download_then_restored_writes_each_frame_once_needs_root|node's link cut mid-download for 4 s, 256 kbit/s link (namespaces)"
  "hostile|clients_trickling_a_byte_a_second_are_cut_off_while_the_node_renders|clients sending headers or a body a byte a second to a rendering node"
  "hostile|a_thousand_open_connections_leave_status_and_rendering_alone|1,000 slow connections held open on a rendering node"
  "hostile|a_node_returning_wrong_images_lands_nothing_and_its_frames_go_elsewhere|a node serving wrong images (wrong size, not an image)"
)
selected=()
for entry in "${faults[@]}"; do
  IFS='|' read -r file test _ <<<"$entry"
  if [[ "$test" == *"$filter"* ]]; then
    selected+=("$entry")
    cargo test --no-run --quiet --test "$file" 2>/dev/null
  fi
done

echo "| fault | runs | passed | median s/run | reproduce one run |"
echo "|---|---|---|---|---|"
for entry in "${selected[@]}"; do
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
