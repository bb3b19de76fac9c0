"""safety.yaml: the content rules, per-key overrides, PII handling and the classifier hook.

    enabled: true              # the whole filter
    check_input: true          # requests (prompts) are checked
    check_output: true         # model output is checked (streamed output through stream.py)
    mask_char: "*"
    audit_text: false          # audit records carry the matched text (else category and rule only)
    normalize: {nfkc: true, homoglyphs: true, casefold: true, strip_accents: true, leet: false,
                separators: true, t2s: true}
    stream: {max_hold_chars: 1024, regex_window: 64}
    categories:
      - name: gambling
        action: block           # block | mask | flag
        words: [赌博网站, online casino]
        words_file: words.txt   # one phrase per line, "#" starts a comment line; relative to this file
        regex: ['casino\\d{2,}']
        whole_words: true
    keys:                       # per API key (by its name), on top of the above
      analytics:
        actions: {gambling: flag}
        disabled: [ads]
        enabled: true
    pii:
      detectors: [id_card, phone, email, bank_card, ip]   # also: person, place
      apply_to: [logs]          # ingest | logs | output
      action: redact            # redact | flag
      style: tag                # tag ([PHONE]) | mask (*****)
    classifier:
      function: mypackage.safety:score    # fn(text) -> [(category, score), ...]
      threshold: 0.8

Every section and key is optional; each default lives on the dataclass field it fills. Loading checks
everything and reports every problem in one error, each with its line in the YAML (from the node
marks of `yaml.compose`): unknown keys, wrong types, actions that are not block/mask/flag, regexes
that do not compile, words files that do not exist, phrases that are empty after normalisation,
key overrides naming categories that do not exist, a classifier that cannot be imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lmforge.errors import LmforgeError
from lmforge.safety.normalize import NormalizeOptions, is_separator
from lmforge.safety.pii import DEFAULT_KINDS, KINDS
from lmforge.safety.rules import (
    ACTIONS,
    CLASSIFIER_THRESHOLD,
    MASK_CHAR,
    Action,
    Category,
    Classifier,
    ClassifierHook,
    RuleSet,
)
from lmforge.safety.stream import StreamOptions

PiiPlace = Literal["ingest", "logs", "output"]
PII_PLACES: tuple[PiiPlace, ...] = ("ingest", "logs", "output")


@dataclass(frozen=True)
class KeyOverride:
    """What changes for requests made with one API key."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    """Category → the action it takes for this key instead."""
    disabled: tuple[str, ...] = ()
    """Categories that do not apply to this key."""
    enabled: bool = True
    """False: no content filter at all for this key."""


@dataclass(frozen=True)
class PiiSettings:
    """Which personal data is looked for, where, and what happens to it."""

    detectors: tuple[str, ...] = DEFAULT_KINDS
    """Kinds from pii.KINDS: id_card, phone, email, bank_card, ip, person, place."""
    apply_to: tuple[PiiPlace, ...] = ("logs",)
    """ingest: documents added to knowledge bases; logs: audit and request logs; output: model answers."""
    action: Literal["redact", "flag"] = "redact"
    style: Literal["tag", "mask"] = "tag"
    """redact as [PHONE] (tag) or as one "*" per character (mask)."""


@dataclass(frozen=True)
class ClassifierSettings:
    """A scoring function `fn(text) -> [(category, score), ...]` named as `module:function`."""

    function: str
    fn: Classifier = field(compare=False, repr=False)
    threshold: float = CLASSIFIER_THRESHOLD


@dataclass(frozen=True)
class SafetyConfig:
    """A loaded safety.yaml (or the defaults: enabled, no categories)."""

    enabled: bool = True
    check_input: bool = True
    check_output: bool = True
    mask_char: str = MASK_CHAR
    audit_text: bool = False
    """Audit records keep the matched text (True) or only category and rule (False)."""
    normalize: NormalizeOptions = field(default_factory=NormalizeOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    categories: tuple[Category, ...] = ()
    keys: Mapping[str, KeyOverride] = field(default_factory=dict)
    pii: PiiSettings = field(default_factory=PiiSettings)
    classifier: ClassifierSettings | None = None
    source: str = ""
    """The file it was loaded from ("" for defaults)."""


_SCALARS = {"enabled": bool, "check_input": bool, "check_output": bool, "mask_char": str, "audit_text": bool}
_SECTIONS = ("normalize", "stream", "categories", "keys", "pii", "classifier")
_CATEGORY_KEYS = ("name", "action", "words", "words_file", "regex", "whole_words")


def load_safety(path: str | Path) -> SafetyConfig:
    """Read and check a safety.yaml; every problem is reported in one LmforgeError naming its line."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise LmforgeError(f"safety config {path}: {e.strerror}") from e
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LmforgeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from e
    return _Reader(path).config(root)


def read_words(path: str | Path) -> list[str]:
    """The phrases of a words file: one per line, blank lines and lines starting with # skipped."""
    return [w for _, w in _words_file(Path(path))]


def for_key(cfg: SafetyConfig, key_name: str | None) -> SafetyConfig:
    """The configuration as it applies to requests made with API key `key_name` (None: no key)."""
    override = cfg.keys.get(key_name) if key_name is not None else None
    if override is None:
        return cfg
    categories = tuple(
        dataclasses.replace(c, action=override.actions.get(c.name, c.action))
        for c in cfg.categories
        if c.name not in override.disabled
    )
    return dataclasses.replace(cfg, enabled=cfg.enabled and override.enabled, categories=categories)


def build_rules(cfg: SafetyConfig) -> RuleSet:
    """The RuleSet of a configuration (build once; `rules_for_key` derives per-key sets cheaply)."""
    hook = None
    if cfg.classifier is not None:
        hook = ClassifierHook(cfg.classifier.fn, cfg.classifier.threshold, cfg.classifier.function)
    return RuleSet(cfg.categories, cfg.normalize, cfg.mask_char, hook)


def rules_for_key(rules: RuleSet, cfg: SafetyConfig, key_name: str | None) -> RuleSet:
    """`rules` (built from `cfg`) with the overrides of API key `key_name`, sharing the compiled automaton."""
    override = cfg.keys.get(key_name) if key_name is not None else None
    if override is None:
        return rules
    return rules.derive(override.actions, override.disabled)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _words_file(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"words file {path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise LmforgeError(f"words file {path}: {e.strerror}") from e
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        word = line.strip()
        if word and not word.startswith("#"):
            out.append((n, word))
    return out


class _Reader:
    """Walks the composed YAML nodes, building the dataclasses and collecting (line, problem) pairs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[tuple[int, str]] = []
        self._constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append((_line(node), message))

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, where: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """key → (key node, value node); unknown and repeated keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{where} must be a mapping of keys to values")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problem(k, f"{where}: keys must be names")
            elif allowed and key not in allowed:
                self.problem(k, f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})")
            elif key in out:
                self.problem(k, f"{where}: {key!r} is given twice")
            else:
                out[key] = (k, v)
        return out

    def typed(self, node: yaml.Node, kind: type, what: str) -> Any:
        """The node's value if it is of `kind` (a bool is not an int; an int is a float), else None + a problem."""
        names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.problem(node, f"{what} must be {names[kind]} (got {_shown(node)})")
            return None
        return value

    def strings(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, str]]:
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list")
            return []
        out = []
        for item in node.value:
            s = self.typed(item, str, f"each item of {what}")
            if s is not None:
                out.append((item, s))
        return out

    def options(self, node: yaml.Node, cls: type, where: str) -> Any:
        """A dataclass of plain bool/int fields (NormalizeOptions, StreamOptions) from a mapping."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, (_, v) in self.mapping(node, where, tuple(fields)).items():
            default = fields[key].default
            value = self.typed(v, type(default), f"{where}.{key}")
            if value is not None:
                if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                    self.problem(v, f"{where}.{key} must be at least 1 (got {value})")
                    continue
                values[key] = value
        return cls(**values)

    def config(self, root: yaml.Node | None) -> SafetyConfig:
        if root is None:
            return SafetyConfig(source=str(self.path))
        top = self.mapping(root, "safety.yaml", tuple(_SCALARS) + _SECTIONS)
        kwargs: dict[str, Any] = {"source": str(self.path)}
        for key, kind in _SCALARS.items():
            if key in top:
                value = self.typed(top[key][1], kind, key)
                if value is not None:
                    kwargs[key] = value
        if "mask_char" in kwargs and len(kwargs["mask_char"]) != 1:
            self.problem(
                top["mask_char"][1], f"mask_char must be one character (got {kwargs.pop('mask_char')!r})"
            )
        normalize = (
            self.options(top["normalize"][1], NormalizeOptions, "normalize") if "normalize" in top else None
        )
        if normalize is not None:
            kwargs["normalize"] = normalize
        if "stream" in top:
            kwargs["stream"] = self.options(top["stream"][1], StreamOptions, "stream")
        categories = (
            self.categories(top["categories"][1], normalize or NormalizeOptions())
            if "categories" in top
            else []
        )
        kwargs["categories"] = tuple(categories)
        names = {c.name for c in categories}
        if "keys" in top:
            kwargs["keys"] = self.keys(top["keys"][1], names)
        if "pii" in top:
            kwargs["pii"] = self.pii(top["pii"][1])
        if "classifier" in top:
            kwargs["classifier"] = self.classifier(top["classifier"][1])
        if self.problems:
            shown = "; ".join(f"{self.path} line {n}: {msg}" for n, msg in sorted(self.problems))
            raise LmforgeError(shown)
        return SafetyConfig(**kwargs)

    def categories(self, node: yaml.Node, normalize: NormalizeOptions) -> list[Category]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "categories must be a list (each item: name, action, words/words_file/regex)")
            return []
        out: list[Category] = []
        seen: set[str] = set()
        for item in node.value:
            fields = self.mapping(item, "a category", _CATEGORY_KEYS)
            if not fields and isinstance(item, yaml.MappingNode):
                self.problem(item, "a category needs at least a name and an action")
                continue
            name = self.typed(fields["name"][1], str, "name") if "name" in fields else None
            if "name" not in fields:
                self.problem(item, "a category needs a name")
            elif name is not None and not name.strip():
                self.problem(fields["name"][1], "a category name must not be empty")
                name = None
            elif name in seen:
                self.problem(fields["name"][1], f"category {name!r} is defined twice")
                name = None
            where = f"category {name}" if name else "category"
            action = None
            if "action" not in fields:
                self.problem(item, f"{where} needs an action (block, mask or flag)")
            else:
                node_a = fields["action"][1]
                action = self.value(node_a) if isinstance(node_a, yaml.ScalarNode) else None
                if action not in ACTIONS:
                    self.problem(node_a, f"action must be block, mask or flag (got {_shown(node_a)})")
                    action = None
            phrases: list[str] = []
            for word_node, word in (
                self.strings(fields["words"][1], f"{where} words") if "words" in fields else []
            ):
                if self.phrase_ok(word, normalize):
                    phrases.append(word.strip())
                else:
                    self.problem(word_node, f"{where}: phrase {word!r} is empty after normalisation")
            if "words_file" in fields:
                phrases += self.words_file(fields["words_file"][1], where, normalize)
            regexes = []
            for rx_node, pattern in (
                self.strings(fields["regex"][1], f"{where} regex") if "regex" in fields else []
            ):
                try:
                    compiled = re.compile(pattern)
                except re.error as e:
                    self.problem(rx_node, f"{where}: invalid regex {pattern!r}: {e}")
                    continue
                if compiled.search("") is not None:
                    self.problem(rx_node, f"{where}: regex {pattern!r} matches the empty text")
                    continue
                regexes.append(pattern)
            whole = (
                self.typed(fields["whole_words"][1], bool, "whole_words") if "whole_words" in fields else None
            )
            if name is not None and action is not None:
                seen.add(name)
                extra = {} if whole is None else {"whole_words": whole}
                out.append(Category(name, action, tuple(phrases), tuple(regexes), **extra))
        return out

    def phrase_ok(self, phrase: str, normalize: NormalizeOptions) -> bool:
        if normalize.separators:
            return any(not is_separator(c) for c in phrase)
        return bool(phrase.strip())

    def words_file(self, node: yaml.Node, where: str, normalize: NormalizeOptions) -> list[str]:
        name = self.typed(node, str, "words_file")
        if name is None:
            return []
        file = Path(name).expanduser()
        if not file.is_absolute():
            file = self.path.parent / file
        if not file.is_file():
            self.problem(node, f"{where}: words_file {name} not found (looked for {file})")
            return []
        try:
            rows = _words_file(file)
        except LmforgeError as e:
            self.problem(node, f"{where}: {e}")
            return []
        bad = [n for n, w in rows if not self.phrase_ok(w, normalize)]
        if bad:
            self.problem(node, f"{where}: {file} line {bad[0]}: phrase is empty after normalisation")
        return [w for _, w in rows]

    def keys(self, node: yaml.Node, categories: set[str]) -> dict[str, KeyOverride]:
        out = {}
        for key_name, (_, body) in self.mapping(node, "keys", ()).items():
            fields = self.mapping(body, f"keys.{key_name}", ("actions", "disabled", "enabled"))
            actions: dict[str, Action] = {}
            if "actions" in fields:
                for cat, (cat_node, act_node) in self.mapping(fields["actions"][1], f"keys.{key_name}.actions",
                                                              ()).items():  # fmt: skip
                    act = self.value(act_node) if isinstance(act_node, yaml.ScalarNode) else None
                    if cat not in categories:
                        self.problem(cat_node, f"keys.{key_name}: no category named {cat!r}")
                    elif act not in ACTIONS:
                        self.problem(act_node, f"action must be block, mask or flag (got {_shown(act_node)})")
                    else:
                        actions[cat] = act
            disabled = []
            for cat_node, cat in self.strings(fields["disabled"][1], f"keys.{key_name}.disabled") if "disabled" in fields else []:  # fmt: skip
                if cat in categories:
                    disabled.append(cat)
                else:
                    self.problem(cat_node, f"keys.{key_name}: no category named {cat!r}")
            enabled = self.typed(fields["enabled"][1], bool, "enabled") if "enabled" in fields else None
            extra = {} if enabled is None else {"enabled": enabled}
            out[key_name] = KeyOverride(actions, tuple(disabled), **extra)
        return out

    def pii(self, node: yaml.Node) -> PiiSettings:
        fields = self.mapping(node, "pii", ("detectors", "apply_to", "action", "style"))
        kwargs: dict[str, Any] = {}
        if "detectors" in fields:
            kinds = []
            for kind_node, kind in self.strings(fields["detectors"][1], "pii.detectors"):
                if kind in KINDS:
                    kinds.append(kind)
                else:
                    self.problem(kind_node, f"unknown PII detector {kind!r} (choose from {', '.join(KINDS)})")
            kwargs["detectors"] = tuple(kinds)
        if "apply_to" in fields:
            places = []
            for place_node, place in self.strings(fields["apply_to"][1], "pii.apply_to"):
                if place in PII_PLACES:
                    places.append(place)
                else:
                    self.problem(place_node, f"pii.apply_to: {place!r} is not one of {', '.join(PII_PLACES)}")
            kwargs["apply_to"] = tuple(places)
        for key, choices in (("action", ("redact", "flag")), ("style", ("tag", "mask"))):
            if key in fields:
                value_node = fields[key][1]
                value = self.value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
                if value in choices:
                    kwargs[key] = value
                else:
                    self.problem(
                        value_node, f"pii.{key} must be {' or '.join(choices)} (got {_shown(value_node)})"
                    )
        return PiiSettings(**kwargs)

    def classifier(self, node: yaml.Node) -> ClassifierSettings | None:
        fields = self.mapping(node, "classifier", ("function", "threshold"))
        threshold = CLASSIFIER_THRESHOLD
        if "threshold" in fields:
            value = self.typed(fields["threshold"][1], float, "classifier.threshold")
            if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
                self.problem(
                    fields["threshold"][1], f"classifier.threshold must be between 0 and 1 (got {value})"
                )
            elif value is not None:
                threshold = value
        if "function" not in fields:
            if isinstance(node, yaml.MappingNode):
                self.problem(node, "classifier needs a function (module:function)")
            return None
        fn_node = fields["function"][1]
        spec = self.typed(fn_node, str, "classifier.function")
        if spec is None:
            return None
        try:
            fn = _import_function(spec)
        except LmforgeError as e:
            self.problem(fn_node, str(e))
            return None
        return ClassifierSettings(spec, fn, threshold)


def _import_function(spec: str) -> Callable[..., Any]:
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name.isidentifier():
        raise LmforgeError(f"classifier.function must be module:function (got {spec!r})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LmforgeError(f"classifier.function {spec!r}: cannot import {module_name} ({e})") from e
    except Exception as e:  # noqa: BLE001 - the user's module: any error while importing it is theirs to read
        raise LmforgeError(f"classifier.function {spec!r}: importing {module_name} failed: "
                           f"{type(e).__name__}: {e}") from e  # fmt: skip
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LmforgeError(f"classifier.function {spec!r}: {module_name} has no function {name!r}")
    return fn


def _shown(node: yaml.Node) -> str:
    """A node as the user wrote it, for messages: 'blok', a list, a mapping."""
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value) if node.tag.endswith(":str") else node.value
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
