// Helpers shared by every nca_widgets view. The Python side prepends this file to each view's
// module: anywidget loads each view as one self-contained module.

// The bytes of a binary trait as it arrives (DataView, ArrayBuffer or typed array).
function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
}

// A typed array over a copy: a received buffer's offset need not be a multiple of its size.
function typed(value, Ctor = Float32Array) {
  const b = bytesOf(value).slice();
  return new Ctor(b.buffer, 0, Math.floor(b.byteLength / Ctor.BYTES_PER_ELEMENT));
}

// A number in `digits` significant digits, exponent form when very small or large:
// 0.0436, 1.25e-4, 3.2e+4, NaN. Every view formats values (losses, lr, colour limits) with it.
function fmtNum(v, digits = 3) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(digits - 1);
  return String(Number(v.toPrecision(digits)));
}

// Labels of an axis's ticks: each tick in fmtNum with the fewest significant digits (up to 4)
// that write it exactly: 0.001 / 8e-4 / 6e-4, 0.5 / 1 / 1.5. Every plot's value axes use it
// (numbers.py's axis_labels writes the same).
function axisLabels(ticks) {
  return ticks.map((v) => {
    for (let d = 1; d < 4; d++) {
      const label = fmtNum(v, d);
      if (Math.abs(Number(label) - v) <= 1e-9 * Math.abs(v)) return label;
    }
    return fmtNum(v, 4);
  });
}

// Grey pixels: (h, w) uint8 codes at `src[offset..]` into ImageData `img` at column `x0`.
function blitGrey(img, src, offset, h, w, x0 = 0) {
  const out = new Uint32Array(img.data.buffer);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = src[offset + y * w + x];
      out[y * img.width + x0 + x] = 0xff000000 | (v << 16) | (v << 8) | v;
    }
  }
}

// The traits of one kernel message arrive as several change events. Call the returned function
// with a name for each; `flush(names)` then runs once, in a microtask, with the names since.
function coalesced(flush) {
  let dirty = null;
  return (name) => {
    if (!dirty) {
      dirty = new Set();
      queueMicrotask(() => { const names = dirty; dirty = null; flush(names); });
    }
    dirty.add(name);
  };
}

// A frames-per-second <select> bound to the model's `fps`: `show()` displays its value (adding
// an option for one not listed), picking one saves it.
function fpsSelect(model, cls) {
  const select = el_("select", cls);
  select.setAttribute("aria-label", "frames per second");
  for (const f of [2, 5, 10, 20, 30, 60]) select.append(new Option(`${f} fps`, String(f)));
  const show = () => {
    const fps = String(model.get("fps"));
    if (![...select.options].some((o) => o.value === fps)) select.append(new Option(`${fps} fps`, fps));
    select.value = fps;
  };
  const onChange = () => { model.set("fps", Number(select.value)); model.save_changes(); };
  select.addEventListener("change", onChange);
  return { select, show };
}

// "probe #7 (test), rollout of step 120", or `fallback` for an array (no probe).
function probeTitle(model, fallback) {
  const idx = model.get("probe_index");
  return idx >= 0
    ? `probe #${idx} (${model.get("probe_split")}), rollout of step ${model.get("probe_step")}`
    : fallback;
}

function el_(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Sends the trait values that `values()` returns to the kernel at most every `ms` (trailing),
// so scrubbing never waits on, or floods, the kernel.
function throttledSync(model, values, ms = 250) {
  let timer = 0, last = 0;
  const sync = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = 0;
      last = performance.now();
      const changed = Object.entries(values()).filter(([k, v]) => model.get(k) !== v);
      for (const [k, v] of changed) model.set(k, v);
      if (changed.length) model.save_changes();
    }, Math.max(0, ms - (performance.now() - last)));
  };
  sync.pending = () => timer !== 0;
  sync.cancel = () => { clearTimeout(timer); timer = 0; };
  return sync;
}

// A play/pause button that calls `advance()` `fps()` times a second while playing.
function player(button, el, fps, advance) {
  let raf = 0, last = 0, playing = false;
  const tick = (now) => {
    raf = requestAnimationFrame(tick);
    if (now - last < 1000 / fps()) return;
    last = now;
    advance();
  };
  const set = (on) => {
    playing = on;
    button.textContent = on ? "❚❚" : "▶";
    button.setAttribute("aria-pressed", String(on));
    el.dataset.playing = String(on);
    if (on && !raf) { last = 0; raf = requestAnimationFrame(tick); }
    if (!on && raf) { cancelAnimationFrame(raf); raf = 0; }
  };
  return { set, toggle: () => set(!playing) };
}

// The brush of a scrubber: pick erase / draw / noise and a size, then drag over the picture of
// the current time (and depth). A stroke is collected here and leaves as one message with one
// binary buffer, the (h, w) cells as 0/1 bytes; the kernel rolls the edited state out again and
// the next probe brings the edited rollout and its recovery curve. `where()` gives
// {time, depth, h, w} of the picture under the brush; `canvas` shows it at one cell per pixel.
function editPanel(model, el, canvas, where) {
  const row = el_("div", "nw-ed-row");
  const mode = el_("select", "nw-ed-mode");
  mode.setAttribute("aria-label", "brush");
  for (const m of ["off", "erase", "draw", "noise"]) mode.append(new Option(m === "off" ? "brush off" : m, m));
  const size = el_("select", "nw-ed-size");
  size.setAttribute("aria-label", "brush size");
  for (const s of [1, 2, 3, 5]) size.append(new Option(`${s} px`, String(s)));
  size.value = "2";
  const clear = el_("button", "nw-ed-clear", "untouched");
  clear.type = "button";
  clear.title = "forget the edits: show the untouched rollout";
  const inject = el_("button", "nw-ed-inject", "into the pool");
  inject.type = "button";
  inject.title = "apply this edit to pool samples, so training teaches the repair";
  const status = el_("span", "nw-ed-status");
  row.append(el_("span", "nw-ed-key", "brush"), mode, size, clear, inject, status);
  const plot = el_("canvas", "nw-ed-plot");
  plot.width = 300;
  plot.height = 84;
  plot.setAttribute("aria-label", "recovery curve");

  let mask = null, sentAt = 0;
  const cellOf = (event) => {
    const r = canvas.getBoundingClientRect(), { h, w } = where();
    return [Math.floor(((event.clientY - r.top) / r.height) * h), Math.floor(((event.clientX - r.left) / r.width) * w)];
  };
  const COLOURS = { erase: "rgba(0,0,0,0.85)", draw: "rgba(255,255,255,0.9)", noise: "rgba(214,39,40,0.6)" };
  let last = null; // the cell the pointer was over: a fast drag marks every cell in between
  function dab(cy, cx) {
    const { h, w } = where(), s = Number(size.value);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = COLOURS[mode.value];
    const y0 = cy - Math.floor((s - 1) / 2), x0 = cx - Math.floor((s - 1) / 2);
    for (let y = Math.max(0, y0); y < Math.min(h, y0 + s); y++) {
      for (let x = Math.max(0, x0); x < Math.min(w, x0 + s); x++) {
        mask[y * w + x] = 1;
        ctx.fillRect(x, y, 1, 1); // a preview until the edited rollout arrives
      }
    }
  }
  function paint(event) {
    const [cy, cx] = cellOf(event);
    const [ly, lx] = last || [cy, cx];
    const n = Math.max(Math.abs(cy - ly), Math.abs(cx - lx), 1);
    for (let k = 1; k <= n; k++) dab(Math.round(ly + ((cy - ly) * k) / n), Math.round(lx + ((cx - lx) * k) / n));
    last = [cy, cx];
  }
  const onDown = (event) => {
    if (mode.value === "off" || !model.get("editable")) return;
    const { h, w } = where();
    mask = new Uint8Array(h * w);
    last = null;
    canvas.setPointerCapture(event.pointerId);
    paint(event);
    event.preventDefault();
  };
  const onMove = (event) => { if (mask) paint(event); };
  const onUp = () => {
    if (!mask) return;
    const { time, depth } = where();
    model.send({ type: "edit", mode: mode.value, time, depth }, undefined, [mask.buffer]);
    mask = null;
    sentAt = performance.now();
    el.dataset.edits = String(Number(el.dataset.edits || 0) + 1);
  };
  const onClear = () => model.send({ type: "clear" });
  const onInject = () => model.send({ type: "inject" });
  let prepared = false;
  const onMode = () => {
    canvas.style.cursor = mode.value === "off" ? "" : "crosshair";
    el.dataset.brush = mode.value;
    if (mode.value !== "off" && !prepared) { prepared = true; model.send({ type: "prepare" }); }
  };
  canvas.addEventListener("pointerdown", onDown);
  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerup", onUp);
  canvas.addEventListener("pointercancel", onUp);
  clear.addEventListener("click", onClear);
  inject.addEventListener("click", onInject);
  mode.addEventListener("change", onMode);

  // untouched (grey) and edited (blue) error against time, the edit time and the time shown
  function update() {
    const editable = model.get("editable");
    row.style.display = editable ? "" : "none";
    inject.style.display = model.get("can_inject") ? "" : "none";
    status.textContent = model.get("edit_status");
    el.dataset.editsReady = String(model.get("edits_ready"));
    const editTime = model.get("edit_time");
    el.dataset.editTime = String(editTime);
    const rec = typed(model.get("_recovery"));
    plot.style.display = editable && rec.length ? "" : "none";
    if (editTime >= 0 && sentAt) {
      el.dataset.editLatencyMs = String(Math.round(performance.now() - sentAt));
      sentAt = 0;
    }
    if (!rec.length) return;
    const n = rec.length / 2, ctx = plot.getContext("2d"), W = plot.width, H = plot.height;
    const top = 14, bottom = H - 4, left = 4, right = W - 4;
    const hi = Math.max(1e-9, ...rec.filter(Number.isFinite));
    const x = (i) => left + ((right - left) * i) / Math.max(1, n - 1);
    const y = (v) => bottom - ((bottom - top) * v) / hi;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "10px sans-serif";
    ctx.fillStyle = "#555";
    ctx.fillText(`MSE vs target: untouched (grey), edited (blue) · max ${fmtNum(hi)}`, left, 10);
    ctx.strokeStyle = "#bbb";
    ctx.beginPath(); ctx.moveTo(x(editTime), top); ctx.lineTo(x(editTime), bottom); ctx.stroke();
    [["#999", 0], ["#1f77b4", n]].forEach(([colour, off]) => {
      ctx.strokeStyle = colour;
      ctx.beginPath();
      for (let i = 0; i < n; i++) (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(i), y(rec[off + i]));
      ctx.stroke();
    });
    const { time } = where();
    ctx.fillStyle = "#1f77b4";
    ctx.fillRect(x(time) - 1.5, y(rec[n + time]) - 1.5, 3, 3);
    el.dataset.recovery = `${fmtNum(rec[n - 1])} ${fmtNum(rec[2 * n - 1])}`;
  }
  const names = ["change:editable", "change:can_inject", "change:edits_ready", "change:edit_time", "change:_recovery", "change:edit_status"];
  for (const name of names) model.on(name, update);
  onMode();
  update();
  return {
    row, plot, update,
    detach() {
      for (const name of names) model.off(name, update);
      canvas.removeEventListener("pointerdown", onDown);
      canvas.removeEventListener("pointermove", onMove);
      canvas.removeEventListener("pointerup", onUp);
      canvas.removeEventListener("pointercancel", onUp);
      clear.removeEventListener("click", onClear);
      inject.removeEventListener("click", onInject);
      mode.removeEventListener("change", onMode);
    },
  };
}
