"""Draft-model proposals: a smaller model of the target's tokenizer guesses the next k tokens greedily.

The draft runs in the engine's process on its own `ModelRunner` (its own KV cache, CUDA graphs) and its own
`BlockManager`. Each speculating sequence has a shadow `Sequence` there, whose tokens are the target's
known tokens followed by the draft's last guesses. A step first catches the shadow up: it keeps the K/V
of the prefix it shares with the target (everything the target accepted) and computes the rest in one
chunk (after the first step, the accepted tokens plus the target's own: a short chunk that replays a
verify-width graph), then decodes k - 1 more tokens. The k launches queue back to back, each fed by the
previous one's sampled tokens on the device; the host collects each round while the next one runs.

Greedy guesses put all of the draft's probability on one token, so the rejection sampler's rule for
one-hot proposals keeps the output distribution exactly the target's.
"""

from __future__ import annotations

import torch

from tokenmill.config import EngineConfig
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.model_runner import Launch, ModelRunner
from tokenmill.engine.rank_model import RankModel
from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.models.loader import load_model
from tokenmill.sampling_params import SamplingParams
from tokenmill.spec_decode.verify_graphs import VerifyGraphs

DRAFT_CACHE_TOKENS = 32768  # the draft's KV cache, at most: speculation runs only at small batches
GREEDY = SamplingParams(temperature=0)


class DraftModelProposer:
    def __init__(self, runner: ModelRunner, block_size: int, max_chunk_tokens: int) -> None:
        """`max_chunk_tokens`: most tokens one catch-up pass computes (the target's step budget), so
        sequences that start speculating together do not prefill all their prompts in one pass."""
        self.runner = runner
        self.block_manager = BlockManager(runner.num_blocks, block_size, enable_prefix_caching=False)
        self.max_chunk_tokens = max_chunk_tokens
        self._shadows: dict[int, Sequence] = {}  # the target's seq_id -> the draft's sequence
        self._synced: dict[int, int] = {}  # seq_id -> how many leading tokens are known to agree

    def propose_batch(self, seqs: list[Sequence], max_tokens: list[int]) -> list[list[int]]:
        """Up to `max_tokens[i]` greedy guesses for each of `seqs`: none where the draft's cache is full
        or its catch-up did not fit this step's chunk budget."""
        rows: list[tuple[Sequence, int, int]] = []  # (sequence, room, tokens its shadow computes now)
        budget = self.max_chunk_tokens
        for seq, room in zip(seqs, max_tokens):
            if budget == 0:
                break
            chunk = min(self._catch_up(seq), budget)
            if self.block_manager.allocate(self._shadows[seq.seq_id], chunk):
                rows.append((seq, room, chunk))
                budget -= chunk
            else:
                self.release(seq)
        if not rows:
            return [[] for _ in seqs]
        rows.sort(key=lambda row: row[2] > 1)  # decodes first
        shadows = [self._shadows[seq.seq_id] for seq, _, _ in rows]
        batch = ScheduledBatch(shadows, [chunk for _, _, chunk in rows])
        batch.num_decodes = sum(1 for n in batch.num_new_tokens if n == 1)
        launch = self._launch(batch)
        for round_ in range(2, max(room for _, room, _ in rows) + 1):
            previous = {id(shadow): row for row, shadow in enumerate(launch.seqs)}
            following = [
                shadow
                for shadow, (_, room, _) in zip(shadows, rows)
                if room >= round_ and id(shadow) in previous and self.block_manager.allocate(shadow, 1)
            ]
            if not following:
                break
            source = launch.sampled
            if len(following) < len(launch.seqs):  # the previous round's tokens of those that go on
                index = [previous[id(shadow)] for shadow in following]
                source = source[torch.tensor(index, device=source.device)]
            decodes = ScheduledBatch(following, [1] * len(following), len(following))
            next_launch = self._launch(decodes, source)
            self._collect(launch)
            launch = next_launch
        self._collect(launch)
        drafts = {seq.seq_id: self._guesses(seq, room) for seq, room, _ in rows}
        return [drafts.get(seq.seq_id, []) for seq in seqs]

    def release(self, seq: Sequence) -> None:
        """Forget a sequence that finished or was preempted, freeing its draft K/V."""
        shadow = self._shadows.pop(seq.seq_id, None)
        self._synced.pop(seq.seq_id, None)
        if shadow is not None:
            self.block_manager.free(shadow)

    def _catch_up(self, seq: Sequence) -> int:
        """Make the shadow's tokens the target's known ones, keeping the K/V of their common prefix;
        returns how many of its tokens are left to compute."""
        target = seq.token_ids
        shadow = self._shadows.get(seq.seq_id)
        if shadow is None:
            shadow = Sequence(seq.request_id, 0, target, GREEDY, self.runner.device)
            self._shadows[seq.seq_id] = shadow
        else:
            common = self._synced[seq.seq_id]
            tokens = shadow.token_ids
            limit = min(len(tokens), len(target))
            while common < limit and tokens[common] == target[common]:
                common += 1
            self.block_manager.trim(shadow, min(common, shadow.num_computed_tokens, len(target) - 1))
            del tokens[common:]
            tokens.extend(target[common:])
        self._synced[seq.seq_id] = len(target)
        return shadow.num_uncomputed_tokens

    def _launch(self, batch: ScheduledBatch, token_source: torch.Tensor | None = None) -> Launch:
        launch = self.runner.launch(batch, token_source)
        for shadow, num_new in zip(batch.seqs, batch.num_new_tokens):
            shadow.num_computed_tokens += num_new
        return launch

    def _collect(self, launch: Launch) -> None:
        for shadow, token in self.runner.collect(launch):
            shadow.token_ids.append(token)

    def _guesses(self, seq: Sequence, room: int) -> list[int]:
        known = seq.num_tokens
        return self._shadows[seq.seq_id].token_ids[known : known + room]


def load_draft_proposer(config: EngineConfig, rank: RankModel) -> DraftModelProposer:
    """The draft model of `config.speculative_model` on the target's device, kernels and dtype, with a KV
    cache for the sequences that may speculate at once. Load it before the target's KV cache is sized,
    so that cache takes only what is left."""
    device = next(rank.loaded.model.parameters()).device
    target_vocab_size = rank.loaded.config.vocab_size
    model_len = config.max_model_len or rank.loaded.config.max_position_embeddings
    assert config.speculative_model is not None, "the config requires speculative_model with 'draft'"
    loaded = load_model(config.speculative_model, device, rank.dtype, model_len, config.seed, rank.ops)
    if loaded.config.vocab_size != target_vocab_size:
        raise ValueError(
            f"speculative_model: {config.speculative_model!r} has a vocabulary of "
            f"{loaded.config.vocab_size} tokens, the target {target_vocab_size}: the draft must share "
            "the target's tokenizer"
        )
    num_seqs = min(config.speculative_disable_batch_size, config.max_num_seqs)
    num_blocks = -(-min(num_seqs * model_len, DRAFT_CACHE_TOKENS) // config.block_size)
    runner = ModelRunner(
        loaded.model,
        config.block_size,
        num_blocks,
        Sampler(device, config.seed, loaded.config.eos_token_ids),
        rank.ops,
        max_num_seqs=num_seqs,
        max_model_len=model_len,
        cuda_graphs=rank.ops.supports_cuda_graphs and not config.enforce_eager,
        verify_graphs=VerifyGraphs(config.num_speculative_tokens, num_seqs, model_len),
    )
    return DraftModelProposer(runner, config.block_size, rank.max_num_batched_tokens)
