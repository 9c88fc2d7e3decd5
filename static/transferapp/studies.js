/* Reading studies (#26): the reading and adjudication pages' keys, as on the labelling page:
   1–9 press the class button of that number, ← → follow the previous / next image links, + (or a
   click on the image) zooms. The buttons are plain form buttons: the pages work without this too. */
(function () {
  "use strict";

  function init(root) {
    if (root.dataset.keyedReady) return;
    root.dataset.keyedReady = "1";
    const figure = root.querySelector(".label-figure");
    if (figure) figure.addEventListener("click", () => figure.classList.toggle("zoomed"));
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const t = e.target;
      if (t.closest && t.closest("input, textarea, select, [contenteditable]")) return;
      let target = null;
      if (/^[1-9]$/.test(e.key)) target = root.querySelector(`button[data-key="${e.key}"]`);
      else if (e.key === "ArrowLeft") target = root.querySelector("[data-prev]");
      else if (e.key === "ArrowRight") target = root.querySelector("[data-next]");
      else if (e.key === "+" && figure) { e.preventDefault(); figure.classList.toggle("zoomed"); return; }
      if (!target) return;
      e.preventDefault();
      target.click();
    });
  }

  function start() { document.querySelectorAll("[data-keyed]").forEach(init); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
