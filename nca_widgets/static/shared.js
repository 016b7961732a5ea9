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
