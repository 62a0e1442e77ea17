"""Token bans that keep constrained text decodable, where xgrammar's byte-level matching is lenient.

Two gaps show on byte-level vocabularies (and through byte-fallback tokens of any): xgrammar accepts a
UTF-8-encoded surrogate (ED A0..BF ..), which decodes to U+FFFD replacement characters and so breaks a
schema's string lengths, and its length-limited JSON string rule accepts raw control characters, which
strict JSON parsers refuse (compact JSON has none anywhere). Each constrained row's bitmask is ANDed
with one of four precomputed rows (by the mask kernel, token_mask.py): JSON or not, and whether its
last token ended on the byte ED.
"""

from __future__ import annotations

import re

import numpy as np
import torch

_CONTROL_BYTE = re.compile(rb"[\x00-\x1f]")
_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")
_CONTINUATION = range(0xA0, 0xC0)  # after ED, these second bytes make a surrogate


class TextGuards:
    def __init__(self, decoded_vocab: list[bytes], vocab_size: int) -> None:
        words = -(-vocab_size // 32)
        plain = np.ones(words * 32, dtype=bool)
        json = plain.copy()
        after_lead = plain.copy()
        self.ends_on_lead = np.zeros(vocab_size, dtype=bool)
        for token, text in enumerate(decoded_vocab[:vocab_size]):
            if _SURROGATE.search(text):
                plain[token] = json[token] = False
            if _CONTROL_BYTE.search(text):
                json[token] = False
            if text and text[0] in _CONTINUATION:
                after_lead[token] = False
            if text.endswith(b"\xed"):
                self.ends_on_lead[token] = True
        rows = [plain, json, plain & after_lead, json & after_lead]
        self.rows = torch.stack([_packed(row) for row in rows])  # index: guard_row(is_json, after_lead)
        self._rows_on: dict[torch.device, torch.Tensor] = {}

    def rows_on(self, device: torch.device) -> torch.Tensor:
        """The four guard rows, [4, words] int32, on `device` (copied there once)."""
        rows = self._rows_on.get(device)
        if rows is None:
            rows = self._rows_on[device] = self.rows.to(device)
        return rows


def guard_row(is_json: bool, after_lead: bool) -> int:
    """Which of the four guard rows a constrained row is ANDed with."""
    return int(is_json) + 2 * int(after_lead)


def _packed(allowed: np.ndarray) -> torch.Tensor:
    """Bool per token -> int32 words, bit j of word i for token 32*i + j (xgrammar's layout)."""
    return torch.from_numpy(np.packbits(allowed, bitorder="little").view("<i4").astype(np.int32))
