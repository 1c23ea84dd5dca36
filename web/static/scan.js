// Scan page: heatmap opacity slider and keyboard navigation (← previous, → next, Esc report).
(function () {
  "use strict";

  const slider = document.getElementById("opacity");
  const layer = document.getElementById("heat-layer");
  const output = document.getElementById("opacity-value");
  if (slider && layer) {
    const apply = function () {
      layer.style.opacity = String(Number(slider.value) / 100);
      if (output) output.textContent = slider.value + " %";
    };
    slider.addEventListener("input", apply);
    apply();
  }

  const nav = document.getElementById("scan-nav");
  document.addEventListener("keydown", function (event) {
    if (!nav || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const inField = event.target.closest && event.target.closest("input, select, textarea");
    if (inField && event.key !== "Escape") return;  // the slider keeps its own arrow keys
    const target = { ArrowLeft: nav.dataset.prev, ArrowRight: nav.dataset.next,
                     Escape: nav.dataset.back }[event.key];
    if (target) {
      event.preventDefault();
      window.location.assign(target);
    }
  });
})();
