"""Fine-tuning: layer-wise learning rates, the GLUE readers on the real files, metrics on
hand-checked cases, and a tiny model that learns a tiny task end to end through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from electra.cli import main
from electra.config import preset_config
from electra.errors import UsageError
from electra.finetune import Classifier, FinetuneConfig, epoch_batches, layerwise_groups
from electra.tasks import GLUE, TaskSpec, load_task, task_metrics
from tests.conftest import shared_file


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_layerwise_decay_gives_every_parameter_its_intended_lr(norm_position):
    from dataclasses import replace

    model_cfg = replace(preset_config("tiny").model, vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                        intermediate_size=20, embedding_size=8, norm_position=norm_position)
    model = Classifier(model_cfg, 2, 0.1)
    cfg = FinetuneConfig(lr=1.0, layer_decay=0.5)
    groups = layerwise_groups(model, cfg)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    assert sorted(lr_of) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    L = 3
    for name in lr_of:
        if name.startswith("head."):
            expected = 1.0
        elif name.startswith("encoder.layers."):
            expected = 0.5 ** (L + 1 - int(name.split(".")[2]))  # top layer 0.5^2, bottom 0.5^4
        elif name.startswith("encoder.final_norm."):
            expected = 0.5
        else:
            assert name.startswith(("encoder.embeddings.", "encoder.embeddings_project.")), name
            expected = 0.5 ** (L + 2)  # the deepest decay
        assert lr_of[name] == pytest.approx(expected), name
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert "head.weight" in decayed and "head.bias" not in decayed
    assert not any("norm" in n for n in decayed)


def test_embedding_lr_scale_scales_the_embeddings_and_zero_keeps_them_as_pretrained():
    from dataclasses import replace

    from electra.finetune import Encoded, train_one_seed

    model_cfg = replace(preset_config("tiny").model, vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                        intermediate_size=20, embedding_size=16, max_position_embeddings=16)
    groups = layerwise_groups(Classifier(model_cfg, 2, 0.1), FinetuneConfig(lr=1.0, layer_decay=0.5,
                                                                           embedding_lr_scale=0.1))
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    assert lr_of["encoder.embeddings.word_embeddings.weight"] == pytest.approx(0.1 * 0.5 ** 4)
    assert lr_of["encoder.layers.0.intermediate.weight"] == pytest.approx(0.5 ** 3)

    torch.manual_seed(0)
    pretrained = Classifier(model_cfg, 2, 0.0).encoder.state_dict()
    g = torch.Generator().manual_seed(0)
    ids = [[2, *torch.randint(5, 50, (6,), generator=g).tolist(), 3] for _ in range(16)]
    data = Encoded(ids, [[0] * len(i) for i in ids], torch.tensor([i[1] % 2 for i in ids]))
    cfg = FinetuneConfig(lr=1e-2, epochs=2, batch_size=8, layer_decay=1.0, embedding_lr_scale=0.0)
    model, _ = train_one_seed(GLUE["sst2"], cfg, model_cfg, pretrained, data, data, seed=1, device="cpu",
                              show_progress=False, log=lambda _: None)
    after = model.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in pretrained.items() if k.startswith("embeddings."))
    assert not torch.equal(after["layers.0.intermediate.weight"], pretrained["layers.0.intermediate.weight"])
    with pytest.raises(Exception, match="embedding_lr_scale"):
        FinetuneConfig(embedding_lr_scale=-1)


def test_the_recipe_gives_small_training_sets_enough_steps_and_tiny_models_no_layer_decay():
    from electra.finetune import MIN_STEPS, resolved

    sst2, rte = GLUE["sst2"], GLUE["rte"]
    small_set = resolved(FinetuneConfig(), sst2, "tiny", 1000, 128)  # 32 steps an epoch
    assert (small_set.epochs, small_set.layer_decay, small_set.lr) == (10, 1.0, 1e-3)
    assert small_set.epochs * 32 >= MIN_STEPS > (small_set.epochs - 1) * 32
    full = resolved(FinetuneConfig(), sst2, "small", 67349, 128)  # the official recipe, untouched
    assert (full.epochs, full.layer_decay, full.lr) == (3, 0.8, 3e-4)
    assert resolved(FinetuneConfig(), rte, "tiny", 2490, 128).epochs == 10  # the task's own, already enough
    given = resolved(FinetuneConfig(epochs=2, layer_decay=0.9, lr=5e-4, pooling="cls"), sst2, "tiny", 1000, 64)
    assert (given.epochs, given.layer_decay, given.lr, given.max_length, given.pooling) == (2, 0.9, 5e-4, 64, "cls")


def test_small_training_sets_read_the_mean_of_the_tokens_and_large_ones_cls():
    from electra.finetune import PRESET_MEAN_POOLING_MAX_EXAMPLES, resolved

    sst2, limit = GLUE["sst2"], PRESET_MEAN_POOLING_MAX_EXAMPLES["tiny"]
    assert resolved(FinetuneConfig(), sst2, "tiny", 1000, 128).pooling == "mean"
    assert resolved(FinetuneConfig(), sst2, "tiny", limit, 128).pooling == "mean"
    assert resolved(FinetuneConfig(), sst2, "tiny", limit + 1, 128).pooling == "cls"
    assert resolved(FinetuneConfig(), sst2, "small", 1000, 128).pooling == "cls"  # not measured: official
    assert resolved(FinetuneConfig(pooling="mean"), sst2, "small", 67349, 128).pooling == "mean"
    with pytest.raises(Exception, match="pooling"):
        FinetuneConfig(pooling="max")


OFFICIAL_COUNTS = {"sst2": (67349, 872, 1821), "cola": (8551, 1043, 1063), "mrpc": (3668, 408, 1725),
                   "stsb": (5749, 1500, 1379), "rte": (2490, 277, 3000)}


@pytest.mark.parametrize("name", list(OFFICIAL_COUNTS))
def test_glue_readers_give_the_official_example_counts(name):
    folder = shared_file(f"glue/{GLUE[name].folder}")
    data = load_task(GLUE[name], folder)
    assert (len(data.train), len(data.dev), len(data.test)) == OFFICIAL_COUNTS[name]
    assert all(e.label is None for e in data.test) and all(e.label is not None for e in data.dev)
    assert all(e.text.strip() for e in data.train) and not data.train[0].text.startswith("\ufeff")
    if GLUE[name].pair is not None:
        assert all(e.pair is not None for e in data.dev + data.test)
    if name == "rte":
        assert sum(e.label == 0 for e in data.dev) == 146  # 146 entailment, 131 not_entailment
    if name == "stsb":
        assert min(e.label for e in data.train) == 0.0 and max(e.label for e in data.train) == 5.0
    assert data.test[-1].index == str(OFFICIAL_COUNTS[name][2] - 1)


def test_metrics_match_hand_checked_values():
    cola, mrpc, stsb = GLUE["cola"], GLUE["mrpc"], GLUE["stsb"]
    # TP 1, TN 2, FP 0, FN 1: MCC = (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3) = 0.57735
    m = task_metrics(cola, [1, 1, 0, 0], [1, 0, 0, 0])
    assert m["mcc"] == pytest.approx(2 / 12 ** 0.5) and m["accuracy"] == 0.75
    # precision 1/1, recall 1/2: F1 = 2/3
    assert task_metrics(mrpc, [1, 1, 0, 0], [1, 0, 0, 0])["f1"] == pytest.approx(2 / 3)
    # ranks (1,2,3,4) vs (1,3,2,4): Spearman = 1 - 6 * 2 / (4 * 15) = 0.8
    assert task_metrics(stsb, [1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.2, 0.4])["spearman"] == pytest.approx(0.8)
    # x = (1,2,3), y = (2,4,7): cov 5, var 2 and 38/3: Pearson = 5 / sqrt(2 * 38/3) = 0.99339
    assert task_metrics(stsb, [2.0, 4.0, 7.0], [1.0, 2.0, 3.0])["pearson"] == pytest.approx(5 / (2 * 38 / 3) ** 0.5)
    assert task_metrics(stsb, [1.0, 2.0], [3.0, 3.0]) == {"pearson": 0.0, "spearman": 0.0}  # constant: no skill


def _toy_task(folder, n=24):
    """Sentiment by one word: learnable from the text alone."""
    folder.mkdir()
    words = ["great", "awful", "fine", "dull", "superb", "boring"]
    rows = [{"review": f"the film was {w} and the cast was {w} .", "stars": "pos" if i % 2 == 0 else "neg"}
            for k in range(n // len(words)) for i, w in enumerate(words)]
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_tiny_model_learns_a_tiny_task_through_the_cli(tmp_path, tokenizer_dir, capsys):
    folder = _toy_task(tmp_path / "toy")
    out = tmp_path / "ft"
    argv = ["finetune", "--model", "none", "--tokenizer", tokenizer_dir, "--preset", "tiny", "--task", "custom",
            "--data", folder, "--text-column", "review", "--label-column", "stars", "--out", out,
            "--seeds", "1,2", "--epochs", "25", "--lr", "2e-3", "--batch-size", "8", "--no-progress", "--threads", "1"]
    can_flush = torch.set_flush_denormal(False)  # start with denormals kept
    assert main([str(a) for a in argv]) == 0
    if can_flush:  # fine-tuning flushes them, as pre-training does (they slow a trained encoder's backward)
        assert (torch.tensor(1e-40) * 2).item() == 0.0
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric"] == "accuracy" and set(report["seeds"]) == {"1", "2"}
    assert all(r["accuracy"] == 1.0 for r in report["seeds"].values())  # dev = train here: it fits
    assert report["median"] == 100.0 and report["std"] == 0.0
    assert len(report["seeds"]["1"]["per_epoch"]) == 25
    lines = (out / "predictions" / "test.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and lines[1] == "0\tpos" and lines[2] == "1\tneg"
    assert (out / "best" / "model.safetensors").is_file() and (out / "best" / "config.json").is_file()
    assert "median 100.00" in capsys.readouterr().out


def test_finetune_from_a_pretrained_run_on_a_regression_task(tmp_path, corpus, capsys):
    from tests.conftest import TINY

    run = tmp_path / "run"
    assert main([str(a) for a in ["pretrain", "--corpus", corpus, "--out", run, "--max-steps", 3, *TINY]]) == 0
    folder = tmp_path / "scores"
    folder.mkdir()
    header = "id\tfirst\tsecond\tscore\n"
    rows = "".join(f"{i}\tthe film was good\tthe film was {'good' if i % 2 else 'bad'}\t{4.5 if i % 2 else 0.5}\n"
                   for i in range(16))
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text(header + rows)
    out = tmp_path / "ft"
    argv = ["finetune", "--model", run, "--task", "custom", "--data", folder, "--text-column", "first",
            "--text-pair-column", "second", "--label-column", "score", "--regression", "--out", out,
            "--epochs", "2", "--no-progress", "--max-length", "32", "--batching", "length", "--pooling", "cls"]
    assert main([str(a) for a in argv]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["metric"] == "pearson" and "step 3" in report["model"]
    assert report["config"]["batching"] == "length"
    assert report["config"]["pooling"] == "cls"  # the flag over the small set's default (mean)
    assert set(report["seeds"]["1"]) >= {"pearson", "spearman"}
    assert not (out / "predictions" / "test.tsv").exists()  # no test file, no test predictions
    dev = (out / "predictions" / "dev.tsv").read_text().splitlines()
    assert len(dev) == 17 and all(math.isfinite(float(line.split("\t")[1])) for line in dev[1:])


def test_an_epoch_is_every_example_once_and_length_batching_pads_far_less():
    lengths = torch.randint(3, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    ids = [[5] * n for n in lengths]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    epochs = {}
    for batching in ("random", "length"):
        g = torch.Generator().manual_seed(1)
        epochs[batching] = [epoch_batches(ids, 32, g, batching) for _ in range(2)]
        for batches in epochs[batching]:
            assert len(batches) == math.ceil(1000 / 32) and sorted(i for b in batches for i in b) == list(range(1000))
            assert sorted(map(len, batches))[1:] == [32] * (len(batches) - 1)  # one short batch at most
        assert epochs[batching][0] != epochs[batching][1]  # a new draw each epoch
        assert epoch_batches(ids, 32, torch.Generator().manual_seed(1), batching) == epochs[batching][0]
    # "random" is the official cut of one permutation, as before the option existed (same results)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    assert epochs["random"][0] == [order[k:k + 32] for k in range(0, 1000, 32)]
    # the same examples are drawn; batched by length, the padding nearly goes
    assert padded(epochs["length"][0]) < 1.1 * sum(lengths) < 0.7 * padded(epochs["random"][0])
    maxima = [max(lengths[i] for i in b) for b in epochs["length"][0]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)  # the batches in random order
    with pytest.raises(UsageError, match="batching"):
        FinetuneConfig(batching="sorted")


def test_custom_spec_keeps_labels_as_written():
    spec = TaskSpec("custom", labels=("neg", "pos"))
    assert spec.num_outputs == 2 and not spec.regression


def test_mean_pooling_reads_the_real_tokens_and_reinit_redraws_only_the_top_layers():
    from electra.finetune import build_classifier

    from electra.config import ModelConfig

    model_cfg = ModelConfig(vocab_size=99, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=37,
                            embedding_size=32, max_position_embeddings=16, dropout=0.0)
    torch.manual_seed(0)
    pretrained = Classifier(model_cfg, 2, 0.0).encoder.state_dict()
    spec = GLUE["sst2"]
    cfg = FinetuneConfig(pooling="mean", reinit_layers=1, encoder_dropout=0.2)
    model = build_classifier(spec, cfg, model_cfg, pretrained).eval()
    same = {k: torch.equal(v, pretrained[k]) for k, v in model.encoder.state_dict().items()}
    assert all(same[k] for k in same if not k.startswith("layers.2."))
    assert not any(same[k] for k in same if k.startswith("layers.2.") and k.endswith("weight") and "norm" not in k)
    assert model.encoder.layers[0].hidden_dropout == 0.2
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 12, 3, 0, 0, 0]])
    mask = ids != 0
    hidden = model.encoder(ids, torch.zeros_like(ids), mask)
    want = model.head(torch.stack([hidden[0, :4].mean(0), hidden[1, :3].mean(0)]))
    torch.testing.assert_close(model(ids, torch.zeros_like(ids), mask), want)
