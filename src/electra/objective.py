"""The ELECTRA objective: masking, generator sampling, replaced-token labels, losses, metrics.

Follows google-research/electra (`run_pretraining.py`, `pretrain_helpers.py`) and paper section 2:
- `mask_prob` of the non-special tokens are chosen, at most `max_predictions` per sequence (static
  shapes); 85% of them become [MASK], 15% keep the original token (no random tokens);
- the generator (same depth, `generator_size` of the width, sharing the embeddings) predicts the
  vocabulary only at the chosen positions;
- replacements are sampled from its softmax in fp32, without gradient (inverse CDF: the same
  distribution as the official Gumbel-max trick from one uniform per prediction);
- a token is "replaced" only where the sample differs from the original;
- loss = gen_weight * MLM loss + disc_weight * BCE over all non-pad tokens.

All randomness comes in as `Noise` (noise.py), drawn per example from a key derived from (seed,
position of the example in the data stream), so results do not depend on batching, accumulation
or ranks.

Shapes: B batch, T tokens, N predictions per sequence, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from electra.config import ModelConfig, ObjectiveConfig, generator_config
from electra.model import (DisentangledEmbeddings, Discriminator, Embeddings, Generator, GeneratorHead, init_positions,
                           init_weights, logit)
from electra.noise import Noise
from electra.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

SPECIAL_IDS = (PAD_ID, CLS_ID, SEP_ID, MASK_ID)


class ElectraOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    stats: dict[str, torch.Tensor]  # detached sums and counts, see _step_stats
    disc_logits: torch.Tensor  # (B, T) fp32
    labels: torch.Tensor  # (B, T) bool: replaced
    token_mask: torch.Tensor  # (B, T) bool: not padding


@dataclass
class Masked:
    input_ids: torch.Tensor  # (B, T) with [MASK] at 85% of the chosen positions
    positions: torch.Tensor  # (B, N) chosen positions (padding slots point anywhere)
    weights: torch.Tensor  # (B, N) bool: the slot is a real prediction
    originals: torch.Tensor  # (B, N) original token ids at the positions
    is_mask_token: torch.Tensor  # (B, N) bool: the input shows [MASK] there


def maskable(input_ids):
    """(B, T) bool: tokens that may be chosen (not [PAD], [CLS], [SEP] or [MASK])."""
    return ~torch.isin(input_ids, torch.tensor(SPECIAL_IDS, device=input_ids.device))


def prediction_counts(input_ids, mask_prob: float, max_predictions: int):
    """(B,) how many positions each sequence predicts: round(mask_prob * n) of its n maskable
    tokens, at least 1 and at most max_predictions (official `pretrain_helpers.mask`)."""
    n = maskable(input_ids).sum(1)
    return torch.minimum(torch.round(n.double() * mask_prob).long().clamp(min=1, max=max_predictions), n)


def rtd_scored(input_ids, rtd_tokens: str = "all"):
    """(B, T) bool: the tokens the RTD loss scores (`objective.rtd_tokens`): every real token, or
    only the maskable ones."""
    return maskable(input_ids) if rtd_tokens == "maskable" else input_ids != PAD_ID


def loss_denominators(input_ids, mask_prob: float, max_predictions: int, rtd_tokens: str = "all") -> tuple[int, int]:
    """A step's number of predictions and of tokens the RTD loss scores, the losses' denominators:
    the trainer sums them over the whole step (all micro-batches and ranks), so that accumulation
    and several processes equal one big batch."""
    return (int(prediction_counts(input_ids, mask_prob, max_predictions).sum()),
            int(rtd_scored(input_ids, rtd_tokens).sum()))


def word_starts(input_ids, continues_word):
    """(B, T): the position of the first piece of each token's word. `continues_word` (V,) bool
    marks the "##" pieces; those right after a special token (a sequence cut mid-word) join it as
    one word that the special token starts (it is never chosen; the pieces are, together)."""
    B, T = input_ids.shape
    position = torch.arange(T, device=input_ids.device).expand(B, T)
    return torch.where(continues_word[input_ids], 0, position).cummax(dim=1).values


def mask_tokens(input_ids, select_noise, keep_noise, mask_prob: float,
                mask_token_prob: float = 0.85, random_token_prob: float = 0.0, random_noise=None,
                vocab_size: int = 0, starts=None) -> Masked:
    """Choose `prediction_counts` of the maskable tokens uniformly without replacement, and replace
    85% of those with [MASK] (ELECTRA; BERT: 80% [MASK], `random_token_prob` 10% a random
    non-special token drawn from `random_noise`, the rest kept). N = keep_noise.shape[1] is the
    number of prediction slots. `starts` (`word_starts`): choose whole words instead, in a random
    order of words, each word's pieces in a row; the last word chosen may lose its last pieces to
    the count (which stays the token-level one)."""
    N = keep_noise.shape[1]
    candidate = maskable(input_ids)
    k = prediction_counts(input_ids, mask_prob, N)
    if starts is not None:
        # every piece takes its word's draw; a later piece ranks just below the one before it (the
        # draws are multiples of 2^-24 apart, the offsets under 2^-24 for T < 2^16: exact in float64)
        position = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.float64)
        select_noise = select_noise.double().gather(1, starts) - position * 2.0 ** -40
    scores = torch.where(candidate, select_noise, torch.full_like(select_noise, -1.0))
    positions = scores.topk(N, dim=1).indices  # (B, N), distinct, candidates first in random order
    weights = torch.arange(N, device=input_ids.device)[None, :] < k[:, None]
    originals = input_ids.gather(1, positions)
    is_mask_token = weights & (keep_noise < mask_token_prob)
    shown = torch.where(is_mask_token, MASK_ID, originals)
    if random_token_prob > 0:
        is_random = weights & ~is_mask_token & (keep_noise < mask_token_prob + random_token_prob)
        first = len(SPECIAL_TOKENS)  # ids 0-4 are the special tokens
        random_ids = (first + (random_noise * (vocab_size - first)).long()).clamp(max=vocab_size - 1)
        shown = torch.where(is_random, random_ids, shown)
    masked_ids = input_ids.scatter(1, positions, shown)
    return Masked(masked_ids, positions, weights, originals, is_mask_token)


MAX_SWAP_PIECES = 4


class CorpusWords(NamedTuple):
    """The words of k pieces of a corpus (`corpus_words`), for swaps from the corpus."""
    words: torch.Tensor  # (n, k) their pieces, the most frequent first
    cumulative: torch.Tensor  # (n,) int64: running sum of their counts


def corpus_words(tokens: np.ndarray, documents: np.ndarray, continues_word: np.ndarray,
                 max_pieces: int = MAX_SWAP_PIECES) -> dict[int, CorpusWords]:
    """{k: the distinct words of k pieces in a token stream, with their counts} for k = 1..max_pieces:
    the corpus's own word distribution, for `objective.word_swap_source = "corpus"`. A word starts
    at a piece that does not continue one ("##") or at a new document (`documents`: each token's);
    words started by a special token are left out."""
    start = ~continues_word[tokens]
    start[1:] |= documents[1:] != documents[:-1]
    start[:1] = True
    first = np.flatnonzero(start)
    length = np.diff(np.append(first, len(tokens)))
    usable = ~np.isin(tokens[first], SPECIAL_IDS)
    table = {}
    for k in range(1, max_pieces + 1):
        at = first[usable & (length == k)]
        words, counts = np.unique(tokens[at[:, None] + np.arange(k)].reshape(-1, k), axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # ties stay in id order: the same table every time
        table[k] = CorpusWords(torch.as_tensor(words[order], dtype=torch.long),
                               torch.as_tensor(np.cumsum(counts[order]), dtype=torch.long))
    return table


def swap_words(input_ids, shown_ids, starts, swap_noise, donor_noise, swap_prob: float,
               max_pieces: int = MAX_SWAP_PIECES, corpus: dict[int, CorpusWords] | None = None):
    """`shown_ids` with `swap_prob` of the words (up to `max_pieces` pieces, started by a maskable
    token) replaced by the pieces of a word of as many pieces drawn uniformly from the same
    sequence's words (its own word distribution; per sequence, so that batching, accumulation and
    ranks change nothing; the donor may be the word itself or its twin: no change). `corpus`
    (`corpus_words`): draw the donor from the corpus's words of as many pieces instead, in
    proportion to their counts (a word from elsewhere, as a user's typo or a wrong word would be).
    `starts` from `word_starts`; the noise (B, T) is read at each word's first piece."""
    B, T = input_ids.shape
    position = torch.arange(T, device=input_ids.device).expand(B, T)
    is_start = (starts == position) & maskable(input_ids)
    length = torch.zeros_like(input_ids).scatter_add_(1, starts, torch.ones_like(input_ids))  # at each start
    swap = is_start & (swap_noise < swap_prob)
    out = torch.cat([shown_ids, shown_ids[:, :1]], 1)  # column T: where the words not swapped write
    for k in range(1, max_pieces + 1):
        words = is_start & (length == k)
        if corpus is None:
            donors = _donors_from_sequence(input_ids, words, donor_noise, k)
        elif len(corpus[k].cumulative):
            donors = _donors_from_corpus(corpus[k], donor_noise)
        else:
            continue  # the corpus has no word of k pieces
        target = swap & words
        for j in range(k):  # a word's pieces are contiguous
            at = torch.where(target, position + j, T)  # T: nothing to write
            out.scatter_(1, at, torch.where(target, donors[..., j], 0))
    return out[:, :T]


def _donors_from_sequence(input_ids, words, donor_noise, k: int):
    """(B, T, k): at each position, the pieces of the row's k-piece word (`words`: their starts)
    that `donor_noise` picks, uniformly among them."""
    B, T = input_ids.shape
    position = torch.arange(T, device=input_ids.device).expand(B, T)
    count = words.sum(1, keepdim=True)  # (B, 1)
    # the positions of each row's k-piece words, in order: where_k[b, i] = the i-th one's start
    rank = torch.where(words, words.cumsum(1) - 1, T)  # T: a spare column for the others
    where_k = torch.zeros(B, T + 1, dtype=torch.long, device=input_ids.device).scatter_(
        1, rank, torch.where(words, position, 0))
    pick = (donor_noise * count).long().clamp(max=(count - 1).clamp(min=0))  # (B, T) an index into where_k
    donor = where_k.gather(1, pick)  # (B, T) the donor's start
    pieces = (donor[..., None] + torch.arange(k, device=input_ids.device)).clamp(max=T - 1)
    return input_ids.gather(1, pieces.flatten(1)).view(B, T, k)


def _donors_from_corpus(table: CorpusWords, donor_noise):
    """(B, T, k): at each position, the pieces of the corpus word that `donor_noise` picks, in
    proportion to the words' counts."""
    draw = (donor_noise.double() * int(table.cumulative[-1])).long()  # a count in [0, total)
    return table.words[torch.searchsorted(table.cumulative, draw, right=True).clamp(max=len(table.cumulative) - 1)]


def sample_replacements(logits, uniform, temperature: float = 1.0, probs=None):
    """Sample from softmax(logits / temperature) by inverting its CDF at `uniform` (B, N), in fp32,
    without gradient: (B, N, V) -> (B, N). The same distribution as the official Gumbel-max
    sampling, from one uniform per prediction instead of V. `probs`: softmax(logits) when the
    caller has it (reused at temperature 1)."""
    with torch.no_grad():
        if probs is None or temperature != 1.0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
        return invert_cdf(probs, uniform.float())


CDF_BLOCK = 256


def invert_cdf(weights, uniform):
    """The index i where the cumulative sum of `weights` (..., V), non-negative and not necessarily
    normalised, first reaches uniform * their total (...). Searched in two levels, the sums of
    blocks of CDF_BLOCK entries and then the one block the target falls in: a cumulative sum over
    the whole vocabulary is a sequential scan (sampling 16 x 19 x 30,522 took 8-9 ms on the CPU
    that way, 1.7-1.9 ms this way). A zero weight is never chosen."""
    V, size = weights.shape[-1], CDF_BLOCK
    whole = V - V % size
    sums = weights[..., :whole].unflatten(-1, (whole // size, size)).sum(-1)  # (..., V // size)
    if whole < V:
        sums = torch.cat([sums, weights[..., whole:].sum(-1, keepdim=True)], -1)
    cumulative = sums.cumsum(-1)
    target = uniform[..., None] * cumulative[..., -1:]  # (..., 1)
    block = torch.searchsorted(cumulative, target).clamp(max=cumulative.shape[-1] - 1)  # (..., 1)
    before = torch.where(block > 0, cumulative.gather(-1, (block - 1).clamp(min=0)), 0.0)
    index = block * size + torch.arange(size, device=weights.device)  # (..., size)
    inside = weights.gather(-1, index.clamp(max=V - 1)).masked_fill_(index >= V, 0.0).cumsum_(-1)
    # rounding may put the remainder just outside the block: keep it inside, above zero
    rest = torch.minimum((target - before).clamp(min=torch.finfo(weights.dtype).tiny), inside[..., -1:])
    return (block * size + torch.searchsorted(inside, rest)).squeeze(-1)


def log_softmax_nll(logits, targets):
    """(B, N, V) logits, (B, N) targets -> the NLL (B, N) and the fp32 probabilities (B, N, V),
    computed once for the loss, its backward and the sampling."""
    return _LogSoftmaxNLL.apply(logits, targets)


class _LogSoftmaxNLL(torch.autograd.Function):
    """log_softmax + gather, with the backward softmax - one-hot written in two passes over B x N x V
    (autograd's path zero-fills a gradient, scatters into it and runs the log-softmax backward).
    The probabilities are exponentiated once, in the forward, for the backward and the sampling."""

    @staticmethod
    def forward(ctx, logits, targets):
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
        probs = log_probs.exp_()  # the log-probabilities are not needed any more
        ctx.save_for_backward(probs, targets)
        ctx.dtype = logits.dtype
        ctx.mark_non_differentiable(probs)
        ctx.set_materialize_grads(False)  # no zero-filled B x N x V gradient for `probs`
        return nll, probs

    @staticmethod
    def backward(ctx, grad_nll, _):
        if grad_nll is None:
            return None, None
        probs, targets = ctx.saved_tensors
        grad = probs * grad_nll[..., None]
        grad.scatter_add_(-1, targets[..., None], -grad_nll[..., None])
        return grad.to(ctx.dtype), None


def top1_hits(logits, targets):
    """(..., V), (...) -> bool (...): the target has the highest score. A max and a comparison: on
    the CPU argmax over a 30k vocabulary takes ten times as long as max."""
    return logits.gather(-1, targets[..., None]).squeeze(-1) == logits.amax(-1)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of Bernoulli(p): the loss of a constant predictor that knows the base rate."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class WordPieces:
    """Whole-word masking and word swaps (`objective.whole_word`, `word_swap_prob`) need to know
    which ids continue a word: the run's tokenizer tells (`set_word_pieces`), into a buffer that
    checkpoints do not hold."""

    def _init_word_pieces(self, vocab_size: int):
        self.register_buffer("continues_word", torch.zeros(vocab_size, dtype=torch.bool), persistent=False)
        self.word_pieces_set = False
        self.corpus_words = None  # for `objective.word_swap_source = "corpus"`: `set_corpus_words`

    def set_word_pieces(self, continuation_ids: list[int]):
        self.continues_word.zero_()
        self.continues_word[continuation_ids] = True
        self.word_pieces_set = True

    def continues_word_checked(self):
        if not self.word_pieces_set:
            raise RuntimeError("objective.whole_word / word_swap_prob: call set_word_pieces with the "
                               "tokenizer's '##' ids first")
        return self.continues_word

    def set_corpus_words(self, table: dict[int, CorpusWords]):
        """The corpus's words (`corpus_words`) for `objective.word_swap_source = "corpus"`: plain
        tensors on the model's device, not buffers (DDP would broadcast them every step)."""
        device = self.continues_word.device
        self.corpus_words = {k: CorpusWords(*(t.to(device) for t in v)) for k, v in table.items()}

    def corpus_words_checked(self):
        if self.corpus_words is None:
            raise RuntimeError("objective.word_swap_source = 'corpus': call set_corpus_words first")
        return self.corpus_words

    def word_starts(self, input_ids, needed: bool):
        """Each token's word start (`word_starts`) if `needed` by an option, else None."""
        return word_starts(input_ids, self.continues_word_checked()) if needed else None


class Electra(nn.Module, WordPieces):
    """Generator + discriminator sharing one Embeddings module; `forward` returns the losses."""

    def __init__(self, model_cfg: ModelConfig, objective_cfg: ObjectiveConfig):
        super().__init__()
        self.cfg, self.objective = model_cfg, objective_cfg
        self._init_word_pieces(model_cfg.vocab_size)
        self.embeddings = Embeddings(model_cfg)
        self.generator = Generator(generator_config(model_cfg, objective_cfg),
                                   self.embeddings)
        self.discriminator = Discriminator(model_cfg, self.embeddings if objective_cfg.embedding_sharing == "shared"
                                           else DisentangledEmbeddings(self.embeddings, model_cfg))
        # multi-task (objective.disc_mlm_weight): the discriminator's own vocabulary head
        self.disc_lm_head = (GeneratorHead(model_cfg, self.embeddings.word_embeddings)
                             if objective_cfg.disc_mlm_weight > 0 else None)
        init_weights(self, model_cfg.initializer_range)
        init_positions(self.embeddings, model_cfg)
        if objective_cfg.embedding_sharing == "gdes":
            nn.init.zeros_(self.discriminator.encoder.embeddings.word_delta.weight)
        if objective_cfg.disc_bias_init == "base_rate":
            # At the start every chosen token is replaced (a random generator is never right).
            nn.init.constant_(self.discriminator.head.prediction.bias, logit(objective_cfg.mask_prob))

    @property
    def encoder(self):
        """What fine-tuning starts from: the discriminator's encoder."""
        return self.discriminator.encoder

    def forward(self, input_ids, token_type_ids, attention_mask, noise: Noise,
                num_predictions=None, num_tokens=None):
        """Losses normalised by `num_predictions` / `num_tokens`, the tokens the RTD loss scores
        (default: this batch's counts; the trainer passes the whole step's counts so that
        accumulation equals one big batch)."""
        obj = self.objective
        swaps = self.training and obj.word_swap_prob > 0
        starts = self.word_starts(input_ids, obj.whole_word or swaps)  # once for both options
        m = mask_tokens(input_ids, noise.select, noise.keep, obj.mask_prob, obj.mask_token_prob,
                        starts=starts if obj.whole_word else None)
        token_mask = input_ids != PAD_ID if attention_mask is None else attention_mask.bool()
        rtd_mask = token_mask & rtd_scored(input_ids, obj.rtd_tokens)
        if num_predictions is None:
            num_predictions = m.weights.sum().clamp(min=1)
        if num_tokens is None:
            num_tokens = rtd_mask.sum().clamp(min=1)

        gen_logits = self.generator(m.input_ids, token_type_ids, attention_mask, m.positions)  # (B,N,V)
        gen_nll, gen_probs = log_softmax_nll(gen_logits, m.originals)  # (B, N), (B, N, V)
        gen_loss = (gen_nll * m.weights).sum() / num_predictions

        sampled = sample_replacements(gen_logits, noise.sample, obj.temperature, gen_probs)  # (B, N)
        sampled = torch.where(m.weights, sampled, m.originals)
        if self.training and obj.disc_mask_share > 0:  # a subset of the [MASK] positions keeps [MASK]
            sampled = torch.where(m.is_mask_token & (noise.keep < obj.mask_token_prob * obj.disc_mask_share),
                                  MASK_ID, sampled)
        disc_ids = m.input_ids.scatter(1, m.positions, sampled)
        if swaps:
            corpus = self.corpus_words_checked() if obj.word_swap_source == "corpus" else None
            disc_ids = swap_words(input_ids, disc_ids, starts, noise.swap, noise.donor, obj.word_swap_prob,
                                  corpus=corpus)
        labels = (disc_ids != input_ids) & token_mask  # (B, T): differs from the original

        hidden = self.discriminator.encoder(disc_ids, token_type_ids, attention_mask)  # (B, T, D)
        disc_logits = self.discriminator.head(hidden).float()  # (B, T)
        disc_bce = F.binary_cross_entropy_with_logits(disc_logits, labels.float(), reduction="none")
        disc_loss = (disc_bce * rtd_mask).sum() / num_tokens

        loss = obj.gen_weight * gen_loss + obj.disc_weight * disc_loss
        extra = {}
        if self.disc_lm_head is not None:  # the originals at the chosen positions, from the corrupted input
            at = hidden.gather(1, m.positions[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, N, D)
            disc_nll, _ = log_softmax_nll(self.disc_lm_head(at), m.originals)
            disc_nll_sum = (disc_nll * m.weights).sum()
            loss = loss + obj.disc_mlm_weight * disc_nll_sum / num_predictions
            extra["disc_mlm_loss_sum"] = disc_nll_sum.detach()
        with torch.no_grad():
            stats = _step_stats(gen_logits, m, labels, disc_logits, token_mask, maskable(input_ids))
            stats.update(gen_loss_sum=(gen_nll * m.weights).sum(), disc_loss_sum=(disc_bce * rtd_mask).sum(),
                         num_rtd_tokens=rtd_mask.sum(), **extra)
        return ElectraOutput(loss, stats, disc_logits, labels, token_mask)


class MaskedLM(nn.Module, WordPieces):
    """BERT's masked LM at the discriminator's size, the baseline ELECTRA is compared with: the
    same masking of 15% of the tokens, shown as 80% [MASK] / 10% random / 10% kept, the loss and the
    vocabulary head only at those positions. Fine-tuning uses its encoder like a discriminator's."""

    def __init__(self, model_cfg: ModelConfig, objective_cfg: ObjectiveConfig):
        super().__init__()
        self.cfg, self.objective = model_cfg, objective_cfg
        self._init_word_pieces(model_cfg.vocab_size)
        self.embeddings = Embeddings(model_cfg)
        self.generator = Generator(model_cfg, self.embeddings)  # full width: the model itself
        init_weights(self, model_cfg.initializer_range)
        init_positions(self.embeddings, model_cfg)

    @property
    def encoder(self):
        return self.generator.encoder

    def forward(self, input_ids, token_type_ids, attention_mask, noise: Noise,
                num_predictions=None, num_tokens=None):
        obj = self.objective
        m = mask_tokens(input_ids, noise.select, noise.keep, obj.mask_prob, 1 - 2 * obj.random_token_prob,
                        obj.random_token_prob, noise.sample, self.cfg.vocab_size,
                        self.word_starts(input_ids, obj.whole_word))
        token_mask = input_ids != PAD_ID if attention_mask is None else attention_mask.bool()
        if num_predictions is None:
            num_predictions = m.weights.sum().clamp(min=1)
        logits = self.generator(m.input_ids, token_type_ids, attention_mask, m.positions)  # (B, N, V)
        nll, _ = log_softmax_nll(logits, m.originals)  # (B, N)
        loss = (nll * m.weights).sum() / num_predictions
        with torch.no_grad():
            at_mask = m.weights & m.is_mask_token
            stats = {"gen_correct_at_mask": (top1_hits(logits, m.originals) & at_mask).sum(),
                     "num_mask_tokens": at_mask.sum(), "num_predictions": m.weights.sum(),
                     "num_tokens": token_mask.sum(), "gen_loss_sum": (nll * m.weights).sum()}
        return ElectraOutput(loss, stats, None, None, token_mask)


def build_model(model_cfg: ModelConfig, objective_cfg: ObjectiveConfig) -> nn.Module:
    """ELECTRA's generator + discriminator, or the masked-LM baseline (`objective.kind`)."""
    return (MaskedLM if objective_cfg.kind == "mlm" else Electra)(model_cfg, objective_cfg)


def _step_stats(gen_logits, m: Masked, labels, disc_logits, token_mask, scored) -> dict[str, torch.Tensor]:
    """Sums and counts (detached tensors; `.item()` happens only at log steps). Losses count all
    real tokens, as trained; accuracy, precision and recall only `scored` (non-special) tokens,
    because [CLS] and [SEP] are never replaced and trivially recognised."""
    at_mask = m.weights & m.is_mask_token
    correct = top1_hits(gen_logits, m.originals) & at_mask
    predicted = disc_logits > 0
    return {
        "gen_correct_at_mask": correct.sum(),
        "num_mask_tokens": at_mask.sum(),
        "num_predictions": m.weights.sum(),
        "num_tokens": token_mask.sum(),
        "num_replaced": labels.sum(),
        "num_scored": scored.sum(),
        "disc_correct": ((predicted == labels) & scored).sum(),
        "disc_true_pos": (predicted & labels).sum(),
        "disc_pred_pos": (predicted & scored).sum(),
    }


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Turn summed stats into the honest metrics: gen accuracy at [MASK] only, disc loss beside its
    label entropy (what a constant predictor scores), precision and recall of 'replaced'."""
    if "disc_loss_sum" not in stats:  # masked LM: no discriminator
        return {"gen_loss": stats["gen_loss_sum"] / max(stats["num_predictions"], 1),
                "gen_accuracy": stats["gen_correct_at_mask"] / max(stats["num_mask_tokens"], 1)}
    n_rtd = max(stats["num_rtd_tokens"], 1)  # what the RTD loss scored
    return {
        "gen_loss": stats["gen_loss_sum"] / max(stats["num_predictions"], 1),
        "gen_accuracy": stats["gen_correct_at_mask"] / max(stats["num_mask_tokens"], 1),
        "disc_loss": stats["disc_loss_sum"] / n_rtd,
        "disc_label_entropy": float(binary_entropy(torch.tensor(stats["num_replaced"] / n_rtd))),
        "disc_accuracy": stats["disc_correct"] / max(stats["num_scored"], 1),
        "disc_precision": stats["disc_true_pos"] / max(stats["disc_pred_pos"], 1),
        "disc_recall": stats["disc_true_pos"] / max(stats["num_replaced"], 1),
        "replaced_share": stats["num_replaced"] / max(stats["num_scored"], 1),
        **({"disc_mlm_loss": stats["disc_mlm_loss_sum"] / max(stats["num_predictions"], 1)}
           if "disc_mlm_loss_sum" in stats else {}),
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

