// lmforge web console: streaming chat, conversations in localStorage, models page. No dependencies, works offline.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const T = {
    en: { chat: "Chat", models: "Models", newChat: "New chat", settings: "Settings", system: "System prompt", model: "Model",
      send: "Send", stop: "Stop", copy: "Copy", copied: "Copied", del: "Delete", save: "Save", clear: "Clear", apiKey: "API key",
      conversations: "Conversations", needKey: "API key:", placeholder: "Ask anything (Enter to send, Shift+Enter for a new line)",
      name: "Name", kind: "Kind", kindFormat: "Kind · format", format: "Format", size: "Size", params: "Params (M)", age: "Age", metrics: "Metrics",
      lineage: "Lineage", source: "Source", missing: "not in the registry", noMetrics: "No stored metrics.", compression: "Compression trade-offs", variant: "Variant", justNow: "just now",
      ago: "{n} {u} ago", u_y: "y", u_d: "d", u_h: "h", u_min: "min", g_dataset: "Datasets", g_tokenizer: "Tokenizers",
      g_model: "Models", g_adapter: "Adapters", g_kb: "Knowledge bases", g_other: "Other",
      untitled: "New conversation", stopped: "[stopped]", truncated: "Answer cut off: max_tokens reached.", loading: "Loading…",
      noModelsPage: "No models registered.", unauthorized: "This server needs an API key: paste it above.",
      noModels: "No chat model registered: run `lmforge pull qwen2.5-coder-0.5b-instruct`",
      kb: "Knowledge", create: "Create", upload: "Upload documents", uploadBtn: "Upload", groupsPh: "groups (optional): hr,legal",
      documents: "Documents", pages: "Pages", chunks: "Chunks", groups: "Groups", search: "Search", searchPh: "Search the documents",
      askSources: "Ask with sources", ask: "Ask", askPh: "Ask a question about these documents", rewriteQ: "Rewrite for search", searched: "searched", indexing: "Indexing…",
      uploaded: "added", replaced: "replaced", unchanged: "unchanged", failed: "failed", noKb: "No knowledge base yet: create one above.",
      unsupported: "Not supported by its sources", retried: "The first answer was only a citation; the model was asked again", noResults: "No results.", all: "(all)", remove: "Remove",
      tasksTab: "Tasks", explainTab: "Explain", explainAttention: "attention maps", explainTokens: "token attributions", explainTargetPh: "target label or next token (optional)", explainTextPh: "Text to explain (HF models; GGUF: dequantize first)", taskLabelsPh: "labels, comma-separated (classify, ner)", taskExtraPh: "qa: context · extract: JSON schema · translate: target language (en, zh, …)", taskTextPh: "Paste text, or upload a UTF-8 file", runBtn: "Run", dropped: "named by the model but not in the text: dropped",
      evalTab: "Evaluate", results: "Suite results", arena: "Blind comparison", arenaPh: "A prompt for both models", compareBtn: "Compare",
      voteA: "A is better", voteB: "B is better", voteTie: "Tie", opponent: "Opponent", winRate: "Win rate (95% CI)", suite: "Suite",
      metric: "Metric", noEval: "No stored results yet: run `lmforge eval MODEL --suite NAME`.", revealed: "A was {a}, B was {b}.",
      train: "Train", newJob: "New training job", jobKind: "Kind", finetune: "Fine-tune", pretrain: "Pretrain", baseModel: "Base model",
      fromScratch: "(none: from scratch)", method: "Method", m_full: "Full", m_prefix: "Prefix tuning", m_prompt: "Prompt tuning",
      dataFile: "Data: a JSONL file (prompt/response, alpaca, messages or ShareGPT)", dataset: "Dataset", tokenizer: "Tokenizer",
      sizeL: "Size", epochs: "Epochs", steps: "Steps", lr: "Learning rate", rank: "LoRA rank", virtualTokens: "Virtual tokens",
      maxLength: "Max length (tokens)", outName: "Output name", start: "Start", jobs: "Jobs", state: "State", dflt: "default",
      cancel: "Cancel", cancelling: "Cancelling…", log: "Log", noJobs: "No training jobs yet.", uploading: "Uploading…",
      uploadedFile: "Uploaded {name} ({size})", needFile: "Choose a data file first.", st_queued: "queued", st_running: "running",
      st_succeeded: "succeeded", st_failed: "failed", st_cancelled: "cancelled", stepOf: "step {step} / {total}", eta: "ETA {t}",
      tokps: "{n} tok/s", ready: "{name} is registered: pick it in the Chat tab.", lossL: "loss", valLoss: "validation loss",
      noPoints: "The loss curve appears with the first training step.", started: "Started {id}.", baseTok: "(the base model's own)" },
    zh: { chat: "对话", models: "模型", newChat: "新对话", settings: "设置", system: "系统提示词", model: "模型",
      send: "发送", stop: "停止", copy: "复制", copied: "已复制", del: "删除", save: "保存", clear: "清除", apiKey: "API 密钥",
      conversations: "对话列表", needKey: "API 密钥：", placeholder: "输入问题（回车发送，Shift+回车换行）",
      name: "名称", kind: "类型", kindFormat: "类型 · 格式", format: "格式", size: "大小", params: "参数量 (M)", age: "创建于", metrics: "指标",
      lineage: "模型谱系（血缘）", source: "来源", missing: "不在模型仓库中", noMetrics: "尚无指标。", compression: "压缩权衡（量化 · 剪枝）", variant: "变体", justNow: "刚刚",
      ago: "{n} {u}前", u_y: "年", u_d: "天", u_h: "小时", u_min: "分钟", g_dataset: "数据集", g_tokenizer: "分词器",
      g_model: "模型", g_adapter: "适配器", g_kb: "知识库", g_other: "其他",
      untitled: "新对话", stopped: "[已停止]", truncated: "回答被截断：已达到 max_tokens。", loading: "加载中…",
      noModelsPage: "尚未注册任何模型。", unauthorized: "此服务器需要 API 密钥：请在上方粘贴。",
      noModels: "尚未注册对话模型：运行 `lmforge pull qwen2.5-coder-0.5b-instruct`",
      kb: "知识库", create: "创建", upload: "上传文档", uploadBtn: "上传", groupsPh: "分组（可选）：hr,legal",
      documents: "文档", pages: "页数", chunks: "分块", groups: "分组", search: "检索", searchPh: "检索文档",
      askSources: "带出处问答", ask: "提问", askPh: "就这些文档提问", rewriteQ: "改写问题再检索", searched: "检索了", indexing: "正在建立索引…",
      uploaded: "新增", replaced: "替换", unchanged: "未变", failed: "失败", noKb: "还没有知识库：请在上方创建。",
      unsupported: "与引用的资料不符", retried: "第一次回答只有来源编号，已让模型重新回答", noResults: "没有结果。", all: "（全部）", remove: "删除",
      tasksTab: "任务", explainTab: "可解释性", explainAttention: "注意力图", explainTokens: "词元归因", explainTargetPh: "目标标签或下一个词元（可选）", explainTextPh: "要解释的文本（HF 模型；GGUF 需先反量化）", taskLabelsPh: "标签，用逗号分隔（分类、实体识别）", taskExtraPh: "问答：上下文 · 抽取：JSON Schema · 翻译：目标语言（en、zh…）", taskTextPh: "粘贴文本，或上传 UTF-8 文件", runBtn: "运行", dropped: "模型给出但原文中没有，已丢弃",
      evalTab: "评测", results: "评测结果", arena: "盲评对比", arenaPh: "给两个模型的同一个问题", compareBtn: "对比",
      voteA: "A 更好", voteB: "B 更好", voteTie: "平局", opponent: "对手", winRate: "胜率（95% 置信区间）", suite: "评测集",
      metric: "指标", noEval: "还没有评测结果：运行 `lmforge eval 模型 --suite 名称`。", revealed: "A 是 {a}，B 是 {b}。",
      train: "训练", newJob: "新建训练任务", jobKind: "类型", finetune: "微调", pretrain: "预训练", baseModel: "基座模型",
      fromScratch: "（无：从零训练）", method: "方法", m_full: "全参数", m_prefix: "前缀微调 (Prefix)", m_prompt: "提示微调 (Prompt)",
      dataFile: "数据：JSONL 文件（prompt/response、alpaca、messages 或 ShareGPT）", dataset: "数据集", tokenizer: "分词器",
      sizeL: "规模", epochs: "训练轮数", steps: "步数", lr: "学习率", rank: "LoRA 秩", virtualTokens: "虚拟 token 数",
      maxLength: "最大长度（token）", outName: "输出名称", start: "开始训练", jobs: "任务", state: "状态", dflt: "默认",
      cancel: "取消", cancelling: "正在取消…", log: "日志", noJobs: "还没有训练任务。", uploading: "上传中…",
      uploadedFile: "已上传 {name}（{size}）", needFile: "请先选择数据文件。", st_queued: "排队中", st_running: "运行中",
      st_succeeded: "已完成", st_failed: "失败", st_cancelled: "已取消", stepOf: "第 {step} / {total} 步", eta: "预计剩余 {t}",
      tokps: "{n} token/秒", ready: "{name} 已注册：可在“对话”页选用。", lossL: "损失", valLoss: "验证损失",
      noPoints: "第一步训练完成后显示损失曲线。", started: "已启动 {id}。", baseTok: "（基座模型自带）" },
  };
  const ls = {
    get(k, d = null) { try { const v = localStorage.getItem("lmforge." + k); return v === null ? d : v; } catch { return d; } },
    set(k, v) { try { if (v == null) localStorage.removeItem("lmforge." + k); else localStorage.setItem("lmforge." + k, v); } catch { /* quota or disabled */ } },
  };
  let lang = ls.get("lang") || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
  const t = (k) => T[lang][k] ?? T.en[k] ?? k;
  let view = "chat";

  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((e) => { e.placeholder = t(e.dataset.i18nPlaceholder); });
    document.querySelectorAll("[data-i18n-title]").forEach((e) => { e.title = t(e.dataset.i18nTitle); e.setAttribute("aria-label", e.title); });
    $("lang").textContent = lang === "zh" ? "EN" : "中文";
    renderConversations(); renderMessages();
    if (view === "models") loadModelsPage();
    if (view === "train") { renderJobs(); renderJobDetail(); }
  }

  // -- API --------------------------------------------------------------------------------------
  function headers(json) {
    const h = json ? { "Content-Type": "application/json" } : {};
    const key = ls.get("key");
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function showKeyBar() { $("api-key").value = ls.get("key") || ""; $("key-bar").hidden = false; }
  async function errorOf(r) {
    if (r.status === 401) showKeyBar();
    let msg = `HTTP ${r.status} ${r.statusText}`;
    try { const j = await r.json(); if (j?.error?.message) msg = j.error.message; } catch { /* not JSON */ }
    return Object.assign(new Error(msg), { status: r.status });
  }
  async function api(path) {
    const r = await fetch(path, { headers: headers(false) });
    if (!r.ok) throw await errorOf(r);
    return r.json();
  }

  // -- conversations ------------------------------------------------------------------------------
  let convs; try { convs = JSON.parse(ls.get("convs")) || []; } catch { convs = []; }
  if (!Array.isArray(convs)) convs = [];
  let current = ls.get("current");
  if (!convs.some((c) => c.id === current)) current = convs[0]?.id || null;
  const conv = () => convs.find((c) => c.id === current);
  function save() { ls.set("convs", JSON.stringify(convs)); ls.set("current", current); }
  function newConversation() {
    const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "", model: $("model-select").value,
      system: $("system-prompt").value, messages: [] };
    convs.unshift(c); current = c.id; save(); renderConversations(); renderMessages(); closeSidebar();
    $("prompt").focus();
    return c;
  }
  function selectConversation(c) {
    current = c.id; save();
    $("system-prompt").value = c.system || "";
    if (c.model && [...$("model-select").options].some((o) => o.value === c.model)) $("model-select").value = c.model;
    renderConversations(); renderMessages(); closeSidebar();
  }
  function deleteConversation(c) {
    if (live?.conv === c) controller?.abort();
    convs = convs.filter((x) => x !== c);
    if (current === c.id) { current = convs[0]?.id || null; $("system-prompt").value = conv()?.system || $("system-prompt").value; }
    save(); renderConversations(); renderMessages();
  }
  function renderConversations() {
    const ul = $("conversations"); ul.textContent = "";
    for (const c of convs) {
      const li = el("li", c.id === current ? "active" : "");
      const title = el("button", "title", c.title || t("untitled")); title.type = "button"; title.title = c.title || "";
      title.onclick = () => selectConversation(c);
      const del = el("button", "del", "×"); del.type = "button"; del.title = t("del"); del.setAttribute("aria-label", t("del"));
      del.onclick = () => deleteConversation(c);
      li.append(title, del); ul.append(li);
    }
  }
  const openSidebar = (on) => { document.body.classList.toggle("show-sidebar", on); $("toggle-sidebar").setAttribute("aria-expanded", String(on)); };
  const closeSidebar = () => openSidebar(false);

  // -- rendering: text only via textContent / text nodes, never innerHTML ---------------------------
  function renderText(box, text) {
    box.textContent = "";
    const parts = text.split("```");
    parts.forEach((part, i) => {
      if (i % 2 === 1) { // inside a fence (also while the closing fence has not streamed in yet)
        const pre = el("pre"); pre.append(el("code", "", part.replace(/^[^\n`]*\n/, "").replace(/\n$/, ""))); box.append(pre);
      } else {
        if (i > 0) part = part.replace(/^[^\S\n]*\n/, ""); // newline right after a closing fence
        if (i < parts.length - 1) part = part.replace(/\n[^\S\n]*$/, ""); // and right before an opening one
        if (part) box.append(document.createTextNode(part));
      }
    });
  }
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return; } catch { /* insecure origin or denied: fall back */ }
    const ta = el("textarea"); ta.value = text; ta.setAttribute("readonly", ""); ta.style.cssText = "position:fixed;top:-1000px;opacity:0";
    document.body.append(ta); ta.select(); try { document.execCommand("copy"); } finally { ta.remove(); }
  }
  const nearBottom = () => { const m = $("messages"); return m.scrollHeight - m.scrollTop - m.clientHeight < 80; };
  const toBottom = () => { const m = $("messages"); m.scrollTop = m.scrollHeight; };
  function renderBody(body, m) {
    renderText(body, m.content || "");
    if (m.stopped) { body.append(" "); body.append(el("span", "stopped", t("stopped"))); }
  }
  function bubble(m) {
    const box = $("messages");
    if (m.role === "notice" || m.role === "error" || m.error) {
      const n = el("div", m.role === "notice" ? "notice" : "msg-error", m.content); box.append(n); return n;
    }
    const div = el("div", "msg " + (m.role === "user" ? "user" : "assistant"));
    const body = el("div", "body"); renderBody(body, m); div.append(body);
    if (m.role === "assistant") {
      const b = el("button", "copy", t("copy")); b.type = "button";
      b.onclick = async () => { await copyText(m.content || ""); b.textContent = t("copied"); setTimeout(() => { b.textContent = t("copy"); }, 1200); };
      div.append(b);
    }
    if (live && live.answer === m) { live.body = body; div.classList.add("live"); }
    box.append(div);
    return body;
  }
  function renderMessages() {
    const box = $("messages"); box.textContent = "";
    const c = conv();
    if (c) c.messages.forEach(bubble);
    if (!modelCount && modelsLoaded) box.append(el("div", "notice", t("noModels")));
    toBottom();
  }
  function addToConv(c, m) { // insert a notice/error; shown now only if that conversation is on screen
    c.messages.push(m);
    if (conv() === c) { const stick = nearBottom(); bubble(m); if (stick) toBottom(); }
  }

  // -- chat -------------------------------------------------------------------------------------
  let controller = null, live = null;
  function setStreaming(on) {
    document.body.dataset.streaming = on ? "1" : "0";
    $("send").hidden = on; $("stop").hidden = !on;
  }
  const num = (id) => { const v = $(id).value.trim(); return v === "" || Number.isNaN(+v) ? undefined : +v; };
  function buildRequest(c) {
    const history = c.messages.filter((m) => (m.role === "user" || m.role === "assistant") && !m.error && (m.content || "") !== "");
    const messages = (c.system ? [{ role: "system", content: c.system }] : []).concat(history.map(({ role, content }) => ({ role, content })));
    const req = { model: c.model, messages, stream: true };
    const opts = { temperature: num("temperature"), top_p: num("top-p"), max_tokens: num("max-tokens"), seed: num("seed") };
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) req[k] = k === "max_tokens" || k === "seed" ? Math.trunc(v) : v;
    return req;
  }
  async function send(text) {
    const c = conv() || newConversation();
    c.model = $("model-select").value; c.system = $("system-prompt").value;
    if (!c.title) c.title = text.replace(/\s+/g, " ").trim().slice(0, 48);
    c.messages.push({ role: "user", content: text }); bubble(c.messages.at(-1));
    const req = buildRequest(c);
    const answer = { role: "assistant", content: "" };
    c.messages.push(answer);
    live = { conv: c, answer, body: null }; bubble(answer); toBottom();
    controller = new AbortController(); setStreaming(true); save(); renderConversations();
    let lastSave = Date.now(), finish = null;
    const handle = (data) => {
      if (data === "[DONE]") return;
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(ev.error.message || String(ev.error));
      if (ev.lmforge?.notice) addToConv(c, { role: "notice", content: ev.lmforge.notice });
      const ch = ev.choices?.[0];
      if (ch?.delta?.content) {
        answer.content += ch.delta.content;
        if (conv() === c && live.body) { const stick = nearBottom(); renderBody(live.body, answer); if (stick) toBottom(); }
        if (Date.now() - lastSave > 1000) { save(); lastSave = Date.now(); }
      }
      if (ch?.finish_reason) finish = ch.finish_reason;
    };
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(true), body: JSON.stringify(req), signal: controller.signal });
      if (!r.ok) throw await errorOf(r);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      const lines = (final) => {
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i).replace(/\r$/, ""); buf = buf.slice(i + 1);
          if (line.startsWith("data:")) handle(line.slice(5).trim());
        }
        if (final && buf.startsWith("data:")) { handle(buf.slice(5).trim()); buf = ""; }
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) { buf += dec.decode(); lines(true); break; }
        buf += dec.decode(value, { stream: true }); lines(false);
      }
      if (finish === "length") addToConv(c, { role: "notice", content: t("truncated") });
    } catch (e) {
      if (e.name === "AbortError") answer.stopped = true;
      else addToConv(c, { role: "error", content: e.message || String(e) });
    } finally {
      if (!answer.content && !answer.stopped) c.messages.splice(c.messages.indexOf(answer), 1); // nothing came back
      controller = null; live = null; setStreaming(false); save();
      if (conv() === c) renderMessages();
    }
  }

  // -- models -----------------------------------------------------------------------------------
  let modelCount = 0, modelsLoaded = false;
  async function loadModels() {
    let data;
    try { data = await api("/v1/models"); } catch (e) { if ($("messages").lastChild?.textContent !== e.message) $("messages").append(el("div", "msg-error", e.message)); return; }
    const sel = $("model-select"), prev = sel.value; sel.textContent = "";
    const chat = (data.data || []).filter((m) => ["chat", "base", "adapter"].includes(m.lmforge?.kind));
    for (const m of chat) { const o = el("option", "", m.id); o.value = m.id; sel.append(o); }
    modelCount = chat.length; modelsLoaded = true;
    const want = [conv()?.model, prev, ls.get("model")].find((id) => id && chat.some((m) => m.id === id));
    if (want) sel.value = want;
    renderMessages();
  }
  const fmtNum = (v, div) => (typeof v === "number" && v > 0 ? (v / div).toFixed(v / div >= 100 ? 0 : 1) : "–");
  function fmtBytes(n) {
    if (typeof n !== "number") return "–";
    for (const u of ["B", "KB", "MB", "GB"]) { if (n < 1000) return u === "B" ? `${n} B` : `${n.toFixed(1)} ${u}`; n /= 1000; }
    return `${n.toFixed(1)} TB`;
  }
  function fmtAge(s) { // seconds since created, as `lmforge models ls` words it
    if (typeof s !== "number") return "–";
    for (const [u, n] of [["y", 31536000], ["d", 86400], ["h", 3600], ["min", 60]]) {
      if (s >= n) return t("ago").replace("{n}", Math.floor(s / n)).replace("{u}", t("u_" + u));
    }
    return t("justNow");
  }
  const GROUPS = ["dataset", "tokenizer", "model", "adapter", "kb", "other"]; // lmforge.home.GROUPS
  let modelsData = [], selectedModel = ls.get("modelSel"), lineageSeq = 0;
  async function loadModelsPage() {
    const tb = document.querySelector("#models-table tbody"), status = $("models-status");
    document.body.dataset.lineage = "loading"; // 'ready' again once the list is redrawn and the lineage drawn
    status.className = "notice"; status.textContent = t("loading");
    let data;
    try { data = await api("/api/models"); } catch (e) { status.className = "msg-error"; status.textContent = e.status === 401 ? t("unauthorized") : e.message; return; }
    tb.textContent = "";
    modelsData = data.models || [];
    status.textContent = modelsData.length ? "" : t("noModelsPage");
    const order = [];
    for (const g of GROUPS) {
      const members = modelsData.filter((m) => (GROUPS.includes(m.group) ? m.group : "other") === g).sort((a, b) => a.name.localeCompare(b.name));
      if (!members.length) continue;
      const head = el("tr", "group-row"), cell = el("td", "group", `${t("g_" + g)} (${members.length})`);
      cell.colSpan = 5; head.append(cell); tb.append(head);
      for (const m of members) {
        order.push(m.name);
        const tr = el("tr", "artifact"), first = el("td"), name = el("div", "clip name", m.name);
        tr.dataset.name = m.name; tr.tabIndex = 0; name.title = m.name; first.append(name);
        const facts = m.facts?.metrics || [];
        if (facts.length) { const f = el("div", "clip name hit-meta", facts.join(" · ")); f.title = facts.join("\n"); first.append(f); }
        const kind = el("td", "", m.kind);
        kind.append(el("div", "hit-meta", m.format + (m.config?.quant ? ":" + m.config.quant : "")));
        tr.append(first, kind, el("td", "opt", fmtBytes(m.size_bytes)), el("td", "opt", fmtNum(m.params, 1e6)), el("td", "", fmtAge(m.age_s)));
        tr.onclick = () => selectModel(m.name);
        tr.onkeydown = (e) => { if (e.key === "Enter") selectModel(m.name); };
        tb.append(tr);
      }
    }
    if (order.length) selectModel(order.includes(selectedModel) ? selectedModel : order[0]);
    else { $("model-detail").hidden = true; document.body.dataset.lineage = "ready"; }
  }
  async function selectModel(name) {
    const m = modelsData.find((x) => x.name === name); if (!m) return;
    selectedModel = name; ls.set("modelSel", name);
    document.querySelectorAll("#models-table tr.artifact").forEach((r) => r.classList.toggle("selected", r.dataset.name === name));
    $("model-detail").hidden = false;
    $("md-name").textContent = m.name; $("md-name").title = m.name;
    $("md-meta").textContent = [m.kind, m.format, fmtBytes(m.size_bytes), ...(m.facts?.config || []), fmtAge(m.age_s)].join(" · ");
    $("md-source").textContent = m.source ? `${t("source")}: ${m.source}` : ""; $("md-source").title = m.source || "";
    const facts = $("md-facts"); facts.textContent = "";
    for (const f of m.facts?.metrics || []) facts.append(el("li", "", f));
    const tb = document.querySelector("#md-metrics tbody"); tb.textContent = "";
    const entries = Object.entries(m.metrics || {});
    if (!entries.length) { const tr = el("tr"); tr.append(el("td", "notice", t("noMetrics"))); tb.append(tr); }
    for (const [k, v] of entries) {
      const tr = el("tr"), val = el("td");
      val.append(el("pre", "", typeof v === "object" && v !== null ? JSON.stringify(v, null, 2) : String(v)));
      tr.append(el("td", "", k), val); tb.append(tr);
    }
    showCompress(name, m);
    const seq = ++lineageSeq, graph = $("lineage-graph");
    document.body.dataset.lineage = "loading";
    let tree;
    try { tree = await api(`/api/models/${encodeURIComponent(name)}/lineage`); } catch (e) { graph.textContent = ""; graph.append(el("p", "msg-error", e.message)); return; }
    if (seq !== lineageSeq) return; // another artifact was picked meanwhile
    drawLineage(graph, tree);
    document.body.dataset.lineage = "ready";
  }

  async function showCompress(name, m) { // the stored `lmforge compress report`: chart + table
    const box = $("md-compress"); box.hidden = true;
    if (!m.metrics?.compress_report) return;
    let r;
    try { r = await api(`/api/models/${encodeURIComponent(name)}/compress-report`); } catch { return; }
    if (selectedModel !== name) return;
    $("md-compress-png").src = r.png_base64 ? `data:image/png;base64,${r.png_base64}` : "";
    const tb = document.querySelector("#md-compress-table tbody"); tb.textContent = "";
    for (const row of r.rows) {
      const tr = el("tr");
      for (const v of [row.variant, row.model, row.size_mb, row.decode_tps, row.perplexity, `${row.ppl_increase_pct >= 0 ? "+" : ""}${row.ppl_increase_pct}%`]) tr.append(el("td", "", String(v)));
      tb.append(tr);
    }
    box.hidden = false;
    document.body.dataset.compress = "ready";
  }

  // The lineage graph: layers top-down (dataset → tokenizer → model → export), an edge per parent, drawn
  // as inline SVG. A node with several parents (a diamond) is drawn once, at its deepest parent's layer.
  const SVGNS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs = {}, text = null) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  };
  function fitText(node, width) { // shorten with an ellipsis until it fits (measured, so CJK works too)
    const full = node.textContent;
    for (let n = full.length; n > 1 && node.getComputedTextLength() > width; n--) node.textContent = full.slice(0, n - 1) + "…";
  }
  function drawLineage(box, tree) {
    const W = 200, H = 62, GX = 16, GY = 32, PAD = 8;
    const layers = [], at = new Map(), edges = [];
    const walk = (node, depth, parent) => {
      if (parent) edges.push([parent, node.name]);
      if (node.repeat || at.has(node.name)) return;
      (layers[depth] ||= []).push(node); at.set(node.name, { node, depth });
      for (const c of node.children) walk(c, depth + 1, node.name);
    };
    for (const r of tree.roots) walk(r, 0, null);
    const widest = Math.max(1, ...layers.map((l) => l.length));
    const width = widest * W + (widest - 1) * GX + 2 * PAD, height = layers.length * (H + GY) - GY + 2 * PAD;
    layers.forEach((layer, d) => {
      const left = (width - layer.length * W - (layer.length - 1) * GX) / 2;
      layer.forEach((n, i) => Object.assign(at.get(n.name), { x: left + i * (W + GX), y: PAD + d * (H + GY) }));
    });
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    const defs = svg("defs"), marker = svg("marker", { id: "lineage-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
    const clip = svg("clipPath", { id: "lineage-clip" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "larrow" })); clip.append(svg("rect", { width: W - 6, height: H }));
    defs.append(marker, clip); root.append(defs);
    for (const [a, b] of edges) {
      const p = at.get(a), q = at.get(b); if (!p || !q) continue;
      const x1 = p.x + W / 2, y1 = p.y + H, x2 = q.x + W / 2, y2 = q.y, my = (y1 + y2) / 2;
      root.append(svg("path", { class: "ledge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`, "marker-end": "url(#lineage-arrow)" }));
    }
    const texts = [];
    for (const { node: n, x, y } of at.values()) {
      const g = svg("g", { class: "lnode" + (n.focus ? " focus" : "") + (n.missing ? " missing" : ""), transform: `translate(${x},${y})`, "data-name": n.name });
      const sub = n.missing ? t("missing") : [`${n.kind} · ${n.format}`, ...n.facts.config].join(" · ");
      g.append(svg("title", {}, [n.name, sub, ...n.facts.metrics].join("\n")), svg("rect", { width: W, height: H, rx: 8 }));
      const lines = [["nm", 18, n.name], ["sub", 36, sub], ["metric", 53, n.facts.metrics.join(" · ")]];
      for (const [cls, ty, text] of lines) if (text) { const e = svg("text", { x: 10, y: ty, class: cls, "clip-path": "url(#lineage-clip)" }, text); g.append(e); texts.push(e); }
      if (!n.missing && !n.focus && modelsData.some((m) => m.name === n.name)) { g.classList.add("link"); g.onclick = () => selectModel(n.name); }
      root.append(g);
    }
    box.textContent = ""; box.append(root);
    box.setAttribute("aria-label", `${t("lineage")}: ${[...at.keys()].join(", ")}`);
    for (const e of texts) fitText(e, W - 20);
  }
  function showView(v) {
    view = v;
    document.querySelectorAll(".tab").forEach((x) => { x.classList.toggle("active", x.dataset.view === v); x.setAttribute("aria-selected", String(x.dataset.view === v)); });
    for (const name of ["chat", "models", "kb", "eval", "train", "tasks", "explain"]) $("view-" + name).hidden = v !== name;
    document.body.dataset.view = v; closeSidebar();
    if (v === "models") loadModelsPage();
    if (v === "kb") loadKbs();
    if (v === "eval") { loadEval(); loadArena(); }
    if (v === "train") loadTrainPage();
    if (v === "tasks") loadTaskModels();
    if (v === "explain") loadExplainModels();
  }

  // -- Explain (/api/explain/*): the same self-contained interactive page the CLI writes, in a sandboxed frame --
  async function loadExplainModels() {
    let data;
    try { data = await api("/api/models"); } catch { return; }
    const sel = $("explain-model"), prev = sel.value || ls.get("explainModel"); sel.textContent = "";
    for (const m of (data.models || []).filter((m) => m.format === "hf" && ["chat", "base", "masked-lm", "reward", "classifier"].includes(m.kind))) {
      const o = el("option", "", `${m.name} (${m.kind})`); o.value = m.name; sel.append(o);
    }
    if (prev && [...sel.options].some((o) => o.value === prev)) sel.value = prev;
  }
  $("explain-go").onclick = async () => {
    const what = $("explain-what").value, status = $("explain-status"), body = { model: $("explain-model").value, text: $("explain-text").value };
    if (what === "tokens" && $("explain-target").value) body.target = $("explain-target").value;
    ls.set("explainModel", body.model);
    status.className = "notice"; status.textContent = t("loading"); document.body.dataset.explain = "busy";
    try {
      const r = await apiJson("POST", `/api/explain/${what}`, body), frame = $("explain-frame");
      // "ready" only once the frame has drawn the page, not when its source is handed over
      await new Promise((done) => { frame.addEventListener("load", done, { once: true }); frame.srcdoc = r.html; });
      status.textContent = what === "tokens" ? `${JSON.stringify(r.data.target)} p=${r.data.target_prob} (${r.data.method})` : `${r.data.layers} × ${r.data.heads}, ${r.data.n_tokens} tokens`;
    } catch (e) { status.className = "msg-error"; status.textContent = e.message; }
    document.body.dataset.explain = "ready";
  };

  // -- NLP tasks (/v1/tasks/{task}): labels, highlighted entities, or the JSON -------------------------
  async function loadTaskModels() {
    let data;
    try { data = await api("/api/models"); } catch { return; }
    const sel = $("task-model"), prev = sel.value || ls.get("taskModel"); sel.textContent = "";
    for (const m of (data.models || []).filter((m) => ["chat", "base", "adapter", "classifier"].includes(m.kind))) { // classifier: a fine-tuned task head
      const o = el("option", "", m.kind === "classifier" ? `${m.name} (fine-tuned ${m.config?.task})` : m.name); o.value = m.name; sel.append(o);
    }
    if (prev && [...sel.options].some((o) => o.value === prev)) sel.value = prev;
  }
  $("task-file").onchange = async () => { // a file's text into the box (UTF-8: anything else is an error, not mojibake)
    const f = $("task-file").files[0]; if (!f) return;
    try { $("task-text").value = new TextDecoder("utf-8", { fatal: true }).decode(await f.arrayBuffer()); }
    catch { const s = $("task-status"); s.className = "msg-error"; s.textContent = `${f.name}: not UTF-8 text`; }
  };
  $("task-go").onclick = async () => {
    const task = $("task-name").value, text = $("task-text").value, extra = $("task-extra").value.trim(), status = $("task-status");
    const body = { model: $("task-model").value, text, labels: $("task-labels").value.split(",").map((x) => x.trim()).filter(Boolean) };
    if (task === "qa") body.context = extra;
    if (task === "translate" && extra) body.to = extra;
    if (task === "extract") { try { body.schema = JSON.parse(extra || "{}"); } catch (e) { status.className = "msg-error"; status.textContent = `schema: ${e.message}`; return; } }
    ls.set("taskModel", body.model);
    status.className = "notice"; status.textContent = t("loading"); document.body.dataset.task = "busy";
    const view = $("task-view"); view.textContent = ""; $("task-json").textContent = "";
    try {
      const r = await apiJson("POST", `/v1/tasks/${task}`, body);
      $("task-json").textContent = JSON.stringify(r, null, 2);
      if (task === "ner") { // the input with each entity marked where its offsets say
        let at = 0;
        for (const e of r.entities) {
          if (e.start < at) continue;
          view.append(text.slice(at, e.start));
          const m = el("mark", "ent", e.text); m.dataset.label = e.label; m.title = e.label; view.append(m); at = e.end;
        }
        view.append(text.slice(at));
        if (r.dropped) view.append(el("p", "notice", `${r.dropped} ${t("dropped")}`));
      } else if ("label" in r) view.append(el("strong", "task-label", r.label), ` ${Number(r.score).toFixed(2)}`);
      else view.append(r.answer ?? r.translation ?? r.summary ?? r.text ?? "");
      status.textContent = "";
    } catch (e) { status.className = "msg-error"; status.textContent = e.message; }
    document.body.dataset.task = "ready";
  };


  // -- training jobs (/api/jobs): a form, the job list, and the selected job's live loss curve ------------
  const ACTIVE = new Set(["queued", "running"]);
  let trainArtifacts = [], jobsList = [], jobDetail = null, selectedJob = ls.get("job"), uploadId = null, jobTimer = null;
  const reloadedFor = new Set();
  function trainStatus(text, cls = "notice") { const s = $("train-status"); s.className = cls; s.textContent = text; }
  function fillSelect(sel, items, first) {
    const prev = sel.value; sel.textContent = "";
    if (first) { const o = el("option", "", first); o.value = ""; sel.append(o); }
    for (const name of items) { const o = el("option", "", name); o.value = name; sel.append(o); }
    if ([...sel.options].some((o) => o.value === prev)) sel.value = prev;
  }
  function syncTrainForm() { // show the fields of this kind of job and this method only
    const kind = $("train-kind").value, method = $("train-method").value;
    document.querySelectorAll("#train-form [data-kind]").forEach((e) => {
      const methods = e.dataset.methods ? e.dataset.methods.split(" ") : null;
      e.hidden = e.dataset.kind !== kind || (methods !== null && !methods.includes(method));
    });
    const names = (kinds) => trainArtifacts.filter((m) => kinds.includes(m.kind)).map((m) => m.name);
    fillSelect($("train-base"), names(["chat", "base"]), kind === "pretrain" ? t("fromScratch") : null);
    fillSelect($("train-data"), names(["dataset"]));
    fillSelect($("train-tokenizer"), names(["tokenizer"]), $("train-base").value ? t("baseTok") : null);
  }
  async function loadTrainPage() {
    try { trainArtifacts = (await api("/api/models")).models || []; } catch (e) { trainStatus(e.status === 401 ? t("unauthorized") : e.message, "msg-error"); }
    syncTrainForm();
    await pollJobs();
  }
  function fmtDuration(s) {
    if (typeof s !== "number") return "–";
    s = Math.round(s);
    if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    if (s >= 60) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${s} s`;
  }
  for (const id of ["train-kind", "train-method", "train-base"]) $(id).onchange = syncTrainForm;
  $("train-file").onchange = async () => {
    const f = $("train-file").files[0], st = $("train-upload-status"); uploadId = null;
    if (!f) { st.textContent = ""; return; }
    st.className = "hit-meta wide"; st.textContent = t("uploading");
    const form = new FormData(); form.append("file", f, f.name);
    try {
      const r = await fetch("/api/jobs/uploads", { method: "POST", headers: headers(false), body: form });
      if (!r.ok) throw await errorOf(r);
      const j = await r.json(); uploadId = j.id;
      st.textContent = t("uploadedFile").replace("{name}", j.filename).replace("{size}", fmtBytes(j.bytes));
    } catch (e) { st.className = "msg-error wide"; st.textContent = e.message; }
  };
  $("train-form").onsubmit = async (e) => {
    e.preventDefault();
    const kind = $("train-kind").value, body = { kind, out: $("train-out").value.trim(), options: {} };
    if ($("train-base").value) body.base = $("train-base").value;
    if (kind === "finetune") {
      if (!uploadId) { trainStatus(t("needFile"), "msg-error"); return; }
      body.method = $("train-method").value; body.data = uploadId;
    } else {
      body.data = $("train-data").value;
      if ($("train-tokenizer").value) body.options.tokenizer = $("train-tokenizer").value;
    }
    document.querySelectorAll("#train-form [data-opt]").forEach((input) => {
      if (input.closest("label").hidden || input.value.trim() === "") return;
      body.options[input.dataset.opt] = input.type === "number" ? Number(input.value) : input.value;
    });
    $("train-start").disabled = true;
    try {
      const job = await apiJson("POST", "/api/jobs", body);
      trainStatus(t("started").replace("{id}", job.id));
      selectedJob = job.id; ls.set("job", job.id);
      await pollJobs();
    } catch (err) { trainStatus(err.message, "msg-error"); }
    $("train-start").disabled = false;
  };
  $("jd-cancel").onclick = async () => {
    if (!selectedJob) return;
    $("jd-cancel").disabled = true;
    try { await apiJson("POST", `/api/jobs/${encodeURIComponent(selectedJob)}/cancel`); } catch (err) { trainStatus(err.message, "msg-error"); }
    await pollJobs();
  };
  function selectJob(id) { selectedJob = id; ls.set("job", id); renderJobs(); pollJobs(); }
  let polling = null, pollAgain = false;
  async function pollJobs() { // one poll at a time; a call during one asks for another right after it
    if (polling) { pollAgain = true; return polling; }
    clearTimeout(jobTimer);
    polling = pollOnce();
    try { await polling; } finally { polling = null; }
    const busy = jobsList.some((j) => ACTIVE.has(j.state));
    if (pollAgain) { pollAgain = false; jobTimer = setTimeout(pollJobs, 0); } else if (view === "train" || busy) jobTimer = setTimeout(pollJobs, view === "train" ? 1000 : 5000);
  }
  async function pollOnce() { // the list; the selected job's detail while the Train tab is open
    try {
      jobsList = (await api("/api/jobs")).data || [];
      if (view === "train") {
        if (!jobsList.some((j) => j.id === selectedJob)) selectedJob = jobsList[0]?.id || null;
        jobDetail = selectedJob ? await api(`/api/jobs/${encodeURIComponent(selectedJob)}`) : null;
        renderJobs(); renderJobDetail();
      }
      // a finished job's model joins the chat model picker (once per result)
      const fresh = jobsList.filter((j) => j.state === "succeeded" && j.result && !reloadedFor.has(j.result));
      if (fresh.length) {
        fresh.forEach((j) => reloadedFor.add(j.result));
        await loadModels();
        if (view === "train") trainArtifacts = (await api("/api/models")).models || [];
      }
    } catch (e) { if (view === "train") trainStatus(e.status === 401 ? t("unauthorized") : e.message, "msg-error"); }
  }
  function renderJobs() {
    const tb = document.querySelector("#jobs-table tbody"); tb.textContent = "";
    if (!jobsList.length) { const tr = el("tr"), td = el("td", "notice", t("noJobs")); td.colSpan = 4; tr.append(td); tb.append(tr); }
    for (const j of jobsList) {
      const tr = el("tr", "job" + (j.id === selectedJob ? " selected" : "")), first = el("td");
      first.append(el("div", "clip", j.args.out), el("div", "hit-meta", j.id));
      tr.dataset.id = j.id; tr.tabIndex = 0;
      const what = j.kind === "finetune" ? `${t("finetune")} · ${j.args.method}` : t("pretrain");
      tr.append(first, el("td", "", what), el("td", "state-" + j.state, t("st_" + j.state)), el("td", "", fmtAge(Date.now() / 1000 - j.created)));
      tr.onclick = () => selectJob(j.id);
      tr.onkeydown = (e) => { if (e.key === "Enter") selectJob(j.id); };
      tb.append(tr);
    }
  }
  function renderJobDetail() {
    const d = jobDetail;
    $("job-detail").hidden = !d;
    if (!d) { delete document.body.dataset.job; return; }
    const p = d.progress, a = d.args;
    $("jd-title").textContent = `${a.out} · ${t("st_" + d.state)}`; $("jd-title").className = "clip state-" + d.state;
    $("jd-meta").textContent = [d.kind === "finetune" ? `${t("finetune")} · ${a.method}` : t("pretrain"), a.base, a.data_file ? a.data_file.split("/").pop() : a.data].filter(Boolean).join(" · ");
    drawLoss($("loss-chart"), p);
    const stats = [t("stepOf").replace("{step}", p.step).replace("{total}", p.total ?? "?")];
    if (p.tokens_per_s != null) stats.push(t("tokps").replace("{n}", Math.round(p.tokens_per_s).toLocaleString()));
    if (d.state === "running" && p.eta_s != null) stats.push(t("eta").replace("{t}", fmtDuration(p.eta_s)));
    $("jd-stats").textContent = stats.join(" · ");
    $("jd-error").hidden = !(d.state === "failed" && d.error); $("jd-error").textContent = d.state === "failed" ? d.error || "" : "";
    $("jd-done").hidden = d.state !== "succeeded"; $("jd-done").textContent = d.result ? t("ready").replace("{name}", d.result) : "";
    const cancel = $("jd-cancel");
    cancel.hidden = !ACTIVE.has(d.state); cancel.disabled = d.cancel_requested; cancel.textContent = d.cancel_requested ? t("cancelling") : t("cancel");
    const log = $("jd-log"), stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (log.textContent !== d.log) { log.textContent = d.log; if (stick) log.scrollTop = log.scrollHeight; }
    document.body.dataset.job = d.state;
  }
  // The loss curve: training loss per step (a line) and validation loss per evaluation (dots), inline SVG.
  function drawLoss(box, p) {
    const pts = p.loss.filter((x) => typeof x.loss === "number"), val = p.val.filter((x) => typeof x.val_loss === "number");
    if (!pts.length && !val.length) { box.textContent = ""; box.append(el("p", "notice", t("noPoints"))); box.setAttribute("aria-label", t("noPoints")); return; }
    const W = 560, H = 230, L = 52, R = 14, T = 14, B = 34;
    const maxStep = Math.max(p.total || 0, p.step || 0, ...pts.map((x) => x.step), ...val.map((x) => x.step), 1);
    const ys = [...pts.map((x) => x.loss), ...val.map((x) => x.val_loss)];
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
    const X = (s) => (L + ((W - L - R) * s) / maxStep).toFixed(1), Y = (v) => (T + ((H - T - B) * (hi - v)) / (hi - lo)).toFixed(1);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "loss-chart" });
    root.append(svg("path", { class: "chart-axis", d: `M${L},${T} V${H - B} H${W - R}` }));
    for (const v of [hi, (hi + lo) / 2, lo]) {
      root.append(svg("line", { class: "chart-grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      root.append(svg("text", { class: "chart-label", x: L - 6, y: Number(Y(v)) + 4, "text-anchor": "end" }, v.toFixed(2)));
    }
    root.append(svg("text", { class: "chart-label", x: L, y: H - B + 16, "text-anchor": "middle" }, "0"));
    root.append(svg("text", { class: "chart-label", x: W - R, y: H - B + 16, "text-anchor": "end" }, String(maxStep)));
    root.append(svg("text", { class: "chart-label", x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, t("steps")));
    if (pts.length) root.append(svg("polyline", { class: "chart-loss", points: pts.map((x) => `${X(x.step)},${Y(x.loss)}`).join(" ") }));
    if (val.length > 1) root.append(svg("polyline", { class: "chart-val", points: val.map((x) => `${X(x.step)},${Y(x.val_loss)}`).join(" ") }));
    for (const x of val) root.append(svg("circle", { class: "chart-dot", cx: X(x.step), cy: Y(x.val_loss), r: 3 }, null));
    const legend = svg("g", { class: "chart-legend", transform: `translate(${W - R - 150},${T + 4})` });
    legend.append(svg("line", { class: "chart-loss", x1: 0, x2: 18, y1: 0, y2: 0 }), svg("text", { class: "chart-label", x: 24, y: 4 }, t("lossL")));
    if (val.length) legend.append(svg("circle", { class: "chart-dot", cx: 9, cy: 16, r: 3 }), svg("text", { class: "chart-label", x: 24, y: 20 }, t("valLoss")));
    root.append(legend);
    box.textContent = ""; box.append(root);
    const last = pts.at(-1);
    box.setAttribute("aria-label", `${t("lossL")}: ${last ? `${last.loss.toFixed(4)} @ ${last.step}` : ""}`);
  }

  // -- knowledge bases ----------------------------------------------------------------------------
  const kbName = () => $("kb-select").value;
  async function apiJson(method, path, body) {
    const r = await fetch(path, { method, headers: headers(true), body: body == null ? undefined : JSON.stringify(body) });
    if (!r.ok) throw await errorOf(r);
    return r.json();
  }
  function kbStatus(text, cls = "notice") { const s = $("kb-upload-status"); s.className = cls; s.textContent = text; }
  async function loadKbs() {
    let data;
    try { data = await api("/v1/kb"); } catch (e) { kbStatus(e.status === 401 ? t("unauthorized") : e.message, "msg-error"); return; }
    const sel = $("kb-select"), prev = sel.value || ls.get("kb"); sel.textContent = "";
    for (const k of data.data || []) { const o = el("option", "", `${k.name} (${k.documents})`); o.value = k.name; sel.append(o); }
    if (prev && [...sel.options].some((o) => o.value === prev)) sel.value = prev;
    if (!sel.options.length) kbStatus(t("noKb"));
    await loadDocs();
  }
  async function loadDocs() {
    const tb = document.querySelector("#kb-docs tbody"); tb.textContent = "";
    if (!kbName()) return;
    ls.set("kb", kbName());
    let data;
    try { data = await api(`/v1/kb/${encodeURIComponent(kbName())}/documents`); } catch (e) { kbStatus(e.message, "msg-error"); return; }
    for (const d of data.data || []) {
      const tr = el("tr"), rm = el("button", "icon", "✕");
      rm.type = "button"; rm.title = t("remove"); rm.setAttribute("aria-label", t("remove") + " " + d.name);
      rm.onclick = async () => {
        try { await apiJson("DELETE", `/v1/kb/${encodeURIComponent(kbName())}/documents/${d.name.split("/").map(encodeURIComponent).join("/")}`); } catch (e) { kbStatus(e.message, "msg-error"); }
        loadKbs();
      };
      for (const v of [d.name, d.pages ?? "–", d.chunks, (d.groups || []).join(",") || t("all")]) tr.append(el("td", "", String(v)));
      const last = el("td"); last.append(rm); tr.append(last); tb.append(tr);
    }
  }
  $("kb-create").onclick = async () => {
    const name = $("kb-new-name").value.trim(); if (!name) return;
    try { await apiJson("POST", "/v1/kb", { name }); ls.set("kb", name); $("kb-select").value = ""; $("kb-new-name").value = ""; } catch (e) { kbStatus(e.message, "msg-error"); return; }
    await loadKbs(); $("kb-select").value = name; loadDocs();
  };
  $("kb-select").onchange = loadDocs;
  $("kb-upload").onclick = () => {
    const files = $("kb-files").files; if (!files.length || !kbName()) return;
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    form.append("groups", $("kb-groups").value.trim());
    const xhr = new XMLHttpRequest(), bar = $("kb-progress");
    xhr.open("POST", `/v1/kb/${encodeURIComponent(kbName())}/documents`);
    const h = headers(false); for (const k in h) xhr.setRequestHeader(k, h[k]);
    bar.hidden = false; bar.value = 0; kbStatus("0%"); document.body.dataset.uploading = "1";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) { bar.value = (100 * e.loaded) / e.total; kbStatus(`${Math.round(bar.value)}%`); } };
    xhr.upload.onload = () => { bar.value = 100; kbStatus(t("indexing")); };
    xhr.onerror = () => { kbStatus("network error", "msg-error"); document.body.dataset.uploading = "0"; };
    xhr.onload = async () => {
      let j = {}; try { j = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status !== 200) { kbStatus(j?.error?.message || `HTTP ${xhr.status}`, "msg-error"); document.body.dataset.uploading = "0"; return; }
      const fails = (j.failed || []).map((f) => `${f.document}: ${f.error}`);
      kbStatus(`${t("uploaded")} ${j.added.length}, ${t("replaced")} ${j.replaced.length}, ${t("unchanged")} ${j.unchanged.length}, ${t("failed")} ${fails.length}` + (fails.length ? "\n" + fails.join("\n") : ""), fails.length ? "msg-error" : "notice");
      $("kb-files").value = "";
      await loadKbs();  // "done" only once the document list shows what was added
      document.body.dataset.uploading = "0";
    };
    xhr.send(form);
  };
  function hitItem(h, n) {
    const li = el("li"), where = h.document + (h.page ? ` · p.${h.page}` : "") + (h.heading ? ` · ${h.heading}` : "");
    li.append(el("div", "hit-meta", (n ? `[${n}] ` : "") + where + (h.score != null ? ` · ${Number(h.score).toFixed(4)}` : "")), el("div", "", h.text ?? h.snippet));
    return li;
  }
  $("kb-search-form").onsubmit = async (e) => {
    e.preventDefault();
    const q = $("kb-query").value.trim(), out = $("kb-results"); if (!q || !kbName()) return;
    out.textContent = "";
    try {
      const r = await apiJson("POST", `/v1/kb/${encodeURIComponent(kbName())}/search`, { query: q, k: 5 });
      if (!r.hits.length) out.append(el("li", "notice", t("noResults")));
      for (const h of r.hits) out.append(hitItem(h));
      for (const n of r.notes || []) out.append(el("li", "notice", `ℹ ${n}`));
    } catch (err) { out.append(el("li", "msg-error", err.message)); }
  };
  let kbSources = [];
  function showPassage(n) {
    const s = kbSources[n - 1], box = $("kb-passage"); if (!s) return;
    box.hidden = false; box.textContent = "";
    box.append(el("div", "hit-meta", `[${n}] ${s.document}` + (s.page ? ` · p.${s.page}` : "") + (s.heading ? ` · ${s.heading}` : "")), el("div", "", s.snippet));
  }
  function renderAnswer(text) { // citations [n] become links to their passage
    const box = $("kb-answer"); box.textContent = "";
    let last = 0;
    for (const m of text.matchAll(/\[(\d{1,3})\]/g)) {
      box.append(document.createTextNode(text.slice(last, m.index)));
      const a = el("a", "cite", m[0]); a.dataset.n = m[1]; a.onclick = () => showPassage(Number(m[1])); box.append(a);
      last = m.index + m[0].length;
    }
    box.append(document.createTextNode(text.slice(last)));
  }
  $("kb-rewrite").checked = ls.get("kbRewrite") !== "0";
  $("kb-rewrite").onchange = () => ls.set("kbRewrite", $("kb-rewrite").checked ? "1" : "0");
  $("kb-ask-form").onsubmit = async (e) => {
    e.preventDefault();
    const q = $("kb-question").value.trim(); if (!q || !kbName()) return;
    $("kb-answer").textContent = ""; $("kb-flags").textContent = ""; $("kb-sources").textContent = ""; $("kb-passage").hidden = true;
    document.body.dataset.asking = "1";
    let text = "";
    try {
      const r = await fetch(`/v1/kb/${encodeURIComponent(kbName())}/ask`, { method: "POST", headers: headers(true),
        body: JSON.stringify({ question: q, model: $("model-select").value, stream: true, max_tokens: Number($("max-tokens").value) || 384, rewrite: $("kb-rewrite").checked }) });
      if (!r.ok) throw await errorOf(r);
      const reader = r.body.getReader(), dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read(); if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.error) throw new Error(ev.error.message);
          if (ev.type === "sources") {
            for (const n of ev.notes || []) $("kb-flags").append(el("li", "", `ℹ ${n}`));
            if (ev.rewrite) $("kb-flags").append(el("li", "kb-rewrite-info", `🔎 ${t("searched")}: ${ev.rewrite.queries.join(" | ")} (`
              + (ev.rewrite.fallback || (ev.rewrite.cached ? "cache" : `${ev.rewrite.seconds} s`)) + ")"));
          }
          if (ev.type === "sources" || ev.type === "done") {
            kbSources = ev.sources || []; $("kb-sources").textContent = "";
            kbSources.forEach((s, k) => { const li = hitItem(s, k + 1); li.onclick = () => showPassage(k + 1); $("kb-sources").append(li); });
          }
          if (ev.type === "delta") { text += ev.content; renderAnswer(text); }
          if (ev.type === "retry") { text = ""; renderAnswer(text); }
          if (ev.type === "done") {
            renderAnswer(ev.answer);
            if (ev.retried) $("kb-flags").append(el("li", "kb-retried", `ℹ ${t("retried")}: ${ev.retried.first_answer}`));
            for (const c of ev.claims || []) if (!c.supported) $("kb-flags").append(el("li", "", `⚠ ${t("unsupported")} (${c.problem}): ${c.text}`));
          }
        }
      }
    } catch (err) { $("kb-answer").append(el("div", "msg-error", err.message)); }
    document.body.dataset.asking = "0";
  };


  // -- evaluation ---------------------------------------------------------------------------------
  const LOWER = new Set(["perplexity", "bits_per_byte"]);
  async function loadEval() {
    const st = $("eval-status"), head = document.querySelector("#eval-table thead"), tb = document.querySelector("#eval-table tbody");
    head.textContent = ""; tb.textContent = "";
    let data;
    try { data = await api("/api/eval"); } catch (e) { st.className = "msg-error"; st.textContent = e.message; return; }
    const models = (data.models || []).filter((m) => Object.keys(m.evals).length);
    st.className = "notice"; st.textContent = models.length ? "" : t("noEval");
    const hr = el("tr"); for (const h of [t("suite"), t("metric"), ...models.map((m) => m.name)]) hr.append(el("th", "", h)); head.append(hr);
    const suites = [...new Set(models.flatMap((m) => Object.keys(m.evals)))].sort();
    for (const s of suites) {
      const metrics = [...new Set(models.flatMap((m) => Object.keys(m.evals[s]?.metrics || {})))].sort();
      for (const k of metrics) {
        const vals = models.map((m) => m.evals[s]?.metrics?.[k]);
        const have = vals.filter((v) => typeof v === "number");
        const best = have.length ? (LOWER.has(k) ? Math.min(...have) : Math.max(...have)) : null;
        const top = have.length ? Math.max(...have.map(Math.abs)) || 1 : 1;
        const tr = el("tr"); tr.append(el("td", "", s), el("td", "", k));
        for (const v of vals) {
          const td = el("td", v === best && models.length > 1 ? "best" : "", typeof v === "number" ? v.toFixed(4) : "–");
          if (typeof v === "number") { const bar = el("span", "bar"); bar.style.width = `${Math.round((60 * Math.abs(v)) / top)}px`; td.append(bar); }
          tr.append(td);
        }
        tb.append(tr);
      }
    }
  }
  async function loadArena() {
    let data;
    try { data = await api("/v1/models"); } catch { return; }
    const chat = (data.data || []).filter((m) => ["chat", "base", "adapter"].includes(m.lmforge?.kind)).map((m) => m.id);
    for (const [id, i] of [["arena-a", 0], ["arena-b", 1]]) {
      const sel = $(id), prev = sel.value; sel.textContent = "";
      for (const m of chat) { const o = el("option", "", m); o.value = m; sel.append(o); }
      sel.value = prev && chat.includes(prev) ? prev : chat[Math.min(i, chat.length - 1)] || "";
    }
    loadStats();
  }
  async function loadStats() {
    const tb = document.querySelector("#arena-stats tbody"); tb.textContent = "";
    let data; try { data = await api("/api/arena/stats"); } catch { return; }
    for (const p of data.pairs || []) {
      const tr = el("tr");
      for (const v of [p.model, p.opponent, `${p.wins} / ${p.losses} / ${p.ties}`, `${(100 * p.win_rate).toFixed(0)}% (${(100 * p.ci95[0]).toFixed(0)}–${(100 * p.ci95[1]).toFixed(0)}%)`]) tr.append(el("td", "", v));
      tb.append(tr);
    }
  }
  let pairId = null;
  const voteButtons = ["vote-A", "vote-B", "vote-tie"];
  $("arena-form").onsubmit = async (e) => {
    e.preventDefault();
    const prompt = $("arena-prompt").value.trim(); if (!prompt) return;
    $("arena-A").textContent = t("loading"); $("arena-B").textContent = t("loading"); $("arena-reveal").textContent = "";
    document.body.dataset.arena = "busy";
    try {
      const r = await apiJson("POST", "/api/arena/pair", { prompt, models: [$("arena-a").value, $("arena-b").value], max_tokens: Number($("max-tokens").value) || 256 });
      pairId = r.pair_id; $("arena-A").textContent = r.answers.A; $("arena-B").textContent = r.answers.B;
      for (const id of voteButtons) $(id).disabled = false;
    } catch (err) { $("arena-A").textContent = ""; $("arena-B").textContent = ""; $("arena-reveal").className = "msg-error"; $("arena-reveal").textContent = err.message; }
    document.body.dataset.arena = "ready";
  };
  for (const id of voteButtons) {
    $(id).onclick = async () => {
      if (!pairId) return;
      for (const b of voteButtons) $(b).disabled = true;
      try {
        const r = await apiJson("POST", "/api/arena/vote", { pair_id: pairId, winner: id === "vote-tie" ? "tie" : id.slice(-1) });
        $("arena-reveal").className = "notice"; $("arena-reveal").textContent = t("revealed").replace("{a}", r.models.A).replace("{b}", r.models.B);
      } catch (err) { $("arena-reveal").className = "msg-error"; $("arena-reveal").textContent = err.message; }
      pairId = null; loadStats(); document.body.dataset.arena = "voted";
    };
  }

  // -- settings kept across reloads -------------------------------------------------------------
  const SETTINGS = ["temperature", "top-p", "max-tokens", "seed"];
  try { const s = JSON.parse(ls.get("settings")) || {}; for (const id of SETTINGS) if (id in s) $(id).value = s[id]; } catch { /* none */ }
  const saveSettings = () => ls.set("settings", JSON.stringify(Object.fromEntries(SETTINGS.map((id) => [id, $(id).value]))));

  // -- wiring -----------------------------------------------------------------------------------
  document.querySelectorAll(".tab").forEach((b) => { b.onclick = () => showView(b.dataset.view); });
  $("lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; ls.set("lang", lang); applyLang(); };
  $("toggle-sidebar").onclick = () => openSidebar(!document.body.classList.contains("show-sidebar"));
  $("view-chat").addEventListener("pointerdown", closeSidebar);
  $("new-chat").onclick = newConversation;
  $("key-toggle").onclick = () => { if ($("key-bar").hidden) showKeyBar(); else $("key-bar").hidden = true; };
  const keyChanged = () => { $("key-bar").hidden = true; loadModels(); if (view === "models") loadModelsPage(); if (view === "train") loadTrainPage(); };
  $("save-key").onclick = () => { ls.set("key", $("api-key").value.trim() || null); keyChanged(); };
  $("clear-key").onclick = () => { ls.set("key", null); $("api-key").value = ""; keyChanged(); };
  $("api-key").onkeydown = (e) => { if (e.key === "Enter") $("save-key").click(); };
  $("model-select").onchange = () => { ls.set("model", $("model-select").value); const c = conv(); if (c) { c.model = $("model-select").value; save(); } };
  $("system-prompt").onchange = () => { const c = conv(); if (c) { c.system = $("system-prompt").value; save(); } };
  for (const id of SETTINGS) $(id).addEventListener("change", saveSettings);
  $("composer").onsubmit = (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || controller) return;
    $("prompt").value = ""; send(text);
  };
  $("prompt").onkeydown = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); $("composer").requestSubmit(); }
  };
  $("stop").onclick = () => controller?.abort();
  window.addEventListener("beforeunload", save);
  document.body.dataset.streaming = "0";
  if (conv()) $("system-prompt").value = conv().system || "";
  showView("chat");
  applyLang();
  loadModels();
})();
