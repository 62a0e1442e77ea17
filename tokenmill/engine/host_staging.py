"""Host arrays that carry each step's inputs to the device, reused across steps.

On CUDA they are pinned, so uploads from them are asynchronous and no pinned memory is allocated per
step. There are two sets, used by alternate steps: with async scheduling a step is prepared while the
previous one may not have started on the device. Before a set is reused, the host waits until the
device has finished the step that last used it (in steady serving, long done).
"""

from __future__ import annotations

import numpy as np
import torch


class HostStaging:
    def __init__(self, device: torch.device) -> None:
        self._pin = device.type == "cuda"
        self._sets: list[dict[str, torch.Tensor]] = [{}, {}]
        self._released = [torch.cuda.Event(), torch.cuda.Event()] if self._pin else []
        self._current = 0

    def next_step(self) -> None:
        """Switch sets for a new step: the work queued so far is all that reads the current set."""
        if self._released:
            self._released[self._current].record()
        self._current ^= 1
        if self._released:
            self._released[self._current].synchronize()

    def tensor(self, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
        """The current set's 1-D array `name`, of at least `size` elements (its first `size`)."""
        buffers = self._sets[self._current]
        buffer = buffers.get(name)
        if buffer is None or buffer.numel() < size:
            # On the CPU whatever default device the caller has set (`with torch.device("cuda")`).
            buffer = torch.empty(max(2 * size, 4096), dtype=dtype, device="cpu", pin_memory=self._pin)
            buffers[name] = buffer
        return buffer[:size]

    def fill(self, name: str, values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """A copy of `values` (any shape) in the current set's array `name`."""
        staged = self.tensor(name, values.size, dtype).view(values.shape)
        staged.numpy()[...] = values
        return staged
