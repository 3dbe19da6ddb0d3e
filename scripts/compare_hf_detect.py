"""Check an export against `electra detect --json`: the replaced-token probabilities that the
exported discriminator gives in `transformers` on the same texts. Needs `transformers` (a test
dependency, never one of the package).

    python scripts/compare_hf_detect.py --model RUN --hf DIR --file TEXTS
"""

import argparse
import json
import subprocess
import sys

import torch
from transformers import AutoModelForPreTraining, AutoTokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the run (what `electra detect` loads)")
    parser.add_argument("--hf", required=True, help="its export (`electra export --out`)")
    parser.add_argument("--file", required=True, help="one text per line")
    args = parser.parse_args()

    detect = subprocess.run([sys.executable, "-m", "electra", "detect", "--model", args.model, "--json",
                             "--top-k", "0", "--file", args.file], capture_output=True, text=True, check=True)
    results = [json.loads(line) for line in detect.stdout.splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(f"{args.hf}/discriminator", trust_remote_code=True)
    # trust_remote_code: a `tiny` run's export carries its own model code (modeling_electra_cpu.py)
    model = AutoModelForPreTraining.from_pretrained(f"{args.hf}/discriminator", trust_remote_code=True).eval()
    worst, tokens, flagged_agree = 0.0, 0, 0
    for r in results:
        enc = tokenizer(r["text"], return_tensors="pt", truncation=True)
        with torch.no_grad():
            probs = torch.sigmoid(model(**enc).logits)[0, 1:-1]  # [CLS] and [SEP] left out, as detect does
        if tokenizer.convert_ids_to_tokens(enc["input_ids"][0, 1:-1].tolist()) != r["tokens"]:
            sys.exit(f"tokens differ on {r['text'][:60]!r}")
        ours = torch.tensor(r["token_probs"])
        worst = max(worst, float((probs - ours).abs().max()))
        tokens += len(ours)
        flagged_agree += int(((probs >= 0.5) == (ours >= 0.5)).sum())
    print(f"{len(results)} texts, {tokens} tokens: identical tokens; max |p_transformers - p_detect| = "
          f"{worst:.2e}; same flag (p >= 0.5) on {flagged_agree}/{tokens} tokens")


if __name__ == "__main__":
    main()
