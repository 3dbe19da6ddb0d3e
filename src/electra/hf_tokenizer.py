"""Tokenizers in Hugging Face's layout, both ways: `write_hf_tokenizer` writes ours as a
`tokenizer.json` with the small JSON files `AutoTokenizer` reads beside it; `load_hf_tokenizer`
reads an HF model's tokenizer (`tokenizer.json`, or BERT's `vocab.txt`) with [PAD] [UNK] [CLS] [SEP]
[MASK] moved to ids 0-4, as our data and objective code expect.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from electra.errors import UsageError
from electra.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, TOKENIZER_FILE, UNK_ID, bert_template


def write_hf_tokenizer(tok: Tokenizer, folder: Path, max_length: int, lowercase: bool):
    """`tokenizer.json` plus the small JSON files `AutoTokenizer` reads beside it."""
    tok.no_truncation()
    tok.no_padding()
    tok.save(str(folder / TOKENIZER_FILE))
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "do_lower_case": lowercase, "padding_side": "right",
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"], **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def has_tokenizer(folder: Path) -> bool:
    return (folder / TOKENIZER_FILE).is_file() or (folder / "vocab.txt").is_file()


def load_hf_tokenizer(folder: Path) -> tuple[Tokenizer, list[int]]:
    """The HF tokenizer of `folder` with [PAD] [UNK] [CLS] [SEP] [MASK] moved to ids 0-4.
    Returns the tokenizer and `order` (new id -> old id)."""
    if (folder / TOKENIZER_FILE).is_file():
        try:
            spec = json.loads((folder / TOKENIZER_FILE).read_text())
            Tokenizer.from_str(json.dumps(spec))
        except Exception as e:  # tokenizers raises plain Exceptions on malformed files
            raise UsageError(f"{str(folder / TOKENIZER_FILE)!r} is not a valid tokenizer file "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    elif (folder / "vocab.txt").is_file():
        spec = json.loads(_wordpiece_from_vocab(folder).to_str())
    else:
        raise UsageError(f"no tokenizer in {str(folder)!r} (tokenizer.json or vocab.txt); "
                         "save it with the model (tokenizer.save_pretrained)")
    tok = Tokenizer.from_str(json.dumps(spec))
    old_ids = []
    for token in SPECIAL_TOKENS:
        i = tok.token_to_id(token)
        if i is None:
            raise UsageError(f"the tokenizer in {str(folder)!r} has no {token} token; ELECTRA needs "
                             f"{' '.join(SPECIAL_TOKENS)}")
        old_ids.append(i)
    size = tok.get_vocab_size(with_added_tokens=True)
    order = old_ids + [i for i in range(size) if i not in set(old_ids)]
    if order != list(range(size)):
        new_of_old = {old: new for new, old in enumerate(order)}
        model = spec["model"]
        if model.get("type") not in ("WordPiece", "BPE", "WordLevel"):
            raise UsageError(f"cannot move the special tokens of a {model.get('type')} tokenizer to ids "
                             "0-4; only WordPiece, BPE and WordLevel vocabularies are supported")
        model["vocab"] = {t: new_of_old[i] for t, i in model["vocab"].items()}
        for added in spec.get("added_tokens", []):
            added["id"] = new_of_old[added["id"]]
        tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = bert_template()  # [CLS] A [SEP] B [SEP] with the ids 0-4
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID]
    return tok, order


def _wordpiece_from_vocab(folder: Path) -> Tokenizer:
    """BERT's WordPiece tokenizer from `vocab.txt` (+ `do_lower_case` from tokenizer_config.json)."""
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lower = True
    if (folder / "tokenizer_config.json").is_file():
        lower = json.loads((folder / "tokenizer_config.json").read_text()).get("do_lower_case", True)
    vocab = {t: i for i, t in enumerate(lines)}
    if len(vocab) != len(lines):
        raise UsageError(f"{str(folder / 'vocab.txt')!r} lists a token twice; give the model's own vocab.txt")
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    # "[MASK]" and the others written in a text are one token each, as in our BPE tokenizers (the
    # trainer adds them) and in transformers (which adds special_tokens_map.json's entries)
    tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
    return tok
