"""Evaluation of replaced-token detection, with the baselines that keep it honest.

`evaluate_rtd`: the training objective on held-out examples with fixed noise: generator accuracy
at [MASK] positions only (where the original stays visible, copying it is no skill), discriminator
loss beside its label entropy (a constant predictor's loss), accuracy, precision, recall, ROC-AUC.

`evaluate_unigram`: 15% of the tokens replaced by draws from the evaluated text's own unigram
distribution (fixed seed). The discriminator's AUC there is compared with a baseline that scores
each token by its rarity in the training corpus: what a model that learned no context achieves.

`replaced_word_top1`: one word of each held-out sentence replaced; how often it is the sentence's
most suspicious word (the `detect` demo, measured).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from electra.corpus import check_corpus_files, read_documents
from electra.data import COUNTS_FILE, PretrainingData, pad_batch, prepare_corpus
from electra.noise import draw_noise, example_keys
from electra.objective import SPECIAL_IDS, mask_tokens, maskable, summarize

EVAL_SEED = 20_200_323  # fixed noise, so evaluations compare across steps and runs
UNIGRAM_REPLACE_PROB = 0.15


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def _batches(indices, batch_size):
    indices = list(indices)
    for i in range(0, len(indices), batch_size):
        yield indices[i:i + batch_size]


@torch.no_grad()
def evaluate_rtd(model, data: PretrainingData, indices, cfg, device, batch_size: int = 64) -> dict:
    model.eval()
    seq_len = data.seq_len
    num_predictions = cfg.objective.predictions_per_sequence(seq_len)
    sums: dict[str, float] = {}
    probs, labels = [], []
    for chunk in _batches(indices, batch_size):
        batch = {k: v.to(device) for k, v in data.batch(chunk).items()}
        noise = draw_noise(example_keys(EVAL_SEED, chunk), seq_len, num_predictions, device)
        out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], noise)
        for k, v in out.stats.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if out.disc_logits is None:  # masked LM: its MLM accuracy only
            continue
        real = maskable(batch["input_ids"])  # as in the stats: [CLS]/[SEP] are never replaced
        probs.append(torch.sigmoid(out.disc_logits[real]).cpu().numpy())
        labels.append(out.labels[real].cpu().numpy())
    if not labels:
        return {**summarize(sums), "tokens": int(sums["num_tokens"])}
    labels, probs = np.concatenate(labels), np.concatenate(probs)
    return {**summarize(sums), "disc_auc": _auc(labels, probs), "tokens": int(sums["num_tokens"])}


def token_rarity(counts: np.ndarray) -> np.ndarray:
    """Each token's -log frequency (add-one smoothed): the score of a detector that knows only counts."""
    return -np.log((counts + 1.0) / (counts.sum() + len(counts)))


@torch.no_grad()
def evaluate_unigram(model, data: PretrainingData, indices, unigram_counts: np.ndarray,
                     train_counts: np.ndarray, device, batch_size: int = 64) -> dict:
    """Discriminator AUC on unigram replacements, next to the token-rarity baseline's AUC."""
    model.eval()
    unigram = torch.as_tensor(unigram_counts, dtype=torch.float64).clone()
    unigram[list(SPECIAL_IDS)] = 0
    rarity = token_rarity(train_counts)
    seq_len = data.seq_len
    num_predictions = max(1, int((UNIGRAM_REPLACE_PROB + 0.005) * seq_len))
    probs, rarities, labels = [], [], []
    for chunk in _batches(indices, batch_size):
        batch = data.batch(chunk)
        ids = batch["input_ids"]
        keys = example_keys(EVAL_SEED + 1, chunk)
        noise = draw_noise(keys, seq_len, num_predictions, "cpu")
        m = mask_tokens(ids, noise.select, noise.keep, UNIGRAM_REPLACE_PROB, mask_token_prob=0.0)
        draws = torch.stack([torch.multinomial(unigram, num_predictions, replacement=True,
                                               generator=torch.Generator().manual_seed(k))
                             for k in keys])
        draws = torch.where(m.weights, draws, m.originals)
        corrupted = ids.scatter(1, m.positions, draws)
        is_replaced = torch.zeros_like(ids, dtype=torch.bool).scatter(1, m.positions, draws != m.originals)
        logits = model.discriminator(corrupted.to(device), batch["token_type_ids"].to(device),
                                     batch["attention_mask"].to(device)).float().cpu()
        real = maskable(ids)
        probs.append(torch.sigmoid(logits[real]).numpy())
        rarities.append(rarity[corrupted[real].numpy()])
        labels.append(is_replaced[real].numpy())
    labels = np.concatenate(labels)
    return {"disc_auc_unigram": _auc(labels, np.concatenate(probs)),
            "rarity_auc_unigram": _auc(labels, np.concatenate(rarities)),
            "unigram_replaced_share": float(labels.mean())}


def evaluate_corpus(loaded, corpus, doc_sep: str = "line", batch_size: int = 64,
                    max_examples: int | None = None, device="cpu", show_progress: bool = False) -> dict:
    """`electra evaluate`: prepare the text with the run's tokenizer, then both evaluations."""
    cfg = loaded.cfg
    with tempfile.TemporaryDirectory(prefix="electra-eval-") as tmp:
        tok_dir = Path(tmp) / "tok"
        loaded.tokenizer.save(str(_mkdir(tok_dir) / "tokenizer.json"))
        prepare_corpus(corpus, tok_dir, Path(tmp) / "data", doc_sep=doc_sep, val_fraction=0.0,
                       show_progress=show_progress)
        data = PretrainingData(Path(tmp) / "data", "train", cfg.data.seq_len, cfg.data.single_segment_prob,
                               seed=EVAL_SEED)
        indices = range(len(data) if max_examples is None else min(len(data), max_examples))
        unigram_counts = np.load(Path(tmp) / "data" / COUNTS_FILE, allow_pickle=False)
        counts_file = loaded.run_dir / COUNTS_FILE
        # An imported run that has not trained here has no training counts: rarity in the text itself.
        train_counts = (np.load(counts_file, allow_pickle=False) if counts_file.is_file()
                        else unigram_counts)
        metrics = evaluate_rtd(loaded.model, data, indices, cfg, device, batch_size)
        if cfg.objective.kind == "electra":
            metrics.update(evaluate_unigram(loaded.model, data, indices, unigram_counts, train_counts,
                                            device, batch_size))
            metrics.update(replaced_word_top1(loaded, check_corpus_files(corpus), doc_sep, device=device,
                                              batch_size=batch_size, train_counts=train_counts))
    # the share a generator that always predicts the most frequent token would score
    top = int(np.argmax(unigram_counts))
    metrics["top_token"] = loaded.tokenizer.id_to_token(top)
    metrics["top_token_share"] = float(unigram_counts[top] / unigram_counts.sum())
    metrics["rarity_counts"] = "training corpus" if counts_file.is_file() else "evaluated text"
    metrics["step"] = loaded.step
    metrics["examples"] = len(indices)
    return metrics


def replaced_word_top1(loaded, files, doc_sep: str = "line", max_sentences: int = 1000, device="cpu",
                       batch_size: int = 64, train_counts: np.ndarray | None = None) -> dict:
    """The detection demo as a measurement: in each held-out sentence of 5-40 words, exactly one word
    is replaced by a draw from the text's own word distribution (not the word itself); the share of
    sentences where that word gets the sentence's highest probability (a word's is the max over its
    pieces, as `detect` shows it), and chance, the mean of one over the sentence's length. Beside it,
    `replaced_top1_mean`: the same with a word scored by the mean of its pieces' logits, which does not
    let one piece of an original word of several pieces outbid a replaced word. With `train_counts`,
    `replaced_top1_rarity`: the token-rarity baseline, a word scored by its rarest piece's rarity in
    the training corpus (a detector that knows token frequencies and no context)."""
    sentences = []
    for doc in read_documents(files, doc_sep):
        sentences += [s.split() for s in doc if 5 <= len(s.split()) <= 40]
        if len(sentences) >= max_sentences:
            break
    sentences = sentences[:max_sentences]
    words = Counter(w for s in sentences for w in s if w.isalpha())
    vocabulary, weights = list(words), np.array(list(words.values()), np.float64)
    rng = np.random.default_rng(EVAL_SEED)
    corrupted = []  # (words, index of the replaced one)
    for s in sentences:
        candidates = [i for i, w in enumerate(s) if w.isalpha()]
        if not candidates or len(vocabulary) < 2:
            continue
        i = candidates[rng.integers(len(candidates))]
        while (new := vocabulary[rng.choice(len(vocabulary), p=weights / weights.sum())]).lower() == s[i].lower():
            pass
        corrupted.append((s[:i] + [new] + s[i + 1:], i))
    rarity = None if train_counts is None else token_rarity(train_counts)
    scores = ["replaced_top1", "replaced_top1_mean"] + ([] if rarity is None else ["replaced_top1_rarity"])
    hits = dict.fromkeys(scores, 0)
    tok = loaded.tokenizer
    tok.enable_truncation(loaded.cfg.model.max_position_embeddings)
    for start in range(0, len(corrupted), batch_size):
        chunk = corrupted[start:start + batch_size]
        texts = [" ".join(ws) for ws, _ in chunk]
        encodings = tok.encode_batch(texts)
        ids, types, mask = pad_batch([e.ids for e in encodings], [e.type_ids for e in encodings], device)
        with torch.no_grad():
            logits = loaded.model.discriminator(ids, types, mask).float().cpu().numpy()
        for (ws, replaced), enc, z in zip(chunk, encodings, logits):
            ends = np.cumsum([len(w) + 1 for w in ws])  # a word's characters end before its end
            pieces = [[] for _ in ws]  # each word's pieces: their positions
            for t, ((begin, _), special) in enumerate(zip(enc.offsets, enc.special_tokens_mask)):
                if not special:
                    pieces[int(np.searchsorted(ends, begin, side="right"))].append(t)
            word_scores = {"replaced_top1": lambda v: z[v].max(), "replaced_top1_mean": lambda v: z[v].mean()}
            if rarity is not None:
                token_rarities = rarity[enc.ids]
                word_scores["replaced_top1_rarity"] = lambda v: token_rarities[v].max()
            for key, score in word_scores.items():
                # a word cut off by truncation has no pieces and cannot win
                hits[key] += int(np.argmax([score(v) if v else -np.inf for v in pieces]) == replaced)
    n = max(len(corrupted), 1)
    return {**{k: h / n for k, h in hits.items()},
            "replaced_top1_chance": sum(1 / len(ws) for ws, _ in corrupted) / n,
            "replaced_sentences": len(corrupted)}


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p

