"""The ELECTRA objective: masking invariants, labels, gradient isolation, sharing, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from electra.config import ModelConfig, ObjectiveConfig
from electra.errors import UsageError
from electra.noise import draw_noise, example_keys
from electra.objective import (SPECIAL_IDS, Electra, corpus_words, mask_tokens, sample_replacements, swap_words,
                              word_starts)
from electra.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID

VOCAB = 99


def random_batch(rng: torch.Generator, B: int, T: int):
    """[CLS] tokens [SEP] tokens [SEP] [PAD]... with random lengths."""
    ids = torch.full((B, T), PAD_ID)
    for b in range(B):
        n = int(torch.randint(3, T + 1, (1,), generator=rng))
        ids[b, :n] = torch.randint(len(SPECIAL_IDS) + 1, VOCAB, (n,), generator=rng)
        ids[b, 0], ids[b, n - 1] = CLS_ID, SEP_ID
        if n > 4:
            ids[b, n // 2] = SEP_ID
    return ids


def masking_cases(test):
    """Random batches and masking settings for a property test (seed, B, T, mask_prob, N)."""
    return settings(max_examples=60, deadline=None)(given(
        seed=st.integers(0, 2**31), B=st.integers(1, 6), T=st.integers(4, 40),
        mask_prob=st.floats(0.05, 0.5), N=st.integers(1, 12))(test))


@masking_cases
def test_masking_invariants(seed, B, T, mask_prob, N):
    N = min(N, T)
    rng = torch.Generator().manual_seed(seed)
    ids = random_batch(rng, B, T)
    noise = draw_noise(example_keys(seed, range(B)), T, N, "cpu")
    m = mask_tokens(ids, noise.select, noise.keep, mask_prob)
    candidates = ~torch.isin(ids, torch.tensor(SPECIAL_IDS))
    for b in range(B):
        chosen = m.positions[b][m.weights[b]]
        n = int(candidates[b].sum())
        expected = min(n, max(1, min(N, round(n * mask_prob))))
        assert len(chosen) == expected, "round(mask_prob * n), at least 1, at most max_predictions"
        assert len(set(chosen.tolist())) == len(chosen), "positions are distinct"
        assert candidates[b, chosen].all(), "special and pad tokens are never chosen"
        untouched = torch.ones(T, dtype=torch.bool)
        untouched[chosen] = False
        assert torch.equal(m.input_ids[b, untouched], ids[b, untouched]), "others keep their token"
        shown = m.input_ids[b, chosen]
        assert ((shown == MASK_ID) | (shown == ids[b, chosen])).all(), "no random replacement tokens"
        assert torch.equal(m.originals[b][m.weights[b]], ids[b, chosen])


@masking_cases
def test_whole_word_masking_chooses_every_piece_of_a_word_but_the_last_words_tail(seed, B, T, mask_prob, N):
    N = min(N, T)
    rng = torch.Generator().manual_seed(seed)
    ids = random_batch(rng, B, T)
    continues = torch.zeros(VOCAB, dtype=torch.bool)
    continues[torch.randperm(VOCAB, generator=rng)[:VOCAB // 2]] = True  # about half the ids are "##" pieces
    continues[list(SPECIAL_IDS)] = False
    starts = word_starts(ids, continues)
    noise = draw_noise(example_keys(seed, range(B)), T, N, "cpu")
    token_level = mask_tokens(ids, noise.select, noise.keep, mask_prob)
    m = mask_tokens(ids, noise.select, noise.keep, mask_prob, starts=starts)
    assert torch.equal(m.weights, token_level.weights), "the count is the token-level one"
    candidates = ~torch.isin(ids, torch.tensor(SPECIAL_IDS))
    for b in range(B):
        chosen = m.positions[b][m.weights[b]].tolist()
        assert len(set(chosen)) == len(chosen) and candidates[b, chosen].all()
        word_of = [int(starts[b, c]) for c in chosen]
        order = list(dict.fromkeys(word_of))  # the words, in the order they were chosen
        assert word_of == sorted(word_of, key=order.index), "each word's pieces are chosen in a row"
        for w in order:
            pieces = [t for t in range(T) if starts[b, t] == w and candidates[b, t]]
            taken = [c for c in chosen if starts[b, c] == w]
            assert taken == pieces[:len(taken)], "a word's pieces are chosen from its first one on"
            assert w == order[-1] or taken == pieces, "every word but the last one chosen is whole"


def test_whole_word_masking_chooses_words_uniformly():
    ids = torch.randint(10, VOCAB, (4000, 20))
    continues = torch.zeros(VOCAB, dtype=torch.bool)
    ids[:, 1::2] = 5  # every word is two pieces: a start at an even position, "##" piece id 5 after it
    continues[5] = True
    noise = draw_noise(example_keys(7, range(4000)), 20, 4, "cpu")
    m = mask_tokens(ids, noise.select, noise.keep, 0.2, starts=word_starts(ids, continues))
    chosen = m.positions[m.weights]
    assert torch.equal(torch.bincount(chosen % 2), torch.tensor([len(chosen) // 2] * 2)), "whole words, both pieces"
    hits = torch.bincount(chosen[chosen % 2 == 0], minlength=20)[::2].float()
    assert (hits / hits.mean() - 1).abs().max() < 0.1, hits


def words_of(ids_row, starts_row):
    """{start: tuple of the word's ids} for the words a swap may touch (started by a maskable token)."""
    out = {}
    for t, (i, s) in enumerate(zip(ids_row.tolist(), starts_row.tolist())):
        if s == t and i not in SPECIAL_IDS:
            out[t] = (i,)
        elif s in out:
            out[s] += (i,)
    return out


def swap_case(seed, B, T):
    """A random batch whose ids a third of the vocabulary continue ("##"), its word starts and swap
    noise, and the generator that drew them (for more)."""
    rng = torch.Generator().manual_seed(seed)
    ids = random_batch(rng, B, T)
    continues = torch.zeros(VOCAB, dtype=torch.bool)
    continues[torch.randperm(VOCAB, generator=rng)[:VOCAB // 3]] = True
    continues[list(SPECIAL_IDS)] = False
    noise = draw_noise(example_keys(seed, range(B)), T, 1, "cpu", word_swaps=True)
    return ids, continues, word_starts(ids, continues), noise, rng


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), T=st.integers(4, 40), percent=st.integers(0, 100))
def test_word_swaps_replace_whole_words_by_words_of_as_many_pieces_from_the_same_sequence(seed, B, T, percent):
    prob = percent / 100
    ids, continues, starts, noise, _ = swap_case(seed, B, T)
    out = swap_words(ids, ids, starts, noise.swap, noise.donor, prob)
    for b in range(B):
        words = words_of(ids[b], starts[b])
        for s, word in words.items():
            new = tuple(out[b, s:s + len(word)].tolist())
            swapped = float(noise.swap[b, s]) < prob and len(word) <= 4
            assert new == word or swapped, "only the words drawn are swapped"
            if swapped:
                assert new in [w for w in words.values() if len(w) == len(word)], "for a word of the row, as long"
        covered = [t for s, w in words.items() for t in range(s, s + len(w))]
        others = torch.ones(T, dtype=torch.bool)
        others[covered] = False
        assert torch.equal(out[b, others], ids[b, others]), "special tokens, padding and cut pieces stay"
        single = swap_words(ids[b:b + 1], ids[b:b + 1], starts[b:b + 1], noise.swap[b:b + 1], noise.donor[b:b + 1], prob)
        assert torch.equal(single[0], out[b]), "a sequence's swaps do not depend on the batch"


def test_word_swaps_draw_the_share_asked_and_their_donors_uniformly():
    ids = torch.randint(10, VOCAB, (2000, 24))
    starts = word_starts(ids, torch.zeros(VOCAB, dtype=torch.bool))  # single-piece words
    noise = draw_noise(example_keys(5, range(2000)), 24, 1, "cpu", word_swaps=True)
    out = swap_words(ids, ids, starts, noise.swap, noise.donor, 0.1)
    drawn = noise.swap < 0.1
    assert abs(float(drawn.float().mean()) - 0.1) < 0.005
    # a donor is any of the row's 24 words, itself included: 1/24 of the drawn keep their token by
    # that alone (plus the rare equal ids)
    kept = float((out[drawn] == ids[drawn]).float().mean())
    assert 1 / 24 <= kept < 1 / 24 + 0.02, kept
    assert torch.equal(out[~drawn], ids[~drawn])


def test_corpus_words_counts_the_words_of_each_length_within_documents():
    continues = np.zeros(VOCAB, dtype=bool)
    continues[[20, 21]] = True  # "##" pieces
    #         doc 0: (10 20) (11) (10 20) (12 20 21) | doc 1: (20) (10) ([CLS] 20) (11)
    tokens = np.array([10, 20, 11, 10, 20, 12, 20, 21, 20, 10, CLS_ID, 20, 11])
    documents = np.array([0] * 8 + [1] * 5)
    table = corpus_words(tokens, documents, continues)
    one = {tuple(w): c for w, c in zip(table[1].words.tolist(), np.diff(table[1].cumulative.numpy(), prepend=0))}
    assert one == {(11,): 2, (10,): 1, (20,): 1}, "a '##' piece that opens a document is a word; [CLS]'s is not"
    assert table[1].words[0].tolist() == [11], "the most frequent first"
    assert table[2].words.tolist() == [[10, 20]] and table[2].cumulative.tolist() == [2]
    assert table[3].words.tolist() == [[12, 20, 21]] and len(table[4].words) == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), T=st.integers(4, 40), percent=st.integers(0, 100))
def test_word_swaps_from_the_corpus_take_a_corpus_word_of_as_many_pieces(seed, B, T, percent):
    prob = percent / 100
    ids, continues, starts, noise, rng = swap_case(seed, B, T)
    corpus = random_batch(rng, 64, 40).flatten().numpy()
    table = corpus_words(corpus, np.zeros_like(corpus), continues.numpy())
    out = swap_words(ids, ids, starts, noise.swap, noise.donor, prob, corpus=table)
    for b in range(B):
        for s, word in words_of(ids[b], starts[b]).items():
            new = tuple(out[b, s:s + len(word)].tolist())
            swapped = float(noise.swap[b, s]) < prob and len(word) <= 4 and len(table[len(word)].words) > 0
            assert new == word or swapped, "only the words drawn are swapped"
            if swapped:
                assert new in [tuple(w) for w in table[len(word)].words.tolist()], "for a corpus word, as long"
        single = swap_words(ids[b:b + 1], ids[b:b + 1], starts[b:b + 1], noise.swap[b:b + 1], noise.donor[b:b + 1],
                            prob, corpus=table)
        assert torch.equal(single[0], out[b]), "a sequence's swaps do not depend on the batch"


def test_word_swaps_from_the_corpus_draw_words_in_proportion_to_their_counts():
    corpus = np.array([10] * 30 + [11] * 10)  # one-piece words, 3 : 1
    table = corpus_words(corpus, np.zeros_like(corpus), np.zeros(VOCAB, dtype=bool))
    ids = torch.full((4000, 8), 12)
    starts = word_starts(ids, torch.zeros(VOCAB, dtype=torch.bool))
    noise = draw_noise(example_keys(7, range(4000)), 8, 1, "cpu", word_swaps=True)
    out = swap_words(ids, ids, starts, noise.swap, noise.donor, 0.5, corpus=table)
    drawn = noise.swap < 0.5
    assert torch.equal(out[~drawn], ids[~drawn])
    share = float((out[drawn] == 10).float().mean())
    assert abs(share - 0.75) < 0.01 and bool((out[drawn] != 12).all()), share


def test_noise_for_word_swaps_leaves_the_other_draws_unchanged():
    keys = example_keys(3, range(8))
    plain, with_swaps = draw_noise(keys, 16, 4, "cpu"), draw_noise(keys, 16, 4, "cpu", word_swaps=True)
    for name in ("select", "keep", "sample"):
        assert torch.equal(getattr(plain, name), getattr(with_swaps, name))
    assert plain.swap is None and with_swaps.swap.shape == with_swaps.donor.shape == (8, 16)


def test_mask_token_share_is_85_percent_over_a_large_sample():
    ids = random_batch(torch.Generator().manual_seed(0), 512, 128)
    noise = draw_noise(example_keys(1, range(512)), 128, 19, "cpu")
    m = mask_tokens(ids, noise.select, noise.keep, 0.15, 0.85)
    share = (m.is_mask_token & m.weights).sum() / m.weights.sum()
    assert abs(float(share) - 0.85) < 0.01, float(share)


def test_chosen_positions_are_uniform_over_candidates():
    ids = torch.randint(10, VOCAB, (4000, 20))
    noise = draw_noise(example_keys(7, range(4000)), 20, 3, "cpu")
    m = mask_tokens(ids, noise.select, noise.keep, 0.15)
    hits = torch.bincount(m.positions[m.weights], minlength=20).float()
    assert (hits / hits.mean() - 1).abs().max() < 0.1, hits


def test_noise_depends_only_on_the_example_key():
    keys = example_keys(3, range(10, 16))
    whole = draw_noise(keys, 16, 4, "cpu")
    halves = [draw_noise(keys[:2], 16, 4, "cpu"), draw_noise(keys[2:], 16, 4, "cpu")]
    for name in ("select", "keep", "sample"):
        assert torch.equal(getattr(whole, name), torch.cat([getattr(h, name) for h in halves]))
    assert not torch.equal(whole.select[0], whole.select[1])


def test_sampling_follows_the_softmax():
    probs = torch.tensor([0.6, 0.0, 0.3, 0.1])
    logits = torch.log(probs).expand(1, 20000, 4)
    uniform = draw_noise([5], 1, 20000, "cpu").sample
    counts = torch.bincount(sample_replacements(logits, uniform).flatten(), minlength=4) / 20000
    assert torch.allclose(counts, probs, atol=0.015), counts
    assert counts[1] == 0, "a token of probability 0 is never drawn"
    hot = sample_replacements(logits * 50, uniform)  # temperature 1/50: nearly the argmax
    assert (hot == 0).float().mean() > 0.99


def test_two_level_cdf_inversion_matches_a_full_cumulative_sum():
    from electra.objective import invert_cdf

    g = torch.Generator().manual_seed(0)
    weights = torch.rand(8, 50, 1000, generator=g) ** 4  # 1000: three whole blocks and a tail
    weights[..., ::7] = 0.0
    uniform = torch.rand(8, 50, generator=g)
    got = invert_cdf(weights, uniform)
    cdf = weights.double().cumsum(-1)
    want = torch.searchsorted(cdf, uniform.double()[..., None] * cdf[..., -1:]).squeeze(-1)
    assert (got == want).float().mean() > 0.99  # the rest: float32 rounding at a boundary
    assert (got >= 768).any() and (got < 256).any()
    assert (weights.gather(-1, got[..., None]) > 0).all(), "a zero weight is never chosen"


def test_keyed_uniforms_are_uniform_and_independent():
    u = draw_noise(example_keys(11, range(2000)), 64, 1, "cpu").select  # (2000, 64)
    assert 0 < float(u.min()) and float(u.max()) < 1
    hist = torch.histc(u, bins=20, min=0, max=1) / u.numel()
    assert (hist - 0.05).abs().max() < 0.003, hist
    flat = u.flatten()
    lag1 = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]  # neighbours within an example
    across = torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1]  # next example
    assert abs(float(lag1)) < 0.01 and abs(float(across)) < 0.01
    assert torch.equal(draw_noise([123], 8, 1, "cpu").select, draw_noise([123], 8, 1, "cpu").select)


def small_model(**objective):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                      embedding_size=16, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)
    return Electra(cfg, ObjectiveConfig(generator_size=0.5, **objective))


def batch_and_noise(B=4, T=24, seed=0):
    ids = random_batch(torch.Generator().manual_seed(seed), B, T)
    types = torch.zeros_like(ids)
    noise = draw_noise(example_keys(seed, range(B)), T, 6, "cpu")
    return ids, types, ids != PAD_ID, noise


def test_labels_are_sampled_differs_from_original():
    model = small_model()
    ids, types, attn, noise = batch_and_noise()
    # Make the generator certain of token 42 everywhere: samples are 42, so "replaced" = original != 42.
    with torch.no_grad():
        model.generator.head.bias.fill_(-1e4)
        model.generator.head.bias[42] = 1e4
    ids[:, 1:4] = 42  # some originals equal the sample
    out = model(ids, types, attn, noise)
    m = mask_tokens(ids, noise.select, noise.keep, 0.15)
    expected = torch.zeros_like(ids, dtype=torch.bool)
    expected = expected.scatter(1, m.positions, (m.originals != 42) & m.weights)
    assert torch.equal(out.labels, expected)
    assert out.labels.any() and (m.weights & (m.originals == 42)).any()


def test_word_swaps_are_labelled_replaced_in_training_and_left_out_of_evaluation():
    model = small_model(word_swap_prob=0.3)
    ids, types, attn, _ = batch_and_noise(B=8, T=32)
    noise = draw_noise(example_keys(0, range(8)), 32, 6, "cpu", word_swaps=True)
    continues = [i for i in range(len(SPECIAL_IDS) + 1, VOCAB) if i % 3 == 0]  # a third are "##" pieces
    with pytest.raises(RuntimeError, match="set_word_pieces"):
        model(ids, types, attn, noise)
    model.set_word_pieces(continues)
    trained = model.train()(ids, types, attn, noise)
    evaluated = model.eval()(ids, types, attn, noise)
    m = mask_tokens(ids, noise.select, noise.keep, 0.15)
    plain = torch.zeros_like(ids, dtype=torch.bool).scatter(1, m.positions, m.weights)
    assert torch.equal(evaluated.labels & ~plain, torch.zeros_like(plain)), "no swaps in evaluation"
    assert (trained.labels & ~plain).sum() > 10, "swapped words outside the chosen tokens are replaced"
    with pytest.raises(UsageError, match="word_swap_prob"):
        ObjectiveConfig(word_swap_source="corpus")
    model = small_model(word_swap_prob=0.3, word_swap_source="corpus")
    model.set_word_pieces(continues)
    with pytest.raises(RuntimeError, match="set_corpus_words"):
        model.train()(ids, types, attn, noise)
    model.set_corpus_words(corpus_words(np.array([7, 8, 9]), np.zeros(3), np.zeros(VOCAB, bool)))
    swapped = model.train()(ids, types, attn, noise)
    assert (swapped.labels & ~plain).sum() > 10


def test_generator_gets_no_gradient_from_the_discriminator_loss():
    model = small_model(gen_weight=0.0)  # only the discriminator term
    ids, types, attn, noise = batch_and_noise()
    model(ids, types, attn, noise).loss.backward()
    generator_own = [p for n, p in model.generator.named_parameters() if not n.startswith("encoder.embeddings")
                     and n != "head.word_embeddings.weight"]
    assert generator_own and all(p.grad is None or not p.grad.any() for p in generator_own)
    assert model.embeddings.word_embeddings.weight.grad.abs().sum() > 0, "shared embeddings do learn"
    assert model.discriminator.head.dense.weight.grad.abs().sum() > 0


def test_the_discriminators_own_lm_loss_adds_its_weighted_mean_and_trains_only_the_discriminator():
    from dataclasses import replace

    model = small_model(gen_weight=0.0, disc_weight=0.0, disc_mlm_weight=2.0)  # only the corrective LM term
    ids, types, attn, noise = batch_and_noise()
    out = model(ids, types, attn, noise)
    mean_nll = out.stats["disc_mlm_loss_sum"] / out.stats["num_predictions"]
    torch.testing.assert_close(out.loss, 2.0 * mean_nll)
    out.loss.backward()
    assert model.disc_lm_head.dense.weight.grad.abs().sum() > 0
    assert model.discriminator.encoder.layers[0].intermediate.weight.grad.abs().sum() > 0
    generator_own = [p for n, p in model.generator.named_parameters() if not n.startswith("encoder.embeddings")
                     and n != "head.word_embeddings.weight"]
    assert all(p.grad is None or not p.grad.any() for p in generator_own)
    model.objective = replace(model.objective, disc_mlm_weight=0.0, gen_weight=1.0, disc_weight=50.0)
    plain = small_model()  # the same weights but for the extra head: the same losses without it
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("disc_lm_head.")})
    torch.testing.assert_close(model(ids, types, attn, noise).loss, plain(ids, types, attn, noise).loss)


def test_disc_mask_share_keeps_that_share_of_the_mask_positions_masked_for_the_discriminator_in_training():
    ids, types, attn, noise = batch_and_noise(B=16, T=40)
    m = mask_tokens(ids, noise.select, noise.keep, 0.15)
    seen = []
    for share in (0.0, 0.5, 1.0):
        model = small_model(disc_mlm_weight=1.0, disc_mask_share=share)
        model.discriminator.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
        out = model.train()(ids, types, attn, noise)
        disc_in = seen[-1].gather(1, m.positions)
        masked = (disc_in == MASK_ID) & m.weights
        assert not (masked & ~m.is_mask_token).any()  # only where the generator saw [MASK] too
        assert out.labels.gather(1, m.positions)[masked].all()  # a [MASK] is not the original: "replaced"
        share_seen = float(masked.sum() / (m.weights & m.is_mask_token).sum())
        assert share_seen == pytest.approx(share, abs=0.2) and (share_seen == 1.0) == (share == 1.0)
        assert (share_seen == 0.0) == (share == 0.0)
        model.eval()(ids, types, attn, noise)  # held-out evaluation: the real task, samples everywhere
        assert not (seen[-1] == MASK_ID).any()
    with pytest.raises(UsageError, match="disc_mlm_weight"):
        ObjectiveConfig(disc_mask_share=0.5)


def test_gdes_keeps_the_rtd_gradient_out_of_the_shared_word_embeddings():
    shared, gdes = small_model(), small_model(embedding_sharing="gdes")
    gdes.load_state_dict({**shared.state_dict(), "discriminator.encoder.embeddings.word_delta.weight":
                          gdes.discriminator.encoder.embeddings.word_delta.weight}, strict=True)
    ids, types, attn, noise = batch_and_noise()
    torch.testing.assert_close(gdes(ids, types, attn, noise).loss, shared(ids, types, attn, noise).loss)  # delta 0
    gdes.objective = shared.objective.__class__(generator_size=0.5, gen_weight=0.0, embedding_sharing="gdes")
    gdes(ids, types, attn, noise).loss.backward()  # the discriminator's loss alone
    words = gdes.embeddings.word_embeddings.weight
    assert words.grad is None or not words.grad.any()
    assert gdes.discriminator.encoder.embeddings.word_delta.weight.grad.abs().sum() > 0
    assert gdes.embeddings.position_embeddings.weight.grad.abs().sum() > 0  # still shared


def test_rtd_on_maskable_tokens_leaves_cls_and_sep_out_of_the_discriminator_loss():
    from electra.objective import loss_denominators, maskable, summarize

    ids, types, attn, noise = batch_and_noise()
    losses = {}
    for rtd_tokens in ("all", "maskable"):
        model = small_model(gen_weight=0.0, disc_weight=1.0, rtd_tokens=rtd_tokens)
        with torch.no_grad():
            out = model(ids, types, attn, noise)
        scored = attn & (maskable(ids) if rtd_tokens == "maskable" else True)
        bce = F.binary_cross_entropy_with_logits(out.disc_logits, out.labels.float(), reduction="none")
        torch.testing.assert_close(out.loss, (bce * scored).sum() / scored.sum())
        assert loss_denominators(ids, 0.15, 6, rtd_tokens)[1] == int(scored.sum())
        stats = {k: float(v) for k, v in out.stats.items()}
        assert summarize(stats)["disc_loss"] == pytest.approx(float(out.loss))  # over what it scored
        losses[rtd_tokens] = float(out.loss)
    assert int((attn & ~maskable(ids)).sum()) > 0 and losses["all"] != pytest.approx(losses["maskable"])


def test_alibi_slopes_and_sinusoidal_position_init():
    from electra.model import Embeddings, alibi_slopes, init_positions

    assert alibi_slopes(2).tolist() == [0.5, 0.25] and alibi_slopes(2, "standard").tolist() == [1 / 16, 1 / 256]
    assert alibi_slopes(8).tolist() == alibi_slopes(8, "standard").tolist()
    assert alibi_slopes(2, "steep-global").tolist() == [0.5, 1 / 256]
    assert alibi_slopes(1, "steep-global").tolist() == alibi_slopes(1).tolist() == [0.5]  # the generator's head
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_heads=2, intermediate_size=37, embedding_size=16,
                      max_position_embeddings=64, position_init="sinusoidal")
    embeddings = Embeddings(cfg)
    init_positions(embeddings, cfg)
    table = embeddings.position_embeddings.weight.detach()
    assert abs(float(table.std()) - 0.02) < 1e-6
    ratio = table[5, 0] / table[5, 1]  # sin / cos of 5 at the first frequency (1)
    assert abs(float(ratio) - float(torch.tan(torch.tensor(5.0)))) < 1e-4


def test_generator_and_discriminator_share_embedding_tensors():
    model = small_model()
    assert model.generator.encoder.embeddings is model.discriminator.encoder.embeddings is model.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "norm"):
        assert getattr(model.generator.encoder.embeddings, name).weight is getattr(model.embeddings, name).weight
    assert model.generator.head.word_embeddings.weight is model.embeddings.word_embeddings.weight
    n_unique = len({id(p) for p in model.parameters()})
    assert n_unique == len(list(model.parameters()))


def test_generator_width_is_a_fraction_of_the_discriminator():
    model = small_model()
    assert model.generator.encoder.cfg.hidden_size == 16
    assert len(model.generator.encoder.layers) == len(model.discriminator.encoder.layers)


def test_padding_does_not_change_real_token_outputs():
    for variant in ({}, {"norm_position": "pre", "attention_bias": "alibi"}):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                          embedding_size=16, max_position_embeddings=64, **variant)
        model = Electra(cfg, ObjectiveConfig()).eval()
        ids = torch.randint(10, VOCAB, (1, 10))
        padded = torch.cat([ids, torch.full((1, 7), PAD_ID)], 1)
        types = torch.zeros_like(padded)
        short = model.discriminator(ids, types[:, :10], torch.ones_like(ids, dtype=torch.bool))
        long = model.discriminator(padded, types, padded != PAD_ID)
        torch.testing.assert_close(long[:, :10], short, atol=1e-5, rtol=1e-5)
        g_short = model.generator(ids, types[:, :10], torch.ones_like(ids, dtype=torch.bool))
        g_long = model.generator(padded, types, padded != PAD_ID)
        torch.testing.assert_close(g_long[:, :10], g_short, atol=1e-5, rtol=1e-5)


def test_generator_head_runs_only_at_the_chosen_positions():
    model = small_model().eval()
    ids, types, attn, noise = batch_and_noise()
    positions = torch.tensor([[1, 3], [2, 5], [1, 2], [4, 1]])
    full = model.generator(ids, types, attn)
    gathered = model.generator(ids, types, attn, positions)
    assert gathered.shape == (4, 2, VOCAB)
    torch.testing.assert_close(gathered, full.gather(1, positions[..., None].expand(-1, -1, VOCAB)))


def test_base_rate_bias_starts_the_discriminator_at_the_replaced_share():
    model = small_model(disc_bias_init="base_rate")
    p = torch.sigmoid(model.discriminator.head.prediction.bias.detach())
    assert abs(float(p) - 0.15) < 1e-6



def test_cpu_dropout_drops_the_intended_share_and_scales_the_rest():
    from electra.kernels import dropout

    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    dropped = y == 0
    assert abs(float(dropped.float().mean()) - 0.1) < 0.003
    assert torch.allclose(y[~dropped], torch.tensor(1 / 0.9))
    y.sum().backward()  # the gradient flows through the kept elements, scaled alike
    assert torch.equal(x.grad, y.detach())
    assert dropout(x, 0.1, training=False) is x


def test_dropout_fused_into_the_residual_add_equals_add_after_dropout():
    from electra.kernels import dropout, dropout_add

    residual = torch.randn(8, 16, 32, requires_grad=True)
    x = torch.randn(8, 16, 32, requires_grad=True)
    results = []
    for fused in (True, False):
        torch.manual_seed(3)  # the same mask for both
        y = dropout_add(residual, x, 0.25, True) if fused else residual + dropout(x, 0.25, True)
        grads = torch.autograd.grad((y * torch.arange(32.0)).sum(), (residual, x))
        results.append((y.detach(), *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)
    assert float((results[0][2] == 0).float().mean()) > 0.2  # something was dropped


@pytest.mark.parametrize("bias,key_mask", [("none", "padded"), ("alibi", "padded"), ("none", None),
                                           ("none", "all tokens")])
def test_cpu_attention_with_dropout_equals_sdpa_when_nothing_is_dropped(bias, key_mask):
    from electra.model import Encoder

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                      embedding_size=32, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                      attention_bias=bias)
    encoder = Encoder(cfg).train()
    ids = random_batch(torch.Generator().manual_seed(1), 3, 20)
    if key_mask == "all tokens":  # no padding: the CPU path skips the mask
        ids = torch.where(ids == PAD_ID, CLS_ID + 7, ids)
    mask = ids != PAD_ID if key_mask else None
    assert key_mask != "padded" or not mask.all()
    weights = torch.randn(3, 20, 32)

    def output_and_grads():
        out = encoder(ids, None, mask)
        encoder.zero_grad()
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in encoder.parameters()]

    reference, reference_grads = output_and_grads()  # SDPA
    for layer in encoder.layers:  # a drop probability that rounds to no dropped element
        layer.attention.attention_dropout = 1e-9
    explicit, explicit_grads = output_and_grads()  # q k^T, softmax, dropout, v on the CPU
    assert torch.allclose(explicit, reference, atol=1e-5)
    for got, want in zip(explicit_grads, reference_grads):  # the q/k/v split's backward too
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("mask_kind", [None, "key mask", "bias"])
def test_cpu_attention_with_dropout_matches_its_definition_and_gradients(mask_kind):
    from electra.kernels import attention, keep_mask

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = {None: None, "key mask": torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :],
            "bias": torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64)}[mask_kind]

    def dropped_attention(q, k, v):
        torch.manual_seed(7)  # the same dropout mask on every call
        return attention(q, k, v, mask, 0.3)

    torch.manual_seed(7)
    keep = keep_mask(torch.empty(2, 3, 5, 5, dtype=torch.float64), 0.3)
    assert 0 < float(keep.mean()) < 1
    scores = q @ k.transpose(-1, -2) / 2
    if mask_kind == "key mask":
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask_kind == "bias":
        scores = scores + mask
    want = (scores.softmax(-1) * keep / 0.7) @ v
    torch.testing.assert_close(dropped_attention(q, k, v), want)
    assert torch.autograd.gradcheck(dropped_attention, (q, k, v))


def test_fused_generator_loss_matches_log_softmax_and_its_gradient():
    from electra.objective import log_softmax_nll

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 50, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 4))
    nll, probs = log_softmax_nll(logits, targets)
    torch.testing.assert_close(nll, F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                                    reduction="none").view(3, 4))
    torch.testing.assert_close(probs, F.softmax(logits, -1))
    assert not probs.requires_grad
    assert torch.autograd.gradcheck(lambda x: log_softmax_nll(x, targets)[0], (logits,))


def test_top1_hits_agrees_with_argmax():
    from electra.objective import top1_hits

    logits = torch.randn(5, 7, 300, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 300, (5, 7), generator=torch.Generator().manual_seed(1))
    targets[0] = logits[0].argmax(-1)  # some hits
    assert torch.equal(top1_hits(logits, targets), logits.argmax(-1) == targets)
    assert top1_hits(logits, targets)[0].all()
