"""Time the one-way all-reduce with two ranks on two streams of one GPU (no NVLink: the kernel's own floor)."""
import time

import torch

from tokenmill.kernels.triton import all_reduce as kernel

dev = torch.device("cuda")
world = 2
for volatile in (True, False):
    for numel, block in [(4096, 1024), (4096, 256), (8 * 4096, 1024), (256 * 4096, 1024)]:
        words = numel // 2
        slots = [torch.zeros(2 * world * words, dtype=torch.uint64, device=dev) for _ in range(world)]
        ptrs = torch.tensor([s.data_ptr() for s in slots], dtype=torch.int64, device=dev)
        epochs = [torch.zeros(kernel.MAX_PROGRAMS, dtype=torch.int32, device=dev) for _ in range(world)]
        xs = [torch.randn(numel, dtype=torch.bfloat16, device=dev) for _ in range(world)]
        streams = [torch.cuda.Stream(dev) for _ in range(world)]
        start = (1 * world + 1) * words  # epoch 1: set 1, sender 1
        slots[0].view(torch.int64)[start : start + words] = kernel.pack_words(xs[1], 1).view(torch.int64)
        for rank in (0, 1):  # in turn: loads both kernels before any waits
            kernel.all_reduce(xs[rank], slots[rank], ptrs, epochs[rank], rank, world, block=block, volatile=volatile)
            torch.cuda.synchronize()

        graphs = []
        for rank in (0, 1):  # captured, not run
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=streams[rank]):
                for _ in range(73):
                    kernel.all_reduce(
                        xs[rank], slots[rank], ptrs, epochs[rank], rank, world, block=block, volatile=volatile
                    )
            graphs.append(graph)
        times = []
        for it in range(12):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for rank in (1, 0):
                with torch.cuda.stream(streams[rank]):
                    graphs[rank].replay()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        best = sorted(times)[len(times) // 2]
        print(f"volatile {volatile} numel {numel} block {block}: graph of 73, {best / 73 * 1e6:.2f} us per all-reduce (median wall)", flush=True)
