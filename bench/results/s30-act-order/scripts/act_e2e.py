"""Qwen3-8B, random weights, 4-bit GPTQ, end to end (`tokenmill bench`'s own `benchmark`: an untimed run,
then the timed one): bf16; a row-ordered GPTQ model; the same model as an act-order checkpoint (each
projection's groups following a random permutation of its inputs, shared by its fused shards, as real
act-order is) run as the tree before this change ran it (`after_loading` skipped: the dense route at
every count) and as it runs now (rows reordered at load, inputs gathered). Workloads: `single` (one
128-token prompt, 256 out) and 64 streams of the same. Usage: act_e2e.py VARIANT WORKLOAD OUT_DIR"""
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from tokenmill.bench.offline import benchmark
from tokenmill.bench.workloads import WORKLOADS, Workload
from tokenmill.config import EngineConfig
from tokenmill.models import loader
from tokenmill.quantization import gptq

variant, workload_name, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if variant.startswith("act-order"):
    resolve = loader.resolve_quantization
    loader.resolve_quantization = lambda *a: replace(resolve(*a), act_order=True)
    quantize = gptq.quantize_gptq

    def act_order_quantize(weight, bits, group_size, order=None):
        generator = torch.Generator().manual_seed(weight.shape[1])  # one order per input size
        order = torch.randperm(weight.shape[1], generator=generator).to(weight.device)
        return quantize(weight, bits, group_size, order)

    gptq.quantize_gptq = act_order_quantize
    if variant == "act-order-old":
        gptq.GptqMethod.after_loading = lambda self, layer: None
quantization = None if variant == "bf16" else "gptq"
workload = WORKLOADS["single"] if workload_name == "single" else Workload("streams-64", 64, (128, 128), (256, 256))
streams = workload.num_prompts
config = EngineConfig(
    model=os.environ.get('MODEL', 'random:qwen3-8b'), quantization=quantization, max_num_seqs=streams, max_model_len=512,
    num_kv_blocks=64 * streams,
)
result = benchmark(config, workload, [], f"act_e2e.py {variant} {workload_name}", out_dir)
compiles = sum(len(run) for run in result.compiles_in_timed_runs)
print(f"RESULT {variant} {workload_name} {result.output_tokens_per_s:.1f} tok/s compiles {compiles} digest {result.output_digest}", flush=True)
