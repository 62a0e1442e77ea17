"""From sampled tokens to what callers see: per-request text, stop decisions and `RequestOutput`s.

The engine core appends each sampled token to its sequence and asks here whether the sequence ends;
this module owns the detokenizer state of every live request, so stop strings (which need the text)
and stop tokens are decided in one place, by the pure `check_stop`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenmill.engine.detokenizer import SequenceText
from tokenmill.engine.input_processor import EngineRequest
from tokenmill.engine.sequence import Sequence
from tokenmill.outputs import CompletionOutput, RequestOutput, RequestTimes
from tokenmill.structured_output.manager import StructuredOutputs
from tokenmill.tokenizer import Tokenizer

StopDecision = tuple[str, str | int | None]  # (finish_reason, stop_reason)


def check_stop(
    seq: Sequence,
    token: int,
    stop_string: str | None,
    eos_token_ids: Iterable[int],
    max_model_len: int,
) -> StopDecision | None:
    """Why `seq` ends now that `token` is its newest token, or None if it goes on.

    Stops (a stop string found in the text, EOS unless `ignore_eos`, a stop token id) count only once
    `min_tokens` are out; the length limits (`max_tokens`, else the context) always apply."""
    params = seq.params
    num_tokens = len(seq.token_ids)
    num_output_tokens = num_tokens - seq.num_prompt_tokens
    if num_output_tokens >= params.min_tokens:
        if stop_string is not None:
            return "stop", stop_string
        if not params.ignore_eos and token in eos_token_ids:
            return "stop", None
        if params.stop_token_ids and token in params.stop_token_ids:
            return "stop", token
    if num_output_tokens >= (params.max_tokens or max_model_len) or num_tokens >= max_model_len:
        return "length", None
    return None


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    seqs: list[Sequence]
    texts: list[SequenceText]
    stream: bool  # an output every step; else only at the first token and at the end

    @property
    def finished(self) -> bool:
        seqs = self.seqs
        if len(seqs) == 1:  # the common case, asked once per reported request per step
            return seqs[0].is_finished
        return all(seq.is_finished for seq in seqs)


class OutputProcessor:
    def __init__(
        self,
        tokenizer: Tokenizer,
        eos_token_ids: tuple[int, ...],
        max_model_len: int,
        structured: StructuredOutputs | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.structured = structured
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self._requests: dict[str, RequestState] = {}
        # Requests that report whenever they advance (they stream, or have not reported their first
        # token yet); every other request reports only when a sequence of it finishes.
        self._every_step: set[str] = set()

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._requests

    def __len__(self) -> int:
        return len(self._requests)

    def add(self, request: EngineRequest, seqs: list[Sequence], stream: bool) -> None:
        texts = [SequenceText(self.tokenizer, request.params, incremental=stream) for _ in seqs]
        self._requests[request.request_id] = RequestState(
            request.request_id, request.prompt, request.prompt_token_ids, seqs, texts, stream
        )
        self._every_step.add(request.request_id)

    def request_ids(self) -> list[str]:
        return list(self._requests)

    def seqs_of(self, request_id: str) -> list[Sequence] | None:
        state = self._requests.get(request_id)
        return None if state is None else state.seqs

    def grammar_accepts(self, seq: Sequence, token: int) -> bool:
        """Feed a sampled token to the sequence's grammar, if it has one, before the token is appended.

        False when the grammar refuses it: the grammar then allowed no token at all (its language has
        no continuation of the text so far) and the sampler drew from a row of -inf. The token is
        dropped, with the logprobs entry recorded for it, and the sequence ends with finish_reason
        "abort", as SGLang aborts a request whose grammar refuses a token (vLLM keeps the token and
        goes on); the text stays the prefix that matched."""
        grammars = self.structured
        if grammars is None or not grammars.tracks(seq) or grammars.accept(seq, token):
            return True
        if seq.logprobs:
            seq.logprobs.pop()
        return False

    def process_token(self, seq: Sequence, token: int) -> StopDecision | None:
        """Extend the sequence's text by its newest token and decide whether the sequence stops."""
        text = self._requests[seq.request_id].texts[seq.index]
        stop_string = None
        if text.incremental:  # else there is no stop string, and the text is decoded once at the end
            stop_string = text.append(token, check_stops=seq.num_output_tokens >= seq.params.min_tokens)
        stop = check_stop(seq, token, stop_string, self.eos_token_ids, self.max_model_len)
        grammars = self.structured
        if stop is None and grammars is not None and grammars.tracks(seq) and grammars.is_terminated(seq):
            return "stop", None  # the grammar is complete and allows nothing more
        return stop

    def outputs(self, advanced: Iterable[Sequence]) -> list[RequestOutput]:
        """One output per request that advanced: every step if it streams, else its first and last.
        Only the requests that report this step are looked at, so a big non-streamed batch costs a
        status check per sequence between its first and last tokens."""
        every_step = self._every_step
        if every_step:
            reporting = [
                seq.request_id for seq in advanced if seq.request_id in every_step or seq.is_finished
            ]
        else:
            reporting = [seq.request_id for seq in advanced if seq.is_finished]
        outputs = []
        reporting = list(dict.fromkeys(reporting))
        self._decode_together([request_id for request_id in reporting if self._requests[request_id].finished])
        for request_id in reporting:
            state = self._requests[request_id]
            if state.finished:
                outputs.append(self.finalize(request_id))
            elif request_id in every_step:
                if not state.stream:
                    every_step.discard(request_id)
                outputs.append(self._output(state, finished=False))
        return outputs

    def _decode_together(self, request_ids: list[str]) -> None:
        """The whole texts of requests that finish in the same step, in one tokenizer call per
        `skip_special_tokens` setting rather than one per sequence (a big batch finishes together)."""
        if len(request_ids) < 2:
            return
        pending: dict[bool, list[tuple[SequenceText, list[int]]]] = {}
        for request_id in request_ids:
            state = self._requests[request_id]
            for seq, text in zip(state.seqs, state.texts):
                if text.needs_whole_text:
                    pending.setdefault(text.skip_special_tokens, []).append((text, seq.output_token_ids))
        for skip_special_tokens, pairs in pending.items():
            wholes = self.tokenizer.decode_many([ids for _, ids in pairs], skip_special_tokens)
            for (text, _), whole in zip(pairs, wholes):
                text.set_whole_text(whole)

    def finalize(self, request_id: str) -> RequestOutput:
        """The last output of a request whose sequences have all finished; forgets the request."""
        state = self._requests.pop(request_id)
        self._every_step.discard(request_id)
        if self.structured is not None:
            self.structured.release(state.seqs)
        for seq, text in zip(state.seqs, state.texts):
            text.finish(seq.output_token_ids)
        return self._output(state, state.finished)

    def _output(self, state: RequestState, finished: bool) -> RequestOutput:
        completions = []
        for seq, text in zip(state.seqs, state.texts):
            delta_text = text.take_delta(seq.is_finished)
            delta_tokens = seq.token_ids[seq.num_prompt_tokens + text.num_sent_tokens :]
            text.num_sent_tokens += len(delta_tokens)
            completions.append(
                CompletionOutput(
                    index=seq.index,
                    text=text.text[: text.num_sent_chars],
                    token_ids=seq.output_token_ids,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                    delta_text=delta_text,
                    delta_token_ids=delta_tokens,
                    logprobs=seq.logprobs,
                    token_times=seq.token_times,
                )
            )
        first = state.seqs[0]
        return RequestOutput(
            request_id=state.request_id,
            prompt=state.prompt,
            prompt_token_ids=state.prompt_token_ids,
            outputs=completions,
            finished=finished,
            num_cached_tokens=first.num_cached_tokens,
            times=RequestTimes(first.arrival_time, first.first_scheduled_time, first.first_token_time),
        )
