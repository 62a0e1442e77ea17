"""Start-up work that keeps one-time costs out of the first batch a fresh server serves.

Besides Triton compiles (see `compile_attention_variants`), a step of a token count the process has not
run yet pays first-use costs: cuBLAS loads the GEMM kernels its heuristics pick for that size (CUDA loads
modules lazily), and the caching allocator asks the driver for memory it has not held before. Running
eager forwards over a ladder of token counts up to the step budget pays those once, at start.
"""

from __future__ import annotations

import torch

from tokenmill.kernels.attention import AttentionMetadata


def token_count_ladder(largest: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, ... up to `largest` (included): GEMM heuristics change between powers of
    two, so a point at each power and one between covers the sizes a step can have."""
    sizes, power = {largest}, 1
    while power < largest:
        sizes |= {power, min(largest, power * 3 // 2)}
        power *= 2
    return sorted(sizes)


@torch.inference_mode()
def warm_up_step_shapes(runner, max_num_batched_tokens: int, max_num_seqs: int) -> None:
    """Eager prefill forwards of every ladder size up to the step budget, reading and writing only the
    runner's scratch block, then logits and greedy picks for every ladder size up to `max_num_seqs`."""
    hidden = None
    for tokens in token_count_ladder(max_num_batched_tokens):
        hidden = _scratch_forward(runner, tokens)
    assert hidden is not None
    for rows in token_count_ladder(min(max_num_seqs, hidden.shape[0])):
        runner.model.compute_logits(hidden[:rows]).argmax(dim=-1)
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)


def _scratch_forward(runner, tokens: int) -> torch.Tensor:
    """One prefill step of `tokens` tokens, as sequences of at most 256, all in the scratch block."""
    chunk = max(1, min(256, runner.max_model_len - 1))
    lens = [min(chunk, tokens - start) for start in range(0, tokens, chunk)]
    block_size, device = runner.block_size, runner.device
    positions = torch.cat([torch.arange(n) for n in lens]).to(device)
    starts = torch.tensor([0, *lens], dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
    width = -(-chunk // block_size)
    meta = AttentionMetadata(
        slot_mapping=runner.null_block * block_size + positions % block_size,
        block_tables=torch.full((len(lens), width), runner.null_block, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        query_start_loc=starts,
        num_decodes=0,
        seq_lens_cpu=lens,
        query_lens_cpu=lens,
        block_size=block_size,
        max_query_len=max(lens),
        triton=runner.use_triton,
        kv_scales=runner.kv_scales,
    )
    input_ids = torch.zeros(tokens, dtype=torch.long, device=device)
    return runner.model(input_ids, positions, meta)
