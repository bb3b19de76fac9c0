"""`lmforge task`: answers always parse (grammar-constrained on llama.cpp, validated elsewhere), NER
offsets are checked against the input, bad input is one clear error, and a batch keeps what it has."""

from __future__ import annotations

import json

import pytest

from lmforge.home import Registry, register_local
from lmforge.tasks.engine import TaskConfig, TaskOutputError, build_messages, locate, output_schema, run


@pytest.fixture()
def home(tmp_path, monkeypatch, tiny_gguf_long) -> Registry:
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    register_local(reg, tiny_gguf_long, "tg", kind="chat")
    return reg


def backend(reg: Registry, name: str):
    from lmforge.infer.loader import load_backend

    return load_backend(reg, name)


def test_constrained_answers_always_parse_on_llamacpp(home):
    b = backend(home, "tg")
    assert b.capabilities.grammar
    r = run(b, "sentiment", "这家店的服务太差了", TaskConfig(max_tokens=64))
    assert r["label"] in ("positive", "negative", "neutral") and 0 <= r["score"] <= 1 and r["tries"] == 1
    r = run(b, "classify", "The match ended 2-1.", TaskConfig(labels=["sport", "finance"], max_tokens=64))
    assert r["label"] in ("sport", "finance")
    text = "张三在北京的清华大学工作"
    r = run(b, "ner", text, TaskConfig(labels=["PER", "LOC", "ORG"], max_tokens=96))
    assert all(
        text[e["start"] : e["end"]] == e["text"] and e["label"] in ("PER", "LOC", "ORG")
        for e in r["entities"]
    )
    assert isinstance(
        r["dropped"], int
    )  # a tiny model invents: what is not in the text is dropped, not placed
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = run(b, "extract", "I live in Paris.", TaskConfig(schema=schema, max_tokens=160, cot=True))
    assert isinstance(r["city"], str) and "reasoning" in r


def test_a_model_that_never_writes_json_fails_with_its_last_output(home):
    from lmforge.infer.loader import LoadConfig, load_backend

    b = load_backend(home, "tg", LoadConfig(backend="transformers"))  # the same weights, no grammar
    assert not b.capabilities.grammar
    with pytest.raises(TaskOutputError, match="no valid answer after 2 tries .*last raw output") as e:
        run(b, "sentiment", "great food", TaskConfig(retries=1, max_tokens=8))
    assert isinstance(e.value.raw, str)


def test_ner_offsets_are_found_in_the_input_and_inventions_dropped():
    text = "北京和上海，北京再次出现"
    ents, dropped = locate(text, [{"text": "北京", "label": "LOC"}, {"text": "上海", "label": "LOC"},
                                  {"text": "北京", "label": "LOC"}, {"text": "东京", "label": "LOC"}])  # fmt: skip
    assert [(e["start"], e["end"]) for e in ents] == [(0, 2), (3, 5), (6, 8)] and dropped == 1


def test_prompt_strategies_are_data(tmp_path):
    cfg = TaskConfig(labels=["体育", "财经"], examples=[{"text": "股市大涨", "output": {"label": "财经", "score": 0.9}}],
                     system="你是新闻编辑。", cot=True)  # fmt: skip
    msgs = build_messages("classify", "球队赢了", cfg)
    assert msgs[0]["content"].startswith("你是新闻编辑。") and "reasoning" in msgs[0]["content"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"] and "股市大涨" in msgs[1][
        "content"
    ]
    assert list(output_schema("classify", cfg)["properties"]) == ["reasoning", "label", "score"]
    assert (
        "Classify the text"
        in build_messages("classify", "The team won", TaskConfig(labels=["a"]))[1]["content"]
    )
    own = tmp_path / "t.yaml"
    own.write_text(
        "sentiment:\n  en:\n    system: Be brief.\n    user: 'Mood of: {text}'\n", encoding="utf-8"
    )
    msgs = build_messages("sentiment", "nice", TaskConfig(templates=str(own)))
    assert msgs[1]["content"] == "Mood of: nice" and msgs[0]["content"].startswith("Be brief.")


def test_cli_bad_input_and_batch(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    assert cli(["task", "classify", "tg", "text"]) == 2
    assert "classify needs --labels" in capsys.readouterr().err
    assert cli(["task", "sentiment", "tg", ""]) == 2
    assert "the text is empty" in capsys.readouterr().err
    assert cli(["task", "translate", "tg", "hi", "--to", "xx"]) == 2
    assert "unsupported language code 'xx'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"type": "nonsense"}')
    assert cli(["task", "extract", "tg", "x", "--schema", str(tmp_path / "bad.json")]) == 2
    assert "not a valid JSON Schema" in capsys.readouterr().err
    (tmp_path / "gbk.txt").write_bytes("这家店很好".encode("gb18030"))
    assert cli(["task", "sentiment", "tg", "--file", str(tmp_path / "gbk.txt")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    batch = tmp_path / "items.jsonl"
    batch.write_text('{"text": "good"}\n{"text": ""}\nnot json\n{"text": "bad"}\n', encoding="utf-8")
    assert cli(["task", "sentiment", "tg", "--jsonl", str(batch)]) == 0
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert [x["line"] for x in lines] == [1, 4] and all(
        x["label"] in ("positive", "negative", "neutral") for x in lines
    )
    assert (
        "line 2: the text is empty" in out.err
        and "line 3:" in out.err
        and "2 of 4 items done, 2 failed" in out.err
    )
    assert cli(["task", "sentiment", "tg", "nice", "--show-prompt", "--json"]) == 0
    out = capsys.readouterr()
    assert "[system]" in out.err and "[user]" in out.err and json.loads(out.out)["label"]


def test_api_tasks_endpoint_with_its_scope(tmp_path, tiny_gguf_long):
    """POST /v1/tasks/{task} returns what `--json` prints; it needs the `tasks` scope; a batch keeps the
    items that worked and reports the others in place."""
    import httpx
    from conftest import LiveServer, make_server

    from lmforge.serve.auth import KeyStore
    from lmforge.serve.context import ServerSettings

    home = tmp_path / "srv"
    keys = KeyStore(home / "keys.sqlite")
    worker = keys.create("worker", ("tasks",))
    chatter = keys.create("chatter", ("chat",))
    app = make_server(home, tiny_gguf_long, keys=keys, ctx=2048,
                      settings=ServerSettings(host="0.0.0.0", max_body_bytes=1 << 20))  # fmt: skip
    with LiveServer(app) as srv:
        url = srv.url + "/v1/tasks/"
        auth = {"Authorization": f"Bearer {worker}"}
        body = {"model": "tiny", "text": "张三在北京工作", "labels": ["PER", "LOC"], "max_tokens": 96}
        r = httpx.post(url + "ner", json=body, headers=auth, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()
        assert set(got) >= {"entities", "dropped"}
        assert all(body["text"][e["start"] : e["end"]] == e["text"] for e in got["entities"])
        r = httpx.post(url + "ner", json=body, headers={"Authorization": f"Bearer {chatter}"}, timeout=60)
        assert r.status_code == 403
        r = httpx.post(url + "classify", json={"model": "tiny", "text": "x"}, headers=auth, timeout=60)
        assert r.status_code == 400 and "needs --labels" in r.text
        assert (
            httpx.post(url + "poetry", json={"model": "tiny", "text": "x"}, headers=auth).status_code == 404
        )
        batch = {"model": "tiny", "texts": ["good", "", "bad"], "max_tokens": 48}
        r = httpx.post(url + "sentiment", json=batch, headers=auth, timeout=120)
        res = r.json()
        assert (
            r.status_code == 200 and res["failed"] == 1 and "the text is empty" in res["results"][1]["error"]
        )
        assert res["results"][0]["label"] in ("positive", "negative", "neutral")


def test_a_text_longer_than_the_context_is_split_and_merged(tmp_path, tiny_gguf_long):
    """A text longer than the 2048-token context is processed in pieces; NER offsets come back in the
    whole text's coordinates, and the answer says how many pieces there were."""
    from lmforge.infer.loader import load_backend
    from lmforge.tasks.engine import split_text

    pieces = split_text("第一句。第二句很长很长。第三句！", 8)
    assert "".join(p for _, p in pieces) == "第一句。第二句很长很长。第三句！" and all(
        len(p) <= 8 for _, p in pieces
    )
    assert pieces[0][0] == 0 and all(
        a[0] + len(a[1]) == b[0] for a, b in zip(pieces, pieces[1:], strict=False)
    )
    reg = Registry(tmp_path / "h")
    register_local(reg, tiny_gguf_long, "long", kind="chat")
    b = load_backend(reg, "long")
    text = " ".join(f"Alice met Bob in Paris on day {i}." for i in range(200))
    assert len(b.tokenize(text)) > b.context_length
    r = run(b, "ner", text, TaskConfig(labels=["PER", "LOC"], max_tokens=96, lang="en"))
    assert r["chunks"] > 1
    assert all(text[e["start"] : e["end"]] == e["text"] for e in r["entities"])


NEWS = (["球队在比赛中以三比一获胜，球迷欢呼。", "这名前锋本赛季进球最多，教练很满意。", "篮球联赛决赛今晚开打，门票售罄。",
         "运动员在马拉松比赛中打破了纪录。", "足球俱乐部签下了新的守门员。"]
        + ["股市今天大幅上涨，银行股领涨。", "央行宣布降息，债券收益率下降。", "公司公布季度财报，利润增长两成。",
           "投资者担心通货膨胀，黄金价格上涨。", "人民币汇率保持稳定，外汇储备增加。"]
        + ["The team won the match and the fans cheered.", "The striker scored the most goals this season.",
           "The basketball final sold out its tickets.", "The runner broke the marathon record.",
           "The football club signed a new goalkeeper."]
        + ["Stocks rose sharply today, led by bank shares.", "The central bank cut interest rates; bond yields fell.",
           "The company reported quarterly profit growth.", "Investors worried about inflation pushed gold up.",
           "The currency stayed stable as reserves grew."])  # fmt: skip


def test_topics_and_clusters(tmp_path, capsys):
    """LDA topics (jieba for Chinese) and k-means clusters of E5 embeddings with a 2-D map; bad input."""
    from lmforge.cli import main as cli
    from lmforge.rag.embed import load_embedder
    from lmforge.tasks.topics import cluster, documents, topics, words

    assert words("股市今天大幅上涨 and the stocks rose") == ["股市", "今天", "大幅", "上涨", "stocks", "rose"]
    path = tmp_path / "news.txt"
    path.write_text("\n\n".join(NEWS), encoding="utf-8")
    docs = documents(str(path), None)
    assert len(docs) == 20 and docs[0] == ("news.txt:1", NEWS[0])
    t = topics(docs, 2)
    assert len(t["topics"]) == 2 and sum(x["size"] for x in t["topics"]) == 20
    assert (
        all(len(x["terms"]) == 10 and x["documents"] for x in t["topics"]) and topics(docs, 2) == t
    )  # seeded
    emb = load_embedder("multilingual-e5-small")
    c = cluster(docs, 4, emb.passages, tmp_path / "map", label=lambda texts: f"{len(texts)} central")
    assert sum(x["size"] for x in c["clusters"]) == 20 and all(
        x["label"] == f"{min(5, x['size'])} central" for x in c["clusters"]
    )
    # measured: E5 separates the languages first (no cluster mixes zh and en), then subjects
    lang = {f"news.txt:{i}": i <= 10 for i in range(1, 21)}
    assert all(len({lang[d] for d in x["members"]}) == 1 for x in c["clusters"])
    assert (tmp_path / "map" / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "map" / "clusters.html").read_text().count("<circle") == 20
    assert cli(["task", "topics", str(path), "--k", "30"]) == 2
    assert "20 documents cannot make 30 groups" in capsys.readouterr().err
    assert cli(["task", "topics", "--k", "2"]) == 2
    assert "PATH" in capsys.readouterr().err
    assert cli(["task", "topics", str(path), "--k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["topics"]) == 2


def test_few_shot_examples_drawn_at_random_or_by_similarity():
    """--shots K of the examples: a draw seeded by the text, or the nearest by E5 similarity."""
    from lmforge.tasks.engine import choose_examples

    pool = [{"text": t, "output": {"label": lab, "score": 1.0}} for t, lab in (
        ("球队赢得了比赛", "体育"), ("股市今天大涨", "财经"), ("The team won the final", "体育"),
        ("新款手机发布", "科技"), ("央行宣布降息", "财经"), ("芯片性能提升一倍", "科技"))]  # fmt: skip
    cfg = TaskConfig(labels=["体育", "财经", "科技"], examples=pool, shots=2)
    a = choose_examples("银行利率下调", cfg)
    assert len(a) == 2 and a == choose_examples("银行利率下调", cfg)  # seeded by the text: reproducible
    similar = choose_examples("银行利率下调，股市上涨", TaskConfig(examples=pool, shots=2, pick="similar"))
    assert {ex["output"]["label"] for ex in similar} == {"财经"}  # the two finance examples
    msgs = build_messages(
        "classify", "银行利率下调", TaskConfig(labels=["体育", "财经"], examples=pool, shots=3)
    )
    assert [m["role"] for m in msgs].count("assistant") == 3
