"""Probe (s27): quantize_token_groups GPU time per call (a CUDA graph of 100 calls, replayed), per shape;
run once per tree (PYTHONPATH), trees alternated by the caller. Also a checksum of the outputs."""
import sys, hashlib
import torch
from tokenmill.kernels.triton import fp8_quant
tag = sys.argv[1]
dev = torch.device("cuda")
SHAPES = [(1, 4096, 128), (16, 4096, 128), (128, 4096, 128), (128, 12288, 128), (358, 4096, 128),
          (358, 12288, 128), (2048, 4096, 128), (358, 4096, 4096), (358, 9728, 9728), (128, 4096, 128, "t")]
digest = hashlib.sha256()
for shape in SHAPES:
    m, k, g = shape[:3]
    major = len(shape) > 3
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16) * 3
    q, s = fp8_quant.quantize_token_groups(x, g, tokens_major=major)
    digest.update(q.view(torch.uint8).cpu().numpy().tobytes()); digest.update(s.contiguous().cpu().numpy().tobytes())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fp8_quant.quantize_token_groups(x, g, tokens_major=major)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(100):
            fp8_quant.quantize_token_groups(x, g, tokens_major=major)
    graph.replay(); torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); graph.replay(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000 / 100)
    times.sort()
    print(f"{tag} {str(shape):24s} {times[2]:7.2f} us", flush=True)
print(tag, "digest", digest.hexdigest()[:16], flush=True)
