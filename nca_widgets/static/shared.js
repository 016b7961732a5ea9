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
