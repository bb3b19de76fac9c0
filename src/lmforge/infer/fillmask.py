"""Fill-mask with a registered masked LM: the top-k tokens behind each [MASK], with probabilities."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import LmforgeError
from lmforge.home import Registry


@dataclass
class Candidate:
    token: str
    """The predicted token as text."""
    token_id: int
    probability: float
    sequence: str
    """The input with this mask filled by the candidate (other masks left)."""


def fill_mask(registry: Registry, name: str, text: str, top_k: int = 5) -> list[list[Candidate]]:
    """For each mask in `text` (the tokenizer's mask token, written `[MASK]` for models trained here),
    its `top_k` candidates, most probable first."""
    import torch

    from lmforge.infer.loader import load_masked_lm

    if top_k <= 0:
        raise LmforgeError("--top-k must be positive")
    tok, model = load_masked_lm(registry, name)
    if tok.mask_token is None:
        raise LmforgeError(f"{name}'s tokenizer has no mask token; fill-mask needs a masked LM")
    if tok.mask_token not in text:
        raise LmforgeError(
            f"the text has no {tok.mask_token}; write {tok.mask_token} where a token is missing"
        )
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if tok.cls_token_id is not None and (not ids or ids[0] != tok.cls_token_id):
        ids = [tok.cls_token_id, *ids]  # models pretrained here start every sequence with [CLS]
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    if len(ids) > limit:
        raise LmforgeError(f"the text is {len(ids)} tokens; {name} reads at most {limit}")
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0]  # (T, V)
    out = []
    positions = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    for pos in positions:
        probs = logits[pos].float().softmax(-1)
        p, idx = probs.topk(min(top_k, probs.shape[0]))
        cands = []
        for prob, tid in zip(p.tolist(), idx.tolist(), strict=True):
            filled = list(ids)
            filled[pos] = tid
            seq = tok.decode([t for t in filled if t != tok.cls_token_id], skip_special_tokens=False)
            cands.append(Candidate(tok.decode([tid]), tid, round(prob, 6), seq))
        out.append(cands)
    return out
