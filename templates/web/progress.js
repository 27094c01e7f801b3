// Live delivery progress on the edition page: the page works without it (the counts are there when it loads);
// with it, the counts, the bar and the status follow the sending every second until the edition stops sending.
"use strict";
(function () {
  const box = document.querySelector("[data-progress-url]");
  if (!box) return;
  const url = box.getAttribute("data-progress-url");
  const bar = box.querySelector("progress");
  const summary = box.querySelector("[data-progress-summary]");
  const status = document.querySelector("[data-edition-status]");
  const counts = box.querySelectorAll("[data-count]");
  const open = ["queued", "claimed", "deferred"];

  function show(progress) {
    if (bar) {
      bar.max = Math.max(progress.total, 1);
      bar.value = progress.done;
    }
    if (summary) summary.textContent = progress.summary;
    counts.forEach(function (cell) {
      cell.textContent = String(progress.counts[cell.getAttribute("data-count")] || 0);
    });
    // The status's name is in the page's language (status_label); its class keeps the stored name.
    if (status && status.className !== "status status-" + progress.status) {
      status.textContent = progress.status_label;
      status.className = "status status-" + progress.status;
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("progress: " + response.status);
        return response.json();
      })
      .then(function (progress) {
        show(progress);
        const still = progress.status === "sending" && open.some(function (s) { return progress.counts[s]; });
        if (still || progress.status === "sending") window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  poll();
})();
