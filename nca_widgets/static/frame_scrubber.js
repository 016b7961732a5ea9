// FrameScrubber view: input | the picture at time t | target, with PSNR at t; captions from `labels`.
// All frames are here, so scrubbing and playback draw at once; `time` goes back to the kernel
// at most every 250 ms.

function grey(canvas, src, offset, h, w) {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  blitGrey(img, src, offset, h, w);
  ctx.putImageData(img, 0, 0);
}

export default {
  render({ model, el }) {
    el.classList.add("nw-frame-scrubber");
    el.dataset.nw = "frame-scrubber";
    const head = el_("div", "nw-fs-head");
    const panels = el_("div", "nw-fs-panels");
    const mk = (title) => {
      const fig = el_("figure", "nw-fs-panel");
      const canvas = el_("canvas");
      const cap = el_("figcaption", "", title);
      fig.append(canvas, cap);
      panels.append(fig);
      return { fig, canvas, cap };
    };
    const inputP = mk(""), estP = mk(""), targetP = mk("");
    const controls = el_("div", "nw-fs-row");
    const slider = el_("input");
    slider.type = "range";
    slider.min = "0";
    slider.step = "1";
    slider.setAttribute("aria-label", "time");
    const tval = el_("span", "nw-fs-num");
    const play = el_("button", "nw-fs-play", "▶");
    play.type = "button";
    play.setAttribute("aria-label", "animate time");
    play.setAttribute("aria-pressed", "false");
    const speed = fpsSelect(model);
    const psnrText = el_("span", "nw-fs-psnr");
    controls.append(el_("span", "nw-fs-key", "time"), slider, tval, play, speed.select, psnrText);
    const edits = editPanel(model, el, estP.canvas, () => ({ time: t, h: shape[1], w: shape[2] }));
    el.append(head, panels, controls, edits.row, edits.plot);

    let frames = new Uint8Array(0), shape = [0, 0, 0], psnr = new Float32Array(0);
    let t = 0;
    const valid = () => shape[0] > 0 && frames.length === shape[0] * shape[1] * shape[2];

    function draw() {
      el.dataset.time = String(t);
      slider.value = String(t);
      tval.textContent = `${t} / ${Math.max(0, shape[0] - 1)}`;
      const p = psnr.length > t ? psnr[t] : NaN;
      psnrText.textContent = Number.isNaN(p) ? "" : `PSNR ${Number.isFinite(p) ? p.toFixed(2) : "∞"} dB at t=${t}`;
      el.dataset.psnr = Number.isNaN(p) ? "" : String(p);
      if (!valid()) return;
      const [, h, w] = shape;
      grey(estP.canvas, frames, t * h * w, h, w);
      estP.cap.textContent = `${model.get("labels")[1]}, t=${t}`;
    }

    const syncTime = throttledSync(model, () => ({ time: t }));
    function setTime(nt) {
      t = Math.max(0, Math.min(shape[0] - 1, nt | 0));
      draw();
      edits.update();
      syncTime();
    }

    function flush(dirty) {
      if (dirty.has("frames")) {
        frames = bytesOf(model.get("_frames"));
        shape = model.get("_shape");
        psnr = typed(model.get("_psnr"));
        const [, h, w] = shape;
        const scale = model.get("scale");
        const first = bytesOf(model.get("_input")), target = bytesOf(model.get("_target"));
        inputP.fig.style.display = first.length === h * w && h > 0 ? "" : "none";
        targetP.fig.style.display = target.length === h * w && h > 0 ? "" : "none";
        if (first.length === h * w && h > 0) grey(inputP.canvas, first, 0, h, w);
        if (target.length === h * w && h > 0) grey(targetP.canvas, target, 0, h, w);
        const labels = model.get("labels");
        inputP.cap.textContent = labels[0];
        targetP.cap.textContent = labels[2];
        for (const p of [inputP, estP, targetP]) {
          p.canvas.style.width = `${w * scale}px`;
          p.canvas.style.height = `${h * scale}px`;
        }
        slider.max = String(Math.max(0, shape[0] - 1));
        updateText();
      }
      if (dirty.has("time") && !syncTime.pending()) t = model.get("time");
      t = Math.max(0, Math.min(shape[0] - 1, t));
      draw();
    }
    function updateText() {
      const note = model.get("note");
      let text = probeTitle(model, "frames");
      if (note) text += ` · ${note}`;
      if (!valid()) text = "waiting for the first probe rollout…";
      head.textContent = text;
      speed.show();
    }

    const playback = player(play, el, () => model.get("fps"), () => {
      if (shape[0] > 0) setTime((t + 1) % shape[0]);
    });

    const onInput = () => setTime(Number(slider.value));
    const onPlay = () => playback.toggle();
    const onStep = () => { el.dataset.step = String(model.get("step")); };
    const changed = coalesced(flush);
    const onFrames = () => changed("frames");
    const onTime = () => changed("time");
    slider.addEventListener("input", onInput);
    play.addEventListener("click", onPlay);
    const listeners = {
      "change:_frames": onFrames,
      "change:_input": onFrames,
      "change:labels": onFrames,
      "change:note": updateText,
      "change:_target": onFrames,
      "change:_psnr": onFrames,
      "change:_shape": onFrames,
      "change:scale": onFrames,
      "change:time": onTime,
      "change:fps": updateText,
      "change:step": onStep,
    };
    for (const [name, fn] of Object.entries(listeners)) model.on(name, fn);
    onStep();
    flush(new Set(["frames", "time"]));
    playback.set(false);
    return () => {
      playback.set(false);
      syncTime.cancel();
      edits.detach();
      for (const [name, fn] of Object.entries(listeners)) model.off(name, fn);
    };
  },
};
