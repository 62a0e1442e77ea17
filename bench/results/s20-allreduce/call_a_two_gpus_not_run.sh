#!/usr/bin/env bash
# s20 call A (2 x H200): one-way all-reduce kernel: 2-GPU correctness, all-reduce times new vs old,
# Qwen3-8B single stream TP=1 / TP=2 new / TP=2 old / TP=2 new.
cd "$(dirname "$0")/../.."
[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
NEW="$PWD:/tmp/site"; OLD="$PWD/.k4/base:$PWD:/tmp/site"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 TRITON_INTERPRET=0
L=$OUT/logs; mkdir -p $L
nvidia-smi topo -m > $L/topo.txt 2>&1
python3 -c 'import torch; print(torch.__version__, torch.cuda.device_count())'
echo "== test"; PYTHONPATH=$NEW timeout 240 python3 -m pytest -x -q -p no:cacheprovider --timeout 200 tests/test_all_reduce_kernel.py > $L/test.log 2>&1; echo "rc $?"; tail -3 $L/test.log
for tree in new old; do
  P=$NEW; [ $tree = old ] && P=$OLD
  echo "== allreduce $tree"; PYTHONPATH=$P timeout 120 python3 bench/allreduce.py --world-size 2 --hidden 4096 --layers 36 --batches 1 8 64 256 2>&1 | grep -v Warn | tee $L/allreduce-$tree.log | grep '^{'
done
B="python3 -m tokenmill bench --workload single --model random:qwen3-8b --repeat 2"
echo "== tp1"; PYTHONPATH=$NEW timeout 150 $B --out-dir $OUT/tp1 > $L/tp1.log 2>&1; tail -4 $L/tp1.log
for run in new old new2; do
  P=$NEW; [ $run = old ] && P=$OLD
  echo "== tp2 $run"; PYTHONPATH=$P timeout 150 $B --tensor-parallel-size 2 --out-dir $OUT/tp2-$run > $L/tp2-$run.log 2>&1; echo "rc $?"; tail -4 $L/tp2-$run.log
done
