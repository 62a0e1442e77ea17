"""The judge's workload for the offline benchmark: its sample questions as `/predict` would run them.

Each question goes through the server's prompt builder (the chat template with the server's default
system prompt and thinking setting); each request's output length is the token length of that
question's reference answer, so the batch drains the way real answers do, with a tail of long ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tokenmill.config import ServerConfig
from tokenmill.eval.datasets import QAItem, load_items
from tokenmill.server.state import question_messages
from tokenmill.tokenizer import Tokenizer

JUDGE_QUESTIONS = "data/official_test.txt"


@dataclass(frozen=True)
class JudgeWorkload:
    name: str
    questions: str  # any QA file `tokenmill eval` reads

    @cached_property
    def items(self) -> list[QAItem]:
        return load_items(self.questions)

    @property
    def num_prompts(self) -> int:
        return len(self.items)

    def prompts(self, tokenizer: Tokenizer) -> list[list[int]]:
        """Each question's prompt token ids as `/predict` builds them (the server's default system prompt
        and thinking setting), in file order."""
        defaults = {name: info.default for name, info in ServerConfig.model_fields.items()}
        system, thinking = defaults["system_prompt"], defaults["enable_thinking"]
        return [
            tokenizer.encode_prompt(question_messages(item.question, system), enable_thinking=thinking)
            for item in self.items
        ]

    def requests(self, tokenizer: Tokenizer, vocab_size: int = 0) -> list[tuple[list[int], int]]:
        """(prompt token ids, output length) per question, in file order (the vocabulary size, which
        random workloads draw from, plays no part)."""
        lengths = [
            max(1, len(tokenizer.encode(item.reference, add_special_tokens=False))) for item in self.items
        ]
        return list(zip(self.prompts(tokenizer), lengths))
