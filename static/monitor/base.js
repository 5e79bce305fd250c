// Keep "last seen" cells current between updates: "4 s ago" must not freeze at load time.
(function () {
  function ago(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }
  // "in 3 min 20 s" until an expected failure (epoch seconds in data-countdown).
  function countdown(seconds) {
    if (seconds <= 0) return "due now";
    const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    return "in " + (m ? m + " min " : "") + s + " s";
  }
  function refresh() {
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      el.textContent = ago((Date.now() - Date.parse(el.getAttribute("datetime"))) / 1000);
    });
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      el.textContent = countdown(parseFloat(el.dataset.countdown) - Date.now() / 1000);
    });
  }
  document.addEventListener("DOMContentLoaded", refresh);
  document.addEventListener("htmx:wsAfterMessage", refresh);
  setInterval(refresh, 1000);
})();

// Content that arrives over a websocket (the approvals queue) carries hx-* attributes too:
// have htmx wire them up, so its buttons post in place instead of navigating away.
document.addEventListener("htmx:wsAfterMessage", function (event) {
  if (window.htmx) window.htmx.process(event.target);
});
