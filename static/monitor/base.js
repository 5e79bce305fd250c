// Keep "last seen" cells current between updates: "4 s ago" must not freeze at load time.
(function () {
  function ago(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }
  function refresh() {
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      el.textContent = ago((Date.now() - Date.parse(el.getAttribute("datetime"))) / 1000);
    });
  }
  document.addEventListener("DOMContentLoaded", refresh);
  document.addEventListener("htmx:wsAfterMessage", refresh);
  setInterval(refresh, 1000);
})();
