// What every console page shares: the CSRF header on htmx and fetch calls, alerts for failed htmx
// requests, a JSON helper for /func/ (the manager's API as the logged-in user) and a Server-Sent Events
// helper. Loaded on every page; exposes window.BAI.
"use strict";

(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  function showAlert(html, isText) {
    const box = document.getElementById("alerts");
    if (!box) return;
    const div = document.createElement("div");
    div.className = "alert error";
    if (isText) div.textContent = html; else div.innerHTML = html;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "Dismiss";
    close.setAttribute("aria-label", "Dismiss this message");
    close.addEventListener("click", () => div.remove());
    div.appendChild(close);
    box.appendChild(div);
  }

  function clearAlerts() {
    const box = document.getElementById("alerts");
    if (box) box.replaceChildren();
  }

  // A problem document (or any failed answer) as an Error with .status, .title and .detail.
  async function failure(resp) {
    let title = resp.statusText || ("HTTP " + resp.status), detail = "";
    try {
      const doc = await resp.json();
      title = doc.title || title;
      detail = doc.detail || doc.msg || "";
    } catch (e) { /* not JSON */ }
    const err = new Error(detail ? title + ": " + detail : title);
    err.status = resp.status; err.title = title; err.detail = detail;
    return err;
  }

  // Call the manager's API as the logged-in user: BAI.api("POST", "/session", {...}) -> decoded JSON.
  async function api(method, path, body, opts) {
    const headers = {"X-Requested-With": "XMLHttpRequest", "X-CSRF-Token": csrf};
    const init = {method: method, headers: headers, credentials: "same-origin"};
    if (body !== undefined && body !== null) {
      if (body instanceof FormData || body instanceof Blob) init.body = body;
      else { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    }
    if (opts && opts.signal) init.signal = opts.signal;
    const resp = await fetch("/func" + path, init);
    if (!resp.ok) throw await failure(resp);
    if (opts && opts.raw) return resp;
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  // GraphQL through /func/admin/gql: the data, or an Error with the first error's message.
  async function gql(query, variables) {
    const answer = await api("POST", "/admin/gql", {query: query, variables: variables || {}});
    if (answer.errors && answer.errors.length) throw new Error(answer.errors[0].message || "GraphQL error");
    return answer.data;
  }

  // Subscribe to a Server-Sent Events stream of the manager (e.g. "/events/session"); handlers maps event
  // names to functions of the decoded data. Returns the EventSource (call .close() to stop).
  function events(path, handlers) {
    const es = new EventSource("/func" + path, {withCredentials: true});
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        let data = ev.data;
        try { data = JSON.parse(ev.data); } catch (e) { /* plain text */ }
        fn(data, ev);
      });
    }
    return es;
  }

  // A WebSocket URL for a /func/ stream path on this origin.
  function wsURL(path) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/func" + path;
  }

  document.addEventListener("htmx:configRequest", (ev) => {
    ev.detail.headers["X-CSRF-Token"] = csrf;
  });
  document.addEventListener("htmx:beforeRequest", () => clearAlerts());
  document.addEventListener("htmx:responseError", (ev) => {
    const xhr = ev.detail.xhr;
    const type = xhr.getResponseHeader("Content-Type") || "";
    if (type.startsWith("text/html")) showAlert(xhr.responseText, false);
    else showAlert("Request failed: " + xhr.status + " " + xhr.statusText, true);
  });
  document.addEventListener("htmx:sendError", () => showAlert("The server cannot be reached.", true));

  window.BAI = {csrf: csrf, api: api, gql: gql, events: events, wsURL: wsURL, showAlert: showAlert,
                clearAlerts: clearAlerts};
})();
