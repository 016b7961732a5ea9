// LossPlot view: loss per step (raw + EMA) and learning rate (right axis) on a canvas, with the
// trainer's live evaluation (points) and its baseline (dashed) on the loss axis.
// Data: a full (decimated) history asked for on render, then chunks appended by sequence number.
// Drawing is min/max per pixel column, so its canvas work is bounded by the chart width.

const MARGIN = { left: 58, right: 62, top: 10, bottom: 26 };
const COLORS = {
  raw: "rgba(31,119,180,0.35)", ema: "#1f77b4", lr: "#ff7f0e", nan: "#d62728", evaluation: "#2ca02c",
};

class Curve {
  constructor() { this.clear(); }
  clear() {
    this.n = 0;
    this.step = new Float64Array(1024);
    this.loss = new Float32Array(1024);
    this.lr = new Float32Array(1024);
    this.ema = new Float32Array(1024);
    this.emaN = 0; // ema[0..emaN) is valid for emaS
    this.emaS = -1;
  }
  grow(need) {
    if (need <= this.step.length) return;
    let cap = this.step.length;
    while (cap < need) cap *= 2;
    for (const key of ["step", "loss", "lr", "ema"]) {
      const next = new this[key].constructor(cap);
      next.set(this[key].subarray(0, this.n));
      this[key] = next;
    }
  }
  append(steps, loss, lr) {
    const k = Math.min(steps.length, loss.length, lr.length);
    this.grow(this.n + k);
    for (let i = 0; i < k; i++) {
      this.step[this.n + i] = steps[i];
      this.loss[this.n + i] = loss[i];
      this.lr[this.n + i] = lr[i];
    }
    this.n += k;
  }
  // Debiased EMA in step units (a decimated gap of g steps decays by s^g); NaN keeps the last value.
  smoothed(s) {
    if (s !== this.emaS) { this.emaS = s; this.emaN = 0; }
    let acc = 0, weight = 0, prev = null;
    if (this.emaN > 0) { acc = this._acc; weight = this._weight; prev = this.step[this.emaN - 1]; }
    for (let i = this.emaN; i < this.n; i++) {
      const v = this.loss[i];
      const gap = prev === null ? 1 : Math.max(1, this.step[i] - prev);
      prev = this.step[i];
      if (Number.isFinite(v)) {
        const decay = Math.pow(s, gap);
        acc = acc * decay + (1 - decay) * v;
        weight = weight * decay + (1 - decay);
      }
      this.ema[i] = weight > 0 ? acc / weight : NaN;
    }
    this._acc = acc; this._weight = weight; this.emaN = this.n;
    return this.ema;
  }
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

// Labels of train-step ticks: 500, 20k, 1.5M.
function stepFmt(v) {
  const a = Math.abs(v);
  if (Number.isInteger(v) && a >= 1000) {
    if (a % 1e6 === 0) return `${v / 1e6}M`;
    if (a % 1e3 === 0) return `${v / 1e3}k`;
  }
  return String(Number(v.toPrecision(6)));
}

// An axis maps a value to a pixel row; log axes skip values <= 0 (shown as gaps).
function makeAxis(lo, hi, log, top, bottom) {
  const f = log ? Math.log10 : (v) => v;
  let a = f(lo), b = f(hi);
  if (!(b > a)) { a -= log ? 0.5 : Math.abs(a) * 0.1 + 1e-12; b += log ? 0.5 : Math.abs(b) * 0.1 + 1e-12; }
  const pad = (b - a) * 0.04;
  a -= pad; b += pad;
  const px = (v) => {
    if (!Number.isFinite(v) || (log && v <= 0)) return NaN;
    return bottom - ((f(v) - a) / (b - a)) * (bottom - top);
  };
  const ticks = () => {
    if (log) {
      const out = [];
      for (let e = Math.ceil(a); e <= Math.floor(b); e++) out.push(Math.pow(10, e));
      if (out.length >= 2) return out;
      return niceTicks(Math.pow(10, a), Math.pow(10, b), 4).filter((v) => v > 0);
    }
    return niceTicks(a, b, 5);
  };
  return { px, ticks, log };
}

function range(values, n, log) {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (!Number.isFinite(v) || (log && v <= 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : [log ? 1e-3 : 0, 1];
}

// One pass over the points, at most four path operations per pixel column; NaN breaks the line.
function drawColumns(ctx, curve, values, xpx, ypx, nanCols) {
  ctx.beginPath();
  let col = null, first = 0, last = 0, mn = 0, mx = 0, pen = false;
  const flush = () => {
    if (col === null) return;
    const x = col + 0.5;
    if (pen) ctx.lineTo(x, first); else { ctx.moveTo(x, first); pen = true; }
    if (mn !== mx) { ctx.lineTo(x, mn); ctx.lineTo(x, mx); }
    ctx.lineTo(x, last);
    col = null;
  };
  for (let i = 0; i < curve.n; i++) {
    const y = ypx(values[i]);
    if (!Number.isFinite(y)) {
      flush();
      pen = false;
      if (nanCols && Number.isNaN(values[i])) nanCols.add(Math.floor(xpx(curve.step[i])));
      continue;
    }
    const c = Math.floor(xpx(curve.step[i]));
    if (c !== col) { flush(); col = c; first = last = mn = mx = y; } else {
      last = y;
      if (y < mn) mn = y;
      if (y > mx) mx = y;
    }
  }
  flush();
  ctx.stroke();
}

// The live evaluation: a line through its points with a dot on each, and its baseline dashed.
function drawEvaluation(ctx, steps, values, baseline, xpx, ypx, x0, x1) {
  ctx.strokeStyle = ctx.fillStyle = COLORS.evaluation;
  const yb = ypx(baseline);
  if (Number.isFinite(yb)) {
    ctx.lineWidth = 1.2;
    ctx.setLineDash([5, 4]);
    ctx.beginPath(); ctx.moveTo(x0, Math.round(yb) + 0.5); ctx.lineTo(x1, Math.round(yb) + 0.5); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.lineWidth = 1.6;
  ctx.beginPath();
  let pen = false;
  for (let i = 0; i < values.length; i++) {
    const x = xpx(steps[i]), y = ypx(values[i]);
    if (!Number.isFinite(y)) { pen = false; continue; }
    if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
  }
  ctx.stroke();
  for (let i = 0; i < values.length; i++) {
    const x = xpx(steps[i]), y = ypx(values[i]);
    if (Number.isFinite(y)) { ctx.beginPath(); ctx.arc(x, y, 2.5, 0, 2 * Math.PI); ctx.fill(); }
  }
}

function lowerBound(arr, n, x) {
  let lo = 0, hi = n;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (arr[mid] < x) lo = mid + 1; else hi = mid; }
  return lo;
}

export default {
  render({ model, el }) {
    el.classList.add("nw-loss-plot");
    el.dataset.nw = "loss-plot";

    const bar = document.createElement("div");
    bar.className = "nw-lp-bar";
    const logLabel = document.createElement("label");
    const logBox = document.createElement("input");
    logBox.type = "checkbox";
    logLabel.append(logBox, " log y");
    const smLabel = document.createElement("label");
    const smSlider = document.createElement("input");
    smSlider.type = "range"; smSlider.min = "0"; smSlider.max = "0.999"; smSlider.step = "0.001";
    const smValue = document.createElement("span");
    smValue.className = "nw-lp-num";
    smLabel.append("smoothing ", smSlider, smValue);
    const legend = document.createElement("span");
    legend.className = "nw-lp-legend";
    const setLegend = () => {
      const name = model.get("eval_name"), base = model.get("eval_baseline_name");
      legend.innerHTML =
        `<i style="background:${COLORS.raw}"></i>loss <i style="background:${COLORS.ema}"></i>EMA ` +
        `<i style="background:${COLORS.lr}"></i>lr` +
        (name ? ` <i style="background:${COLORS.evaluation}"></i>${name}` +
          ` <i class="nw-lp-dashed" style="border-color:${COLORS.evaluation}"></i>${base}` : "");
    };
    setLegend();
    const info = document.createElement("span");
    info.className = "nw-lp-info";
    bar.append(logLabel, smLabel, legend, info);

    const box = document.createElement("div");
    box.className = "nw-lp-box";
    const canvas = document.createElement("canvas");
    const cross = document.createElement("div");
    cross.className = "nw-lp-cross";
    const tip = document.createElement("div");
    tip.className = "nw-lp-tip";
    box.append(canvas, cross, tip);
    el.append(bar, box);

    const curve = new Curve();
    let seq = 0, epoch = model.get("_epoch"), waiting = false, frame = 0, width = 0;
    let view = null; // the last draw's axes, for hover

    const requestHistory = () => {
      waiting = true;
      model.send({ type: "history", columns: Math.max(1000, Math.round(2 * (width || 600))) });
    };
    const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };

    function draw() {
      frame = 0;
      const cssW = Math.max(200, box.clientWidth || 600);
      const cssH = model.get("height");
      const dpr = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
        canvas.width = Math.round(cssW * dpr);
        canvas.height = Math.round(cssH * dpr);
        canvas.style.width = cssW + "px";
        canvas.style.height = cssH + "px";
      }
      width = cssW;
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, cssW, cssH);
      const x0 = MARGIN.left, x1 = cssW - MARGIN.right, y0 = MARGIN.top, y1 = cssH - MARGIN.bottom;
      const log = model.get("log_y");
      const s = model.get("smoothing");
      const n = curve.n;
      el.dataset.step = String(model.get("step"));
      el.dataset.points = String(n);

      ctx.font = "11px sans-serif";
      ctx.strokeStyle = "#ccc";
      ctx.lineWidth = 1;
      ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0);
      if (n === 0) {
        ctx.fillStyle = "#888";
        ctx.fillText(waiting ? "loading…" : "no steps yet", x0 + 10, y0 + 20);
        view = null;
        return;
      }
      const sMin = curve.step[0], sMax = Math.max(curve.step[n - 1], sMin + 1);
      const xpx = (v) => x0 + ((v - sMin) / (sMax - sMin)) * (x1 - x0 - 1);
      const ema = curve.smoothed(s);
      const evalStep = typed(model.get("_eval_step"), Int32Array);
      const evalValue = typed(model.get("_eval_value"), Float32Array);
      const baseline = model.get("eval_name") ? model.get("eval_baseline") : NaN;
      const extra = [...evalValue, baseline];
      let [lo, hi] = range(curve.loss, n, log);
      const [elo, ehi] = range(extra, extra.length, log);
      if (extra.some((v) => Number.isFinite(v) && (!log || v > 0))) { lo = Math.min(lo, elo); hi = Math.max(hi, ehi); }
      const yAxis = makeAxis(lo, hi, log, y0, y1);
      const [rlo, rhi] = range(curve.lr, n, true);
      const lrAxis = makeAxis(rlo, rhi, rhi / rlo > 10, y0, y1);

      // grid and tick labels
      ctx.fillStyle = "#555";
      ctx.textAlign = "right";
      const shown = (axis) => axis.ticks().filter((v) => axis.px(v) >= y0 && axis.px(v) <= y1);
      const yTicks = shown(yAxis);
      axisLabels(yTicks).forEach((label, i) => {
        const y = yAxis.px(yTicks[i]);
        ctx.strokeStyle = "#eee";
        ctx.beginPath(); ctx.moveTo(x0, Math.round(y) + 0.5); ctx.lineTo(x1, Math.round(y) + 0.5); ctx.stroke();
        ctx.fillText(label, x0 - 4, y + 4);
      });
      ctx.textAlign = "left";
      ctx.fillStyle = COLORS.lr;
      const lrTicks = shown(lrAxis);
      axisLabels(lrTicks).forEach((label, i) => ctx.fillText(label, x1 + 4, lrAxis.px(lrTicks[i]) + 4));
      ctx.fillStyle = "#555";
      ctx.textAlign = "center";
      const xTicks = niceTicks(sMin, sMax, Math.max(3, Math.floor((x1 - x0) / 70)));
      for (const v of xTicks) {
        const x = xpx(v);
        if (x >= x0 && x <= x1) ctx.fillText(stepFmt(v), x, y1 + 16);
      }

      ctx.save();
      ctx.beginPath(); ctx.rect(x0, y0, x1 - x0, y1 - y0); ctx.clip();
      const nanCols = new Set();
      ctx.lineWidth = 1;
      ctx.strokeStyle = COLORS.raw;
      drawColumns(ctx, curve, curve.loss, xpx, yAxis.px, nanCols);
      ctx.lineWidth = 1.6;
      ctx.strokeStyle = COLORS.ema;
      drawColumns(ctx, curve, ema, xpx, yAxis.px, null);
      ctx.lineWidth = 1.2;
      ctx.strokeStyle = COLORS.lr;
      drawColumns(ctx, curve, curve.lr, xpx, lrAxis.px, null);
      drawEvaluation(ctx, evalStep, evalValue, baseline, xpx, yAxis.px, x0, x1);
      ctx.restore();
      ctx.fillStyle = COLORS.nan;
      for (const c of nanCols) {
        ctx.beginPath(); ctx.moveTo(c, y1 - 7); ctx.lineTo(c - 4, y1); ctx.lineTo(c + 4, y1); ctx.fill();
      }
      el.dataset.nanColumns = String(nanCols.size);
      el.dataset.evalPoints = String(evalValue.length);
      info.textContent = `step ${model.get("step")}` + (nanCols.size ? " · NaN loss: red ▲" : "");
      view = { xpx, x0, x1, y0, y1, sMin, sMax, yAxis, lrAxis, ema };
    }

    function onHover(event) {
      if (!view || curve.n === 0) return;
      const rect = canvas.getBoundingClientRect();
      const mx = event.clientX - rect.left;
      if (mx < view.x0 || mx > view.x1) { onLeave(); return; }
      const stepAt = view.sMin + ((mx - view.x0) / (view.x1 - view.x0 - 1)) * (view.sMax - view.sMin);
      let i = lowerBound(curve.step, curve.n, stepAt);
      if (i >= curve.n) i = curve.n - 1;
      if (i > 0 && Math.abs(curve.step[i - 1] - stepAt) < Math.abs(curve.step[i] - stepAt)) i -= 1;
      const x = view.xpx(curve.step[i]);
      cross.style.display = "block";
      cross.style.left = `${x}px`;
      cross.style.top = `${view.y0}px`;
      cross.style.height = `${view.y1 - view.y0}px`;
      tip.style.display = "block";
      tip.textContent = `step ${curve.step[i]}  loss ${fmtNum(curve.loss[i], 4)}  EMA ${fmtNum(view.ema[i], 4)}  lr ${fmtNum(curve.lr[i])}`;
      const evalStep = typed(model.get("_eval_step"), Int32Array);
      if (evalStep.length) {
        let j = lowerBound(evalStep, evalStep.length, curve.step[i]);
        if (j >= evalStep.length) j = evalStep.length - 1;
        const value = typed(model.get("_eval_value"), Float32Array)[j];
        tip.textContent += `  ·  ${model.get("eval_name")} ${fmtNum(value, 4)} at step ${evalStep[j]}` +
          ` (${model.get("eval_baseline_name")} ${fmtNum(model.get("eval_baseline"), 4)})`;
      }
      const tipW = tip.offsetWidth;
      tip.style.left = `${Math.min(Math.max(view.x0, x + 8), view.x1 - tipW)}px`;
      tip.style.top = `${view.y0 + 4}px`;
      el.dataset.hoverStep = String(curve.step[i]);
    }
    function onLeave() { cross.style.display = "none"; tip.style.display = "none"; }

    function onChunk() {
      const chunkSeq = model.get("_chunk_seq");
      if (waiting || model.get("_epoch") !== epoch) return; // the full reply will cover it
      if (chunkSeq <= seq) return;
      if (chunkSeq !== seq + 1) { requestHistory(); return; } // missed a chunk: start over
      curve.append(typed(model.get("_chunk_step"), Int32Array),
        typed(model.get("_chunk_loss"), Float32Array), typed(model.get("_chunk_lr"), Float32Array));
      seq = chunkSeq;
      schedule();
    }
    function onEpoch() {
      if (model.get("_epoch") === epoch) return;
      epoch = model.get("_epoch");
      curve.clear();
      requestHistory();
      schedule();
    }
    function onCustom(msg, buffers) {
      if (!msg || msg.type !== "history" || msg.epoch !== model.get("_epoch")) return;
      curve.clear();
      curve.append(typed(buffers[0], Int32Array), typed(buffers[1], Float32Array), typed(buffers[2], Float32Array));
      seq = msg.seq;
      epoch = msg.epoch;
      waiting = false;
      schedule();
    }
    function syncControls() {
      logBox.checked = model.get("log_y");
      smSlider.value = String(model.get("smoothing"));
      smValue.textContent = model.get("smoothing").toFixed(3);
      schedule();
    }
    let smTimer = 0;
    const onSmooth = () => {
      const v = Math.min(0.999, Math.max(0, Number(smSlider.value)));
      smValue.textContent = v.toFixed(3);
      model.set("smoothing", v); // local redraw now, the kernel hears at most every 250 ms
      schedule();
      if (!smTimer) smTimer = setTimeout(() => { smTimer = 0; model.save_changes(); }, 250);
    };
    const onLog = () => { model.set("log_y", logBox.checked); model.save_changes(); schedule(); };

    logBox.addEventListener("change", onLog);
    smSlider.addEventListener("input", onSmooth);
    canvas.addEventListener("mousemove", onHover);
    canvas.addEventListener("mouseleave", onLeave);
    model.on("change:_chunk_seq", onChunk);
    model.on("change:_epoch", onEpoch);
    model.on("msg:custom", onCustom);
    model.on("change:log_y", syncControls);
    model.on("change:smoothing", syncControls);
    const onStep = () => { el.dataset.step = String(model.get("step")); schedule(); };
    model.on("change:step", onStep);
    model.on("change:height", schedule);
    model.on("change:_eval_value", schedule);
    model.on("change:eval_name", setLegend);
    const resize = new ResizeObserver(schedule);
    resize.observe(box);

    el.dataset.step = String(model.get("step"));
    syncControls();
    requestHistory();
    schedule();

    return () => {
      resize.disconnect();
      if (frame) cancelAnimationFrame(frame);
      if (smTimer) clearTimeout(smTimer);
      model.off("change:_chunk_seq", onChunk);
      model.off("change:_epoch", onEpoch);
      model.off("msg:custom", onCustom);
      model.off("change:log_y", syncControls);
      model.off("change:smoothing", syncControls);
      model.off("change:step", onStep);
      model.off("change:height", schedule);
      model.off("change:_eval_value", schedule);
      model.off("change:eval_name", setLegend);
    };
  },
};
