"""Replaced-token detection on raw text (`electra detect`).

`detect` scores every token with the discriminator (the probability that it was replaced), merges
sub-word pieces into words (a word's probability is the max over its pieces, or with
`word_score="mean"` the sigmoid of the mean of their logits), and asks the generator what each
flagged word may have been.
"""

from __future__ import annotations

import sys

import torch

from electra.errors import UsageError
from electra.rundir import LoadedRun
from electra.data import pad_batch
from electra.tokenizer import MASK_ID, SPECIAL_TOKENS, continuation_ids


WORD_SCORES = ("max", "mean")


@torch.no_grad()
def detect(loaded: LoadedRun, texts: list[str], device="cpu", threshold: float = 0.5,
           top_k: int = 3, word_score: str = "max") -> list[dict]:
    """Score a batch of texts: per sub-word token and per word, the discriminator's probability of
    'replaced' (a word's is the max over its pieces, or the sigmoid of the mean of their logits);
    words at or above `threshold` are flagged, and for each flagged word the generator, with that
    word masked, suggests `top_k` originals."""
    if word_score not in WORD_SCORES:
        raise UsageError(f"--word-score must be one of {', '.join(WORD_SCORES)}, got {word_score!r}")
    if not 0 <= threshold <= 1:
        raise UsageError(f"--threshold must be in [0, 1], got {threshold}")
    if top_k < 0:
        raise UsageError(f"--top-k must be >= 0, got {top_k}")
    if loaded.cfg.objective.kind != "electra":
        raise UsageError("detect needs an ELECTRA discriminator; this run trained a masked LM")
    tok = loaded.tokenizer
    tok.enable_truncation(loaded.cfg.model.max_position_embeddings)  # counts [CLS] and [SEP]
    encodings = tok.encode_batch(list(texts))
    ids, types, mask = pad_batch([e.ids for e in encodings], [e.type_ids for e in encodings], device)
    logits = loaded.model.discriminator(ids, types, mask).float().cpu()
    probs = torch.sigmoid(logits)

    results, flagged_words = [], []  # flagged_words: (text index, word index, token positions)
    for b, (text, enc) in enumerate(zip(texts, encodings)):
        r = {"text": text, "tokens": [], "token_probs": [], "words": []}
        positions, last_word, word_start = [], None, 0
        for t, (token, word, special, (start, end)) in enumerate(
                zip(enc.tokens, enc.word_ids, enc.special_tokens_mask, enc.offsets)):
            if special:
                continue
            p = float(probs[b, t])
            r["tokens"].append(token)
            r["token_probs"].append(p)
            if word is not None and word == last_word:  # another piece of the same word
                r["words"][-1] = text[word_start:end]
                positions[-1].append(t)
            else:
                word_start = start
                r["words"].append(text[start:end])
                positions.append([t])
            last_word = word
        # the mean: one loud piece does not make a word of several pieces replaced
        r["word_probs"] = [float(probs[b, ts].max() if word_score == "max"
                                 else torch.sigmoid(logits[b, ts].mean())) for ts in positions]
        r["flagged"] = [p >= threshold for p in r["word_probs"]]
        r["suggestions"] = [[] for _ in r["words"]]
        flagged_words += [(b, w, positions[w]) for w, f in enumerate(r["flagged"]) if f]
        results.append(r)
    if top_k > 0 and flagged_words:
        for (b, w, _), options in zip(flagged_words, _suggest(loaded, ids, types, mask, flagged_words, top_k)):
            results[b]["suggestions"][w] = options
    return results


def _suggest(loaded: LoadedRun, ids, types, mask, flagged_words, top_k: int, batch_size: int = 64):
    """One generator row per flagged word, with all its pieces masked; the top word-initial tokens
    predicted at its first piece, other than the word itself."""
    tok = loaded.tokenizer
    excluded = torch.zeros(loaded.cfg.model.vocab_size, dtype=torch.bool)
    excluded[list(range(len(SPECIAL_TOKENS)))] = True
    excluded[continuation_ids(tok)] = True  # load_run checked that the tokenizer fits the model
    out = []
    for k in range(0, len(flagged_words), batch_size):
        chunk = flagged_words[k:k + batch_size]
        rows = torch.tensor([b for b, _, _ in chunk], device=ids.device)
        masked = ids[rows].clone()
        for r, (_, _, pieces) in enumerate(chunk):
            masked[r, pieces] = MASK_ID
        first = torch.tensor([[pieces[0]] for _, _, pieces in chunk], device=ids.device)  # (R, 1)
        logits = loaded.model.generator(masked, types[rows], mask[rows], first)[:, 0].float().cpu()
        logits[:, excluded] = float("-inf")
        logits[torch.arange(len(chunk)), ids[rows, first[:, 0]].cpu()] = float("-inf")  # not the word itself
        for row in logits.topk(top_k, dim=-1).indices.tolist():
            out.append([tok.id_to_token(i) for i in row])
    return out


def texts_to_score(texts: list[str], file: str | None = None) -> list[str]:
    """The non-empty texts given as arguments, or the lines of `file`, or of standard input."""
    if texts and file:
        raise UsageError("give texts as arguments or --file FILE, not both")
    if file:
        try:
            with open(file, encoding="utf-8", errors="replace") as f:
                texts = [line.rstrip("\r\n") for line in f]
        except OSError as e:
            raise UsageError(f"cannot read --file {file!r} ({e.strerror})")
    elif not texts:
        if sys.stdin.isatty():
            raise UsageError("nothing to score: give texts as arguments, --file FILE, or pipe lines on stdin")
        texts = [line.rstrip("\r\n") for line in sys.stdin]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UsageError("no text to score (only empty lines)")
    return texts


def format_detection(result: dict) -> str:
    """A `detect` result as a table: each word, its probability, and `*` (with the generator's
    suggestions) where it is flagged."""
    lines = [f"{'Token':<15} Is_Replaced_Prob"]
    for word, p, flagged, options in zip(result["words"], result["word_probs"], result["flagged"],
                                         result["suggestions"]):
        mark = f"  *  was it: {', '.join(options)}?" if flagged and options else "  *" if flagged else ""
        lines.append(f"{word:<15} {p:.4f}{mark}")
    return "\n".join(lines)
