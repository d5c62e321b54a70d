#!/usr/bin/env bash
# run.sh BUILD_DIR SECONDS [TARGET...]: runs each libFuzzer target of tests/fuzz (all of them when
# none is named) for SECONDS seconds, one after the other on one core, and fails if any of them
# finds a crash, a sanitizer report, a leak, a failed check or a hang. The corpus in the repository
# (tests/fuzz/corpus/TARGET) is only read: new inputs go to BUILD_DIR/fuzz-work/corpus/TARGET,
# which later runs go on from, and findings to BUILD_DIR/fuzz-work/artifacts/TARGET-*. Each
# target's whole log is BUILD_DIR/fuzz-work/TARGET.log; FUZZ_ARGS adds libFuzzer flags.
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request json config png_text journal)
fi
work=$build/fuzz-work
mkdir -p "$work/artifacts"
# UBSan stops at the first report (the build uses -fno-sanitize-recover); these make it readable.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

failed=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  log=$work/$t.log
  mkdir -p "$work/corpus/$t"
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  if "$bin" -max_total_time="$seconds" -timeout=25 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/$t-" ${FUZZ_ARGS:-} \
       "$work/corpus/$t" "$here/corpus/$t" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  echo "fuzz $t: $status, ${runs:-?} runs (limit ${seconds}s), ${cov:-no coverage line} (log: $log)"
  if [ "$status" = FAILED ]; then
    grep -E -A40 '^==[0-9]+==|runtime error|check failed|ERROR: libFuzzer' "$log" | head -n 80 || tail -n 40 "$log"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]} (inputs in $work/artifacts/)" >&2
  exit 1
fi
