// The login form: POST /server/login as JSON, then on to the page the user wanted.
"use strict";

(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const username = form.username.value.trim(), password = form.password.value;
    if (!username || !password) {
      error.textContent = "Enter your email (or user name) and your password.";
      error.hidden = false;
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const resp = await fetch("/server/login", {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-Requested-With": "XMLHttpRequest"},
        credentials: "same-origin",
        body: JSON.stringify({username: username, password: password}),
      });
      let doc = {};
      try { doc = await resp.json(); } catch (e) { /* empty */ }
      if (resp.ok && doc.authenticated) {
        location.assign(form.dataset.next || "/sessions");
        return;
      }
      let message = doc.detail || doc.msg || doc.title || ("Login failed (" + resp.status + ").");
      if (resp.status === 401 && !doc.detail) message = "Wrong email or password, or the account is not active.";
      error.textContent = message;
      error.hidden = false;
      form.password.value = "";
      form.password.focus();
    } catch (e) {
      error.textContent = "The server cannot be reached.";
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
})();
