"""Loading a trained run, and replaced-token detection on raw text.

`load_run` rebuilds the model from the run's saved config and loads a checkpoint strictly.
`detect` scores every token with the discriminator (the probability that it was replaced) and
merges sub-word pieces into words (a word's probability is the max over its pieces).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from electra.checkpoint import CONFIG_FILE, latest_checkpoint, list_checkpoints, load_checkpoint
from electra.config import Config
from electra.errors import UsageError
from electra.objective import Electra
from electra.tokenizer import load_tokenizer


@dataclass
class LoadedRun:
    cfg: Config
    model: Electra
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
        which = "any checkpoint" if step is None else f"a checkpoint for step {step}"
        raise UsageError(f"{str(run)!r} has no {which}; train it first (or pick another --step)")
    tokenizer = load_tokenizer(run)
    if tokenizer.get_vocab_size() != cfg.model.vocab_size:
        raise UsageError(f"the tokenizer in {str(run)!r} has {tokenizer.get_vocab_size()} tokens but the "
                         f"model expects {cfg.model.vocab_size}")
    model = Electra(cfg.model, cfg.objective)
    state = load_checkpoint(ckpt, model)
    model.to(device).eval()
    return LoadedRun(cfg, model, tokenizer, ckpt, state["step"])


@torch.no_grad()
def detect(loaded: LoadedRun, text: str, device="cpu") -> dict:
    """Per sub-word token and per word: the discriminator's probability of 'replaced'."""
    max_len = loaded.cfg.model.max_position_embeddings
    loaded.tokenizer.enable_truncation(max_len)  # counts [CLS] and [SEP] in the limit
    enc = loaded.tokenizer.encode(text)
    ids = torch.tensor([enc.ids], device=device)
    types = torch.tensor([enc.type_ids], device=device)
    probs = torch.sigmoid(loaded.model.discriminator(ids, types).float())[0].tolist()
    tokens, token_probs, words, word_probs = [], [], [], []
    last_word = None
    for token, word, special, (start, end), p in zip(enc.tokens, enc.word_ids, enc.special_tokens_mask,
                                                      enc.offsets, probs):
        if special:
            continue
        tokens.append(token)
        token_probs.append(p)
        if word is not None and word == last_word:
            words[-1] = text[word_start:end]
            word_probs[-1] = max(word_probs[-1], p)
        else:
            word_start = start
            words.append(text[start:end])
            word_probs.append(p)
        last_word = word
    return {"text": text, "tokens": tokens, "token_probs": token_probs,
            "words": words, "word_probs": word_probs}
