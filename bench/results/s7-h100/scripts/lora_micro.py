"""LoRA single-stream diagnosis: variant (argv[1]) patched into lora_fold before the engine compiles,
then bench/profile_step.py --workload single --lora-rank 16 (timings only: variants 1-3 read unsynchronised s).
0 as merged; 1 no wait and no arrival (no atomics in tiles); 2 wait by polling only (no arrival, no reset);
3 no shrink programs (producers 0) and no atomics: the tiles' expand alone."""
import runpy, sys
import triton
import triton.language as tl
from tokenmill.kernels.triton import lora_fold

variant = int(sys.argv[1])


@triton.jit
def _no_wait(counter_ptr, producers):
    pass


@triton.jit
def _poll_only(counter_ptr, producers):
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire")
    while arrived < producers:
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire")


if variant in (1, 3):
    lora_fold._await_shrinks = _no_wait
if variant == 2:
    lora_fold._await_shrinks = _poll_only
if variant == 3:
    original = lora_fold.fold_args

    def no_producers(*args, **kwargs):
        out = original(*args, **kwargs)
        if out.get("HAS_LORA"):
            out["producers"] = 0
        return out

    lora_fold.fold_args = no_producers
    from tokenmill.kernels.triton import skinny_gemm
    skinny_gemm.fold_args = no_producers
sys.argv = ["profile_step.py", "--workload", "single", "--model", "random:qwen3-0.6b", "--lora-rank", "16"]
runpy.run_path("bench/profile_step.py", run_name="__main__")
