// StepControl view: a Step button and a count box. A click sends {event: "step", count} in one
// message, so the kernel steps the count on screen even when the box's own state update is
// still held back behind earlier messages (a busy page sends clicks at once, updates in turn).

export default {
  render({ model, el }) {
    el.classList.add("nw-step-control");
    const button = el_("button", "jupyter-widgets jupyter-button widget-button", "Step");
    button.type = "button";
    button.title = "train n steps, then pause";
    const box = el_("input", "nw-step-count");
    box.type = "number";
    box.min = "1";
    box.step = "1";
    box.setAttribute("aria-label", "steps per Step");
    el.append(button, box);

    // What the box says, as a whole number from 1 to max_steps (or the last count if unreadable).
    function typed() {
      const n = Math.round(Number(box.value));
      if (box.value.trim() === "" || Number.isNaN(n)) return model.get("count");
      return Math.min(model.get("max_steps"), Math.max(1, n));
    }
    function show() {
      box.max = String(model.get("max_steps"));
      if (el.getRootNode().activeElement !== box) box.value = String(model.get("count"));
      button.disabled = model.get("disabled");  // the box stays open: type while it trains
    }
    function keep(count) {
      box.value = String(count);
      model.set("count", count);
      model.save_changes();
    }
    button.addEventListener("click", () => {
      const count = typed();
      keep(count);
      model.send({ event: "step", count });
    });
    box.addEventListener("change", () => keep(typed()));
    box.addEventListener("keydown", (e) => { if (e.key === "Enter") box.blur(); });
    box.addEventListener("blur", show);
    const keys = ["change:count", "change:max_steps", "change:disabled"];
    for (const key of keys) model.on(key, show);
    show();
    return () => { for (const key of keys) model.off(key, show); };
  },
};
