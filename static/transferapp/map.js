// The project map (#24 item 7): every image a dot on one <canvas> (no DOM node a point, so 20,000
// stay smooth). The dots are drawn once into an offscreen layer; hover and box-select only copy that
// layer and draw on top. A grid of cells finds the dot under the pointer without scanning them all.
(function () {
  "use strict";
  var root = document.getElementById("project-map");
  if (!root) return;
  var canvas = document.getElementById("map-canvas");
  var ctx = canvas.getContext("2d");
  var layer = document.createElement("canvas");
  var hoverImg = document.getElementById("map-hover");
  var FLAG = { inbox: 1, test: 2, suspect: 4, odd: 8 };
  var CELL = 12; // px: the hover grid's cell, about two dots wide
  var data = null, px = null, py = null, grid = null, selected = new Set(), drag = null, hovered = -1;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function load() {
    return fetch(root.dataset.pointsUrl, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        data = d; selected.clear(); hovered = -1; // indices of an older layout mean other images
        say("map-selected", "Nothing selected.");
        resize();
      });
  }

  function resize() {
    var ratio = window.devicePixelRatio || 1, box = canvas.getBoundingClientRect();
    canvas.width = layer.width = Math.max(1, Math.round(box.width * ratio));
    canvas.height = layer.height = Math.max(1, Math.round(box.height * ratio));
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    project(box.width, box.height);
    drawLayer(ratio);
    frame();
  }

  // Points from [0, 1] to CSS pixels, with a margin; y grows upwards on the map.
  function project(w, h) {
    var n = data ? data.ids.length : 0, pad = 12;
    px = new Float32Array(n); py = new Float32Array(n); grid = new Map();
    for (var i = 0; i < n; i++) {
      px[i] = pad + data.xy[i][0] * (w - 2 * pad);
      py[i] = pad + (1 - data.xy[i][1]) * (h - 2 * pad);
      var key = cellKey(px[i], py[i]);
      var list = grid.get(key);
      if (list) list.push(i); else grid.set(key, [i]);
    }
  }

  function cellKey(x, y) { return Math.floor(x / CELL) * 65536 + Math.floor(y / CELL); }

  function drawLayer(ratio) {
    var t0 = performance.now(), g = layer.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, layer.width, layer.height);
    if (!data) return;
    var n = data.ids.length;
    // The Inbox first (underneath), then each class in one fill: a few fillStyle changes, not 20,000.
    var colours = [data.inbox_colour].concat(data.classes.map(function (c) { return c.colour; }));
    for (var c = 0; c < colours.length; c++) {
      g.fillStyle = colours[c];
      g.beginPath();
      for (var i = 0; i < n; i++) if (data["class"][i] === c - 1) g.rect(px[i] - 2, py[i] - 2, 4, 4);
      g.fill();
    }
    strokeMarks(g, n, FLAG.test, "#222", 1, function (i) { g.moveTo(px[i] + 4, py[i]); g.arc(px[i], py[i], 4, 0, 6.2832); });
    strokeMarks(g, n, FLAG.suspect, "#d00", 1.5, function (i) {
      g.moveTo(px[i] - 4, py[i] - 4); g.lineTo(px[i] + 4, py[i] + 4); g.moveTo(px[i] + 4, py[i] - 4); g.lineTo(px[i] - 4, py[i] + 4);
    });
    strokeMarks(g, n, FLAG.odd, "#000", 1.5, function (i) { g.rect(px[i] - 4, py[i] - 4, 8, 8); });
    canvas.dataset.points = String(n);
    canvas.dataset.layerMs = (performance.now() - t0).toFixed(1);
  }

  function strokeMarks(g, n, flag, colour, width, mark) {
    g.strokeStyle = colour; g.lineWidth = width; g.beginPath();
    for (var i = 0; i < n; i++) if (data.flags[i] & flag) mark(i);
    g.stroke();
  }

  // One frame: the layer, the selection, the box being dragged. Its time is kept for the tests.
  function frame() {
    var t0 = performance.now(), box = canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, box.width, box.height);
    ctx.drawImage(layer, 0, 0, box.width, box.height);
    if (selected.size) {
      ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5; ctx.beginPath();
      selected.forEach(function (i) { ctx.rect(px[i] - 3.5, py[i] - 3.5, 7, 7); });
      ctx.stroke();
    }
    if (drag) {
      ctx.fillStyle = "rgba(0, 114, 178, .12)"; ctx.strokeStyle = "#0072b2"; ctx.lineWidth = 1;
      ctx.fillRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
      ctx.strokeRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
    }
    canvas.dataset.frameMs = (performance.now() - t0).toFixed(1);
  }

  function pointer(event) {
    var box = canvas.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }

  function nearest(x, y) {
    var best = -1, bestD = 36; // within 6 px
    for (var dx = -1; dx <= 1; dx++) for (var dy = -1; dy <= 1; dy++) {
      var list = grid.get(cellKey(x + dx * CELL, y + dy * CELL)) || [];
      for (var k = 0; k < list.length; k++) {
        var i = list[k], d = (px[i] - x) * (px[i] - x) + (py[i] - y) * (py[i] - y);
        if (d < bestD) { bestD = d; best = i; }
      }
    }
    return best;
  }

  function showHover(i) {
    if (i === hovered) return;
    hovered = i;
    if (i < 0) { hoverImg.hidden = true; return; }
    hoverImg.src = thumbUrl(data.ids[i]);
    hoverImg.style.left = Math.min(px[i] + 10, canvas.clientWidth - 116) + "px";
    hoverImg.style.top = Math.max(py[i] - 120, 0) + "px";
    hoverImg.hidden = false;
  }

  function thumbUrl(id) { return root.dataset.thumbUrl.replace("/0/", "/" + id + "/"); }

  function selectBox(add) {
    var x0 = Math.min(drag.x0, drag.x1), x1 = Math.max(drag.x0, drag.x1);
    var y0 = Math.min(drag.y0, drag.y1), y1 = Math.max(drag.y0, drag.y1);
    if (!add) selected.clear();
    for (var i = 0; i < px.length; i++) if (px[i] >= x0 && px[i] <= x1 && py[i] >= y0 && py[i] <= y1) selected.add(i);
    say("map-selected", selected.size + " selected (" + countSelected(FLAG.inbox) + " from the Inbox).");
  }

  // A click rather than a drag: the dot under the pointer alone (Shift: added or taken away).
  function selectOne(i, add) {
    if (!add) selected.clear();
    if (i >= 0 && add && selected.has(i)) selected.delete(i); else if (i >= 0) selected.add(i);
    say("map-selected", selected.size ? selected.size + " selected (" + countSelected(FLAG.inbox) + " from the Inbox)." : "Nothing selected.");
  }

  function countSelected(flag) {
    var n = 0;
    selected.forEach(function (i) { if (data.flags[i] & flag) n++; });
    return n;
  }

  function say(id, text) { document.getElementById(id).textContent = text; }

  canvas.addEventListener("pointerdown", function (event) {
    if (!data) return;
    var p = pointer(event);
    drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, add: event.shiftKey };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!data) return;
    var p = pointer(event);
    if (drag) { drag.x1 = p.x; drag.y1 = p.y; showHover(-1); requestAnimationFrame(frame); return; }
    showHover(nearest(p.x, p.y));
  });
  canvas.addEventListener("pointerup", function () {
    if (!drag) return;
    if (Math.abs(drag.x1 - drag.x0) < 3 && Math.abs(drag.y1 - drag.y0) < 3) selectOne(nearest(drag.x0, drag.y0), drag.add);
    else selectBox(drag.add);
    drag = null;
    frame();
  });
  canvas.addEventListener("pointerleave", function () { showHover(-1); });

  function act(action) {
    if (action === "clear") { selected.clear(); say("map-selected", "Nothing selected."); frame(); return; }
    var ids = Array.from(selected, function (i) { return data.ids[i]; });
    if (action === "open") return openSelection(ids);
    var body = new URLSearchParams({ images: ids.join(","), action: action, target: document.getElementById("map-target").value });
    fetch(root.dataset.actionUrl, { method: "POST", credentials: "same-origin", body: body,
                                    headers: { "X-CSRFToken": csrfToken() } })
      .then(function (r) { return r.json(); })
      .then(function (answer) {
        say("map-message", answer.message);
        selected.clear(); say("map-selected", "Nothing selected.");
        return load();
      })
      .catch(function () { say("map-message", "The change could not be saved: check the connection and try again."); });
  }

  var OPEN_MAX = 200;
  function openSelection(ids) {
    var box = document.getElementById("map-opened");
    box.textContent = "";
    ids.slice(0, OPEN_MAX).forEach(function (id) {
      var img = document.createElement("img");
      img.src = thumbUrl(id); img.loading = "lazy"; img.alt = "Image " + id;
      box.appendChild(img);
    });
    say("map-message", ids.length > OPEN_MAX ? "Showing the first " + OPEN_MAX + " of " + ids.length + "." : "");
  }

  document.querySelectorAll("[data-map-action]").forEach(function (button) {
    button.addEventListener("click", function () { act(button.dataset.mapAction); });
  });
  document.querySelectorAll(".map-legend .swatch").forEach(function (s) { s.style.background = s.dataset.colour; });
  // When the worker finishes, the status line (polled by htmx) says so: fetch the new layout.
  document.body.addEventListener("htmx:afterSwap", function () {
    var status = document.getElementById("map-status");
    if (status && status.dataset.fresh === "1" && data && !data.fresh) load();
  });
  window.addEventListener("resize", function () { if (data) resize(); });
  load();
})();
