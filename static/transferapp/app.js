/* transferapp front-end behaviour: drag-and-drop uploader ([data-dropzone]) and
 * [data-confirm] prompts. Plain ES2020, no build step; load with <script defer>. */
(() => {
  "use strict";

  const MAX_CONCURRENT = 3; // per page, not per dropzone, to keep the server responsive
  // A WeakSet rather than a data-* flag: htmx history snapshots copy attributes but not
  // listeners, so a flag would stop restored dropzones from being re-bound.
  const bound = new WeakSet();
  const batches = new WeakMap(); // form -> {total, pending, ok, skipped, refused}
  const queue = [];
  let active = 0;

  document.documentElement.classList.add("js"); // lets CSS hide .no-js-only without a flash

  const hasFiles = (e) => !!e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  const skipped = (name) => name.startsWith(".") || name.startsWith("__MACOSX");
  const truncate = (s) => (s.length > 300 ? s.slice(0, 299) + "…" : s);
  const cookie = (name) => {
    const c = document.cookie.split("; ").find((x) => x.startsWith(name + "="));
    return c ? decodeURIComponent(c.slice(name.length + 1)) : "";
  };

  // A file dropped outside a dropzone would make the browser open it and leave the page.
  // Zones call preventDefault themselves first, so only un-handled drags are refused here.
  window.addEventListener("dragover", (e) => {
    if (hasFiles(e) && !e.defaultPrevented) { e.preventDefault(); e.dataTransfer.dropEffect = "none"; }
  });
  window.addEventListener("drop", (e) => { if (hasFiles(e)) e.preventDefault(); });

  // ---- collecting files (including dropped folders) ----

  // readEntries() returns at most ~100 entries per call: keep calling until it returns none.
  async function readDir(dir) {
    const reader = dir.createReader(), all = [];
    for (;;) {
      const chunk = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!chunk.length) return all;
      all.push(...chunk);
    }
  }

  async function walk(entry, out) {
    if (skipped(entry.name)) return;
    try {
      if (entry.isFile) out.push(await new Promise((res, rej) => entry.file(res, rej)));
      else if (entry.isDirectory) for (const child of await readDir(entry)) await walk(child, out);
    } catch (err) {
      console.warn("transferapp: could not read", entry.fullPath, err);
    }
  }

  function droppedFiles(dt) {
    // The DataTransfer is emptied once the drop handler yields, so take entries/files synchronously.
    const entries = [...(dt.items || [])].filter((i) => i.kind === "file")
      .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    if (!entries.length || entries.some((x) => !x)) return Promise.resolve([...dt.files]);
    return (async () => {
      const out = [];
      for (const entry of entries) await walk(entry, out);
      return out;
    })();
  }

  // ---- upload queue ----

  function ensure(form, tag, cls) {
    let el = form.querySelector("." + cls);
    if (!el) form.append(Object.assign(el = document.createElement(tag), { className: cls }));
    return el;
  }

  function setSummary(form, text, hasErrors) {
    const el = ensure(form, "p", "upload-summary");
    el.setAttribute("role", "status");
    el.textContent = text;
    el.classList.toggle("has-errors", !!hasErrors);
  }

  // A neutral file icon instead of the browser's broken-image glyph. Removing the src is not
  // enough (Chromium keeps drawing the glyph for an <img> that failed), so swap in a <span>.
  function noPreview(img) {
    img.onerror = null;
    img.removeAttribute("src");
    const placeholder = document.createElement("span");
    placeholder.className = "upload-thumb no-preview";
    placeholder.setAttribute("aria-hidden", "true");
    img.replaceWith(placeholder);
  }

  // Wording per form: the predict page says "Classified" rather than "Added".
  const texts = (form) => ({
    busy: form.dataset.busyText || "Uploading…",
    done: form.dataset.doneText || "Added",
    verb: form.dataset.summaryVerb || "added",
  });
  const progressText = (form, b) => `${texts(form).busy} ${b.total - b.pending} of ${b.total} done`;

  function addItem(list, file) {
    const li = document.createElement("li");
    li.className = "upload-item";
    li.innerHTML = '<img class="upload-thumb" alt="" loading="lazy" decoding="async">' +
      '<div class="upload-body"><div class="upload-name"></div>' +
      '<div class="progress"><div class="progress-bar" style="width: 0%"></div></div>' +
      '<div class="upload-status small">Waiting…</div></div>';
    li.querySelector(".upload-name").textContent = file.name;
    li.title = file.name;
    const img = li.querySelector("img");
    if (file.type.startsWith("image/")) {
      const url = URL.createObjectURL(file);
      img.onload = () => URL.revokeObjectURL(url);
      img.onerror = () => { URL.revokeObjectURL(url); noPreview(img); };
      img.src = url;
    } else {
      noPreview(img); // e.g. DICOM/TIFF: the server may still accept it
    }
    list.append(li);
    return li;
  }

  function enqueue(form, files) {
    files = files.filter((f) => !skipped(f.name));
    if (!files.length) return;
    const batchForm = form.dataset.batchForm && document.querySelector(form.dataset.batchForm);
    if (batchForm && (files.length > Number(form.dataset.batchAbove) || files.some((f) => /\.zip$/i.test(f.name)))) {
      return submitBatch(batchForm, files, form);
    }
    const list = ensure(form, "ul", "upload-list");
    const b = batches.get(form) || { total: 0, pending: 0, ok: 0, skipped: 0, refused: 0 };
    batches.set(form, b);
    b.total += files.length;
    b.pending += files.length;
    for (const file of files) queue.push({ form, file, item: addItem(list, file) });
    setSummary(form, progressText(form, b));
    pump();
  }

  // A zip or many images (the predict page): one request to the batch form, which the worker
  // predicts with a progress bar, rather than one request per image.
  function submitBatch(batchForm, files, from) {
    const most = Number(batchForm.dataset.maxFiles) || Infinity;
    if (files.length > most) {
      return setSummary(from, `${files.length} files are more than one upload may carry (${most}). Put them in a zip and drop the zip.`, true);
    }
    const inputs = batchForm.querySelectorAll("input[type=file]");
    const chosen = new DataTransfer();
    for (const file of files) chosen.items.add(file);
    inputs.forEach((input) => { input.value = ""; });
    inputs[0].files = chosen.files;
    setSummary(from, `Sending ${files.length} file${files.length === 1 ? "" : "s"} for a batch prediction…`);
    batchForm.submit();
  }

  function pump() {
    while (active < MAX_CONCURRENT && queue.length) { active++; send(queue.shift()); }
  }

  function errorText(status, type, body) {
    if (type.includes("json")) {
      try { const msg = JSON.parse(body).error; if (msg) return truncate(String(msg)); } catch (_) { /* generic */ }
    } else if (!type.includes("html") && body.trim() && !/^\s*</.test(body)) {
      return truncate(body.trim());
    }
    // Never show an HTML body (Django error / debug page); a hint for the common cases instead.
    const hint = { 403: " – permission denied or session expired; reload the page", 413: " – file too large" }[status] || "";
    return `Upload failed (HTTP ${status})${hint}`;
  }

  function insertResults(form, html) {
    const target = document.querySelector(form.dataset.results);
    if (!target) return;
    const tpl = document.createElement("template");
    tpl.innerHTML = html;
    const nodes = [...tpl.content.children];
    const pos = (form.dataset.resultsPosition || "beforeend").toLowerCase();
    const method = { beforebegin: "before", afterbegin: "prepend", beforeend: "append", afterend: "after" }[pos] || "append";
    target[method](tpl.content);
    for (const node of nodes) { if (window.htmx) window.htmx.process(node); initAll(node); }
    const reveal = form.dataset.resultsReveal && document.querySelector(form.dataset.resultsReveal);
    if (reveal) reveal.hidden = false;
    return nodes;
  }

  // The server says per file whether it was done, skipped (harmless, e.g. already in this class)
  // or refused: in the JSON's files[].status, or on an inserted row's data-upload-status.
  function jsonOutcome(body) {
    try {
      const file = (JSON.parse(body).files || [])[0];
      if (file) return { state: file.status === "added" ? "done" : file.status, reason: file.reason };
    } catch (_) { /* not our JSON: treat as done */ }
    return { state: "done" };
  }
  function htmlOutcome(nodes) {
    const marked = nodes.map((n) => (n.matches("[data-upload-status]") ? n : n.querySelector("[data-upload-status]"))).find(Boolean);
    return marked ? { state: marked.dataset.uploadStatus, reason: marked.dataset.uploadReason } : { state: "done" };
  }

  function send({ form, file, item }) {
    const url = new URL(form.getAttribute("action") || location.href, location.href).href;
    const fd = new FormData(form);
    for (const input of form.querySelectorAll("input[type=file][name]")) fd.delete(input.name);
    fd.append(form.dataset.field || "files", file, file.name);

    const bar = item.querySelector(".progress-bar"), status = item.querySelector(".upload-status");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    const token = form.querySelector("[name=csrfmiddlewaretoken]")?.value || cookie("csrftoken");
    if (token) xhr.setRequestHeader("X-CSRFToken", token);

    status.textContent = texts(form).busy;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.style.width = Math.round((100 * e.loaded) / e.total) + "%"; };
    // Bytes are sent but the server may still be working (e.g. running a prediction).
    xhr.upload.onload = () => { bar.style.width = "100%"; status.textContent = "Processing…"; };
    xhr.onerror = () => finish(form, item, "refused", "Network error, file not uploaded");
    xhr.onload = () => {
      const type = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
      const body = xhr.responseText || "";
      if (xhr.status < 200 || xhr.status >= 300) return finish(form, item, "refused", errorText(xhr.status, type, body));
      // XHR follows redirects silently; a redirect to a login page means nothing was saved,
      // and any other redirected page is a full document we must not insert.
      const landed = xhr.responseURL ? new URL(xhr.responseURL).pathname : new URL(url).pathname;
      if (landed !== new URL(url).pathname) {
        if (/login|signin|accounts/i.test(landed)) {
          return finish(form, item, "refused", "Your session has expired – reload the page and sign in again");
        }
      } else if (type.includes("text/html") && form.dataset.results && body.trim()) {
        const outcome = htmlOutcome(insertResults(form, body) || []);
        return finish(form, item, outcome.state, outcome.reason);
      } else if (type.includes("json")) {
        const outcome = jsonOutcome(body);
        return finish(form, item, outcome.state, outcome.reason);
      }
      finish(form, item, "done");
    };
    xhr.send(fd);
  }

  // The item already shows the file name as its title: "notes.png: Not an image" -> "Not an image".
  function withoutName(message, name) {
    message = String(message || "");
    return name && message.startsWith(name + ": ") ? message.slice(name.length + 2) : message;
  }

  // state: "done" (green), "skipped" (neutral: nothing was wrong, e.g. already in this class)
  // or "refused" (red, with the reason).
  function finish(form, item, state, message) {
    active--;
    item.classList.add({ done: "done", skipped: "skipped" }[state] || "error");
    item.querySelector(".progress-bar").style.width = "100%";
    const reason = withoutName(message, item.title);
    item.querySelector(".upload-status").textContent =
      state === "done" ? texts(form).done : state === "skipped" ? `Skipped: ${reason}` : `Refused: ${reason}`;
    const b = batches.get(form);
    if (state === "done") b.ok++; else if (state === "skipped") b.skipped++; else b.refused++;
    b.pending--;
    pump();
    if (b.pending > 0) return setSummary(form, progressText(form, b), b.refused);
    batches.delete(form);
    const parts = [`${b.ok} ${texts(form).verb}`];
    if (b.skipped) parts.push(`${b.skipped} skipped`);
    if (b.refused) parts.push(`${b.refused} refused`);
    setSummary(form, parts.join(", "), b.refused);
    const target = form.dataset.refresh && document.querySelector(form.dataset.refresh);
    if (target && window.htmx) window.htmx.trigger(target, "refresh");
    form.dispatchEvent(new CustomEvent("uploads:done", { bubbles: true, detail: { ok: b.ok, skipped: b.skipped, refused: b.refused } }));
  }

  // ---- binding ----

  function initDropzone(form) {
    if (bound.has(form)) return;
    bound.add(form);
    form.querySelectorAll(".no-js-only").forEach((el) => { el.hidden = true; });
    const input = form.querySelector("input[type=file]");
    let depth = 0; // dragenter/dragleave fire for every child; count to know when the pointer really left

    form.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; form.classList.add("dragover"); } });
    form.addEventListener("dragleave", (e) => { if (hasFiles(e) && --depth <= 0) { depth = 0; form.classList.remove("dragover"); } });
    form.addEventListener("dragover", (e) => { if (hasFiles(e)) { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; } });
    form.addEventListener("drop", async (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      form.classList.remove("dragover");
      enqueue(form, await droppedFiles(e.dataTransfer));
    });
    if (input) {
      // A focused file input opens the chooser on Space only; Enter is what most people press.
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); input.click(); }
      });
      input.addEventListener("change", () => {
        enqueue(form, [...input.files]);
        input.value = ""; // so choosing the same files again fires change again
      });
      // The whole zone is a click target, except its own controls and the upload list.
      form.addEventListener("click", (e) => {
        if (!e.target.closest("a, button, input, select, textarea, label, .upload-list, .upload-summary")) input.click();
      });
    }
    form.addEventListener("submit", (e) => e.preventDefault()); // files are sent as soon as they are chosen
  }

  function initAll(root) {
    if (root.matches?.("[data-dropzone]")) initDropzone(root);
    root.querySelectorAll?.("[data-dropzone]").forEach(initDropzone);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => initAll(document));
  else initAll(document);
  document.addEventListener("htmx:load", (e) => initAll(e.target));

  // ---- data-confirm ----
  // Capture phase on document, so a cancel stops the event before htmx or other handlers see it.
  document.addEventListener("click", (e) => {
    const el = e.target.closest && e.target.closest("button[data-confirm], input[data-confirm], a[data-confirm]");
    if (el && !window.confirm(el.dataset.confirm)) { e.preventDefault(); e.stopPropagation(); }
  }, true);
  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (!form.dataset || !form.dataset.confirm) return;
    if (e.submitter && e.submitter.dataset.confirm) return; // already asked on the button click
    if (!window.confirm(form.dataset.confirm)) { e.preventDefault(); e.stopPropagation(); }
  }, true);
})();

/* Selecting images in a class grid: select all, Shift-click ranges, a live count.
   The checkboxes sit in the grid and join the toolbar's form through their form= attribute. */
(function () {
  "use strict";
  function boxesFor(form) {
    return Array.from(document.querySelectorAll('input[type=checkbox][form="' + form.id + '"]'));
  }
  function updateCount(form) {
    var count = boxesFor(form).filter(function (b) { return b.checked; }).length;
    var label = form.querySelector("[data-selected-count]");
    if (label) label.textContent = count ? count + " selected" : "Select images with their boxes (Shift-click selects a range).";
    form.querySelectorAll("button[name=action]").forEach(function (b) { b.toggleAttribute("data-empty", !count); });
  }
  // One listener for the whole document, added once: the grid is swapped by htmx, and a listener
  // per swapped-in form would pile up (and keep the old forms alive).
  var lastBox = {}; // form id -> the box clicked last, for Shift-click ranges
  document.addEventListener("click", function (event) {
    var box = event.target;
    var form = box instanceof HTMLInputElement && box.form && box.form.matches("form[data-selection]") ? box.form : null;
    if (!form || box.type !== "checkbox" || box.hasAttribute("data-select-all")) return;
    var boxes = boxesFor(form), last = lastBox[form.id];
    if (event.shiftKey && last && boxes.indexOf(last) >= 0) {
      var a = boxes.indexOf(last), b = boxes.indexOf(box);
      boxes.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (x) { x.checked = box.checked; });
    }
    lastBox[form.id] = box;
    updateCount(form);
  });
  document.addEventListener("change", function (event) {
    var all = event.target;
    if (!(all instanceof HTMLInputElement) || !all.hasAttribute("data-select-all")) return;
    var form = all.closest("form[data-selection]");
    boxesFor(form).forEach(function (b) { b.checked = all.checked; });
    updateCount(form);
  });
  function init(root) { (root || document).querySelectorAll("form[data-selection]").forEach(updateCount); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.target); });
})();

/* Sorting the predictions table by confidence (lowest first shows what to double-check). */
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-sort-confidence]");
    if (!button) return;
    var th = button.closest("th"), table = button.closest("table"), body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") === "descending"; // toggle; the first click sorts high to low
    var rows = Array.from(body.rows).sort(function (a, b) {
      var x = parseFloat(a.dataset.confidence), y = parseFloat(b.dataset.confidence);
      return ascending ? x - y : y - x;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  });
})();

/* Heat maps (predict page, misclassified gallery): the toggle in a [data-heatmaps] section shows
   each image's overlay instead of its thumbnail; an overlay is fetched only once shown, also for
   rows the uploader adds later, and the class picker under it swaps in another class's overlay. */
(function () {
  "use strict";
  function fill(section) {
    section.querySelectorAll("img[data-heatmap-src]").forEach(function (img) {
      img.src = img.dataset.heatmapSrc;
      img.removeAttribute("data-heatmap-src");
    });
  }
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("[data-heatmap-toggle]")) {
      var section = target.closest("[data-heatmaps]");
      section.classList.toggle("showing-heatmaps", target.checked);
      if (target.checked) fill(section);
    } else if (target.matches("[data-heatmap-class]")) {
      var box = target.closest(".heatmap"), img = box.querySelector("img");
      box.classList.remove("missing");
      box.classList.toggle("asking", !target.value);  // "choose a class" again: no map drawn
      img.removeAttribute("data-heatmap-src");
      if (!target.value) { img.removeAttribute("src"); img.alt = ""; return; }
      img.src = target.value;
      img.alt = "Heat map for " + target.selectedOptions[0].textContent;
    }
  });
  // A kept overlay can be evicted (predict-page images are not stored): say so instead of a broken image.
  document.addEventListener("error", function (event) {
    if (event.target.matches && event.target.matches(".heatmap-img")) event.target.closest(".heatmap").classList.add("missing");
  }, true);
  new MutationObserver(function () {
    document.querySelectorAll("[data-heatmaps].showing-heatmaps").forEach(fill);
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
