"""Incremental detokenization with stop strings.

Text grows token by token without ever splitting a UTF-8 character. A stop string ends the sequence and
is cut from the text; text that might be the start of a stop string is held back from streaming until
the next tokens decide it. A sequence nobody streams and no stop string can end is decoded once, at
the end: per-token decoding is the largest CPU cost of a big batch.
"""

from __future__ import annotations

from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer


class SequenceText:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams, incremental: bool = True) -> None:
        self._tokenizer = tokenizer
        self.skip_special_tokens = params.skip_special_tokens
        self.incremental = incremental or bool(params.stop_strings)
        self._decoder = tokenizer.incremental_decoder(params.skip_special_tokens)
        self._whole: str | None = None  # the whole decode, when done ahead for many sequences at once
        self._stops = params.stop_strings
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self.num_sent_chars = 0
        self.num_sent_tokens = 0
        self.stopped = False  # a stop string ended the text

    def append(self, token_id: int, check_stops: bool) -> str | None:
        """Add a token's text; returns the stop string if one now appears (the text is cut before it)."""
        if not self.incremental:
            return None
        piece = self._decoder.step(token_id)
        if not piece:
            return None
        search_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += piece
        if not (check_stops and self._stops):
            return None
        hits = [(index, stop) for stop in self._stops if (index := self.text.find(stop, search_from)) >= 0]
        if not hits:
            return None
        index, stop = min(hits)
        self.text = self.text[:index]
        self.stopped = True
        return stop

    def releasable_chars(self, finished: bool) -> int:
        """How much text is safe to show: all once finished, else all but a possible start of a stop."""
        text = self.text
        if finished or not self._stops:
            return len(text)
        held_from = len(text)
        for stop in self._stops:
            # The earliest start, within reach of the end, of a tail that this stop begins with. One
            # search for the stop's first character settles most steps.
            start = text.find(stop[0], len(text) - min(len(stop), self._longest_stop - 1, len(text)))
            while 0 <= start < held_from and not stop.startswith(text[start:]):
                start = text.find(stop[0], start + 1)
            if 0 <= start < held_from:
                held_from = start
        return held_from

    @property
    def needs_whole_text(self) -> bool:
        """Whether `finish` decodes the sequence whole (all do but one a stop string ended)."""
        return not (self.incremental and self.stopped)

    def set_whole_text(self, whole: str) -> None:
        """The sequence's whole decode, done ahead in one call for many sequences; `finish` uses it."""
        self._whole = whole

    def finish(self, output_token_ids: list[int]) -> None:
        """Decode a sequence that was not decoded token by token. One that was may end inside a
        character whose bytes its decoder still holds: they are shown now, as the whole decode shows
        them (U+FFFD), so that streamed pieces add up to the same text as an answer sent whole."""
        if not self.needs_whole_text:
            return
        whole = self._whole
        if whole is None:
            whole = self._tokenizer.decode(output_token_ids, skip_special_tokens=self.skip_special_tokens)
        held_back = whole.startswith(self.text) and not whole[len(self.text) :].strip("\ufffd")
        if not self.incremental or held_back:
            self.text = whole

    def take_delta(self, finished: bool) -> str:
        end = max(self.releasable_chars(finished), self.num_sent_chars)
        delta = self.text[self.num_sent_chars : end]
        self.num_sent_chars = end
        return delta
