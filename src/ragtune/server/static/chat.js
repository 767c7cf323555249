"use strict";
// The chat page's script: a file of its own, so the page's Content-Security-Policy can forbid inline code.
const $ = (id) => document.getElementById(id);
$("key").value = localStorage.getItem("ragtune-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("ragtune-key", $("key").value); loadModels(); });
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
async function loadModels() {
  const r = await fetch("/v1/models", {headers: headers()});
  const names = r.ok ? (await r.json()).data.map((m) => m.id) : ["rag"];
  $("strategy").replaceChildren(...names.map((m) => {
    const option = document.createElement("option");
    option.textContent = m;
    option.selected = m === "rag";
    return option;
  }));
}
function showSource(s) {
  $("source").style.display = "block";
  $("source-title").textContent = `[${s.number}] ${s.title || s.document_id}`;
  $("source-text").textContent = s.snippet;
  $("source-id").textContent = `${s.document_id} · ${s.chunk_id}${s.by_model ? "" : " · attributed by ragtune"}`;
}
function add(cls, text) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  div.textContent = text;
  $("log").appendChild(div);
  return div;
}
$("ask").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (!q) return;
  $("question").value = "";
  add("user", q);
  const bot = add("bot", "");
  const text = document.createElement("span");
  text.className = "answer";
  bot.appendChild(text);
  const r = await fetch("/v1/chat/completions", {method: "POST", headers: headers(),
    body: JSON.stringify({model: $("strategy").value, stream: true, messages: [{role: "user", content: q}]})});
  if (!r.ok) { text.textContent = `error ${r.status}: ${(await r.text()).slice(0, 300)}`; return; }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") { bot.dataset.done = "1"; continue; }
      const chunk = JSON.parse(data);
      if (chunk.error) { text.textContent += ` [error: ${chunk.error.message}]`; continue; }
      const delta = chunk.choices[0].delta;
      if (delta.content) text.textContent += delta.content;
      if (chunk.sources) {
        const cites = document.createElement("div");
        cites.className = "citations";
        for (const s of chunk.sources) {
          const b = document.createElement("button");
          b.className = "cite";
          b.type = "button";
          b.textContent = `[${s.number}] ${s.title || s.document_id}`;
          b.addEventListener("click", () => showSource(s));
          cites.appendChild(b);
        }
        if (chunk.abstained) {
          const note = document.createElement("span");
          note.className = "meta";
          note.textContent = "abstained · ";
          cites.prepend(note);
        }
        bot.appendChild(cites);
      }
    }
  }
});
loadModels();
