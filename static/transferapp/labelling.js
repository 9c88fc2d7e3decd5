/* The labelling page (#24): the Inbox one image at a time, in "label these next" order.
   1–9 name the class, Enter accepts the suggestion, x marks unsure (asked last), z undoes the last
   label, ← → move, + (or a click) zooms, m opens "more like this", Esc closes it.
   The queue comes as JSON and the next images are fetched ahead (new Image()), so the next one
   appears at once; each action is POSTed with the page's CSRF token. While the quick model
   retrains in the worker the page asks again every few seconds and takes the new order. */
(function () {
  "use strict";

  const PREFETCH = 4;
  const POLL_MS = 2000;

  function init(root) {
    if (root.dataset.labellingReady) return;
    root.dataset.labellingReady = "1";
    const token = root.querySelector("input[name=csrfmiddlewaretoken]").value;
    const $ = (sel) => root.querySelector(sel);
    const img = $("#label-image");
    const classButtons = [...root.querySelectorAll("#label-classes [data-class]")];
    const similarPanel = $("#label-similar");
    const cache = new Map(); // image URL -> a loaded Image
    const history = []; // [{ids, items}], the last label last (z takes it back)
    let items = [];
    let index = 0;
    let busy = false;
    let rankedAt = $("#label-ranking").dataset.rankedAt || "";
    let similar = []; // [{image, url, similarity, selected}] while "more like this" is open
    let pollTimer = null;

    function say(text, isError) {
      const status = $("#label-status");
      status.textContent = text;
      status.classList.toggle("error-text", Boolean(isError));
    }

    function prefetch(item) {
      if (!item || cache.has(item.url)) return;
      const pic = new Image();
      pic.src = item.url;
      cache.set(item.url, pic);
    }

    function open(from) {
      for (let j = from; j < items.length; j++) if (!items[j].done) return j;
      return -1;
    }

    function showProgress(p) {
      $("[data-labelled]").textContent = p.labelled;
      $("[data-left]").textContent = p.waiting;
      $("[data-estimate]").textContent = p.estimate_text;
      const plateau = $("#label-plateau");
      plateau.hidden = !p.plateau;
      plateau.textContent = p.plateau_text;
      const ranking = $("#label-ranking");
      if (p.status === "failed") ranking.textContent = p.error;
      else if (p.ranked_at) ranking.textContent = `Order from the quick model trained on ${p.ranked_on} labels` +
        (p.status === "queued" || p.status === "running" ? " (retraining…)." : ".");
      ranking.dataset.rankedAt = p.ranked_at;
      ranking.dataset.status = p.status;
      $("#label-empty").hidden = p.waiting > 0;
      $("#label-stage").hidden = p.waiting === 0;
      $("[data-undo]").disabled = history.length === 0;
      schedulePoll(p);
    }

    function show(i) {
      if (!items.length) return;
      index = Math.max(0, Math.min(items.length - 1, i));
      const item = items[index];
      img.src = item.url;
      img.dataset.pk = item.image;
      const s = item.suggestion;
      $("#label-suggestion").innerHTML = "";
      if (s) {
        const strong = document.createElement("strong");
        strong.textContent = s.label;
        $("#label-suggestion").append("Suggestion: ", strong, ` (${Math.round(100 * s.probability)}%)`);
      } else {
        $("#label-suggestion").textContent = "No suggestion yet: the quick model needs a label in two classes.";
      }
      $("#label-reason").textContent = "Asked because: " + item.reason + (item.unsure ? " · marked unsure" : "");
      $("#label-file").textContent = item.file + (item.done ? ` · labelled ${item.label}` : "");
      classButtons.forEach((b) => b.classList.toggle("chosen", item.done && b.dataset.class === item.label));
      $("[data-accept]").disabled = !s;
      for (let j = index + 1; j <= index + PREFETCH && j < items.length; j++) prefetch(items[j]);
    }

    function advance() {
      const j = open(index + 1) !== -1 ? open(index + 1) : open(0);
      if (j === -1) { say("Nothing more in this batch: asking for more…"); load(); return; }
      show(j);
    }

    async function request(url, body) {
      const options = body ? { method: "POST", body: body } : {};
      const response = await fetch(url, { ...options, credentials: "same-origin",
        headers: { "X-CSRFToken": token, "X-Requested-With": "XMLHttpRequest" } });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error || `The server answered ${response.status}.`);
      return data;
    }

    async function load() {
      const data = await request(root.dataset.queueUrl);
      items = data.items.map((it) => ({ ...it, done: false }));
      rankedAt = data.progress.ranked_at;
      showProgress(data.progress);
      if (items.length) show(0);
    }

    function schedulePoll(p) {
      clearTimeout(pollTimer);
      if (p.ranked_at !== rankedAt) { load(); return; } // a retrain finished: its order and suggestions
      if (p.status === "queued" || p.status === "running") {
        pollTimer = setTimeout(async () => {
          try { showProgress((await request(root.dataset.queueUrl)).progress); } catch (err) { say(err.message, true); }
        }, POLL_MS);
      }
    }

    async function act(action, ids, label, asked) {
      if (busy) return null;
      busy = true;
      const body = new FormData();
      body.append("action", action);
      ids.forEach((id) => body.append("image", id));
      if (label) body.append("label", label);
      if (asked) body.append("asked", "1"); // the image shown, labelled where it was asked
      try {
        const data = await request(root.dataset.actUrl, body);
        return data;
      } catch (err) {
        say(err.message, true);
        return null;
      } finally {
        busy = false;
      }
    }

    async function label(name, ids) {
      const targets = ids || [items[index].image];
      const touched = items.filter((it) => targets.includes(it.image));
      const data = await act("label", targets, name, !ids);
      if (!data) return;
      if (!data.done) { // nothing changed on the server: never say "Labelled" then
        say(`Not labelled: ${targets.length > 1 ? "these images are" : "this image is"} no longer in the Inbox ` +
          "(deleted, or labelled elsewhere). Reload the page to see the Inbox as it is.", true);
        showProgress(data.progress);
        return;
      }
      touched.forEach((it) => { it.done = true; it.label = name; });
      history.push({ ids: targets, items: touched, label: name });
      say(targets.length > 1 ? `Labelled ${data.done} images ${name}.` : `Labelled ${name}.`);
      blurControls();
      showProgress(data.progress);
      if (items[index].done) advance();
    }

    async function unsure() {
      const item = items[index];
      const data = await act("unsure", [item.image]);
      if (!data) return;
      item.unsure = true;
      items.splice(index, 1);
      items.push(item); // asked after every other one
      say("Marked unsure: it stays in the Inbox, asked last.");
      showProgress(data.progress);
      show(open(index) !== -1 ? open(index) : index);
    }

    async function undo() {
      const last = history[history.length - 1];
      if (!last) return;
      const data = await act("undo", last.ids);
      if (!data) return;
      history.pop();
      last.items.forEach((it) => { it.done = false; it.label = ""; });
      // After a retrain the queue was fetched anew: put the image back where the labeller is.
      const missing = last.items.filter((it) => !items.includes(it));
      if (missing.length) items.splice(index, 0, ...missing);
      const back = last.items[0];
      if (back) show(items.indexOf(back));
      say(`Undone: ${last.ids.length > 1 ? last.ids.length + " images are" : "the image is"} back in the Inbox.`);
      showProgress(data.progress);
    }

    function blurControls() {
      // A clicked button keeps the focus, and Enter would click it again on the next image.
      if (root.contains(document.activeElement)) document.activeElement.blur();
    }

    // --- more like this ----------------------------------------------------------------------

    async function openSimilar() {
      const item = items[index];
      try {
        const data = await request(root.dataset.similarUrl.replace(/\/0\/$/, `/${item.image}/`));
        similar = [{ image: item.image, url: item.url, similarity: 1, file: item.file },
          ...data.similar].map((s) => ({ ...s, selected: false }));
      } catch (err) { say(err.message, true); return; }
      similarPanel.hidden = false;
      applyThreshold();
      similarPanel.scrollIntoView({ block: "nearest" });
    }

    function applyThreshold() {
      const t = Number($("#similar-threshold").value);
      $("#similar-value").textContent = t.toFixed(2);
      similar.forEach((s) => { s.selected = s.similarity >= t; });
      drawSimilar();
    }

    function drawSimilar() {
      const grid = $("#similar-grid");
      grid.replaceChildren(...similar.map((s) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "thumb similar-thumb" + (s.selected ? " selected" : "");
        b.dataset.image = s.image;
        b.setAttribute("aria-pressed", String(s.selected));
        const pic = document.createElement("img");
        pic.src = s.url;
        pic.alt = s.file;
        const cap = document.createElement("span");
        cap.className = "small";
        cap.textContent = s.similarity.toFixed(2);
        b.append(pic, cap);
        b.addEventListener("click", () => { s.selected = !s.selected; drawSimilar(); });
        return b;
      }));
    }

    function closeSimilar() { similarPanel.hidden = true; similar = []; }

    async function labelSimilar(name) {
      const ids = similar.filter((s) => s.selected).map((s) => s.image);
      if (!ids.length) { say("Select at least one image.", true); return; }
      closeSimilar();
      await label(name, ids);
    }

    // --- wiring ------------------------------------------------------------------------------

    classButtons.forEach((b) => b.addEventListener("click", () => label(b.dataset.class)));
    root.querySelectorAll("[data-similar-class]").forEach((b) =>
      b.addEventListener("click", () => labelSimilar(b.dataset.similarClass)));
    $("[data-accept]").addEventListener("click", () => { const s = items[index].suggestion; if (s) label(s.label); });
    $("[data-unsure]").addEventListener("click", unsure);
    $("[data-undo]").addEventListener("click", undo);
    $("[data-more]").addEventListener("click", openSimilar);
    $("[data-similar-close]").addEventListener("click", closeSimilar);
    $("#similar-threshold").addEventListener("input", applyThreshold);
    img.addEventListener("click", () => $("#label-figure").classList.toggle("zoomed"));

    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || !items.length) return;
      const t = e.target;
      // typing in a field (a new class's name) is typing, not labelling; the slider passes 1–9 and Esc
      if (t.closest && t.closest("input:not([type=range]), textarea, select, [contenteditable]")) return;
      if (t.closest && t.closest("input") && !/^[1-9]$|^Escape$/.test(e.key)) return;
      if (e.key === "Enter" && t.closest && t.closest("button, a")) return;
      const keys = {
        Enter: () => { const s = items[index].suggestion; if (s) label(s.label); },
        x: unsure, X: unsure, z: undo, Z: undo, m: openSimilar, M: openSimilar, Escape: closeSimilar,
        ArrowRight: () => show(index + 1), ArrowLeft: () => show(index - 1),
        "+": () => $("#label-figure").classList.toggle("zoomed"),
      };
      if (/^[1-9]$/.test(e.key)) {
        const b = classButtons[Number(e.key) - 1];
        if (!b) return;
        e.preventDefault();
        if (!similarPanel.hidden) labelSimilar(b.dataset.class);
        else label(b.dataset.class);
      } else if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });

    load().catch((err) => say(err.message, true));
  }

  function start() { document.querySelectorAll("[data-labelling]").forEach(init); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
