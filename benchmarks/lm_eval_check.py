"""Our evaluation numbers vs EleutherAI lm-evaluation-harness, same tiny model, same data, one run.

    python benchmarks/lm_eval_check.py [--mc examples/eval/mc-mixed.jsonl] [--ppl examples/eval/en-ppl.jsonl]

Builds a tiny Qwen2 (2 layers, hidden 64, byte-level BPE trained on the bundled corpus, a few
hundred training steps so the probabilities are not uniform), saves it as a Hugging Face folder,
then scores
- a multiple-choice task (acc, acc_norm) — lm-eval `output_type: multiple_choice`;
- a perplexity text set (bits per byte) — lm-eval `output_type: loglikelihood_rolling`;
with lmforge's harness (transformers backend) and with `lm_eval.simple_evaluate(model="hf")` on
the same fp32 weights. Texts are kept within one window so both tools score every token with the
same left context. Needs `pip install lm-eval`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(out: Path, corpus: list[str]) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lmforge.tokenizer.bpe import BPEConfig, train_bpe

    train_bpe(corpus, out, BPEConfig(vocab_size=2000, min_frequency=2))
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    ids = torch.tensor(tok("\n".join(corpus))["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        starts = torch.randint(0, len(ids) - 129, (8,))
        batch = torch.stack([ids[s : s + 128] for s in starts])
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def task_yaml(folder: Path, mc: Path, ppl: Path) -> None:
    (folder / "lmf_mc.yaml").write_text(f"""task: lmf_mc
dataset_path: json
dataset_kwargs:
  data_files: {{test: {mc}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    (folder / "lmf_ppl.yaml").write_text(f"""task: lmf_ppl
dataset_path: json
dataset_kwargs:
  data_files: {{test: {ppl}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: "{{{{text}}}}"
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
  - metric: byte_perplexity
""")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mc", type=Path, default=ROOT / "examples/eval/mc-mixed.jsonl")
    ap.add_argument("--ppl", type=Path, default=ROOT / "examples/eval/en-ppl.jsonl")
    ap.add_argument("--ppl-items", type=int, default=5)
    args = ap.parse_args(argv)
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lmforge.eval.harness import EvalConfig, Scorer, load_suite, run_suite
    from lmforge.infer.hf import TransformersBackend

    tmp = Path(tempfile.mkdtemp(prefix="lmforge-lmeval-"))
    try:
        corpus = [
            json.loads(x)["text"]
            for x in (ROOT / "examples/eval/en-ppl.jsonl").read_text().splitlines()
            if x.strip()
        ]
        corpus += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples/rag/docs").glob("*.md"))]
        model_dir = tiny_model(tmp / "model", corpus)
        backend = TransformersBackend(model_dir, model_name="tiny", n_threads=2)
        scorer = Scorer(backend, chat=False)
        # keep each perplexity text within one window (both tools then give every token full left context)
        ppl_rows = [json.loads(x) for x in args.ppl.read_text().splitlines() if x.strip()][: args.ppl_items]
        for r in ppl_rows:
            while len(scorer.tokens(r["text"])) > 1000:
                r["text"] = r["text"][: int(len(r["text"]) * 0.8)]
        data = tmp / "data"
        data.mkdir()
        (data / "ppl.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ppl_rows))
        shutil.copy(args.mc, data / "mc.jsonl")
        (data / "mc.yaml").write_text("name: mc\ntask: multiple_choice\ndata: mc.jsonl\nprompt: \"Question: {question}\\nAnswer:\"\n"
                                      "metrics: [accuracy, accuracy_norm]\n")  # fmt: skip
        (data / "ppl.yaml").write_text(
            "name: ppl\ntask: perplexity\ndata: ppl.jsonl\nmetrics: [perplexity, bits_per_byte]\n"
        )
        ours_mc = run_suite(scorer, load_suite(data / "mc.yaml"), "tiny", EvalConfig())
        ours_ppl = run_suite(scorer, load_suite(data / "ppl.yaml"), "tiny", EvalConfig(window=2048))
        tasks = tmp / "tasks"
        tasks.mkdir()
        task_yaml(tasks, data / "mc.jsonl", data / "ppl.jsonl")
        res = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["lmf_mc", "lmf_ppl"],
            task_manager=TaskManager(include_path=str(tasks)), batch_size=1, device="cpu",
        )["results"]  # fmt: skip
        rows = [
            ("multiple choice: acc", ours_mc.metrics["accuracy"], res["lmf_mc"]["acc,none"]),
            ("multiple choice: acc_norm", ours_mc.metrics["accuracy_norm"], res["lmf_mc"]["acc_norm,none"]),
            (
                "perplexity text: bits_per_byte",
                ours_ppl.metrics["bits_per_byte"],
                res["lmf_ppl"]["bits_per_byte,none"],
            ),
        ]
        print(
            f"\ntiny Qwen2 (fp32, transformers), {ours_mc.n} MC questions, {ours_ppl.n} texts ({sum(r['tokens'] for r in ours_ppl.items)} tokens)"
        )
        print(f"{'metric':32} {'lmforge':>10} {'lm-eval':>10} {'|diff|':>10}")
        for name, a, b in rows:
            print(f"{name:32} {a:>10.6f} {b:>10.6f} {abs(a - b):>10.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
