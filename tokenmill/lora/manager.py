"""The engine's LoRA state: adapters known by name (on the host) and the `max_loras` slots resident on
the device, reused least recently used first.

Adapters are read from disk when they are registered (`add`, or a request's first use), never in the
step loop's hot path; making one resident is a device copy into a free slot. A slot is pinned while a
running sequence uses it, so the scheduler admits a sequence only if its adapter is resident or a slot
can be freed (`admitter`): a step never needs more adapters than there are slots.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from tokenmill.distributed.control import LoRAFill
from tokenmill.engine.sequence import Sequence
from tokenmill.kernels.lora_mapping import NO_ADAPTER
from tokenmill.lora.adapter import LoRAAdapter, LoRARequest, read_adapter
from tokenmill.lora.layers import LoRAModel


class LoRAManager:
    def __init__(self, layers: LoRAModel, on_fill: Callable[[LoRAFill], None] | None = None) -> None:
        """`on_fill` hears of every slot this manager fills (tensor-parallel workers fill theirs)."""
        self.max_rank = layers.max_rank
        self.layers = layers
        self.on_fill = on_fill
        self.adapters: dict[str, LoRAAdapter] = {}
        self._resident: OrderedDict[str, int] = OrderedDict()  # name -> slot, least recently used first
        self._free_slots = list(range(layers.step.num_slots))

    @property
    def step(self):
        return self.layers.step

    def add(self, name: str, path: str | Path) -> LoRAAdapter:
        """Read, validate and register an adapter; the same name and directory again is a no-op."""
        known = self.adapters.get(name)
        if known is not None:
            if known.path != Path(path).expanduser():
                raise ValueError(
                    f"LoRA adapter {name!r} is already loaded from {known.path}; unload it first"
                )
            return known
        return self.register(read_adapter(name, path, self.max_rank))

    def register(self, adapter: LoRAAdapter) -> LoRAAdapter:
        """Register an adapter already read (`read_adapter`, e.g. on a worker thread) once it is
        checked against the model."""
        if not adapter.name or "=" in adapter.name:
            raise ValueError(f"LoRA adapter name {adapter.name!r} must be non-empty and hold no '='")
        if adapter.name in self.adapters:
            raise ValueError(f"LoRA adapter {adapter.name!r} is already loaded; unload it first")
        self.layers.check(adapter)
        self.adapters[adapter.name] = adapter
        return adapter

    def remove(self, name: str, users: Iterable[Sequence]) -> None:
        """Forget an adapter and free its slot; refused while a queued or running sequence uses it."""
        adapter = self.adapters.get(name)
        if adapter is None:
            raise KeyError(f"LoRA adapter {name!r} is not loaded")
        if any(seq.lora is adapter for seq in users):
            raise ValueError(f"LoRA adapter {name!r} is in use by unfinished requests")
        del self.adapters[name]
        slot = self._resident.pop(name, None)
        if slot is not None:
            self._free_slots.append(slot)

    def adapter_for(self, request: LoRARequest | str) -> LoRAAdapter:
        """The adapter a request runs under: a `LoRARequest` (registered on first use) or the name of a
        loaded adapter. Errors are ValueErrors naming the `lora_request` field."""
        if isinstance(request, str):
            if request not in self.adapters:
                raise ValueError(f"lora_request: no LoRA adapter named {request!r} is loaded")
            return self.adapters[request]
        try:
            return self.add(request.name, request.path)
        except FileNotFoundError as exc:
            raise ValueError(f"lora_request: {exc}") from exc

    def resident(self) -> list[str]:
        return list(self._resident)

    def admitter(self, running: Iterable[Sequence]) -> Callable[[Sequence], bool]:
        """For one scheduling pass: a function that gives a waiting sequence its adapter's slot (making
        it resident, evicting the least recently used unpinned adapter if need be), or answers False
        when every slot is pinned by running sequences of other adapters."""
        pinned = {seq.lora.name for seq in running if seq.lora is not None}

        def admit(seq: Sequence) -> bool:
            if seq.lora is None:
                seq.lora_slot = NO_ADAPTER
                return True
            name = seq.lora.name
            slot = self._resident.get(name)
            if slot is None:
                slot = self._take_slot(pinned)
                if slot is None:
                    return False
                self.layers.fill_slot(slot, seq.lora)
                if self.on_fill is not None:
                    self.on_fill(LoRAFill(slot, name, str(seq.lora.path)))
                self._resident[name] = slot
            self._resident.move_to_end(name)
            pinned.add(name)
            seq.lora_slot = slot
            return True

        return admit

    def _take_slot(self, pinned: set[str]) -> int | None:
        if self._free_slots:
            return self._free_slots.pop()
        for name in self._resident:
            if name not in pinned:
                return self._resident.pop(name)
        return None
