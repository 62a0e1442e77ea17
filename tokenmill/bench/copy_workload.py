"""A copy-heavy single stream for speculative decoding: the answer mostly repeats a paragraph of the prompt.

The prompt asks, through the model's chat template, for a paragraph to be repeated word for word; the
output length is the paragraph's token length plus a margin for the answer's framing. A model that
follows the instruction produces text that n-gram lookup finds in its prompt, which is where prompt
lookup pays; a random-weight model does not copy, so it measures speculation's overhead instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.tokenizer import Tokenizer

PARAGRAPH = (
    "The scheduler decides every step which sequences run and how many tokens each contributes. Running "
    "sequences go first, decodes before prefill chunks, so that a long prompt never stalls generation. "
    "Waiting sequences are admitted in arrival order while the token budget, the sequence limit and the "
    "free cache blocks allow. When blocks run out, the newest running sequence is preempted: its blocks "
    "are released and it is computed again later, mostly from the prefix cache, which keeps every full "
    "block of known tokens under a hash of its contents and of everything before it. Sampling happens on "
    "the device, and only the chosen token of each sequence travels back to the host, where the text is "
    "extended, stop strings are checked, and finished requests are reported to their callers."
)
INSTRUCTION = "Repeat the following paragraph exactly, word for word, and write nothing else:\n\n"


@dataclass(frozen=True)
class CopyWorkload:
    name: str
    num_prompts: int = 1
    margin_tokens: int = 16
    paragraph: str = PARAGRAPH

    def requests(self, tokenizer: Tokenizer, vocab_size: int = 0) -> list[tuple[list[int], int]]:
        """(prompt token ids, output length) for each stream; the vocabulary size plays no part."""
        messages = [{"role": "user", "content": INSTRUCTION + self.paragraph}]
        prompt = tokenizer.encode_prompt(messages, enable_thinking=False)
        output_len = len(tokenizer.encode(self.paragraph, add_special_tokens=False)) + self.margin_tokens
        return [(prompt, output_len)] * self.num_prompts
