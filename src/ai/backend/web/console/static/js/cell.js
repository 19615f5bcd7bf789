// The code console of /sessions/{id}/cell: runs code in the session's main kernel (query mode) over the
// manager's /stream/session/{id}/execute WebSocket (through /func/), one socket per run. The client sends
// {"code", "mode": "query", "options"} once; every Execution Result Object comes back as a text message
// ("continued" segments as the code produces them, "waiting-input" when it calls input(), "finished" last),
// and on "waiting-input" the next text message we send is the input line.
//
// Output is only ever added as text nodes, <img> elements with data: URIs, or sandboxed iframes: nothing
// the code prints is parsed as HTML in this page.
"use strict";

(function () {
  const root = document.getElementById("cell-console");
  if (!root) return;
  const sessionId = root.dataset.sessionId;
  const form = document.getElementById("cell-form");
  const editor = document.getElementById("cell-code");
  const runBtn = document.getElementById("cell-run");
  const interruptBtn = document.getElementById("cell-interrupt");
  const clearBtn = document.getElementById("cell-clear");
  const statusEl = document.getElementById("cell-status");
  const history = document.getElementById("cell-history");
  const inputForm = document.getElementById("cell-input-form");
  const inputEl = document.getElementById("cell-input");
  const running = root.dataset.running === "true";

  let count = 0;        // cells run on this page (the "In [n]" numbers)
  let current = null;   // the run in progress: {ws, out, cell, done}

  function setStatus(text) { statusEl.textContent = text; }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- rendering one console item ------------------------------------------------------------------

  // stdout/stderr: consecutive text of the same stream goes into one block, so that a stream of small
  // writes reads as one output.
  function appendText(out, stream, text) {
    if (!text) return;
    const last = out.lastElementChild;
    if (last && last.dataset.stream === stream) {
      last.querySelector("pre").append(text);
      return;
    }
    const block = el("div", "stream " + stream);
    block.dataset.stream = stream;
    if (stream === "stderr") block.append(el("span", "stream-label", "stderr"));
    const pre = el("pre", "", text);
    block.append(pre);
    out.append(block);
  }

  function isImageDataURI(s) {
    return typeof s === "string" && /^data:image\/[a-z0-9.+-]+[;,]/i.test(s);
  }

  function appendMedia(out, value) {
    if (!Array.isArray(value) || value.length < 2) return;
    const mime = String(value[0]).toLowerCase();
    const content = String(value[1]);
    const box = el("figure", "media");
    if (mime.startsWith("image/svg+xml")) {
      // SVG may carry scripts: shown through <img> (which never runs them), never inlined into the page.
      const img = el("img");
      img.src = isImageDataURI(content) ? content
        : "data:image/svg+xml;charset=utf-8," + encodeURIComponent(content);
      img.alt = "SVG image output";
      box.append(img);
    } else if (mime.startsWith("image/") && isImageDataURI(content)) {
      const img = el("img");
      img.src = content;
      img.alt = "Image output (" + mime + ")";
      box.append(img);
    } else if (!content.startsWith("data:")) {
      // Text-based types (text/plain, application/json, text/latex ...) arrive as plain strings.
      box.append(el("figcaption", "muted", mime));
      box.append(el("pre", "", content));
    } else {
      const a = el("a", "", "Download the " + mime + " output");
      a.href = content;
      a.download = "output";
      box.append(a);
    }
    out.append(box);
  }

  function appendHTML(out, html) {
    // HTML output lives only in a sandboxed frame without allow-same-origin (an opaque origin: no access to
    // this page, its cookies or the API) and without allow-scripts; srcdoc frames also inherit this page's
    // CSP, so inline scripts in it would not run anyway.
    const frame = el("iframe", "html-output");
    frame.setAttribute("sandbox", "");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.title = "HTML output";
    frame.srcdoc = "<!doctype html><meta charset=\"utf-8\"><style>body{font:14px system-ui,sans-serif;" +
      "margin:.5em}table{border-collapse:collapse}td,th{border:1px solid #ccd;padding:.2em .5em}</style>" +
      String(html);
    out.append(frame);
  }

  function appendLog(out, value) {
    const [level, , logger, message] = Array.isArray(value) ? value : ["info", 0, "", String(value)];
    const line = el("div", "log " + String(level));
    line.append(el("span", "log-level", String(level).toUpperCase()));
    if (logger) line.append(el("span", "muted", " " + String(logger) + ": "));
    line.append(document.createTextNode(String(message)));
    out.append(line);
  }

  function renderItems(out, items) {
    for (const item of items || []) {
      if (!Array.isArray(item) || item.length < 2) continue;
      const [kind, value] = item;
      if (kind === "stdout" || kind === "stderr") appendText(out, kind, String(value));
      else if (kind === "media") appendMedia(out, value);
      else if (kind === "html") appendHTML(out, value);
      else if (kind === "log") appendLog(out, value);
      else appendText(out, "stdout", String(value));
    }
  }

  function note(out, text, cls) { out.append(el("p", "run-note " + (cls || "muted"), text)); }

  // ---- one run ----------------------------------------------------------------------------------------

  function newCell(code) {
    count += 1;
    const cell = el("article", "cell running");
    cell.setAttribute("aria-label", "Cell " + count);
    const head = el("div", "cell-head");
    head.append(el("span", "cell-num", "In [" + count + "]"));
    const again = el("button", "link", "Edit");
    again.type = "button";
    again.setAttribute("aria-label", "Edit cell " + count + " (copies its code to the editor)");
    again.addEventListener("click", () => { editor.value = code; editor.focus(); });
    head.append(again);
    cell.append(head);
    cell.append(el("pre", "cell-code", code));
    const out = el("div", "cell-output");
    out.setAttribute("aria-label", "Output of cell " + count);
    cell.append(out);
    history.append(cell);
    return {cell: cell, out: out};
  }

  function busy(on) {
    runBtn.disabled = on || !running;
    interruptBtn.disabled = !on;
  }

  function finish(run, text, cls) {
    if (run.done) return;
    run.done = true;
    run.cell.classList.remove("running");
    if (text) note(run.out, text, cls);
    hideInput();
    busy(false);
    current = null;
    setStatus("Ready.");
    run.cell.scrollIntoView({block: "nearest"});
  }

  function onResult(run, result) {
    if (result.status === "error") {  // the manager's own refusal (bad message, kernel unreachable)
      finish(run, "Error: " + (result.error || "the run failed"), "error");
      return;
    }
    renderItems(run.out, result.console);
    switch (result.status) {
      case "continued":
        setStatus("Running…");
        break;
      case "waiting-input":
        askInput(run, Boolean(result.options && result.options.is_password));
        break;
      case "exec-timeout":
        finish(run, "Stopped: the run took longer than its time limit.", "error");
        break;
      case "finished": {
        const code = result.exitCode;
        const files = (result.files || []).map((f) => f.name || f.path || "").filter(Boolean);
        if (files.length) note(run.out, "Files written: " + files.join(", "));
        finish(run, code ? "Finished with exit code " + code + "." : "", code ? "error" : "muted");
        break;
      }
      default:
        setStatus("Running… (" + result.status + ")");
    }
  }

  function runCode(code) {
    if (current || !code.trim()) return;
    const parts = newCell(code);
    const run = {ws: null, cell: parts.cell, out: parts.out, done: false};
    current = run;
    busy(true);
    setStatus("Running…");
    let ws;
    try {
      ws = new WebSocket(BAI.wsURL("/stream/session/" + encodeURIComponent(sessionId) + "/execute"));
    } catch (e) {
      finish(run, "Cannot connect: " + e.message, "error");
      return;
    }
    run.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      ws.send(JSON.stringify({code: code, mode: "query", options: {}}));
    });
    ws.addEventListener("message", (ev) => {
      let result;
      try { result = JSON.parse(ev.data); } catch (e) { return; }
      if (result && typeof result === "object") onResult(run, result);
    });
    ws.addEventListener("close", (ev) => {
      if (run.done) return;
      // A refused handshake (session gone, not yours, not running) closes before "open".
      finish(run, opened
        ? "The connection closed before the run finished" + (ev.reason ? ": " + ev.reason : ".")
        : "Cannot reach the session's kernel (is the session still running?). Reload the page to check.",
        "error");
    });
    editor.value = "";
  }

  // ---- input() ----------------------------------------------------------------------------------------

  function askInput(run, password) {
    setStatus("Waiting for input…");
    inputEl.type = password ? "password" : "text";
    inputEl.value = "";
    inputForm.hidden = false;
    inputForm.dataset.password = password ? "true" : "false";
    inputEl.focus();
  }

  function hideInput() {
    inputForm.hidden = true;
    inputEl.value = "";
  }

  inputForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const run = current;
    if (!run || !run.ws || run.ws.readyState !== WebSocket.OPEN) return;
    const text = inputEl.value;
    // Echo what was typed (a password as dots) where the code's prompt left the cursor.
    appendText(run.out, "stdout", (inputForm.dataset.password === "true" ? "••••" : text) + "\n");
    run.ws.send(text);
    hideInput();
    setStatus("Running…");
    editor.focus();
  });

  // ---- controls ---------------------------------------------------------------------------------------

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    runCode(editor.value);
  });

  editor.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.shiftKey || ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      runCode(editor.value);
    } else if (ev.key === "Tab" && !ev.shiftKey && !ev.ctrlKey && !ev.altKey) {
      // Indent instead of leaving the editor; Esc then Tab still moves focus on (no keyboard trap).
      if (editor.dataset.tabEscape === "true") { editor.dataset.tabEscape = "false"; return; }
      ev.preventDefault();
      editor.setRangeText("    ", editor.selectionStart, editor.selectionEnd, "end");
    } else if (ev.key === "Escape") {
      editor.dataset.tabEscape = "true";
    }
  });

  interruptBtn.addEventListener("click", async () => {
    if (!current) return;
    interruptBtn.disabled = true;
    setStatus("Interrupting…");
    try {
      await BAI.api("POST", "/session/" + encodeURIComponent(sessionId) + "/interrupt", {});
    } catch (e) {
      BAI.showAlert("Could not interrupt: " + e.message, true);
      if (current) interruptBtn.disabled = false;
    }
  });

  clearBtn.addEventListener("click", () => {
    // The run in progress keeps its cell; finished cells go.
    for (const cell of Array.from(history.children)) {
      if (!current || cell !== current.cell) cell.remove();
    }
    setStatus(current ? "Running…" : "Output cleared.");
    editor.focus();
  });

  busy(false);
  if (running) editor.focus();
})();
