"""The web console in a real browser (Debian chromium driven by Playwright), against a live server."""

import json
import os
import shutil

import httpx
import pytest
from conftest import LiveServer, cite_loader, make_server, put_lineage_chain, slow_loader

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = shutil.which("chromium") is not None
# Under CI (CI=true, as GitHub Actions and most runners set it) a missing browser is a broken
# install, and a skip would hide it: there the `browser` fixture fails instead.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(
    not HAVE_CHROMIUM and not IN_CI, reason="Debian chromium not installed (scripts/test.sh installs it)"
)

DONE = "document.querySelector('.msg.assistant') !== null && document.body.dataset.streaming === '0'"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _chromium_or_fail_under_ci():
    if not HAVE_CHROMIUM:  # only reached under CI: elsewhere the module is skipped
        pytest.fail("CI=true but Debian chromium is not installed: the web-console tests cannot run "
                    "(scripts/test.sh installs it)")  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def chat_in_console(browser, url: str, model: str, prompt: str):
    """Open the console, pick `model`, greedy with 12 tokens, send `prompt`; (page, answer text)."""
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector(f"#model-select option[value={model}]", state="attached")
    page.select_option("#model-select", model)
    page.click("#settings summary")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    # the tiny model can finish before a poll sees the streaming flag up: wait for the answer to exist and be done
    page.wait_for_function(DONE, timeout=60000)
    return page, page.inner_text(".msg.assistant .body")


def test_typed_message_streams_an_answer_and_survives_reload(live, browser):
    page, answer = chat_in_console(browser, live.url, "tiny", "The capital of France is")
    expected = httpx.post(live.url + "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "The capital of France is"}],
                          "temperature": 0, "max_tokens": 12, "top_p": 0.95}, timeout=60).json()["choices"][0]["message"]["content"]  # fmt: skip
    assert answer.strip() and answer.strip() == expected.strip()
    assert page.inner_text(".msg.user") == "The capital of France is"
    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert page.inner_text(".msg.assistant .body").strip() == answer.strip()  # kept across reloads
    assert "The capital of France" in page.inner_text("#conversations")


def test_stop_button_keeps_partial_answer(tmp_path, tiny_gguf, browser):
    with LiveServer(make_server(tmp_path / "home", tiny_gguf, loader=slow_loader(0.3))) as slow:
        _stop_in(slow, browser)


def _stop_in(live, browser):
    page = browser.new_page()
    page.goto(live.url + "/")
    page.wait_for_selector("#model-select option[value=tiny]", state="attached")
    page.click("#settings summary")
    page.fill("#max-tokens", "200")
    page.fill("#prompt", "Once upon a time")
    page.click("#send")
    page.wait_for_function("document.body.dataset.streaming === '1'")
    page.wait_for_function(
        "document.querySelector('.msg.assistant .body').textContent.length > 0", timeout=30000
    )
    page.click("#stop")
    page.wait_for_function("document.body.dataset.streaming === '0'", timeout=30000)
    assert page.is_visible("#send")
    text = page.inner_text(".msg.assistant .body")
    assert text.endswith("[stopped]") and len(text) > len("[stopped]")  # the partial answer is kept


def test_language_toggle_models_page_and_phone_layout(live, browser):
    page = browser.new_page(viewport={"width": 375, "height": 740}, locale="en-US")
    page.goto(live.url + "/")
    assert page.inner_text(".tab[data-view=chat]") == "Chat"
    page.click("#lang")
    assert page.inner_text(".tab[data-view=chat]") == "对话" and page.inner_text("#send") == "发送"
    assert page.is_visible("#prompt") and page.is_visible("#send")  # usable on a phone
    page.click(".tab[data-view=models]")
    page.wait_for_selector("#models-table tr[data-name=tiny]")
    assert page.inner_text("#models-table td.group >> nth=0").startswith("模型")  # grouped, in Chinese
    assert "chat" in page.inner_text("#models-table tr[data-name=tiny]")
    page.wait_for_function("document.body.dataset.lineage === 'ready'")
    assert page.is_visible("#lineage-graph g.lnode.focus")  # the list stacks above the graph on a phone


def test_knowledge_page_upload_search_ask(tmp_path, tiny_gguf_long, browser):
    """Create a KB, upload two files with progress, list, search, ask and open a cited passage."""
    app = make_server(tmp_path / "home", tiny_gguf_long, ctx=2048, loader=cite_loader,
                      extra_models=[(tiny_gguf_long, "cite")])  # fmt: skip
    with LiveServer(app) as srv:
        page = browser.new_page()
        page.goto(srv.url + "/")
        page.wait_for_selector("#model-select option[value=tiny]", state="attached")
        page.click("button.tab[data-view=kb]")
        page.fill("#kb-new-name", "office")
        page.click("#kb-create")
        page.wait_for_selector("#kb-select option[value=office]", state="attached")
        page.set_input_files("#kb-files", [
            {"name": "handbook.txt", "mimeType": "text/plain", "buffer": b"The office opens at nine o'clock every weekday."},
            {"name": "poem.md", "mimeType": "text/markdown", "buffer": "# 唐诗\n\n## 登鹳雀楼\n\n白日依山尽，黄河入海流。\n".encode()},
        ])  # fmt: skip
        page.click("#kb-upload")
        page.wait_for_function("document.body.dataset.uploading === '0'", timeout=120000)
        assert "added 2" in page.inner_text("#kb-upload-status")
        assert page.inner_text("#kb-docs tbody").count("\n") >= 1
        assert "handbook.txt" in page.inner_text("#kb-docs") and "poem.md" in page.inner_text("#kb-docs")
        page.fill("#kb-query", "黄河")
        page.click("#kb-search-btn")
        page.wait_for_selector("#kb-results li")
        assert "黄河入海流" in page.inner_text("#kb-results li >> nth=0")
        # an English search on a server without the English embedder: the notes say how to get its second opinion
        page.fill("#kb-query", "When does the office open?")
        page.click("#kb-search-btn")
        page.wait_for_selector("#kb-results li.notice")
        assert "handbook.txt" in page.inner_text("#kb-results li >> nth=0")
        assert "lmforge pull all-minilm-l6-v2" in page.inner_text("#kb-results li.notice")
        page.fill("#kb-question", "When does the office open?")
        page.click("#kb-ask-btn")
        page.wait_for_function("document.body.dataset.asking === '0'", timeout=120000)
        assert "handbook.txt" in page.inner_text("#kb-sources li >> nth=0")
        assert page.inner_text("#kb-answer").strip()
        # rewriting is on by default: the flags say what was searched (or why the question was searched as it is)
        assert page.is_checked("#kb-rewrite") and "When does the office open?" in page.inner_text(
            ".kb-rewrite-info"
        )
        page.click("#kb-sources li >> nth=0")
        assert "nine o'clock" in page.inner_text("#kb-passage")
        # a model that first answers "[1]" alone: asked again, the answer shown is the second, and the flags say so
        page.click("button.tab[data-view=chat]")  # the model is chosen on the chat page's toolbar
        page.select_option("#model-select", "cite")
        page.click("button.tab[data-view=kb]")
        page.click("#kb-ask-btn")
        page.wait_for_function("document.body.dataset.asking === '0'", timeout=120000)
        assert page.inner_text("#kb-answer").strip().startswith("The office opens at nine o'clock")
        assert "[1]" in page.inner_text(".kb-retried") and "asked again" in page.inner_text(".kb-retried")
        # the same page in Chinese
        page.click("#lang")
        assert page.inner_text("button.tab[data-view=kb]") == "知识库"


def test_evaluation_page_results_and_blind_vote(tmp_path, tiny_gguf, browser):
    from lmforge.home import Registry

    home = tmp_path / "home"
    with LiveServer(make_server(home, tiny_gguf, extra_models=[(tiny_gguf, "tiny-copy")])) as srv:
        reg = Registry(home)
        for name, ppl in (("tiny", 12.5), ("tiny-copy", 9.25)):
            reg.update(
                name,
                metrics={
                    "eval:zh-ppl": {"metrics": {"perplexity": ppl, "bits_per_byte": ppl / 10}, "config": {}}
                },
            )
        page = browser.new_page()
        page.goto(srv.url + "/")
        page.click("button.tab[data-view=eval]")
        page.wait_for_selector("#eval-table tbody tr")
        table = page.inner_text("#eval-table")
        assert "zh-ppl" in table and "12.5000" in table and "9.2500" in table
        assert page.inner_text("#eval-table td.best >> nth=0").startswith("0.9250")  # lower is better
        page.wait_for_selector("#arena-b option[value=tiny-copy]", state="attached")
        page.select_option("#arena-a", "tiny")
        page.select_option("#arena-b", "tiny-copy")
        page.fill("#arena-prompt", "The capital of France is")
        page.click("#arena-go")
        page.wait_for_function("document.body.dataset.arena === 'ready'", timeout=120000)
        assert "tiny" not in page.inner_text(".arena-answers")  # blind
        page.click("#vote-A")
        page.wait_for_function("document.body.dataset.arena === 'voted'")
        reveal = page.inner_text("#arena-reveal")
        assert "tiny" in reveal and "tiny-copy" in reveal
        page.wait_for_selector("#arena-stats tbody tr")
        assert "1 / 0 / 0" in page.inner_text("#arena-stats") or "0 / 1 / 0" in page.inner_text(
            "#arena-stats"
        )
        export = httpx.get(srv.url + "/api/arena/export").text.strip().splitlines()
        assert len(export) == 1 and set(json.loads(export[0])) == {"prompt", "chosen", "rejected"}
        r = httpx.post(srv.url + "/api/arena/pair", json={"prompt": "x", "models": ["tiny", "nope"]})
        assert r.status_code == 404
        assert (
            httpx.post(srv.url + "/api/arena/vote", json={"pair_id": "zz", "winner": "A"}).status_code == 404
        )
        assert (
            httpx.post(srv.url + "/api/arena/vote", json={"pair_id": "zz", "winner": "C"}).status_code == 400
        )


def test_console_chats_with_a_remote_model(tmp_path, tiny_gguf, live, browser):
    """A model registered with `models add-remote` (here: the `live` lmforge server on loopback)
    streams in the console like a local one, and answers what the upstream answers."""
    from lmforge.home import Registry, register_remote

    home = tmp_path / "gateway"
    app = make_server(home, tiny_gguf)
    register_remote(Registry(home), "far-tiny", live.url + "/v1", "tiny", context_length=256)
    msgs = [{"role": "user", "content": "The capital of France is"}]
    expected = httpx.post(live.url + "/v1/chat/completions", timeout=60, json={
        "model": "tiny", "messages": msgs, "temperature": 0, "max_tokens": 12, "top_p": 0.95})  # fmt: skip
    with LiveServer(app) as gw:
        _, answer = chat_in_console(browser, gw.url, "far-tiny", msgs[0]["content"])
    assert answer.strip() and answer.strip() == expected.json()["choices"][0]["message"]["content"].strip()


FOCUS = "document.querySelector('#lineage-graph g.lnode.focus')?.dataset.name === '{}'"


def test_models_page_groups_artifacts_and_draws_the_lineage(tmp_path, browser):
    """Grouped list with size and age; the selected artifact's lineage graph (ancestors, descendants,
    the diamond's extra edge, a missing parent) with its key metric; stored metrics; a long source line
    cut with an ellipsis (whole in its title) instead of widening the page; the tree API behind it."""
    from lmforge.home import Registry

    long_source = "prepare:" + ",".join(f"/srv/corpora/2026/part-{i:04d}.jsonl" for i in range(40))
    put_lineage_chain(Registry(tmp_path / "home"), corpus_source=long_source)
    with LiveServer(make_server(tmp_path / "home", None)) as srv:
        tree = httpx.get(srv.url + "/api/models/lm/lineage").json()
        assert tree["ancestors"] == ["bpe", "corpus", "gone"] and tree["missing"] == ["gone"]
        assert tree["descendants"] == ["lm-q8", "lm-chat"]
        assert [r["name"] for r in tree["roots"]] == ["gone", "corpus"]  # a missing parent is a root
        assert httpx.get(srv.url + "/api/models/nope/lineage").status_code == 404

        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.goto(srv.url + "/")
        page.click(".tab[data-view=models]")
        page.wait_for_function("document.body.dataset.lineage === 'ready'")
        groups = page.eval_on_selector_all("#models-table td.group", "tds => tds.map((td) => td.textContent)")
        assert groups == ["Datasets (1)", "Tokenizers (1)", "Models (4)"]
        row = page.inner_text("#models-table tr[data-name=lm]")
        assert all(x in row for x in ("base", "1 B", "12.3", "min ago", "val_ppl=14.23")), row

        page.click("#models-table tr[data-name=lm]")
        page.wait_for_function(FOCUS.format("lm"))
        names = page.eval_on_selector_all("#lineage-graph g.lnode", "gs => gs.map((g) => g.dataset.name)")
        assert sorted(names) == ["bpe", "corpus", "gone", "lm", "lm-chat", "lm-q8"]  # not 'unrelated'
        assert page.locator("#lineage-graph path.ledge").count() == 6  # the diamond's corpus → lm too
        assert page.get_attribute("#lineage-graph g.lnode.missing", "data-name") == "gone"
        y = {n: page.locator(f"#lineage-graph g.lnode[data-name={n}]").bounding_box()["y"] for n in names}
        assert y["corpus"] < y["bpe"] < y["lm"] < y["lm-q8"] == y["lm-chat"]  # top-down, dataset first
        assert page.text_content("#lineage-graph g.lnode[data-name=lm] text.metric") == "val_ppl=14.23"
        assert "objective=clm" in page.text_content("#lineage-graph g.lnode[data-name=lm] title")
        assert "parity greedy 4/5" in page.text_content("#lineage-graph g.lnode[data-name=lm-q8] title")
        assert "val_ppl" in page.inner_text("#md-metrics") and "14.234" in page.inner_text("#md-metrics")

        page.click("#lineage-graph g.lnode[data-name=corpus]")  # a node opens that artifact
        page.wait_for_function(FOCUS.format("corpus"))
        assert "100 documents" in page.text_content("#lineage-graph g.lnode[data-name=corpus] title")
        assert page.get_attribute("#md-source", "title") == long_source
        widths = page.eval_on_selector("#md-source", "e => [e.scrollWidth, e.clientWidth]")
        assert widths[0] > widths[1]  # cut with an ellipsis, not wrapped over the page
        assert page.eval_on_selector(".models-grid", "e => e.scrollWidth <= e.clientWidth")
        page.click("#lang")
        page.wait_for_function("document.body.dataset.lineage === 'ready'")
        assert page.inner_text("#view-models h4 >> nth=0") == "模型谱系（血缘）"
        assert page.inner_text("#models-table td.group >> nth=0") == "数据集 (1)"


def test_train_page_runs_a_pretrain_job_with_a_live_loss_curve(tmp_path, browser):
    """Start a tiny real `lmforge pretrain` job from the Train page: the job list, running state with a
    Cancel button, the loss curve (a point per step, validation dots), step/total, the finished state;
    the new model joins the chat model picker; labels in Chinese; the form follows kind and method."""
    from test_jobs import fast_pretrain, make_train_home

    from lmforge.infer.pool import ModelPool, PoolConfig
    from lmforge.jobs import JobQueue
    from lmforge.serve.app import ServerSettings, create_app
    from lmforge.serve.auth import KeyStore

    reg = make_train_home(tmp_path / "home")
    app = create_app(ServerSettings(max_body_bytes=1 << 20), reg, ModelPool(reg, PoolConfig(n_slots=1, n_threads=2)),
                     KeyStore(reg.root / "keys.sqlite"), jobs=JobQueue(reg, command=fast_pretrain(reg.root / "size.json")))  # fmt: skip
    with LiveServer(app) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.goto(srv.url + "/")
        page.click(".tab[data-view=train]")
        page.wait_for_selector("#train-data option[value=corp]", state="attached")
        assert page.is_visible("#train-file") and page.is_visible("#train-method")  # fine-tuning first
        assert page.is_visible("[data-opt=rank]") and not page.is_visible("[data-opt=virtual_tokens]")  # lora
        page.select_option("#train-kind", "pretrain")
        assert page.is_visible("#train-tokenizer") and not page.is_visible("#train-file")
        assert not page.is_visible("#train-method")
        page.select_option("#train-tokenizer", "tok")
        page.fill("#train-steps", "30")
        page.fill("#train-out", "web-lm")
        page.click("#train-start")
        page.wait_for_function("document.body.dataset.job === 'running'")
        assert page.is_visible("#jd-cancel") and "web-lm" in page.inner_text("#jobs-table tr.selected")
        page.wait_for_function("document.body.dataset.job === 'succeeded'", timeout=180000)
        points = page.get_attribute("#loss-chart polyline.chart-loss", "points").split()
        assert len(points) == 30  # one per optimizer step
        dots = page.locator("#loss-chart circle.chart-dot").count()
        assert dots == 6 + 1  # an evaluation every 5 steps, and the legend's
        assert "step 30 / 30" in page.inner_text("#jd-stats") and "tok/s" in page.inner_text("#jd-stats")
        assert "web-lm is registered" in page.inner_text("#jd-done") and not page.is_visible("#jd-cancel")
        assert '"lmforge_version"' in page.inner_text("#jd-log")
        # the new model is in the chat model picker now
        page.wait_for_selector("#model-select option[value=web-lm]", state="attached")
        page.click("#lang")
        assert page.inner_text(".tab[data-view=train]") == "训练"
        assert page.inner_text("#jobs-table tr.selected td:nth-child(3)") == "已完成"
        page.select_option("#train-kind", "finetune")
        page.select_option("#train-method", "prefix")
        assert page.is_visible("[data-opt=virtual_tokens]") and not page.is_visible("[data-opt=rank]")
        assert page.inner_text("label:has(#train-method) span") == "方法"


def test_models_page_shows_the_compression_report(tmp_path, browser):
    """A model with a stored `lmforge compress report` shows its chart and table on the Models page."""
    from lmforge.compress.report import chart
    from lmforge.home import Registry

    reg = Registry(tmp_path / "home")
    put_lineage_chain(reg)
    rows = [{"model": "lm", "variant": "hf", "format": "hf", "size_mb": 500.0, "decode_tps": 20.5, "perplexity": 10.0,
             "ppl_increase_pct": 0.0},
            {"model": "lm-q8", "variant": "gguf-q8_0", "format": "gguf", "size_mb": 140.0, "decode_tps": 61.2,
             "perplexity": 10.1, "ppl_increase_pct": 1.0}]  # fmt: skip
    png = chart("lm", rows, tmp_path / "report.png")
    reg.update("lm", metrics={"compress_report": {"rows": rows, "reference": "lm", "png": str(png)}})
    with LiveServer(make_server(tmp_path / "home", None)) as srv:
        api = httpx.get(srv.url + "/api/models/lm/compress-report").json()
        assert api["rows"] == rows and api["png_base64"]
        assert httpx.get(srv.url + "/api/models/corpus/compress-report").status_code == 404
        page = browser.new_page(locale="en-US")
        page.goto(srv.url + "/")
        page.click(".tab[data-view=models]")
        page.wait_for_selector("#models-table tr[data-name=lm]")
        page.click("#models-table tr[data-name=lm]")
        page.wait_for_function("document.body.dataset.compress === 'ready'")
        table = page.inner_text("#md-compress-table")
        assert "gguf-q8_0" in table and "61.2" in table and "+1%" in table
        assert page.eval_on_selector("#md-compress-png", "img => img.complete && img.naturalWidth > 100")
        page.click("#models-table tr[data-name=corpus]")
        page.wait_for_function("document.querySelector('#md-compress').hidden")


def test_tasks_page_runs_ner_and_marks_entities_where_the_offsets_say(tmp_path, tiny_gguf_long, browser):
    with LiveServer(make_server(tmp_path / "home", tiny_gguf_long, ctx=2048)) as srv:
        page = browser.new_page(locale="en-US")
        page.goto(srv.url + "/")
        page.click("button.tab[data-view=tasks]")
        page.wait_for_selector("#task-model option[value=tiny]", state="attached")
        text = "张三在北京的清华大学工作"
        page.select_option("#task-name", "ner")
        page.fill("#task-labels", "PER,LOC,ORG")
        page.fill("#task-text", text)
        page.click("#task-go")
        page.wait_for_function("document.body.dataset.task === 'ready'", timeout=120000)
        result = json.loads(page.inner_text("#task-json"))
        marks = page.eval_on_selector_all(
            "#task-view mark.ent", "ms => ms.map((m) => [m.textContent, m.dataset.label])"
        )
        assert marks == [[e["text"], e["label"]] for e in result["entities"]]
        assert all(text[e["start"] : e["end"]] == e["text"] for e in result["entities"])
        assert page.inner_text("#task-view").replace("\n", "").startswith(text[:1]) or not result["entities"]
        page.select_option("#task-name", "sentiment")
        page.fill("#task-text", "这家店的服务太差了")
        page.click("#task-go")
        page.wait_for_function(
            "document.body.dataset.task === 'ready' && document.querySelector('#task-json').textContent.includes('score')",
            timeout=120000,
        )
        assert page.inner_text("#task-view .task-label") in ("positive", "negative", "neutral")
        page.select_option("#task-name", "classify")
        page.fill("#task-labels", "")
        page.click("#task-go")
        page.wait_for_function("document.body.dataset.task === 'ready'")
        assert "needs --labels" in page.inner_text("#task-status")


def test_explain_page_shows_attention_and_attributions(tmp_path, tiny_gguf, tiny_qwen2_dir, browser):
    """The Explain tab lists HF models, draws the interactive attention page (layer/head selectors) and the
    token attributions in its frame; a GGUF model is refused with the dequantize hint."""
    app = make_server(tmp_path / "home", tiny_gguf, extra_models=[(tiny_qwen2_dir, "qwen-hf")])
    with LiveServer(app) as srv:
        page = browser.new_page(locale="en-US")
        page.goto(srv.url + "/")
        page.click("button.tab[data-view=explain]")
        page.wait_for_selector("#explain-model option[value=qwen-hf]", state="attached")
        assert page.eval_on_selector_all("#explain-model option", "os => os.map((o) => o.value)") == [
            "qwen-hf"
        ]
        page.fill("#explain-text", "The capital of France is Paris")
        page.click("#explain-go")
        page.wait_for_function("document.body.dataset.explain === 'ready'", timeout=60000)
        assert "2 × 4" in page.inner_text("#explain-status")
        frame = page.frame_locator("#explain-frame")
        assert frame.locator("select").count() >= 1 and "Paris" in frame.locator("body").inner_text()
        page.select_option("#explain-what", "tokens")
        page.click("#explain-go")
        page.wait_for_function(
            "document.body.dataset.explain === 'ready' && document.querySelector('#explain-status').textContent.includes('p=')",
            timeout=60000,
        )
        assert "capital" in page.frame_locator("#explain-frame").locator("body").inner_text()
        r = httpx.post(srv.url + "/api/explain/attention", json={"model": "tiny", "text": "hi"}, timeout=60)
        assert r.status_code == 400 and "dequantize" in r.text
        r = httpx.post(srv.url + "/api/explain/attention", json={"model": "/etc", "text": "hi"}, timeout=60)
        assert r.status_code in (400, 404)  # a folder on the server is never loaded
