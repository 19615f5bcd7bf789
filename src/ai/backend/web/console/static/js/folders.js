// The folders pages in the browser: confirmation dialogs for destructive forms, the rename dialog, and
// uploads of files and directories straight to the storage proxy with tus-js-client (progress per file and
// overall; an interrupted upload resumes when the same file is uploaded again, from the upload URL that
// tus-js-client keeps in localStorage under our fingerprint). After uploads the listing is fetched again.
"use strict";

(function () {
  // ------------------------------------------------------------------ confirmation (data-confirm)
  const confirmDialog = document.getElementById("confirm-dialog");
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !confirmDialog) return;
    const submitter = ev.submitter || null;
    const message = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (!message) return;
    if (form.dataset.confirmed === "1") { delete form.dataset.confirmed; return; }
    ev.preventDefault();
    document.getElementById("confirm-text").textContent = message;
    confirmDialog.returnValue = "";
    confirmDialog.addEventListener("close", () => {
      if (confirmDialog.returnValue !== "ok") return;
      form.dataset.confirmed = "1";
      form.requestSubmit(submitter);
    }, {once: true});
    confirmDialog.showModal();
  });

  // ------------------------------------------------------------------ rename dialog
  const renameDialog = document.getElementById("rename-dialog");
  if (renameDialog) {
    document.addEventListener("click", (ev) => {
      const button = ev.target instanceof Element ? ev.target.closest("button[data-rename]") : null;
      if (!button) return;
      const current = button.dataset.rename;
      document.getElementById("rename-target").value = current;
      document.getElementById("rename-title").textContent = "Rename " + current;
      const input = document.getElementById("rename-new");
      input.value = current;
      renameDialog.showModal();
      input.select();
    });
    document.getElementById("rename-cancel").addEventListener("click", () => renameDialog.close());
  }

  // ------------------------------------------------------------------ uploads
  const uploadForm = document.getElementById("upload-form");
  if (uploadForm) setupUploads(uploadForm);

  function human(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  function percent(done, total) {
    return total > 0 ? Math.floor((done / total) * 100) : 100;
  }

  // The problem document's detail of a failed tus request, if it has one.
  function tusDetail(err) {
    const resp = err && err.originalResponse;
    if (!resp) return {status: 0, detail: ""};
    let detail = "";
    try { const doc = JSON.parse(resp.getBody()); detail = doc.detail || doc.title || ""; } catch (e) { /* not JSON */ }
    return {status: resp.getStatus(), detail: detail};
  }

  function setupUploads(form) {
    const folderId = form.dataset.folderId;
    const cwd = form.dataset.cwd || "";
    const chunkSize = Number(form.dataset.chunkSize) || 16 * 1024 * 1024;
    const filesInput = document.getElementById("upload-files");
    const dirInput = document.getElementById("upload-dir");
    const button = document.getElementById("upload-button");
    const box = document.getElementById("upload-progress");
    const overall = document.getElementById("upload-overall");
    const overallText = document.getElementById("upload-overall-text");
    const list = document.getElementById("upload-list");
    const status = document.getElementById("upload-status");
    let busy = false;

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (busy) return;
      const picked = [];
      for (const f of filesInput.files) picked.push({file: f, rel: f.name});
      // A directory pick keeps each file's path below the chosen directory (the directory's name first).
      for (const f of dirInput.files) picked.push({file: f, rel: f.webkitRelativePath || f.name});
      if (!picked.length) {
        status.textContent = "Choose files or a directory to upload first.";
        return;
      }
      busy = true;
      button.disabled = true;
      BAI.clearAlerts();
      try {
        await uploadAll(picked);
      } finally {
        busy = false;
        button.disabled = false;
        filesInput.value = "";
        dirInput.value = "";
        await refreshListing();
        document.dispatchEvent(new CustomEvent("bai:uploads-done"));
      }
    });

    function row(item) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = item.rel;
      const bar = document.createElement("progress");
      bar.max = Math.max(item.file.size, 1);
      bar.value = 0;
      bar.setAttribute("aria-label", "Upload of " + item.rel);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = "0%";
      const state = document.createElement("span");
      state.className = "state";
      state.textContent = "waiting";
      li.append(name, bar, pct, state);
      list.appendChild(li);
      item.sent = 0;
      item.show = (sent) => {
        item.sent = sent;
        bar.value = Math.min(sent, bar.max);
        pct.textContent = percent(sent, item.file.size) + "%";
      };
      item.state = (text, cls) => { state.textContent = text; state.className = "state " + (cls || ""); };
    }

    async function uploadAll(items) {
      list.replaceChildren();
      box.hidden = false;
      const total = items.reduce((sum, it) => sum + it.file.size, 0);
      overall.max = Math.max(total, 1);
      const update = () => {
        const sent = items.reduce((sum, it) => sum + (it.sent || 0), 0);
        overall.value = Math.min(sent, overall.max);
        overallText.textContent = percent(sent, total) + "% (" + human(sent) + " of " + human(total) + ")";
        document.dispatchEvent(new CustomEvent("bai:upload-progress", {detail: {sent: sent, total: total}}));
      };
      items.forEach(row);
      update();
      let failed = 0;
      // One file at a time: the overall bar then moves steadily and the proxy sees one stream per user.
      for (const item of items) {
        item.state("uploading");
        try {
          const resumedFrom = await uploadOne(item, update);
          item.show(item.file.size);
          item.state(resumedFrom > 0 ? "done (resumed at " + human(resumedFrom) + ")" : "done", "done");
        } catch (err) {
          failed++;
          item.state("failed: " + err.message, "failed");
          BAI.showAlert(err.message, true);
        }
        update();
      }
      status.textContent = failed
        ? failed + " of " + items.length + " uploads failed."
        : "Uploaded " + items.length + (items.length === 1 ? " file." : " files.");
    }

    // Upload one file; resolves with the offset it resumed from (0 for a fresh upload).
    async function uploadOne(item, update) {
      const target = cwd ? cwd + "/" + item.rel : item.rel;
      let grant;
      try {
        grant = await BAI.api("POST", "/folders/" + encodeURIComponent(folderId) + "/request-upload",
                              {path: target, size: item.file.size});
      } catch (err) {
        if (err.status === 413) throw new Error(item.rel + " is too large to upload: " + (err.detail || err.title));
        throw new Error(item.rel + ": " + err.message);
      }
      const endpoint = grant.url + (grant.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(grant.token);
      return new Promise((resolve, reject) => {
        let resumedFrom = 0, firstChunk = true, previousFound = false;
        const upload = new tus.Upload(item.file, {
          endpoint: endpoint,
          chunkSize: chunkSize,
          retryDelays: [0, 1000, 3000, 5000],
          // The same file to the same place in the same folder: the storage proxy's upload URL is kept
          // (tus-js-client's localStorage) under this key, and a later upload of it resumes there.
          fingerprint: () => Promise.resolve(
            ["backend.ai", folderId, target, item.file.size, item.file.lastModified].join(":")),
          storeFingerprintForResuming: true,
          removeFingerprintOnSuccess: true,
          onProgress: (sent) => { item.show(sent); update(); },
          onChunkComplete: (size, accepted) => {
            if (firstChunk && previousFound) resumedFrom = accepted - size;
            firstChunk = false;
          },
          onSuccess: () => resolve(resumedFrom),
          onError: (err) => {
            const {status, detail} = tusDetail(err);
            if (status === 413) reject(new Error(item.rel + " is too large to upload: " + (detail || "over the limit")));
            else reject(new Error(item.rel + ": " + (detail || err.message || "the upload failed")));
          },
        });
        upload.findPreviousUploads().then((previous) => {
          if (previous.length) {
            previousFound = true;
            item.state("resuming");
            upload.resumeFromPreviousUpload(previous[0]);
          }
          upload.start();
        }, reject);
      });
    }

    async function refreshListing() {
      try {
        const resp = await fetch(form.dataset.listingUrl, {headers: {"HX-Request": "true"}, credentials: "same-origin"});
        if (!resp.ok) return;
        const holder = document.createElement("div");
        holder.innerHTML = await resp.text();
        const fresh = holder.querySelector("#listing");
        const old = document.getElementById("listing");
        if (fresh && old) old.replaceWith(fresh);
      } catch (e) {
        status.textContent += " Reload the page to see the new files.";
      }
    }
  }
})();
