// The terminal of /sessions/{id}/terminal: xterm.js (vendored UMD globals Terminal and FitAddon) connected to
// the manager's /stream/session/{id}/pty WebSocket through /func/. The protocol is JSON text messages only:
// we send {"type": "stdin", "chars": base64}, {"type": "resize", "rows", "cols"}, {"type": "ping"} and
// {"type": "restart"}; the manager sends {"type": "out", "data": base64} and {"type": "error", "data": text}.
// Closing the socket ends the shell; "Reconnect" opens a new one.
"use strict";

(function () {
  const panel = document.getElementById("terminal-panel");
  const box = document.getElementById("terminal");
  if (!panel || !box || panel.dataset.running !== "true") return;
  const statusEl = document.getElementById("terminal-status");
  const reconnectBtn = document.getElementById("terminal-reconnect");
  const restartBtn = document.getElementById("terminal-restart");
  const sessionId = panel.dataset.sessionId;

  if (typeof Terminal === "undefined" || typeof FitAddon === "undefined") {
    statusEl.textContent = "The terminal library is missing on this server (run scripts/fetch-console-assets.py).";
    return;
  }

  //: The manager takes at most 1 MiB of input per message; a large paste goes in chunks of this many bytes.
  const STDIN_CHUNK = 256 * 1024;
  //: Pings keep the session from its idle timeout while the terminal is open but nobody types.
  const PING_MS = 30000;

  const term = new Terminal({
    cursorBlink: true,
    convertEol: false,
    scrollback: 5000,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
    fontSize: 14,
    screenReaderMode: false,
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();

  const encoder = new TextEncoder();
  let ws = null;
  let pinger = null;

  function setStatus(text) { statusEl.textContent = text; }

  function toBase64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  function fromBase64(text) {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function sendStdin(data) {
    const bytes = encoder.encode(data);
    for (let i = 0; i < bytes.length; i += STDIN_CHUNK) {
      send({type: "stdin", chars: toBase64(bytes.subarray(i, i + STDIN_CHUNK))});
    }
  }

  function sendSize() { send({type: "resize", rows: term.rows, cols: term.cols}); }

  function connect() {
    reconnectBtn.hidden = true;
    restartBtn.disabled = true;
    setStatus("Connecting…");
    const sock = new WebSocket(BAI.wsURL("/stream/session/" + encodeURIComponent(sessionId) + "/pty"));
    ws = sock;
    let opened = false;
    sock.addEventListener("open", () => {
      opened = true;
      setStatus("Connected.");
      restartBtn.disabled = false;
      fit.fit();
      sendSize();
      term.focus();
      pinger = setInterval(() => send({type: "ping"}), PING_MS);
    });
    sock.addEventListener("message", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === "out" && typeof msg.data === "string") {
        term.write(fromBase64(msg.data));
      } else if (msg.type === "error") {
        // The manager's or the agent's message; the terminal stays usable unless the socket closes.
        term.write("\r\n\x1b[31m[" + String(msg.data).replace(/[\x00-\x1f]/g, " ") + "]\x1b[0m\r\n");
        setStatus("Error: " + String(msg.data));
      }
    });
    sock.addEventListener("close", (ev) => {
      if (ws !== sock) return;
      clearInterval(pinger);
      pinger = null;
      ws = null;
      restartBtn.disabled = true;
      reconnectBtn.hidden = false;
      setStatus(opened
        ? "Disconnected: the shell ended or the connection closed" + (ev.reason ? " (" + ev.reason + ")" : "") + "."
        : "Cannot open a terminal: the session may have stopped running. Reload the page to check its status.");
      term.write("\r\n\x1b[2m[disconnected]\x1b[0m\r\n");
      reconnectBtn.focus();
    });
  }

  term.onData((data) => sendStdin(data));
  term.onBinary((data) => {  // mouse reports in some modes: already bytes as a string of code units < 256
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    send({type: "stdin", chars: toBase64(bytes)});
  });
  term.onResize(() => sendSize());

  // Ctrl+Shift+C copies the selection (Ctrl+C stays the shell's interrupt); Ctrl+Shift+V is left to the
  // browser, whose paste event xterm turns into input.
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type === "keydown" && ev.ctrlKey && ev.shiftKey && (ev.key === "C" || ev.key === "c")) {
      const text = term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
      ev.preventDefault();
      return false;
    }
    if (ev.type === "keydown" && ev.ctrlKey && ev.shiftKey && (ev.key === "V" || ev.key === "v")) {
      return false;
    }
    return true;
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => fit.fit(), 100);
  });

  reconnectBtn.addEventListener("click", () => {
    term.reset();
    connect();
  });
  restartBtn.addEventListener("click", () => {
    send({type: "restart"});
    term.focus();
  });

  connect();
})();
