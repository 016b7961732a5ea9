// PoolView view: one cell per pool sample (target | current render, or input | render | target
// where the pool has inputs), worst loss first. Clicking a cell asks the kernel to make that digit
// (at that cell's level, where samples have levels) the probe.

export default {
  render({ model, el }) {
    el.classList.add("nw-pool-view");
    el.dataset.nw = "pool-view";
    const head = document.createElement("div");
    head.className = "nw-pv-head";
    const grid = document.createElement("div");
    grid.className = "nw-pv-grid";
    const err = document.createElement("div");
    err.className = "nw-pv-error";
    const more = document.createElement("div"); // says that the grid scrolls, while it hides tiles
    more.className = "nw-pv-more";
    el.append(head, err, grid, more);

    let asked = ""; // "split:index" of the last click, marked until the probe shows it
    function highlight() {
      const index = model.get("probe_index"), split = model.get("probe_split");
      if (asked === `${split}:${index}`) asked = "";
      for (const cell of grid.children) {
        const on = Number(cell.dataset.digitIndex) === index && cell.dataset.split === split;
        cell.classList.toggle("nw-pv-probe", on);
        cell.classList.toggle("nw-pv-asked", asked === `${cell.dataset.split}:${cell.dataset.digitIndex}`);
      }
    }

    // Cells are reused and repainted in place (the pool changes a few times a second while
    // training), so a click never lands on an element that is being replaced.
    function build() {
      const [p, h, w] = model.get("_shape");
      const targets = bytesOf(model.get("_targets"));
      const renders = bytesOf(model.get("_renders"));
      const inputs = bytesOf(model.get("_inputs"));
      const losses = typed(model.get("_losses"));
      const indices = model.get("digit_indices");
      const levels = model.get("levels");
      const levelName = model.get("level_name");
      const split = model.get("split");
      const scale = model.get("scale");
      const withInputs = p > 0 && inputs.length >= p * h * w;
      const panels = withInputs ? [inputs, renders, targets] : [targets, renders];
      const names = split === "train" ? "pool" : `${p} test digits`;
      head.textContent = p
        ? `${names} as of step ${model.get("pool_step")}: ` +
          `${withInputs ? "input | output | target" : "target | render"}, worst loss first · click to probe`
        : "waiting for the first pool…";
      head.title = "Recomputed every few seconds while training runs (it costs device time), " +
        "so the step counter runs ahead of it in between; always fresh when paused.";
      const ok = p > 0 && targets.length >= p * h * w && renders.length >= p * h * w;
      const tileW = panels.length * (w + 1) - 1;
      const count = ok ? p : 0;
      while (grid.children.length > count) grid.lastChild.remove();
      while (grid.children.length < count) {
        const cell = document.createElement("button");
        cell.type = "button";
        cell.className = "nw-pv-cell";
        cell.append(document.createElement("canvas"), Object.assign(document.createElement("div"), { className: "nw-pv-caption" }));
        grid.append(cell);
      }
      for (let i = 0; i < count; i++) {
        const cell = grid.children[i];
        const [canvas, caption] = cell.children;
        cell.dataset.digitIndex = String(indices[i]);
        cell.dataset.split = split;
        cell.dataset.loss = String(losses[i]);
        const level = levels.length > i ? levels[i] : null;
        cell.dataset.level = level === null ? "" : String(level);
        const levelText = level === null ? "" : ` · ${levelName} ${level.toFixed(2)}`;
        cell.title = `digit #${indices[i]} (${split})${levelText}, loss ${fmtNum(losses[i], 4)}`;
        if (canvas.width !== tileW || canvas.height !== h) {
          canvas.width = tileW;
          canvas.height = h;
        }
        canvas.style.width = `${tileW * scale}px`;
        canvas.style.height = `${h * scale}px`;
        const ctx = canvas.getContext("2d");
        const img = ctx.createImageData(tileW, h);
        new Uint32Array(img.data.buffer).fill(0xff808080); // the 1 px separators stay grey
        panels.forEach((panel, k) => blitGrey(img, panel, i * h * w, h, w, k * (w + 1)));
        ctx.putImageData(img, 0, 0);
        caption.textContent = level === null
          ? `#${indices[i]} · ${fmtNum(losses[i])}`
          : `#${indices[i]} · ${fmtNum(losses[i])}\n${levelName} ${level.toFixed(2)}`;
        caption.classList.toggle("nw-pv-bad", !Number.isFinite(losses[i]));
      }
      el.dataset.poolStep = String(model.get("pool_step"));
      highlight();
      showMore();
    }
    // How many tiles lie below the visible part of the grid (it scrolls), said under it.
    function showMore() {
      const bottom = grid.scrollTop + grid.clientHeight;
      let hidden = 0;
      for (const cell of grid.children) if (cell.offsetTop - grid.offsetTop + cell.offsetHeight / 2 > bottom) hidden++;
      more.textContent = hidden ? `▼ ${hidden} more below: scroll the pool` : "";
      more.style.display = hidden ? "" : "none";
    }
    grid.addEventListener("scroll", showMore);
    const resize = new ResizeObserver(showMore);
    resize.observe(grid);
    // One delegated handler: it reads the digit the cell shows at the moment of the click.
    const onClick = (event) => {
      const cell = event.target.closest(".nw-pv-cell");
      if (!cell || !grid.contains(cell)) return;
      const level = cell.dataset.level === "" ? null : Number(cell.dataset.level);
      model.send({ type: "select", digit_index: Number(cell.dataset.digitIndex), split: cell.dataset.split, level });
      asked = `${cell.dataset.split}:${cell.dataset.digitIndex}`;
      highlight();
    };
    grid.addEventListener("click", onClick);
    const onError = () => { err.textContent = model.get("error"); err.style.display = model.get("error") ? "" : "none"; };

    let pending = false; // several traits change in one message: build once
    const scheduleBuild = () => {
      if (pending) return;
      pending = true;
      queueMicrotask(() => { pending = false; build(); });
    };
    const onStep = () => { el.dataset.step = String(model.get("step")); };

    model.on("change:_targets", scheduleBuild);
    model.on("change:_renders", scheduleBuild);
    model.on("change:_losses", scheduleBuild);
    model.on("change:scale", scheduleBuild);
    model.on("change:probe_index", highlight);
    model.on("change:probe_split", highlight);
    model.on("change:step", onStep);
    model.on("change:error", onError);
    build();
    onStep();
    onError();
    return () => {
      model.off("change:_targets", scheduleBuild);
      model.off("change:_renders", scheduleBuild);
      model.off("change:_losses", scheduleBuild);
      model.off("change:scale", scheduleBuild);
      model.off("change:probe_index", highlight);
      model.off("change:probe_split", highlight);
      model.off("change:step", onStep);
      model.off("change:error", onError);
      grid.removeEventListener("click", onClick);
      grid.removeEventListener("scroll", showMore);
      resize.disconnect();
    };
  },
};
