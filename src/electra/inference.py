"""Loading a trained run, and replaced-token detection on raw text.

`load_run` rebuilds the model from the run's saved config and loads a checkpoint strictly.
`detect` scores every token with the discriminator (the probability that it was replaced), merges
sub-word pieces into words (a word's probability is the max over its pieces), and asks the generator
what each flagged word may have been.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from electra.checkpoint import CONFIG_FILE, latest_checkpoint, list_checkpoints, load_checkpoint
from electra.config import Config
from electra.errors import UsageError
from electra.objective import build_model
from electra.tokenizer import MASK_ID, PAD_ID, SPECIAL_TOKENS, SUBWORD_PREFIX, load_tokenizer


@dataclass
class LoadedRun:
    cfg: Config
    model: torch.nn.Module  # Electra, or MaskedLM
    tokenizer: object
    checkpoint: Path
    step: int


def load_run(run_dir, step: int | None = None, device="cpu") -> LoadedRun:
    run = Path(run_dir)
    if not run.is_dir() or not (run / CONFIG_FILE).is_file():
        raise UsageError(f"{str(run)!r} is not a run directory (no {CONFIG_FILE}); "
                         "give the --out of `electra pretrain`")
    try:
        cfg = Config.from_dict(json.loads((run / CONFIG_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise UsageError(f"{str(run / CONFIG_FILE)!r} is not valid JSON ({e})")
    if step is None:
        ckpt = latest_checkpoint(run)
    else:
        ckpt = next((c for c in list_checkpoints(run) if int(c.name[5:]) == step), None)
    if ckpt is None:
        which = "checkpoint" if step is None else f"checkpoint for step {step}"
        raise UsageError(f"{str(run)!r} has no {which}; train it first (or pick another --step)")
    tokenizer = load_tokenizer(run)
    if tokenizer.get_vocab_size() != cfg.model.vocab_size:
        raise UsageError(f"the tokenizer in {str(run)!r} has {tokenizer.get_vocab_size()} tokens but the "
                         f"model expects {cfg.model.vocab_size}")
    model = build_model(cfg.model, cfg.objective)
    state = load_checkpoint(ckpt, model)
    model.to(device).eval()
    return LoadedRun(cfg, model, tokenizer, ckpt, state["step"])


@torch.no_grad()
def detect(loaded: LoadedRun, texts: list[str], device="cpu", threshold: float = 0.5,
           top_k: int = 3) -> list[dict]:
    """Score a batch of texts: per sub-word token and per word, the discriminator's probability of
    'replaced' (a word's is the max over its pieces); words at or above `threshold` are flagged,
    and for each flagged word the generator, with that word masked, suggests `top_k` originals."""
    if loaded.cfg.objective.kind != "electra":
        raise UsageError("detect needs an ELECTRA discriminator; this run trained a masked LM")
    tok = loaded.tokenizer
    tok.enable_truncation(loaded.cfg.model.max_position_embeddings)  # counts [CLS] and [SEP]
    encodings = tok.encode_batch(list(texts))
    ids, types, mask = _pad([e.ids for e in encodings], [e.type_ids for e in encodings], device)
    probs = torch.sigmoid(loaded.model.discriminator(ids, types, mask).float()).cpu()

    results, flagged_words = [], []  # flagged_words: (text index, word index, token positions)
    for b, (text, enc) in enumerate(zip(texts, encodings)):
        r = {"text": text, "tokens": [], "token_probs": [], "words": [], "word_probs": []}
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
                r["word_probs"][-1] = max(r["word_probs"][-1], p)
                positions[-1].append(t)
            else:
                word_start = start
                r["words"].append(text[start:end])
                r["word_probs"].append(p)
                positions.append([t])
            last_word = word
        r["flagged"] = [p >= threshold for p in r["word_probs"]]
        r["suggestions"] = [[] for _ in r["words"]]
        flagged_words += [(b, w, positions[w]) for w, f in enumerate(r["flagged"]) if f]
        results.append(r)
    if top_k > 0 and flagged_words:
        for (b, w, _), options in zip(flagged_words, _suggest(loaded, ids, types, mask, flagged_words, top_k)):
            results[b]["suggestions"][w] = options
    return results


def _pad(id_lists, type_lists, device):
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), PAD_ID, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, (x, y) in enumerate(zip(id_lists, type_lists)):
        ids[i, :len(x)], types[i, :len(y)] = torch.tensor(x), torch.tensor(y)
    return ids.to(device), types.to(device), (ids != PAD_ID).to(device)


def _suggest(loaded: LoadedRun, ids, types, mask, flagged_words, top_k: int, batch_size: int = 64):
    """One generator row per flagged word, with all its pieces masked; the top word-initial tokens
    predicted at its first piece, other than the word itself."""
    tok = loaded.tokenizer
    vocab = tok.get_vocab()
    excluded = torch.zeros(loaded.cfg.model.vocab_size, dtype=torch.bool)
    excluded[list(range(len(SPECIAL_TOKENS)))] = True
    excluded[[i for t, i in vocab.items() if t.startswith(SUBWORD_PREFIX) and i < len(excluded)]] = True
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
