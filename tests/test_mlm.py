"""The masked-LM baseline (BERT's objective at the discriminator's size)."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from electra.cli import main
from electra.config import ObjectiveConfig, preset_config
from electra.noise import draw_noise, example_keys
from electra.objective import MaskedLM, mask_tokens
from electra.tokenizer import MASK_ID
from tests.conftest import make_sst2, press_ctrl_c_in_step


def test_mlm_masking_is_80_10_10_over_a_large_seeded_sample():
    B, T, V = 4000, 64, 1000
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, T), generator=g)
    noise = draw_noise(example_keys(1, range(B)), T, 10, "cpu")
    m = mask_tokens(ids, noise.select, noise.keep, 0.15, 0.8, 0.1, noise.sample, V)
    shown = m.input_ids.gather(1, m.positions)[m.weights]
    original = m.originals[m.weights]
    n = len(shown)
    assert n == B * round(0.15 * T)
    as_mask = (shown == MASK_ID).float().mean()
    kept = (shown == original).float().mean()
    replaced = ((shown != MASK_ID) & (shown != original)).float().mean()
    # 40,000 predictions: a share's standard error is at most 0.0025
    assert abs(as_mask - 0.8) < 0.01 and abs(replaced - 0.1 * (1 - 1 / (V - 5))) < 0.01
    assert abs(kept - 0.1) < 0.01
    assert int(shown.min()) >= 4 and int(shown[shown != MASK_ID].min()) >= 5  # never another special
    outside = torch.ones_like(ids, dtype=torch.bool).scatter(1, m.positions, ~m.weights)
    assert torch.equal(m.input_ids[outside], ids[outside])  # unchosen tokens untouched


def test_mlm_loss_counts_only_the_chosen_positions():
    model_cfg = preset_config("tiny").model
    from dataclasses import replace

    model_cfg = replace(model_cfg, vocab_size=120, hidden_size=32, num_layers=2, num_heads=2,
                        intermediate_size=37, embedding_size=24, max_position_embeddings=32)
    torch.manual_seed(0)
    model = MaskedLM(model_cfg, ObjectiveConfig(kind="mlm")).eval()
    ids = torch.randint(5, 120, (3, 32))
    types, mask = torch.zeros_like(ids), torch.ones_like(ids, dtype=torch.bool)
    noise = draw_noise(example_keys(7, range(3)), 32, 5, "cpu")
    out = model(ids, types, mask, noise)
    m = mask_tokens(ids, noise.select, noise.keep, 0.15, 0.8, 0.1, noise.sample, 120)
    logits = model.generator(m.input_ids, types, mask)  # every position
    chosen = torch.zeros_like(ids, dtype=torch.bool).scatter(1, m.positions, m.weights)
    by_hand = F.cross_entropy(logits[chosen], ids[chosen])
    assert torch.allclose(out.loss, by_hand, atol=1e-5)
    assert out.disc_logits is None and chosen.sum() < ids.numel() / 5


def test_mlm_pretrains_evaluates_and_fine_tunes_through_the_cli(tmp_path, corpus, capsys):
    from tests.conftest import TINY

    run = tmp_path / "mlm"
    assert main([str(a) for a in ["pretrain", "--corpus", corpus, "--out", run, "--objective", "mlm",
                                  "--max-steps", 4, *TINY]]) == 0
    assert "masked LM" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["objective"]["kind"] == "mlm"
    assert main(["evaluate", "--model", str(run), "--corpus", str(corpus), "--json", "--max-examples", "20"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["gen_accuracy"] <= 1 and "disc_auc" not in metrics
    assert main(["detect", "--model", str(run), "hello"]) == 2
    assert "trained a masked LM" in capsys.readouterr().err
    folder = tmp_path / "task"
    folder.mkdir()
    rows = "".join(json.dumps({"t": f"the film was {w}", "y": w}) + "\n" for w in ("good", "bad") * 4)
    (folder / "train.jsonl").write_text(rows)
    (folder / "dev.jsonl").write_text(rows)
    argv = ["finetune", "--model", run, "--task", "custom", "--data", folder, "--text-column", "t",
            "--label-column", "y", "--out", tmp_path / "ft", "--epochs", "1", "--no-progress", "--max-length", "32"]
    assert main([str(a) for a in argv]) == 0
    assert "step 4" in json.loads((tmp_path / "ft" / "metrics.json").read_text())["model"]


def test_report_renders_runs_with_figures_and_the_results_table(tmp_path, corpus, capsys):
    import re

    from electra.report import write_report
    from tests.conftest import TINY

    runs = []
    for kind in ("electra", "mlm"):
        run = tmp_path / kind
        argv = ["pretrain", "--corpus", corpus, "--out", run, "--objective", kind, "--max-steps", 6,
                "--eval-every", 3, *TINY, "--set", "train.log_every=2"]
        assert main([str(a) for a in argv]) == 0
        runs.append(run)
    results = {"electra": {"metric": "accuracy", "median": 81.5, "seeds": [80.25, 81.5, 82.0]}}
    page = write_report(runs, tmp_path / "report", results)
    text = page.read_text()
    names = {"losses", "accuracy", "heldout", "schedule", "heldout_vs_elapsed", "heldout_vs_flops"}
    assert {p.stem for p in (tmp_path / "report").glob("*.png")} == names
    assert len(re.findall(r"src='data:image/png;base64,", text)) == len(names)  # no network needed
    assert "<td>81.50</td><td>80.25, 81.50, 82.00</td>" in text
    rows = re.findall(r"<tr><td>(\w+) \((\w+)\)</td><td>(\d+)</td>", text)
    assert rows == [("electra", "electra", "6"), ("mlm", "mlm", "6")]
    assert main(["report", str(runs[0])]) == 0 and (runs[0] / "report" / "report.html").is_file()

    # fine-tuning outputs as rows of the table, from the command line
    finetuned = tmp_path / "ft"
    finetuned.mkdir()
    metrics = {"task": "sst2", "metric": "accuracy", "median": 75.0,
               "seeds": {"1": {"accuracy": 0.7}, "2": {"accuracy": 0.75}, "3": {"accuracy": 0.8}}}
    (finetuned / "metrics.json").write_text(json.dumps(metrics))
    argv = ["report", *map(str, runs), "--out", str(tmp_path / "r2"), "--finetuned", f"mlm={finetuned}"]
    assert main(argv) == 0
    assert "<td>mlm</td><td>accuracy</td><td>75.00</td><td>70.00, 75.00, 80.00</td>" in (
        tmp_path / "r2" / "report.html").read_text()
    assert main(["report", str(runs[0]), "--finetuned", str(finetuned)]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["report", str(runs[0]), "--finetuned", f"x={tmp_path}"]) == 2
    assert "give the --out of `electra finetune`" in capsys.readouterr().err


# a model small enough for a comparison in seconds
COMPARE_TINY = ["--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.intermediate_size=37",
                "--set", "model.embedding_size=24", "--set", "data.seq_len=32", "--set", "train.batch_size=8",
                "--set", "data.vocab_size=200", "--set", "model.max_position_embeddings=32", "--set", "train.eval_every=2"]


def _compare_argv(corpus, glue, out):
    tiny = [*COMPARE_TINY, "--set", "train.threads=1", "--set", "train.max_steps=4"]
    return [str(a) for a in ["compare", "--corpus", corpus, "--budget", "10m", "--task", "sst2", "--data", glue,
                             "--out", out, "--seeds", "1,2", "--epochs", "1", "--no-progress", *tiny]]


def test_compare_pretrains_both_fine_tunes_three_and_reports(tmp_path, corpus, capsys):
    make_sst2(tmp_path / "glue" / "SST-2")
    out = tmp_path / "cmp"
    assert main(_compare_argv(corpus, tmp_path / "glue", out)) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results) == {"electra", "mlm", "scratch"}
    for name, r in results.items():
        assert len(r["seeds"]) == 2 and r["median"] == sorted(r["seeds"])[0] / 2 + sorted(r["seeds"])[1] / 2
    assert results["electra"]["pretrain_steps"] == results["mlm"]["pretrain_steps"] == [4]
    assert results["electra"]["pretrain_flops"] > results["mlm"]["pretrain_flops"] > 0  # + the generator
    assert results["scratch"]["pretrain_flops"] == 0
    text = (out / "report.html").read_text()
    assert f"<td>{results['mlm']['median']:.2f}</td>" in text and (out / "heldout_vs_flops.png").is_file()


def test_an_interrupted_compare_fine_tunes_nothing_and_the_same_command_continues(tmp_path, corpus, capsys,
                                                                                   monkeypatch):
    make_sst2(tmp_path / "glue" / "SST-2")
    out = tmp_path / "cmp"
    argv = _compare_argv(corpus, tmp_path / "glue", out)
    press_ctrl_c_in_step(monkeypatch, 2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "stopped at step 2 of 4 (checkpoint saved); give the same command again" in err
    # the first run stopped with its checkpoint; no other run started and nothing was fine-tuned
    # (a part-trained run fine-tuned would be reported, and kept, as finished)
    assert [p.name for p in (out / "runs").iterdir()] == ["electra-s0"]
    assert (out / "runs" / "electra-s0" / "checkpoints" / "step-00000002").is_dir()
    assert not (out / "finetune").exists() and not (out / "results.json").exists()
    monkeypatch.undo()
    # the preset changed meanwhile (a new `tiny`): the run is not continued with other settings
    from electra.presets import PRESETS
    monkeypatch.setitem(PRESETS["tiny"], "train.word_lr_scale", 0.7)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "electra-s0' started with other settings than this comparison asks now (train.word_lr_scale" in err
    assert "-> 0.7; has the preset changed?)" in err
    assert not (out / "runs" / "electra-s0" / "checkpoints" / "step-00000003").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["electra"]["pretrain_steps"] == results["mlm"]["pretrain_steps"] == [4]
    assert all(len(r["seeds"]) == 2 for r in results.values())


def test_sigterm_to_compare_with_an_idle_worker_checkpoints_the_running_arm_and_exits_130(tmp_path, corpus):
    """`kill` of a `--jobs 2` comparison whose other worker has finished its job and waits for none:
    the idle worker must not die holding the pool's queue (that broke the pool, killed the running
    arm without its checkpoint and left the command hanging)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from electra.checkpoint import checkpoint_name, latest_checkpoint

    make_sst2(tmp_path / "glue" / "SST-2")
    out = tmp_path / "cmp"
    argv = ["compare", "--corpus", corpus, "--budget", "10m", "--task", "sst2", "--data", tmp_path / "glue",
            "--out", out, "--arm", "quick:train.max_steps=2", "--arm", "long:train.max_steps=100000",
            "--seeds", "1", "--jobs", "2", "--no-progress", *COMPARE_TINY, "--set", "train.threads=1"]
    proc = subprocess.Popen([sys.executable, "-m", "electra", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    quick, long = out / "runs" / "quick-s0", out / "runs" / "long-s0"
    try:
        while not ((quick / "checkpoints" / checkpoint_name(2)).is_dir() and (long / "metrics.jsonl").is_file()
                   and (long / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(1)  # the quick job has returned: its worker waits, idle, for another
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:  # nothing left behind, workers included, if it hangs
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    stopped = int(latest_checkpoint(long).name[5:])
    assert 0 < stopped < 100000
    assert f"long-s0 stopped at step {stopped} of 100000 (checkpoint saved)" in output
    assert int(latest_checkpoint(quick).name[5:]) == 2 and not (out / "finetune").exists()


def test_compare_at_equal_flops_with_pretraining_seeds_an_lr_grid_and_a_subset(tmp_path, corpus, capsys):
    glue = make_sst2(tmp_path / "SST-2", copies=3)
    out = tmp_path / "cmp"
    argv = ["compare", "--corpus", corpus, "--budget", "3e9", "--task", "sst2", "--data", glue, "--out", out,
            "--arm", "electra", "--arm", "wide:objective.generator_size=1.0", "--arm", "scratch",
            "--arm", "cls:finetune.pooling=cls,finetune.reinit_layers=1",
            "--pretrain-seeds", "1,2", "--seeds", "1", "--lrs", "1e-3,3e-3", "--train-size", "20", "--epochs", "1",
            "--jobs", "2", "--no-progress", *COMPARE_TINY]
    assert main([str(a) for a in argv]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results) == {"electra", "wide", "scratch", "cls"}
    for name, r in results.items():
        assert len(r["seeds"]) == 2  # 2 pre-training seeds x 1 fine-tuning seed (scratch: 2 seeds)
        assert set(r["median_by_lr"]) == {"0.001", "0.003"} and r["median"] == max(r["median_by_lr"].values())
    # equal FLOPs: the wider generator costs more a step, so it trains fewer steps
    flops_per_step = {n: results[n]["pretrain_flops"] / results[n]["pretrain_steps"][0] for n in ("electra", "wide")}
    assert results["wide"]["pretrain_steps"][0] < results["electra"]["pretrain_steps"][0]
    for n in ("electra", "wide"):
        assert 3e9 - flops_per_step[n] < results[n]["pretrain_flops"] <= 3e9
        assert len(set(results[n]["pretrain_steps"])) == 1 and len(results[n]["heldout"]) == 2
    report = json.loads((out / "finetune" / "electra-s1" / "lr0.001" / "metrics.json").read_text())
    assert report["train_examples"] == 20 and report["config"]["pooling"] == "mean"  # a small set's default
    # an arm that differs in fine-tuning only shares the pre-training runs
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["electra-s1", "electra-s2", "wide-s1", "wide-s2"]
    cls = json.loads((out / "finetune" / "cls-s2" / "lr0.003" / "metrics.json").read_text())
    assert cls["config"]["pooling"] == "cls" and cls["config"]["reinit_layers"] == 1
    # the same command again: everything is done already, nothing is retrained
    stamp = (out / "runs" / "wide-s2" / "metrics.jsonl").stat().st_mtime_ns
    assert main([str(a) for a in argv]) == 0
    assert (out / "runs" / "wide-s2" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert json.loads((out / "results.json").read_text())["results"] == results
    # a third pre-training seed extends it: only the new cells run, and scratch (a fine-tuning seed
    # per pre-training seed) is fine-tuned again, whole, with the same results for its first seeds
    scratch = out / "finetune" / "scratch-sNone" / "lr0.001" / "metrics.json"
    before = json.loads(scratch.read_text())["seeds"]
    extended = [str(a) for a in argv]
    extended[extended.index("1,2")] = "1,2,3"
    assert main(extended) == 0
    assert (out / "runs" / "wide-s2" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["electra-s1", "electra-s2", "electra-s3",
                                                                "wide-s1", "wide-s2", "wide-s3"]
    assert all(len(r["seeds"]) == 3 for r in json.loads((out / "results.json").read_text())["results"].values())
    after = json.loads(scratch.read_text())["seeds"]
    assert set(after) == {"1", "1001", "2001"} and all(after[s] == before[s] for s in before)
    assert json.loads((out / "compare.json").read_text())["pretrain_seeds"] == [1, 2, 3]
    # other settings are not an extension: refused, the comparison untouched
    changed = [*extended[:extended.index("3e9")], "4e9", *extended[extended.index("3e9") + 1:]]
    assert main(changed) == 2
    assert "holds a comparison with other settings" in capsys.readouterr().err
    assert json.loads((out / "compare.json").read_text())["budget"] == "3e9"
    # a new arm goes after the others (one in front would rename the runs it shares)
    assert main([*extended[:extended.index("--arm")], "--arm", "first:objective.generator_size=0.5",
                 *extended[extended.index("--arm"):]]) == 2
    assert "--arm after the others" in capsys.readouterr().err
