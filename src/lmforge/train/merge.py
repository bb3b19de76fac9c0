"""`lmforge merge ADAPTER --out NAME`: fold a LoRA/IA3 adapter into its base's full-precision weights.

Always into the unquantized base: a QLoRA adapter was trained against NF4 weights, but merging into
4-bit weights would round the update away (and peft refuses or dequantizes silently), so the base's
fp32 HF checkpoint is loaded and W + B·A·(alpha/r) is written there. The merged model keeps the base's
tokenizer, chat template and end-of-turn tokens, so `lmforge export NAME --format gguf` gives a GGUF
that answers like the adapter did; the fine-tuning prompts travel in the manifest for export's parity
check. Prefix and prompt tuning have no weights to merge: they are served as adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name

MERGEABLE = ("lora", "qlora", "ia3")


def adapter_base(registry: Registry, adapter: str) -> tuple[Manifest, Manifest]:
    """(adapter manifest, its base's HF manifest), checking the base is still the one it was trained on."""
    if not registry.exists(adapter):
        raise LmforgeError(f"unknown model {adapter!r}; `lmforge models ls` lists the registry")
    m = registry.get(adapter)
    if m.kind != "adapter":
        raise LmforgeError(
            f"{adapter} is a {m.kind} model, not an adapter (made by `lmforge finetune --method lora|...`)"
        )
    base = m.config.get("base", "")
    if not registry.exists(base):
        raise LmforgeError(f"adapter {adapter}'s base {base!r} is not in the registry any more")
    b = registry.get(base)
    want = m.config.get("base_fingerprint")
    if want and b.data_fingerprint and want != b.data_fingerprint:
        raise LmforgeError(f"adapter {adapter} was trained on a different {base} (fingerprint {want[:12]} vs "
                           f"{b.data_fingerprint[:12]}); its base does not match")  # fmt: skip
    return m, b


def attach(model: Any, adapter_dir: Path, name: str, merge: bool) -> Any:
    """`model` with the peft adapter in `adapter_dir` (merged into the weights when `merge`)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as e:  # shape mismatch: another base
        raise LmforgeError(
            f"adapter {name} does not fit this base model: {str(e).splitlines()[0][:300]}"
        ) from e
    return peft_model.merge_and_unload() if merge else peft_model.eval()


def merge_adapter(registry: Registry, adapter: str, out: str, say=print) -> Manifest:
    from lmforge.infer.hf import load_pretrained

    check_name(out)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists; pick another --out or remove it")
    m, base = adapter_base(registry, adapter)
    method = m.config.get("method")
    if method not in MERGEABLE:
        raise LmforgeError(f"{adapter} is a {method}-tuning adapter: its virtual tokens are not weights to merge; "
                           f"serve it by name (`lmforge chat {adapter}`, or the server's model list)")  # fmt: skip
    if method == "qlora":
        say(f"{adapter} was trained on 4-bit (NF4) weights; merging into {base.name}'s full-precision weights "
            f"(merging into 4-bit weights would round the update away)")  # fmt: skip
    tok, model = load_pretrained(registry.model_path(base), "causal")
    merged = attach(model, registry.artifact_dir(adapter), adapter, merge=True)
    params = sum(p.numel() for p in merged.parameters())
    manifest = Manifest(name=out, kind=base.kind, format="hf", path="", parents=[adapter], source=f"merge:{adapter}",
                        config={"merged_from": adapter, "base": base.name, "method": method,
                                "parity_prompts": m.config.get("parity_prompts", [])},
                        params=params, metrics={"before_after": m.metrics.get("before_after")})  # fmt: skip

    def fill(stage: Path) -> None:
        merged.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))

    return registry.put(manifest, fill)
