/* The review queue (#25): one prediction at a time, one key each.
   1–9 name the class, Enter says the model was right, x skips, z undoes the last review,
   ← → move (↑ ↓ still scroll the page). The next image is fetched while the current one is shown, so it appears at once.
   Reviews are POSTed with the page's CSRF token; the form still works without this script. */
(function () {
  "use strict";

  function init(root) {
    if (root.dataset.reviewReady) return;
    root.dataset.reviewReady = "1";
    const form = root.querySelector("#review-form");
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    const img = root.querySelector("#review-image");
    const status = root.querySelector("#review-status");
    const items = [...root.querySelectorAll("#review-items > li")].map((li) => ({ ...li.dataset, done: false }));
    const classButtons = [...form.querySelectorAll("button[name=label]")];
    const undoButton = form.querySelector("[data-undo]");
    const cache = new Map(); // image URL -> a loaded Image, so the next one shows at once
    const history = []; // reviewed items, the last one last (z takes it back)
    let index = 0;
    let busy = false;

    function prefetch(item) {
      if (!item || cache.has(item.image)) return;
      const pic = new Image();
      pic.src = item.image;
      cache.set(item.image, pic);
    }

    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("error-text", Boolean(isError));
    }

    function progress() {
      const left = items.filter((it) => !it.done);
      root.querySelector("[data-reviewed]").textContent = items.length - left.length;
      root.querySelector("[data-left]").textContent = left.length;
      root.querySelector("[data-left-audit]").textContent = left.filter((it) => it.stream === "audit").length;
      root.querySelector("[data-left-learn]").textContent = left.filter((it) => it.stream === "learn").length;
      undoButton.disabled = history.length === 0;
    }

    function show(i) {
      index = Math.max(0, Math.min(items.length - 1, i));
      const item = items[index];
      img.src = item.image;
      img.dataset.pk = item.pk;
      form.action = item.reviewUrl;
      const stream = root.querySelector("#review-stream");
      stream.className = "review-stream " + item.stream;
      stream.textContent = item.stream === "audit"
        ? "Audit sample: counts towards live accuracy"
        : "To learn from: does not count towards live accuracy";
      root.querySelectorAll("[data-answer]").forEach((el) => { el.textContent = item.answer; });
      root.querySelector("[data-probability]").textContent = item.probability;
      root.querySelector("[data-why]").textContent = item.abstained ? ", but answered “don't know”" : "";
      root.querySelector("#review-meta").textContent = item.meta;
      classButtons.forEach((b) => b.classList.toggle("chosen", item.done && b.value === item.label));
      if (item.done) say(`Reviewed: ${item.label}. Press a key to change it.`);
      prefetch(items[nextOpen(index)]);
      prefetch(items[index + 1]);
    }

    function nextOpen(from) {
      for (let j = from + 1; j < items.length; j++) if (!items[j].done) return j;
      for (let j = 0; j < from; j++) if (!items[j].done) return j;
      return -1;
    }

    function advance() {
      const j = nextOpen(index);
      if (j === -1) { say("All reviewed here. Reload the page for newer predictions."); show(index); return; }
      show(j);
    }

    async function post(url, body) {
      const response = await fetch(url, {
        method: "POST",
        headers: { "X-CSRFToken": token, "X-Requested-With": "XMLHttpRequest" },
        body: body,
        credentials: "same-origin",
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error || `The server answered ${response.status}.`);
      return data;
    }

    function refreshReviewed() {
      const list = document.getElementById("reviewed");
      if (list && window.htmx) window.htmx.trigger(list, "refresh");
    }

    async function review(fields) {
      if (busy) return;
      busy = true;
      const item = items[index];
      const body = new FormData();
      Object.entries(fields).forEach(([k, v]) => body.append(k, v));
      try {
        const data = await post(item.reviewUrl, body);
        const wasDone = item.done;
        item.done = true;
        item.label = data.label;
        if (!wasDone) history.push(item);
        say(`${data.correct ? "Right" : "Corrected"}: ${data.label}.`);
        // A clicked button keeps the focus, and Enter would click it again on the next image:
        // give the focus back to the page, where Enter means "the model was right".
        if (form.contains(document.activeElement)) document.activeElement.blur();
        progress();
        advance();
        refreshReviewed();
      } catch (err) {
        say(err.message, true);
      } finally {
        busy = false;
      }
    }

    async function undo() {
      if (busy || !history.length) return;
      busy = true;
      const item = history.pop();
      try {
        await post(item.undoUrl, new FormData());
        item.done = false;
        item.label = "";
        progress();
        show(items.indexOf(item));
        say("Review undone.");
        refreshReviewed();
      } catch (err) {
        history.push(item);
        say(err.message, true);
      } finally {
        busy = false;
      }
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const b = e.submitter;
      if (b && b.name === "label") review({ label: b.value });
      else review({ accept: "1" });
    });
    form.querySelector("[data-skip]").addEventListener("click", advance);
    undoButton.addEventListener("click", undo);

    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t.closest && t.closest("input, textarea, select, [contenteditable]")) return;
      // Enter on a focused button or link is that control's own click.
      if (e.key === "Enter" && t.closest && t.closest("button, a")) return;
      if (/^[1-9]$/.test(e.key)) {
        const b = classButtons[Number(e.key) - 1];
        if (b) { e.preventDefault(); review({ label: b.value }); }
      } else if (e.key === "Enter") {
        e.preventDefault(); review({ accept: "1" });
      } else if (e.key === "x" || e.key === "X") {
        e.preventDefault(); advance();
      } else if (e.key === "z" || e.key === "Z") {
        e.preventDefault(); undo();
      } else if (e.key === "ArrowRight") {
        e.preventDefault(); show(index + 1);
      } else if (e.key === "ArrowLeft") {
        e.preventDefault(); show(index - 1);
      }
    });

    show(0);
    progress();
  }

  function start() { document.querySelectorAll("[data-review]").forEach(init); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
