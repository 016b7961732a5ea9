// StatusBar view: progress + status + error banner, or a title line. It also marks the box that
// holds it (the closest ancestor with class `host_class`) with data-nw / data-step / data-status,
// since ipywidgets boxes cannot carry such attributes themselves. When the kernel that made it
// goes away (shut down, restarted, dead), the host shows that its controls can do nothing and
// greys them out, instead of buttons that silently do nothing.

const NO_KERNEL = "The kernel is not running, so these controls can do nothing: start it and " +
  "run the cell again (LiveTrainer.restore(run_dir) picks up the run's newest checkpoint).";

export default {
  render({ model, el }) {
    el.classList.add("nw-status-bar");
    const title = el_("div", "nw-sb-title");
    const line = el_("div", "nw-sb-line");
    const pill = el_("span", "nw-sb-pill");
    const track = el_("span", "nw-sb-track");
    const fill = el_("span", "nw-sb-fill");
    track.append(fill);
    track.setAttribute("role", "progressbar");
    const progress = el_("span", "nw-sb-progress");
    const rate = el_("span", "nw-sb-rate");
    const eta = el_("span", "nw-sb-eta");
    line.append(pill, track, progress, rate, eta);
    const banner = el_("div", "nw-sb-banner");
    banner.setAttribute("role", "alert");
    el.append(title, line, banner);

    let host = el;
    const KEYS = ["nw", "step", "status"];
    function mark() {
      host.dataset.nw = model.get("nw");
      host.dataset.step = String(model.get("step"));
      host.dataset.status = model.get("status");
    }
    function findHost() {
      const cls = model.get("host_class");
      const found = cls && el.isConnected ? el.closest("." + cls) : null;
      if (found && found !== host) {
        for (const k of KEYS) delete host.dataset[k];
        host = found;
      }
      mark();
      return host !== el || !cls;
    }
    // The box puts us into the page after render: look for it until it is there (at most 30 s).
    let tries = 0;
    const poll = setInterval(() => { if (findHost() || ++tries > 600) clearInterval(poll); }, 50);

    function update() {
      const mode = model.get("mode");
      title.textContent = model.get("title");
      title.style.display = model.get("title") ? "" : "none";
      line.style.display = mode === "controls" ? "" : "none";
      const status = model.get("status");
      pill.textContent = status;
      pill.className = `nw-sb-pill nw-sb-${status}`;
      const total = model.get("total_steps"), step = model.get("step");
      const frac = total > 0 ? Math.min(1, step / total) : 0;
      fill.style.width = `${(100 * frac).toFixed(2)}%`;
      track.setAttribute("aria-valuenow", String(step));
      track.setAttribute("aria-valuemax", String(total));
      progress.textContent = model.get("progress_text");
      rate.textContent = model.get("rate_text");
      eta.textContent = model.get("eta_text");
      const gone = kernelGone();
      host.classList.toggle("nw-disconnected", gone);
      if (gone) host.dataset.kernel = "disconnected";
      else delete host.dataset.kernel;
      const parts = [gone ? NO_KERNEL : "", model.get("message"), model.get("action_error")]
        .filter((s) => s);
      banner.textContent = parts.join("\n\n");
      banner.style.display = mode === "controls" && parts.length ? "" : "none";
      findHost();
    }
    // The kernel: JupyterLab's and Notebook 7's widget manager knows it (re-read every second);
    // ipywidgets marks views "disconnected" when its connection dies.
    const manager = model.widget_manager;
    const kernelOf = () => (manager && "kernel" in manager ? manager.kernel : undefined);
    const kernelId = kernelOf()?.id;
    function kernelGone() {
      if (el.classList.contains("jupyter-widgets-disconnected")) return true;
      if (kernelId === undefined) return false; // a front end that does not say
      const kernel = kernelOf();
      return !kernel || kernel.id !== kernelId || kernel.status === "dead";
    }
    let wasGone = false;
    const watch = setInterval(() => { if (kernelGone() !== wasGone) { wasGone = !wasGone; update(); } }, 1000);
    model.on("change", update);
    update();
    return () => {
      clearInterval(poll);
      clearInterval(watch);
      model.off("change", update);
      if (host !== el) for (const k of KEYS) delete host.dataset[k];
    };
  },
};
