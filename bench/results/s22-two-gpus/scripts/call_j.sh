#!/usr/bin/env bash
# s22 call J (2 x H200): the one-way all-reduce kernel at c930d45 (.k4/base): 2-GPU test, all-reduce times
# vs 9d001d9 (.k4/old9d, one-shot), Qwen3-8B single stream TP=1 and TP=2.
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
NEW="$PWD/.k4/base:$PWD:/tmp/site"; OLD="$PWD/.k4/old9d:$PWD:/tmp/site"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
L=$OUT; mkdir -p $L
{
nvidia-smi topo -m 2>&1 | head -5
python3 -c 'import torch; print(torch.__version__, torch.cuda.device_count())'
echo "== test $(date -u +%T)"; PYTHONPATH=$NEW timeout -s KILL 130 python3 -m pytest -x -q -p no:cacheprovider --timeout 120 tests/test_all_reduce_kernel.py > $L/test.log 2>&1; echo "rc $?"; tail -3 $L/test.log
for tree in new old; do
  P=$NEW; [ $tree = old ] && P=$OLD
  echo "== allreduce $tree $(date -u +%T)"; PYTHONPATH=$P timeout -s KILL 70 python3 bench/allreduce.py --world-size 2 --hidden 4096 --layers 36 --batches 1 8 64 256 2>&1 | grep -v Warn | tee $L/allreduce-$tree.log | grep '^{'
done
B="python3 -m tokenmill bench --workload single --model random:qwen3-8b"
echo "== tp1 $(date -u +%T)"; PYTHONPATH=$NEW timeout -s KILL 80 $B > $L/tp1.log 2>&1; tail -2 $L/tp1.log
echo "== tp2 new $(date -u +%T)"; PYTHONPATH=$NEW timeout -s KILL 110 $B --tensor-parallel-size 2 > $L/tp2-new.log 2>&1; echo "rc $?"; tail -2 $L/tp2-new.log
date -u
} > $L/log.txt 2>&1
cat $L/log.txt
