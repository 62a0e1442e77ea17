"""Text <-> token ids, chat templates and streaming decode, over a Hugging Face fast tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers
from tokenizers.decoders import DecodeStream
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class IncrementalDecoder:
    """Turns one sequence's token ids into text pieces, never splitting a UTF-8 character."""

    def __init__(self, backend: RustTokenizer, skip_special_tokens: bool) -> None:
        self._backend = backend
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)

    def step(self, token_id: int) -> str:
        return self._stream.step(self._backend, token_id) or ""


class Tokenizer:
    def __init__(self, hf: PreTrainedTokenizerBase) -> None:
        self.hf = hf
        self._backend: RustTokenizer = hf.backend_tokenizer

    @classmethod
    def from_directory(cls, path: str | Path) -> Tokenizer:
        return cls(AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True))

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """The tokenizer and chat template stored in a GGUF file's metadata. The fast class directly:
        AutoTokenizer would first parse the whole file again with the slow `gguf` reader to pick a class
        (about 10 s for a 50k vocabulary), and ends on this same class for every GGUF."""
        path = Path(path)
        return cls(
            PreTrainedTokenizerFast.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
        )

    @classmethod
    def byte_level(cls) -> Tokenizer:
        """A 256-byte tokenizer with ChatML specials: works for any text, needs no files."""
        return cls(build_byte_level_tokenizer())

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def eos_token_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def has_chat_template(self) -> bool:
        return bool(self.hf.chat_template)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def decode_many(self, token_id_lists: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        """`decode` of each list in one call (the Rust tokenizer runs them without the GIL, in parallel)."""
        return self._backend.decode_batch(token_id_lists, skip_special_tokens=skip_special_tokens)

    def incremental_decoder(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return IncrementalDecoder(self._backend, skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], **template_kwargs: Any) -> str:
        """Render a conversation with the generation prompt appended, as text."""
        if not self.has_chat_template:
            raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead")
        return self.hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )

    def encode_chat(self, messages: list[dict[str, str]], **template_kwargs: Any) -> list[int]:
        return self.encode(self.apply_chat_template(messages, **template_kwargs), add_special_tokens=False)

    def encode_prompt(self, messages: list[dict[str, str]], **template_kwargs: Any) -> list[int]:
        """The conversation through the chat template; a model without one gets the last message as text."""
        if not self.has_chat_template:
            return self.encode(messages[-1]["content"])
        return self.encode_chat(messages, **template_kwargs)

    def encode_prompts(
        self, conversations: list[list[dict[str, str]]], **template_kwargs: Any
    ) -> list[list[int]]:
        """`encode_prompt` of each conversation, with one template call and one tokenizer call for all:
        a batch of hundreds pays the per-call overheads once, and the Rust tokenizer runs without the
        GIL, on its own threads."""
        if not self.has_chat_template:
            return self.encode_many([messages[-1]["content"] for messages in conversations])
        if not conversations:
            return []
        texts = self.hf.apply_chat_template(
            conversations, tokenize=False, add_generation_prompt=True, **template_kwargs
        )
        return self.encode_many(texts, add_special_tokens=False)

    def encode_many(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        encodings = self._backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        return [encoding.ids for encoding in encodings]


def build_byte_level_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = RustTokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
    )
