// lmforge web console: chat with streaming, conversations in localStorage, models page. No dependencies.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const T = {
    en: { chat: "Chat", models: "Models", newChat: "New chat", settings: "Settings", system: "System prompt",
      send: "Send", stop: "Stop", copy: "Copy", copied: "Copied", del: "Delete", save: "Save",
      needKey: "This server needs an API key:", placeholder: "Ask anything (Enter to send, Shift+Enter for a new line)",
      name: "Name", kind: "Kind", format: "Format", params: "Params", created: "Created", lineage: "Lineage",
      metrics: "Metrics", untitled: "New conversation", stopped: "[stopped]", noModels: "No chat model registered: run `lmforge pull qwen2.5-coder-0.5b-instruct`" },
    zh: { chat: "对话", models: "模型", newChat: "新对话", settings: "设置", system: "系统提示词",
      send: "发送", stop: "停止", copy: "复制", copied: "已复制", del: "删除", save: "保存",
      needKey: "此服务器需要 API 密钥：", placeholder: "输入问题（回车发送，Shift+回车换行）",
      name: "名称", kind: "类型", format: "格式", params: "参数量", created: "创建时间", lineage: "谱系",
      metrics: "指标", untitled: "新对话", stopped: "[已停止]", noModels: "尚未注册对话模型：运行 `lmforge pull qwen2.5-coder-0.5b-instruct`" },
  };
  let lang = localStorage.getItem("lmforge.lang") || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
  const t = (k) => T[lang][k] || k;
  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    $("lang").textContent = lang === "zh" ? "EN" : "中文";
    renderConversations(); renderMessages();
  }

  // -- API ------------------------------------------------------------------------------------
  const headers = () => {
    const h = { "Content-Type": "application/json" };
    const key = localStorage.getItem("lmforge.key");
    if (key) h.Authorization = "Bearer " + key;
    return h;
  };
  async function api(path) {
    const r = await fetch(path, { headers: headers() });
    if (r.status === 401) { $("key-bar").hidden = false; throw new Error("401"); }
    if (!r.ok) throw new Error((await r.json()).error?.message || r.statusText);
    return r.json();
  }

  // -- conversations --------------------------------------------------------------------------
  const store = {
    load() { try { return JSON.parse(localStorage.getItem("lmforge.convs")) || []; } catch { return []; } },
    save() { localStorage.setItem("lmforge.convs", JSON.stringify(convs)); localStorage.setItem("lmforge.current", current); },
  };
  let convs = store.load();
  let current = localStorage.getItem("lmforge.current");
  const conv = () => convs.find((c) => c.id === current);
  function newConversation() {
    const c = { id: String(Date.now()), title: "", model: $("model-select").value, system: $("system-prompt").value, messages: [] };
    convs.unshift(c); current = c.id; store.save(); renderConversations(); renderMessages();
  }
  function renderConversations() {
    const ul = $("conversations"); ul.textContent = "";
    for (const c of convs) {
      const li = document.createElement("li");
      if (c.id === current) li.className = "active";
      const span = document.createElement("span"); span.textContent = c.title || t("untitled");
      const del = document.createElement("button"); del.textContent = "×"; del.title = t("del");
      del.onclick = (e) => { e.stopPropagation(); convs = convs.filter((x) => x.id !== c.id); if (current === c.id) current = convs[0]?.id || null; store.save(); renderConversations(); renderMessages(); };
      li.onclick = () => { current = c.id; store.save(); $("system-prompt").value = c.system || ""; if (c.model) $("model-select").value = c.model; renderConversations(); renderMessages(); document.body.classList.remove("show-sidebar"); };
      li.append(span, del); ul.append(li);
    }
  }

  // -- rendering (never innerHTML with model text) ---------------------------------------------
  function renderText(el, text) {
    el.textContent = "";
    const parts = text.split("```");
    parts.forEach((part, i) => {
      if (i % 2 === 1) {
        const pre = document.createElement("pre"); const code = document.createElement("code");
        code.textContent = part.replace(/^[\w+-]*\n/, ""); pre.append(code); el.append(pre);
      } else if (part) el.append(document.createTextNode(part));
    });
  }
  function addCopy(el, getText) {
    const b = document.createElement("button"); b.className = "copy"; b.type = "button"; b.textContent = t("copy");
    b.onclick = async () => {
      const text = getText();
      try { await navigator.clipboard.writeText(text); } catch {
        const ta = document.createElement("textarea"); ta.value = text; document.body.append(ta); ta.select(); document.execCommand("copy"); ta.remove();
      }
      b.textContent = t("copied"); setTimeout(() => { b.textContent = t("copy"); }, 1200);
    };
    el.append(b);
  }
  function bubble(m) {
    const box = $("messages");
    if (m.role === "notice") { const n = document.createElement("div"); n.className = "notice"; n.textContent = m.content; box.append(n); return n; }
    const el = document.createElement("div");
    el.className = "msg " + m.role + (m.error ? " error" : "");
    const body = document.createElement("div"); body.className = "body"; renderText(body, m.content || "");
    el.append(body);
    if (m.role === "assistant") addCopy(el, () => m.content);
    box.append(el); box.scrollTop = box.scrollHeight;
    return body;
  }
  function renderMessages() {
    $("messages").textContent = "";
    const c = conv(); if (!c) return;
    c.messages.forEach(bubble);
  }

  // -- chat -----------------------------------------------------------------------------------
  let controller = null;
  function setStreaming(on) {
    document.body.dataset.streaming = on ? "1" : "0";
    $("send").hidden = on; $("stop").hidden = !on;
  }
  async function send(text) {
    if (!conv()) newConversation();
    const c = conv();
    c.model = $("model-select").value; c.system = $("system-prompt").value;
    if (!c.title) c.title = text.slice(0, 40);
    c.messages.push({ role: "user", content: text }); bubble(c.messages.at(-1));
    const history = c.messages.filter((m) => m.role === "user" || (m.role === "assistant" && !m.error));
    const messages = (c.system ? [{ role: "system", content: c.system }] : []).concat(history.map(({ role, content }) => ({ role, content })));
    const answer = { role: "assistant", content: "" }; c.messages.push(answer);
    const body = bubble(answer);
    const req = { model: c.model, messages, stream: true, temperature: +$("temperature").value, top_p: +$("top-p").value, max_tokens: +$("max-tokens").value };
    if ($("seed").value !== "") req.seed = +$("seed").value;
    controller = new AbortController(); setStreaming(true); store.save(); renderConversations();
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(req), signal: controller.signal });
      if (!r.ok) {
        if (r.status === 401) $("key-bar").hidden = false;
        let msg = r.statusText; try { msg = (await r.json()).error.message; } catch {}
        throw new Error(msg);
      }
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read(); if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.error) throw new Error(ev.error.message);
          if (ev.lmforge?.notice) { const n = { role: "notice", content: ev.lmforge.notice }; c.messages.splice(c.messages.length - 1, 0, n); bubble(n); }
          const piece = ev.choices?.[0]?.delta?.content;
          if (piece) { answer.content += piece; renderText(body, answer.content); $("messages").scrollTop = $("messages").scrollHeight; }
        }
      }
    } catch (e) {
      if (e.name === "AbortError") { answer.content += " " + t("stopped"); renderText(body, answer.content); }
      else { answer.content = e.message; answer.error = true; body.parentElement.classList.add("error"); renderText(body, e.message); }
    } finally {
      controller = null; setStreaming(false); store.save();
    }
  }

  // -- models ---------------------------------------------------------------------------------
  async function loadModels() {
    const data = await api("/v1/models");
    const sel = $("model-select"); sel.textContent = "";
    const chat = data.data.filter((m) => ["chat", "base"].includes(m.lmforge?.kind));
    for (const m of chat) { const o = document.createElement("option"); o.value = o.textContent = m.id; sel.append(o); }
    if (!chat.length) { const n = document.createElement("div"); n.className = "notice"; n.textContent = t("noModels"); $("messages").append(n); }
    const saved = conv()?.model || localStorage.getItem("lmforge.model");
    if (saved && chat.some((m) => m.id === saved)) sel.value = saved;
  }
  async function loadModelsPage() {
    const data = await api("/api/models");
    const tb = document.querySelector("#models-table tbody"); tb.textContent = "";
    for (const m of data.models) {
      const tr = document.createElement("tr");
      const cells = [m.name, m.kind, m.format, (m.size_bytes / 1e6).toFixed(1), m.params ? (m.params / 1e6).toFixed(1) + "M" : "-", (m.created || "").slice(0, 19)];
      cells.forEach((v, i) => {
        const td = document.createElement("td"); td.textContent = v;
        if (i === 0) {
          const lin = document.createElement("div"); lin.className = "lineage";
          lin.textContent = m.lineage.map((a) => "  ".repeat(a.depth) + (a.depth ? "└ " : "") + `${a.name} [${a.kind}, ${a.format}] ${a.source || ""}`).join("\n");
          const det = document.createElement("details"); const s = document.createElement("summary"); s.textContent = t("metrics");
          const pre = document.createElement("pre"); pre.textContent = JSON.stringify(m.metrics, null, 1);
          det.append(s, pre); td.append(lin, det);
        }
        tr.append(td);
      });
      tb.append(tr);
    }
  }

  // -- wiring ---------------------------------------------------------------------------------
  document.querySelectorAll(".tab").forEach((b) => b.onclick = () => {
    document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === b));
    $("view-chat").hidden = b.dataset.view !== "chat"; $("view-models").hidden = b.dataset.view !== "models";
    if (b.dataset.view === "models") loadModelsPage().catch(() => {});
  });
  $("lang").onclick = () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("lmforge.lang", lang); applyLang(); };
  $("toggle-sidebar").onclick = () => document.body.classList.toggle("show-sidebar");
  $("new-chat").onclick = newConversation;
  $("save-key").onclick = () => { localStorage.setItem("lmforge.key", $("api-key").value.trim()); $("key-bar").hidden = true; loadModels().catch(() => {}); };
  $("model-select").onchange = () => { localStorage.setItem("lmforge.model", $("model-select").value); if (conv()) { conv().model = $("model-select").value; store.save(); } };
  $("composer").onsubmit = (e) => { e.preventDefault(); const text = $("prompt").value.trim(); if (!text || controller) return; $("prompt").value = ""; send(text); };
  $("prompt").onkeydown = (e) => { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); } };
  $("stop").onclick = () => controller?.abort();
  if (conv()) $("system-prompt").value = conv().system || "";
  applyLang();
  loadModels().catch(() => {});
})();
