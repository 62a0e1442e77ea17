"""Next-token choice for a batch of sequences with different sampling settings, on the logits' device.

Sampling draws argmax(p / E) with E ~ Exp(1) noise (the exponential-race form of categorical sampling):
no sort, no cumulative sum, and a seeded request draws its noise from its own generator, so its
samples do not depend on its batch mates. Sorting happens only for top-p.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tokenmill.engine.sequence import Sequence

LogitsProcessor = Callable[[torch.Tensor, list[Sequence]], torch.Tensor]


class Sampler:
    def __init__(
        self,
        device: torch.device,
        seed: int,
        eos_token_ids: tuple[int, ...],
        logits_processor: LogitsProcessor | None = None,
    ) -> None:
        """`logits_processor` sees the whole batch's logits once per step before anything else (the
        structured-outputs token mask); it may change them in place and returns the logits to use."""
        self.device = device
        self.eos_token_ids = eos_token_ids
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.logits_processor = logits_processor

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """logits: [len(seqs), vocab] -> next token id per sequence."""
        logits = self.adjust(logits, seqs)
        if all(s.params.greedy for s in seqs):
            return logits.argmax(dim=-1)
        logits = logits.float()
        greedy = logits.argmax(dim=-1)
        sampled = self.draw(self.target_probs(logits, seqs), seqs)
        is_greedy = torch.tensor([s.params.greedy for s in seqs], device=logits.device)
        return torch.where(is_greedy, greedy, sampled)

    def adjust(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """The logits with the rules that depend on each sequence's tokens applied (early-stop bans,
        penalties) and the logits processor (grammar masks); greedy decoding takes their argmax."""
        if self.logits_processor is not None:
            logits = self.logits_processor(logits, seqs)
        logits = self._ban_early_stops(logits, seqs)
        if any(s.params.uses_penalties for s in seqs):
            logits = apply_penalties(logits.float(), seqs)
        return logits

    def target_probs(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """The distribution sampling draws from: adjusted logits through temperature, top-k/p, min-p
        (rows sum to 1, except that min-p zeroes tokens without renormalising)."""
        return self._filtered_probs(logits.float(), seqs)

    def draw(self, probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """One token per row in proportion to `probs` (which need not be normalised), each seeded
        sequence from its own generator."""
        return (probs / self._exponential_noise(probs, seqs)).argmax(dim=-1)

    def record_logprobs(self, logits: torch.Tensor, sampled: torch.Tensor, seqs: list[Sequence]) -> None:
        """Append to each live sequence that asked for logprobs the log-softmax of the raw logits at its
        sampled token and at its `params.logprobs` most likely tokens (rows of `logits` follow `seqs`)."""
        rows = [row for row, seq in enumerate(seqs) if seq.logprobs is not None and not seq.is_finished]
        if not rows:
            return
        index = torch.tensor(rows, device=logits.device)
        logprobs = logits[index].float().log_softmax(dim=-1)
        chosen_ids = sampled[index]
        chosen = logprobs.gather(-1, chosen_ids[:, None])[:, 0].tolist()
        top_n = max(seqs[row].params.logprobs or 0 for row in rows)
        top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (logprobs[:, :0], logprobs[:, :0])
        top_values, top_ids = top_values.tolist(), top_ids.long().tolist()
        for i, (row, token) in enumerate(zip(rows, chosen_ids.tolist())):
            seq = seqs[row]
            n = seq.params.logprobs or 0
            entry = dict(zip(top_ids[i][:n], top_values[i][:n]))
            entry[token] = chosen[i]
            assert seq.logprobs is not None
            seq.logprobs.append(entry)

    def _ban_early_stops(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Until min_tokens are out, EOS and stop tokens cannot be drawn, unless they are all a row
        allows: a complete grammar allows only ending, and then ends the sequence short of min_tokens.
        The grammar is the request's hard constraint and min_tokens a floor it made unreachable; vLLM
        and SGLang apply both bans and draw from a row of -inf (token 0, which the grammar refuses).
        A ban of the whole vocabulary by stop_token_ids alone is refused at admission."""
        rows, cols = [], []
        for row, seq in enumerate(seqs):
            if seq.num_output_tokens < seq.params.min_tokens:
                banned = list(seq.params.stop_token_ids or ())
                if not seq.params.ignore_eos:
                    banned += self.eos_token_ids
                rows += [row] * len(banned)
                cols += banned
        if not rows:
            return logits
        kept = logits.clone()
        kept[rows, cols] = float("-inf")
        nothing_left = (kept == float("-inf")).all(dim=-1, keepdim=True)
        return torch.where(nothing_left, logits, kept)

    def _filtered_probs(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        temperatures = [1.0 if s.params.greedy else s.params.temperature for s in seqs]
        temperature = torch.tensor(temperatures, device=logits.device)
        logits = logits / temperature[:, None]
        top_k = [s.params.top_k for s in seqs]
        if any(top_k):
            logits = _apply_top_k(logits, top_k)
        top_p = [s.params.top_p for s in seqs]
        if any(p < 1.0 for p in top_p):
            logits = _apply_top_p(logits, torch.tensor(top_p, device=logits.device))
        probs = logits.softmax(dim=-1)
        min_p = [s.params.min_p for s in seqs]
        if any(min_p):
            floor = torch.tensor(min_p, device=logits.device)[:, None] * probs.amax(dim=-1, keepdim=True)
            probs = probs.masked_fill(probs < floor, 0.0)
        return probs

    def _exponential_noise(self, probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        for row, seq in enumerate(seqs):
            if seq.generator is not None:
                noise[row].exponential_(generator=seq.generator)
        return noise


def _apply_top_k(logits: torch.Tensor, top_k: list[int]) -> torch.Tensor:
    """Mask all but each row's k largest logits; the widest k comes from the host list, so no sync."""
    vocab = logits.shape[-1]
    widths = [k if 0 < k < vocab else vocab for k in top_k]
    ks = torch.tensor(widths).to(logits.device, non_blocking=True)
    ordered = logits.topk(max(widths), dim=-1).values
    threshold = ordered.gather(-1, (ks - 1)[:, None])
    return logits.masked_fill(logits < threshold, float("-inf"))


def _apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (the top token always stays)."""
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
    drop_sorted[:, 0] = False  # also when top_p rounds to 0 in float32 (1e-300)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Repetition penalty over prompt and output (divides positive logits, multiplies negative ones);
    presence and frequency penalties over the output only, as in the OpenAI API."""
    vocab = logits.shape[-1]
    device = logits.device
    output_counts = _token_counts([s.output_token_ids for s in seqs], vocab, device)
    prompt_seen = _token_counts([s.prompt_token_ids for s in seqs], vocab, device) > 0
    repetition = torch.tensor([s.params.repetition_penalty for s in seqs], device=device)[:, None]
    presence = torch.tensor([s.params.presence_penalty for s in seqs], device=device)[:, None]
    frequency = torch.tensor([s.params.frequency_penalty for s in seqs], device=device)[:, None]
    seen = prompt_seen | (output_counts > 0)
    penalized = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen, penalized, logits)
    return logits - frequency * output_counts - presence * (output_counts > 0).float()


def _token_counts(token_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(token_lists), vocab] occurrence counts; ids outside the vocabulary are ignored."""
    width = max((len(t) for t in token_lists), default=0)
    padded = torch.full((len(token_lists), width + 1), vocab, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        padded[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long).clamp(max=vocab)
    counts = torch.zeros(len(token_lists), vocab + 1, device=device)
    counts.scatter_add_(1, padded.to(device), torch.ones_like(padded, dtype=counts.dtype, device=device))
    return counts[:, :vocab]
