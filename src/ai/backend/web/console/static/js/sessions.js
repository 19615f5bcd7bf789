// The sessions pages in the browser: live updates from the manager's session events (Server-Sent Events
// from /func/events/session through BAI.events; no polling), a confirmation before terminating, the
// launcher's fields shown for the chosen type and resources, and apps opened in a new tab.
"use strict";

(function () {
  const EVENTS = ["session_enqueued", "session_scheduled", "session_preparing", "session_pulling",
                  "session_creating", "session_started", "session_restarting", "session_terminating",
                  "session_terminated", "session_cancelled", "session_failure"];
  const ENDING = new Set(["session_terminated", "session_cancelled", "session_failure"]);

  // A server-rendered fragment of the console (HX-Request: errors come back as alert fragments).
  async function fetchFragment(url) {
    const resp = await fetch(url, {headers: {"HX-Request": "true"}, credentials: "same-origin"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return resp.text();
  }

  // Let htmx wire up the attributes of swapped-in markup.
  function processed(el) {
    if (window.htmx) window.htmx.process(el);
    return el;
  }

  // Calls fn() at most once at a time, coalescing calls made meanwhile (and within `delay` ms) into one.
  function coalesced(fn, delay) {
    let timer = null, busy = false, again = false;
    async function run() {
      if (busy) { again = true; return; }
      busy = true;
      try { await fn(); } catch (e) { /* the page keeps what it shows; the next event tries again */ }
      finally {
        busy = false;
        if (again) { again = false; schedule(); }
      }
    }
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(run, delay);
    }
    return schedule;
  }

  // Subscribe to session events; onEvent(name, data). After a reconnection (events may have been missed)
  // onResync() runs. The server's "server_close" ends the stream for good. The stream is closed when the
  // page is hidden (so it can enter the back/forward cache) and opened again when it is shown from there.
  function subscribe(path, onEvent, onResync) {
    let es = null;
    function open() {
      const handlers = {};
      for (const name of EVENTS) handlers[name] = (data) => onEvent(name, data || {});
      const stream = window.BAI.events(path, handlers);
      stream.addEventListener("server_close", () => stream.close());
      let lost = false;
      stream.addEventListener("error", () => { lost = true; });
      stream.addEventListener("open", () => {
        if (lost) { lost = false; onResync(); }
      });
      es = stream;
    }
    open();
    window.addEventListener("pagehide", () => { if (es) es.close(); });
    window.addEventListener("pageshow", (ev) => {
      if (ev.persisted) { open(); onResync(); }
    });
  }

  // ---- the list: a changed row is re-rendered; a new or ended session refreshes the table fragment.
  function liveList(region) {
    const refreshTable = coalesced(async () => {
      const html = await fetchFragment(location.pathname + location.search);
      region.innerHTML = html;
      processed(region);
    }, 250);

    async function refreshRow(row, id) {
      const table = document.getElementById("sessions-table");
      const query = new URLSearchParams({scope: table.dataset.scope, back: table.dataset.back});
      try {
        const html = await fetchFragment("/sessions/" + encodeURIComponent(id) + "/row?" + query);
        const tpl = document.createElement("template");
        tpl.innerHTML = html.trim();
        const fresh = tpl.content.querySelector("tr");
        const current = document.getElementById("session-" + id);
        if (fresh && current) current.replaceWith(processed(fresh));
      } catch (e) {
        refreshTable();
      }
    }

    subscribe("/events/session?scope=session", (name, data) => {
      const id = data.sessionId;
      if (!id) return;
      const table = document.getElementById("sessions-table");
      const tab = table ? table.dataset.tab : "running";
      const row = document.getElementById("session-" + id);
      if (row && !ENDING.has(name)) refreshRow(row, id);
      else if (row || ENDING.has(name) || tab === "running") refreshTable();
    }, refreshTable);
  }

  // ---- a session's page: its live part is re-rendered on each of its events or on demand.
  function liveDetail(box) {
    const refresh = coalesced(async () => {
      const html = await fetchFragment(box.dataset.liveUrl);
      box.innerHTML = html;
      processed(box);
    }, 150);
    box.addEventListener("click", (ev) => {
      if (ev.target.closest("[data-refresh-live]")) refresh();
    });
    // The log changes when the session starts (its bootstrap output) and when it ends.
    const logs = document.getElementById("session-logs");
    const refreshLogs = coalesced(async () => {
      if (!logs) return;
      logs.innerHTML = await fetchFragment(logs.dataset.logsUrl);
    }, 400);
    if (box.dataset.ended === "true") return; // nothing more will happen to it
    const path = "/events/session?scope=session&sessionId=" + encodeURIComponent(box.dataset.sessionId);
    subscribe(path, (name) => {
      refresh();
      if (name === "session_started" || ENDING.has(name)) refreshLogs();
    }, refresh);
  }

  // ---- apps: start the app through the console, then open the app proxy's one-use link in a new tab.
  async function openApp(btn) {
    const app = btn.dataset.openApp;
    const status = document.getElementById("app-status");
    // Opened inside the click, so popup blockers let it through; the app never gets a handle on this page.
    const tab = window.open("", "_blank");
    if (tab) {
      tab.opener = null;
      tab.document.title = "Opening " + app + "…";
    }
    btn.disabled = true;
    if (status) status.textContent = "Starting " + app + "…";
    try {
      const url = "/sessions/" + encodeURIComponent(btn.dataset.sessionId) + "/apps/" + encodeURIComponent(app);
      const resp = await fetch(url, {
        method: "POST", credentials: "same-origin", body: "{}",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": window.BAI.csrf},
      });
      let doc = {};
      try { doc = await resp.json(); } catch (e) { /* not JSON */ }
      if (!resp.ok || !doc.url) {
        throw new Error((doc.title || "HTTP " + resp.status) + (doc.detail ? ": " + doc.detail : ""));
      }
      if (tab) tab.location.href = doc.url;
      else window.open(doc.url, "_blank", "noopener");
      if (status) status.textContent = app + " was opened in a new tab.";
    } catch (e) {
      if (tab) tab.close();
      if (status) status.textContent = "";
      window.BAI.showAlert("Cannot open " + app + ": " + e.message, true);
    } finally {
      btn.disabled = false;
    }
  }

  // ---- the launcher: show the startup command for batch sessions, the preset or the custom amounts.
  function launcher(form) {
    function sync() {
      const type = (form.querySelector('input[name="type"]:checked') || {}).value;
      const mode = (form.querySelector('input[name="resource_mode"]:checked') || {}).value;
      for (const el of form.querySelectorAll("[data-show-for]")) {
        const want = el.dataset.showFor;
        el.hidden = want !== type && want !== mode;
      }
    }
    form.addEventListener("change", sync);
    sync();
  }

  // A form (or the button that submits it) with data-confirm asks first.
  document.addEventListener("submit", (ev) => {
    const question = (ev.submitter && ev.submitter.dataset.confirm) || ev.target.dataset.confirm;
    if (question && !window.confirm(question)) ev.preventDefault();
  });
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-open-app]");
    if (btn) openApp(btn);
  });

  const region = document.querySelector("[data-live-list]");
  if (region) liveList(region);
  const box = document.getElementById("session-live");
  if (box) liveDetail(box);
  const form = document.getElementById("launcher");
  if (form) launcher(form);
})();
