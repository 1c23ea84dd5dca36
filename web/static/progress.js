// Live job progress: poll /api/jobs/<id> for every unfinished job shown on the page.
(function () {
  "use strict";

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  function setText(block, field, text) {
    const el = block.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = text;
  }

  function update(block, job) {
    const p = job.progress;
    const bar = block.querySelector('progress[data-field="fraction"]');
    bar.value = p.fraction;
    const percent = Math.round(p.fraction * 100) + " %";
    bar.textContent = percent;
    setText(block, "percent", percent);
    const status = block.querySelector('[data-field="status"]');
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    ["done", "failed", "duplicate", "skipped", "flagged", "total"].forEach(function (k) {
      setText(block, k, String(p[k]));
    });
    setText(block, "rate", p.rate ? p.rate.toFixed(1) + " scans/s" : "");
    setText(block, "eta", p.eta_seconds == null ? "" : "about " + duration(p.eta_seconds) + " left");
  }

  async function poll(block) {
    try {
      const response = await fetch(block.dataset.jobUrl, {
        headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
      });
      if (response.status === 401) { window.location.reload(); return; }
      if (response.ok) {
        const job = await response.json();
        update(block, job);
        if (job.finished) {
          block.dataset.finished = "1";
          if (block.dataset.reload === "1") window.location.reload();  // results and neurons
          return;
        }
      }
    } catch (err) {
      // A network hiccup: keep polling; the bar simply waits.
    }
    window.setTimeout(function () { poll(block); }, Number(block.dataset.pollMs) || 1500);
  }

  document.querySelectorAll('.progress-block[data-finished="0"]').forEach(function (block) {
    poll(block);
  });
})();
