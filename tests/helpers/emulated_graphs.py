"""The CUDA-graph path of the engine on the CPU, for what matters across tensor-parallel ranks: the
sequence of collectives.

`install()` makes the PyTorch reference kernels claim graph support and swaps CUDA graphs for stand-ins:
capture runs its body once (so its collectives are issued, as a real capture records them once) and a
replay issues nothing from Python (as a real replay's collectives never pass through Python: they meet
the other ranks' replays on the device). The hidden states a replay returns are stale, so tokens are
not meaningful; the ranks' agreement is. Capture's metadata gains the host lists the reference kernels
read. `run_worker` is the worker entry point with the same stand-ins installed in the worker process.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

REPLAYS = {"count": 0}


class _Graph:
    def replay(self) -> None:
        REPLAYS["count"] += 1


@contextlib.contextmanager
def _capture(graph: _Graph, pool: object = None) -> Iterator[None]:
    yield


def install(patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """`patch`: pytest's `monkeypatch.setattr` in the test process (undone after the test), plain
    `setattr` in a worker process."""
    from tokenmill.engine import cuda_graphs
    from tokenmill.kernels import ops

    patch(ops, "TORCH_OPS", dataclasses.replace(ops.TORCH_OPS, supports_cuda_graphs=True))
    patch(torch.cuda, "CUDAGraph", _Graph)
    patch(torch.cuda, "graph", _capture)
    patch(torch.cuda, "graph_pool_handle", lambda: None)
    patch(torch.cuda, "synchronize", lambda device=None: None)
    real_metadata = cuda_graphs.StaticInputs.metadata

    def metadata(self: Any, size: int, decode_splits: int) -> Any:  # padding rows: 1 token, context 1
        meta = real_metadata(self, size, decode_splits)
        return dataclasses.replace(meta, seq_lens_cpu=[1] * size, query_lens_cpu=[1] * size)

    patch(cuda_graphs.StaticInputs, "metadata", metadata)


def run_worker(*args: object) -> None:
    from tokenmill.distributed import worker

    install()
    worker.run_worker(*args)  # type: ignore[arg-type]
