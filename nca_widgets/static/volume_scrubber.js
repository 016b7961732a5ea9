// VolumeScrubber view: the (time, depth) slice of one channel, plus all depths at that time.
// The whole (T, D, H, W) uint8 volume is here, so scrubbing draws at once with no kernel round
// trip; the indices go back to the kernel at most every 250 ms, off the drawing path.

// (256, 3) uint8 colour table -> 256 packed RGBA words (little-endian canvas order).
function packLut(value) {
  const rgb = bytesOf(value);
  const lut = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    const [r, g, b] = rgb.length >= 768 ? [rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]] : [i, i, i];
    lut[i] = 0xff000000 | (b << 16) | (g << 8) | r;
  }
  return lut;
}

function gridOf(count, tileW, maxWidth = 440) {
  const cols = Math.max(1, Math.min(count, Math.floor((maxWidth + 1) / (tileW + 1))));
  return [Math.ceil(count / cols), cols];
}

function slider(label) {
  const row = el_("label", "nw-vs-row");
  const input = el_("input");
  input.type = "range";
  input.min = "0";
  input.step = "1";
  input.setAttribute("aria-label", label);
  const value = el_("span", "nw-vs-num");
  row.append(el_("span", "nw-vs-key", label), input, value);
  return { row, input, value };
}

export default {
  render({ model, el }) {
    el.classList.add("nw-volume-scrubber");
    el.dataset.nw = "volume-scrubber";

    const head = el_("div", "nw-vs-head");
    const body = el_("div", "nw-vs-body");
    const mainWrap = el_("div", "nw-vs-main");
    const main = el_("canvas", "nw-vs-slice");
    mainWrap.append(main);
    const panel = el_("div", "nw-vs-panel");
    const timeS = slider("time");
    const play = el_("button", "nw-vs-play", "▶");
    play.type = "button";
    play.setAttribute("aria-label", "animate time");
    play.setAttribute("aria-pressed", "false");
    const speed = fpsSelect(model, "nw-vs-speed");
    timeS.row.append(play, speed.select);
    const depthS = slider("depth");
    const chanRow = el_("label", "nw-vs-row");
    const chan = el_("select", "nw-vs-channel");
    chan.setAttribute("aria-label", "channel");
    chanRow.append(el_("span", "nw-vs-key", "channel"), chan);
    const barRow = el_("div", "nw-vs-row nw-vs-bar");
    const bar = el_("canvas", "nw-vs-colorbar");
    bar.width = 256;
    bar.height = 1;
    const barLo = el_("span", "nw-vs-num"), barHi = el_("span", "nw-vs-num");
    const barZero = el_("span", "nw-vs-zero");
    const barBox = el_("span", "nw-vs-barbox");
    barBox.append(bar, barZero);
    barRow.append(barLo, barBox, barHi);
    const note = el_("div", "nw-vs-note");
    panel.append(timeS.row, depthS.row, chanRow, barRow, note);
    body.append(mainWrap, panel);
    const stripHead = el_("div", "nw-vs-striphead");
    const stripWrap = el_("div", "nw-vs-stripwrap");
    const strip = el_("canvas", "nw-vs-strip");
    const mark = el_("div", "nw-vs-mark");
    stripWrap.append(strip, mark);
    el.append(head, body, stripHead, stripWrap);

    let vol = new Uint8Array(0), shape = [0, 0, 0, 0], lut = packLut(null);
    let t = 0, d = 0;
    let mainImg = null, stripImg = null, grid = [1, 1];

    const valid = () => shape[0] > 0 && vol.length === shape[0] * shape[1] * shape[2] * shape[3];

    function draw() {
      el.dataset.time = String(t);
      el.dataset.depth = String(d);
      el.dataset.channel = String(model.get("_volume_channel"));
      timeS.input.value = String(t);
      depthS.input.value = String(d);
      timeS.value.textContent = `${t} / ${Math.max(0, shape[0] - 1)}`;
      const labels = model.get("depth_labels");
      depthS.value.textContent = `${d} / ${Math.max(0, shape[1] - 1)}` + (labels[d] ? ` ${labels[d]}` : "");
      if (!valid()) return;
      const [T, D, H, W] = shape;
      const sliceSize = H * W;
      // main slice
      const mctx = main.getContext("2d");
      if (!mainImg || mainImg.width !== W || mainImg.height !== H) mainImg = mctx.createImageData(W, H);
      const m32 = new Uint32Array(mainImg.data.buffer);
      const off = (t * D + d) * sliceSize;
      for (let i = 0; i < sliceSize; i++) m32[i] = lut[vol[off + i]];
      mctx.putImageData(mainImg, 0, 0);
      // strip of all depths at time t
      const sctx = strip.getContext("2d");
      const [rows, cols] = grid;
      if (!stripImg || stripImg.width !== strip.width || stripImg.height !== strip.height) {
        stripImg = sctx.createImageData(strip.width, strip.height);
      }
      const s32 = new Uint32Array(stripImg.data.buffer);
      s32.fill(0xff282828);
      for (let k = 0; k < D; k++) {
        const r = Math.floor(k / cols), c = k % cols;
        const base = (t * D + k) * sliceSize;
        for (let y = 0; y < H; y++) {
          const row = (r * (H + 1) + y) * strip.width + c * (W + 1);
          for (let x = 0; x < W; x++) s32[row + x] = lut[vol[base + y * W + x]];
        }
      }
      sctx.putImageData(stripImg, 0, 0);
      const px = (strip.clientWidth || parseFloat(strip.style.width) || 2 * strip.width) / strip.width;
      const r = Math.floor(d / cols), c = d % cols;
      mark.style.left = `${c * (W + 1) * px}px`;
      mark.style.top = `${r * (H + 1) * px}px`;
      mark.style.width = `${W * px}px`;
      mark.style.height = `${H * px}px`;
      const named = labels.map((name, k) => (name ? `${k} ${name}` : "")).filter(Boolean);
      stripHead.textContent = `all ${D} depths at time ${t}` + (named.length ? `: ${named.join(" · ")}` : "") +
        " (click a depth to show it)";
    }

    const syncIndices = throttledSync(model, () => ({ time: t, depth: d }));

    function setIndices(nt, nd) {
      t = Math.max(0, Math.min(shape[0] - 1, nt | 0));
      d = Math.max(0, Math.min(shape[1] - 1, nd | 0));
      draw();
      edits.update();
      syncIndices();
    }

    function layout() {
      const [T, D, H, W] = shape;
      const scale = model.get("scale");
      main.width = Math.max(1, W);
      main.height = Math.max(1, H);
      main.style.width = `${W * scale}px`;
      main.style.height = `${H * scale}px`;
      grid = gridOf(D, W);
      const [rows, cols] = grid;
      strip.width = Math.max(1, cols * (W + 1) - 1);
      strip.height = Math.max(1, rows * (H + 1) - 1);
      const stripScale = Math.max(1, Math.min(4, Math.floor(880 / Math.max(1, strip.width))));
      strip.style.width = `${strip.width * stripScale}px`; // height follows (CSS height: auto)
      timeS.input.max = String(Math.max(0, T - 1));
      depthS.input.max = String(Math.max(0, D - 1));
      mainImg = null;
      stripImg = null;
    }

    // The volume first, so new indices are clamped against the new shape.
    function flush(dirty) {
      if (dirty.has("volume")) {
        vol = bytesOf(model.get("_volume"));
        shape = model.get("_shape");
        lut = packLut(model.get("_lut"));
        layout();
        drawBar();
        updateText();
      }
      // A pending local change is newer than what the kernel echoes; it goes out shortly.
      if (dirty.has("indices") && !syncIndices.pending()) {
        t = model.get("time");
        d = model.get("depth");
      }
      t = Math.max(0, Math.min(shape[0] - 1, t));
      d = Math.max(0, Math.min(shape[1] - 1, d));
      draw();
    }

    function drawBar() {
      const ctx = bar.getContext("2d");
      const img = ctx.createImageData(256, 1);
      const b32 = new Uint32Array(img.data.buffer);
      for (let i = 0; i < 256; i++) b32[i] = lut[i];
      ctx.putImageData(img, 0, 0);
      const [lo, hi] = model.get("value_range");
      barLo.textContent = fmtNum(lo);
      barHi.textContent = fmtNum(hi);
      const z = (0 - lo) / (hi - lo);
      barZero.style.display = z > 0 && z < 1 ? "block" : "none";
      barZero.style.left = `${z * 100}%`;
    }

    function updateText() {
      const n = model.get("num_channels");
      if (chan.options.length !== n) {
        chan.replaceChildren();
        for (let c = 0; c < n; c++) chan.append(new Option(c === n - 1 ? `${c} (digit)` : String(c), String(c)));
      }
      chan.value = String(model.get("channel"));
      speed.show();
      const shown = model.get("_volume_channel");
      // Loading from the moment the user picks a channel, before the kernel has even heard.
      const loading = model.get("loading") || model.get("channel") !== shown;
      let text = probeTitle(model, "volume");
      text += ` · channel ${shown}` + (shown === n - 1 ? " (digit)" : "");
      if (loading) text += ` · loading channel ${model.get("channel")}…`;
      if (!valid()) text = loading ? `loading channel ${model.get("channel")}…` : "waiting for the first probe rollout…";
      if (model.get("error")) text += ` · ${model.get("error")}`;
      head.textContent = text;
      el.classList.toggle("nw-vs-error", !!model.get("error"));
      el.classList.toggle("nw-vs-loading", loading);
      note.textContent = "grey: digit channel; blue < 0 < red: hidden channels";
    }

    const playback = player(play, el, () => model.get("fps"), () => {
      if (shape[0] > 0) setIndices((t + 1) % shape[0], d);
    });

    const onTimeInput = () => setIndices(Number(timeS.input.value), d);
    const onDepthInput = () => setIndices(t, Number(depthS.input.value));
    const onPlay = () => playback.toggle();
    const onChannel = () => { model.set("channel", Number(chan.value)); model.save_changes(); updateText(); };
    const onStripClick = (event) => {
      if (!valid()) return;
      const rect = strip.getBoundingClientRect();
      const px = rect.width / strip.width;
      const [, D, H, W] = shape;
      const c = Math.floor((event.clientX - rect.left) / px / (W + 1));
      const r = Math.floor((event.clientY - rect.top) / px / (H + 1));
      const k = r * grid[1] + c;
      if (c >= 0 && c < grid[1] && k >= 0 && k < D) setIndices(t, k);
    };
    const onStep = () => { el.dataset.step = String(model.get("step")); };
    const changed = coalesced(flush);
    const onVolume = () => changed("volume");
    const onModelIndices = () => changed("indices");

    timeS.input.addEventListener("input", onTimeInput);
    depthS.input.addEventListener("input", onDepthInput);
    play.addEventListener("click", onPlay);
    chan.addEventListener("change", onChannel);
    strip.addEventListener("click", onStripClick);
    const edits = editPanel(model, el, main, () => ({ time: t, depth: d, h: shape[2], w: shape[3] }));
    panel.append(edits.row, edits.plot);
    const listeners = {
      "change:_volume": onVolume,
      "change:_lut": onVolume,
      "change:_shape": onVolume,
      "change:scale": onVolume,
      "change:time": onModelIndices,
      "change:depth": onModelIndices,
      "change:channel": updateText,
      "change:loading": updateText,
      "change:error": updateText,
      "change:fps": updateText,
      "change:probe_step": updateText,
      "change:value_range": drawBar,
      "change:step": onStep,
    };
    for (const [name, fn] of Object.entries(listeners)) model.on(name, fn);

    onStep();
    flush(new Set(["volume", "indices"]));
    playback.set(false);

    return () => {
      playback.set(false);
      syncIndices.cancel();
      edits.detach();
      for (const [name, fn] of Object.entries(listeners)) model.off(name, fn);
    };
  },
};
