#!/usr/bin/env bash
# Issue 15's figures on one GPU in about a minute, one line each:
#   per-step grammar work for 358 constrained rows of Qwen3-0.6B's vocabulary, and for 1 among 358
#   (fill / upload / mask kernel / advance over qa-358's 200 output tokens, medians of the first and
#   the last 50 steps: a grammar whose cost grows along the output shows as a larger second figure)
#   qa-358 throughput plain and with every request under a JSON schema (target >= 0.9 of plain), the
#   decode step time, the output tokens (71,600 in both: a token the grammar refused would end its
#   sequence early) and the grammar compile times
# Usage: bash bench/structured_gpu.sh [extra bench flags, e.g. --out-dir DIR; default --no-save]
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"
figures="^(output_tokens|output_tokens_per_s|time_per_decode_step_ms|grammar_compile_ms) "
extra=("$@")
[ ${#extra[@]} -eq 0 ] && extra=(--no-save)

for constrained in 358 1; do
    echo "step, $constrained of 358 constrained: $(python bench/structured_step.py --model random:qwen3-0.6b \
        --constrained "$constrained" | tail -1)"
done
for mode in plain json; do
    flags=()
    [ "$mode" = json ] && flags=(--structured json)
    python -m tokenmill bench --workload qa-358 --model random:qwen3-0.6b --repeat 2 "${flags[@]}" "${extra[@]}" \
        | grep -E "$figures" | sed "s/^/qa-358 $mode: /"
done
