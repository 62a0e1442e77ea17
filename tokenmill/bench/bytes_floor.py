"""The memory-bandwidth floor a benchmark run is compared with: the device's measured copy bandwidth, and
the least time a workload's decode can take at that bandwidth.

Decoding is bound by memory traffic, so the floor says how far a run is from what the hardware allows,
on the same device in the same run; it needs CUDA events, so CPU runs report no floor.
"""

from __future__ import annotations

import torch


def measure_copy_bandwidth(device: torch.device, gib: float = 1.0) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = int(gib * (1 << 30)) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1000)
    del src, dst
    return 2 * n * 2 / sorted(times)[len(times) // 2]


def bytes_floor_seconds(
    requests: list[tuple[list[int], int]], weight_bytes: int, kv_bytes_per_token: int, bandwidth: float
) -> float:
    """Least time to move the bytes every decode step must touch (all weights once, each running
    sequence's whole KV context once), with every request decoding from the first step."""
    total = 0
    steps = max(out for _, out in requests)
    for step in range(steps):
        context = sum(len(prompt) + step for prompt, out in requests if out > step)
        total += weight_bytes + context * kv_bytes_per_token
    total += weight_bytes + sum(len(p) for p, _ in requests) * kv_bytes_per_token  # prefill writes
    return total / bandwidth
