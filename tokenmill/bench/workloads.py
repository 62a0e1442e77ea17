"""The offline benchmark's named workloads: which requests a run makes, apart from how it is timed.

A workload is a list of (prompt token ids, output length) pairs. The random ones draw their prompts from
a fixed seed, so every engine, peer and bench script given the same workload does exactly the same
work; judge-358 and copy build theirs through the chat template (judge_workload.py, copy_workload.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenmill.bench.copy_workload import CopyWorkload
from tokenmill.bench.judge_workload import JUDGE_QUESTIONS, JudgeWorkload
from tokenmill.tokenizer import Tokenizer


@dataclass(frozen=True)
class Workload:
    name: str
    num_prompts: int
    input_len: tuple[int, int]  # inclusive range
    output_len: tuple[int, int]

    def requests(self, tokenizer: Tokenizer, vocab_size: int) -> list[tuple[list[int], int]]:
        """Random prompts: the tokenizer plays no part."""
        return make_requests(self, vocab_size)


AnyWorkload = Workload | JudgeWorkload | CopyWorkload

WORKLOADS: dict[str, AnyWorkload] = {
    "qa-358": Workload("qa-358", 358, (48, 160), (200, 200)),
    "judge-358": JudgeWorkload("judge-358", JUDGE_QUESTIONS),
    "nano-256": Workload("nano-256", 256, (100, 1024), (100, 1024)),
    "single": Workload("single", 1, (128, 128), (256, 256)),
    "batch-8": Workload("batch-8", 8, (128, 128), (256, 256)),  # eight streams at once: a small server
    "copy": CopyWorkload("copy"),
}


def make_requests(workload: Workload, vocab_size: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """(prompt token ids, output length) per request; the same for every engine given the same seed."""
    rng = random.Random(seed)
    requests = []
    for _ in range(workload.num_prompts):
        length = rng.randint(*workload.input_len)
        prompt = [rng.randrange(vocab_size) for _ in range(length)]
        requests.append((prompt, rng.randint(*workload.output_len)))
    return requests
