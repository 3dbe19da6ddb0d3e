"""Hugging Face interoperability, with `transformers` as an independent oracle (no network).

Random tiny models with non-trivial weights everywhere (LayerNorms and biases perturbed, an
embedding projection), so a tensor mapped to the wrong place changes the logits.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import shared_file, tiny_config
from electra.checkpoint import save_checkpoint
from electra.rundir import CONFIG_FILE
from electra.corpus import read_documents
from electra.errors import UsageError
from electra.export import export_run, hf_name, import_hf, our_name, write_hf_tokenizer
from electra.rundir import load_run
from electra.objective import Electra
from electra.tokenizer import TOKENIZER_FILE, load_tokenizer, train_tokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

POST_LN = {"model.norm_position": "post", "model.attention_bias": "none", "objective.disc_bias_init": "zero"}


def perturb(module: torch.nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def make_run(run, tokenizer_dir, data_dir, **overrides):
    """A run directory holding a random post-LN model (HF's layout) at step 7."""
    cfg = tiny_config(data_dir, **{**POST_LN, **overrides})
    run.mkdir()
    shutil.copyfile(tokenizer_dir / TOKENIZER_FILE, run / TOKENIZER_FILE)
    (run / CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))
    torch.manual_seed(0)
    model = Electra(cfg.model, cfg.objective)
    perturb(model)
    save_checkpoint(run, 7, model, None, {"elapsed": 0.0})
    return run


def sample_batch(vocab_size: int, lengths=(20, 13, 7), seed: int = 1):
    """[CLS] A [SEP] B [SEP] rows of different lengths, right-padded; returns ids, types, mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab_size, (n,), generator=g)
        ids[i, 0], ids[i, n // 2], ids[i, n - 1] = 2, 3, 3
        types[i, n // 2 + 1:n] = 1
    return ids, types, ids != 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer_dir, data_dir):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root / "run", tokenizer_dir, data_dir)
    return run, export_run(run, root / "hf")


def test_name_table_inverts_for_every_tensor(tmp_path, tokenizer_dir, data_dir):
    run = make_run(tmp_path / "run", tokenizer_dir, data_dir)
    model = load_run(run).model
    for role, module in (("discriminator", model.discriminator), ("generator", model.generator)):
        names = [n for n in module.state_dict() if n != "head.word_embeddings.weight"]
        mapped = [hf_name(n, role) for n in names]
        assert None not in mapped and len(set(mapped)) == len(names)
        assert [our_name(m, role) for m in mapped] == names


@pytest.mark.parametrize("padded", [False, True])
def test_exported_weights_give_transformers_the_same_logits(exported, padded):
    run, out = exported
    loaded = load_run(run)
    disc, info_d = transformers.ElectraForPreTraining.from_pretrained(out / "discriminator",
                                                                      output_loading_info=True)
    gen, info_g = transformers.ElectraForMaskedLM.from_pretrained(out / "generator", output_loading_info=True)
    for info in (info_d, info_g):
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr()
    disc.eval(), gen.eval()
    V = loaded.cfg.model.vocab_size
    ids, types, mask = sample_batch(V, (20, 13, 7) if padded else (16, 16, 16))
    with torch.no_grad():
        ours_d = loaded.model.discriminator(ids, types, mask if padded else None)
        theirs_d = disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        ours_g = loaded.model.generator(ids, types, mask if padded else None)
        theirs_g = gen(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    assert ours_d.abs().max() > 0.1 and ours_g.shape == theirs_g.shape == (*ids.shape, V)
    assert (ours_d - theirs_d)[mask].abs().max() < 1e-5
    assert (ours_g - theirs_g)[mask].abs().max() < 1e-5


def test_a_gdes_discriminator_exports_its_delta_folded_into_the_word_embeddings(tmp_path, tokenizer_dir, data_dir):
    run = make_run(tmp_path / "run", tokenizer_dir, data_dir, **{"objective.embedding_sharing": "gdes"})
    out = export_run(run, tmp_path / "hf")
    loaded = load_run(run)
    delta = loaded.model.discriminator.encoder.embeddings.word_delta.weight
    assert delta.abs().max() > 0.01  # perturbed: the fold matters
    disc = transformers.ElectraForPreTraining.from_pretrained(out / "discriminator").eval()
    ids, types, mask = sample_batch(loaded.cfg.model.vocab_size)
    with torch.no_grad():
        ours = loaded.model.discriminator(ids, types, mask)
        theirs = disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    assert (ours - theirs)[mask].abs().max() < 1e-5
    from electra.finetune import starting_point
    from electra.model import Encoder

    encoder = Encoder(loaded.cfg.model)  # what fine-tuning starts from: the same encoder, folded
    encoder.load_state_dict(starting_point(str(run)).encoder_state)
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(ids, types, mask), loaded.model.discriminator.encoder(ids, types, mask),
                              atol=1e-6)


def test_exported_tokenizer_loads_in_transformers(exported):
    run, out = exported
    ours = load_tokenizer(run)
    theirs = transformers.AutoTokenizer.from_pretrained(out / "discriminator")
    text, pair = "The Detective, naturally, solved it!", "Nobody expected that."
    assert theirs(text)["input_ids"] == ours.encode(text).ids
    both = theirs(text, pair)
    assert both["input_ids"] == ours.encode(text, pair).ids
    assert both["token_type_ids"] == ours.encode(text, pair).type_ids
    assert theirs.mask_token_id == 4 and theirs.pad_token_id == 0


def test_transformers_tokenizer_matches_ours_on_shared_corpora(tmp_path):
    files = [shared_file("pretrain/imdb-unsup.txt"), shared_file("pretrain/wikitext-2/wiki.valid.raw"),
             *sorted(shared_file("pretrain/gutenberg").glob("*.txt"))]
    texts = []
    for f in files:  # the first 60 documents of each (Gutenberg: Latin-1 bytes, CRLF)
        for i, doc in enumerate(read_documents([f], "line")):
            if i == 60:
                break
            texts.append(" ".join(doc))
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(texts) + "\n")
    train_tokenizer([sample], tmp_path / "tok", vocab_size=1000, show_progress=False)
    ours = load_tokenizer(tmp_path / "tok")
    write_hf_tokenizer(ours, tmp_path / "tok", 512, True)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(texts) > 500 and any(not t.isascii() for t in texts)
    for text in texts:
        assert theirs(text)["input_ids"] == ours.encode(text).ids, text[:80]


def _google_style_model(folder, vocab, hidden, heads, ffn, cls, embeddings=None, seed=0):
    config = transformers.ElectraConfig(vocab_size=len(vocab), embedding_size=24, hidden_size=hidden,
                                        num_hidden_layers=2, num_attention_heads=heads,
                                        intermediate_size=ffn, max_position_embeddings=64)
    torch.manual_seed(seed)
    model = cls(config)
    perturb(model, seed)
    if embeddings is not None:  # ELECTRA's generator shares the discriminator's embeddings
        model.electra.embeddings.load_state_dict(embeddings.state_dict())
    model.save_pretrained(folder)
    return model.eval()


@pytest.mark.parametrize("tokenizer_files", ["tokenizer.json", "vocab.txt only"])
def test_import_from_transformers_with_google_vocabulary_layout(tmp_path, corpus, tokenizer_files):
    words = sorted({w for line in corpus.read_text().split() for w in
                    line.lower().replace(".", " . ").replace("!", " ! ").replace("?", " ? ").replace(",", " , ").split()})
    # Google's layout: [PAD] 0, [unusedN] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    hf = tmp_path / "hf"
    disc = _google_style_model(hf / "discriminator", vocab, 32, 2, 37, transformers.ElectraForPreTraining)
    gen = _google_style_model(hf / "generator", vocab, 16, 1, 19, transformers.ElectraForMaskedLM,
                              embeddings=disc.electra.embeddings, seed=1)
    (hf / "discriminator" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    hf_tok = transformers.BertTokenizerFast.from_pretrained(hf / "discriminator")
    if tokenizer_files == "tokenizer.json":
        hf_tok.save_pretrained(hf / "discriminator")

    cfg, notes = import_hf(hf, tmp_path / "run")
    assert any("special tokens moved" in n for n in notes)
    assert (cfg.objective.generator_num_heads, cfg.objective.generator_intermediate_size) == (1, 19)
    loaded = load_run(tmp_path / "run")
    assert loaded.step == 0

    texts = ["the quiet detective solved the case .", "rain falls on the village", "why ?"]
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    ours = loaded.tokenizer.encode_batch(texts)
    order = [0, 100, 101, 102, 103] + [i for i in range(len(vocab)) if i not in (0, 100, 101, 102, 103)]
    for row, e in zip(enc["input_ids"].tolist(), ours):
        assert [order[i] for i in e.ids] == row[:len(e.ids)]  # the same tokens, permuted ids
    ids = torch.zeros_like(enc["input_ids"])
    for i, e in enumerate(ours):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        d_ours = loaded.model.discriminator(ids, enc["token_type_ids"], mask)
        d_theirs = disc(**enc).logits
        g_ours = loaded.model.generator(ids, enc["token_type_ids"], mask)
        g_theirs = gen(**enc).logits[..., order]  # vocabulary axis in our order
    assert (d_ours - d_theirs)[mask].abs().max() < 1e-5
    assert (g_ours - g_theirs)[mask].abs().max() < 1e-5


def test_export_then_import_round_trips(exported, tmp_path):
    run, out = exported
    import_hf(out, tmp_path / "again")
    a, b = load_run(run).model.state_dict(), load_run(tmp_path / "again").model.state_dict()
    a = {k: v for k, v in a.items() if not k.startswith("disc_lm_head.")}  # a training-only head: not exported
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layout", [{"model.norm_position": "pre", "model.attention_bias": "alibi"},
                                    {"model.norm_position": "pre"},
                                    {"model.attention_bias": "alibi", "model.alibi_slopes": "standard"},
                                    {"model.norm_position": "pre", "model.attention_bias": "alibi",
                                     "model.alibi_slopes": "steep-global"}])
def test_a_layout_hf_cannot_hold_exports_with_its_model_code_and_loads_with_trust_remote_code(
        tmp_path, tokenizer_dir, data_dir, layout):
    run = make_run(tmp_path / "run", tokenizer_dir, data_dir, **layout)
    out = export_run(run, tmp_path / "hf")
    loaded = load_run(run)
    config = json.loads((out / "discriminator" / "config.json").read_text())
    assert config["model_type"] == "electra_cpu" and "AutoModelForSequenceClassification" in config["auto_map"]
    auto = transformers.AutoModelForPreTraining, transformers.AutoModelForMaskedLM
    disc, info_d = auto[0].from_pretrained(out / "discriminator", trust_remote_code=True, output_loading_info=True)
    gen, info_g = auto[1].from_pretrained(out / "generator", trust_remote_code=True, output_loading_info=True)
    for info in (info_d, info_g):
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert gen.generator_lm_head.weight.data_ptr() == gen.electra.embeddings.word_embeddings.weight.data_ptr()
    disc.eval(), gen.eval()
    V = loaded.cfg.model.vocab_size
    for lengths in ((20, 13, 7), (16, 16, 16)):
        ids, types, mask = sample_batch(V, lengths)
        with torch.no_grad():
            ours_d, ours_g = loaded.model.discriminator(ids, types, mask), loaded.model.generator(ids, types, mask)
            theirs_d = disc(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
            theirs_g = gen(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        assert ours_d.abs().max() > 0.1
        assert (ours_d - theirs_d)[mask].abs().max() < 1e-5 and (ours_g - theirs_g)[mask].abs().max() < 1e-5
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(
        out / "discriminator", trust_remote_code=True, num_labels=3).eval()
    with torch.no_grad():  # the pre-trained encoder under a new head
        hidden = classifier.electra(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        assert (hidden - loaded.model.discriminator.encoder(ids, types, mask)).abs().max() < 1e-5
        assert classifier(input_ids=ids, attention_mask=mask).logits.shape == (len(ids), 3)
    # our import maps the weights back (no code from the folder runs): the same model
    _, notes = import_hf(out, tmp_path / "back")
    back = load_run(tmp_path / "back")
    assert back.cfg.model.norm_position == loaded.cfg.model.norm_position
    assert back.cfg.model.attention_bias == loaded.cfg.model.attention_bias
    with torch.no_grad():
        assert torch.equal(back.model.discriminator(ids, types, mask), loaded.model.discriminator(ids, types, mask))


def test_import_rejects_other_models_and_truncated_weights(exported, tmp_path, capsys):
    _, out = exported
    bert = tmp_path / "bert"
    shutil.copytree(out / "discriminator", bert)
    (bert / "config.json").write_text(json.dumps({**json.loads((bert / "config.json").read_text()),
                                                  "model_type": "bert"}))
    with pytest.raises(UsageError, match="not an ELECTRA checkpoint"):
        import_hf(bert, tmp_path / "r1")
    from tests.conftest import run_cli
    code, _, err = run_cli(capsys, "import", "--hf", bert, "--out", tmp_path / "r1")
    assert code == 2 and err.count("\n") == 1 and "not an ELECTRA checkpoint (model_type 'bert')" in err
    cut = tmp_path / "cut"
    shutil.copytree(out / "discriminator", cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated"):
        import_hf(cut, tmp_path / "r2")
    renamed = tmp_path / "renamed"
    shutil.copytree(out / "discriminator", renamed)
    from safetensors.torch import load_file, save_file
    tensors = load_file(renamed / "model.safetensors")
    tensors["electra.encoder.layer.0.attention.self.qkv.weight"] = tensors.pop(
        "electra.encoder.layer.0.attention.self.query.weight")
    save_file(tensors, renamed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UsageError, match="missing tensor 'electra.encoder.layer.0.attention.self.query.weight'"):
        import_hf(renamed, tmp_path / "r3")
    assert not any(p.name.startswith(("r1", "r2", "r3", ".r")) for p in tmp_path.iterdir())


def test_cli_export_detect_and_import_agree_with_transformers(tmp_path, corpus, capsys):
    from tests.conftest import TINY, run_cli

    run, hf = tmp_path / "run", tmp_path / "hf"
    post_ln = [a for k, v in POST_LN.items() for a in ("--set", f"{k}={v}")]
    code, out, _ = run_cli(capsys, "pretrain", "--corpus", corpus, "--out", run, "--max-steps", 4, *TINY, *post_ln)
    assert code == 0, out
    assert run_cli(capsys, "export", "--model", run, "--out", hf)[0] == 0
    code, _, err = run_cli(capsys, "export", "--model", run, "--out", hf)
    assert code == 2 and "is not empty" in err and "--force" in err
    assert run_cli(capsys, "export", "--model", run, "--out", hf, "--force")[0] == 0

    texts = ["the quiet detective solved the case.", "rain falls on the harbour at night!"]
    code, out, _ = run_cli(capsys, "detect", "--model", run, "--json", *texts)
    results = [json.loads(line) for line in out.splitlines()]
    tok = transformers.AutoTokenizer.from_pretrained(hf / "discriminator")
    disc = transformers.ElectraForPreTraining.from_pretrained(hf / "discriminator").eval()
    for text, result in zip(texts, results):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            probs = torch.sigmoid(disc(**enc).logits)[0, 1:-1]  # without [CLS] and [SEP]
        assert result["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0, 1:-1].tolist())
        assert torch.allclose(probs, torch.tensor(result["token_probs"]), atol=1e-5)

    imported = tmp_path / "imported"
    code, out, _ = run_cli(capsys, "import", "--hf", hf, "--out", imported)
    assert code == 0 and "imported" in out
    code, _, err = run_cli(capsys, "pretrain", "--out", imported, "--resume", "--no-progress")
    assert code == 2 and "has no data yet" in err
    code, out, _ = run_cli(capsys, "pretrain", "--out", imported, "--resume", "--corpus", corpus,
                           "--max-steps", 2, "--batch-size", 4, "--seq-len", 32, "--no-progress")
    assert code == 0, out
    assert (imported / "checkpoints" / "step-00000002").is_dir() and (imported / "token_counts.npy").is_file()
    code, out, _ = run_cli(capsys, "detect", "--model", imported, "--json", texts[0])
    assert code == 0 and json.loads(out)["tokens"] == results[0]["tokens"]
    task = tmp_path / "task"
    task.mkdir()
    rows = "".join(json.dumps({"t": t, "y": str(i)}) + "\n" for i, t in enumerate(texts * 3))
    (task / "train.jsonl").write_text(rows)
    (task / "dev.jsonl").write_text(rows)
    code, out, _ = run_cli(capsys, "finetune", "--model", imported, "--task", "custom", "--data", task,
                           "--text-column", "t", "--label-column", "y", "--out", tmp_path / "ft", "--epochs", 1,
                           "--max-length", 32, "--no-progress")
    assert code == 0 and "median" in out
