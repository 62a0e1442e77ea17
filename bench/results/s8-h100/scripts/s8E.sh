#!/bin/bash
# Session 8 call E (H100): why the faster 4-bit GEMVs did not move AWQ's single stream: 2 vs 4 programs
# per SM end to end, and the AWQ decode step's kernel table.
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD:/tmp/site
R=$OUT/r; mkdir -p $R
step() { echo "=== $1 ($(date -u +%T))"; }
qm() {  # programs per SM, out dir
python3 - "$@" <<'PY'
import runpy, sys
import tokenmill.kernels.triton.gemv_fusion as g
g.SPLIT_PROGRAMS_PER_SM = int(sys.argv[1])
out = sys.argv[2]
sys.argv = ["bench/quant_models.py", "--model", "random:qwen3-8b", "--formats", "awq,none,awq", "--out-dir", out]
runpy.run_path("bench/quant_models.py", run_name="__main__")
PY
}
{
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
step "quant_models AWQ, 2 programs per SM"
timeout -s KILL 200 bash -c "$(declare -f qm); qm 2 $R/qm2" 2>&1 | grep "^single" | cut -c1-200
step "quant_models AWQ, 4 programs per SM"
timeout -s KILL 200 bash -c "$(declare -f qm); qm 4 $R/qm4" 2>&1 | grep "^single" | cut -c1-200
step "profile_step AWQ single"
timeout -s KILL 200 python3 bench/profile_step.py --model random:qwen3-8b --workload single --quantization awq > $R/profile-awq.txt 2>&1; echo rc=$?; head -40 $R/profile-awq.txt
date -u
} > $OUT/log.txt 2>&1
cat $OUT/log.txt
