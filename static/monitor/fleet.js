// Fleet page: keep the riskiest hosts on top as live updates change their risk.
(function () {
  function sortRows() {
    const body = document.getElementById("fleet-rows");
    if (!body) return;
    const rows = Array.from(body.querySelectorAll("tr[data-risk]"));
    rows.sort((a, b) => (parseFloat(b.dataset.risk) - parseFloat(a.dataset.risk)) ||
                        a.dataset.name.localeCompare(b.dataset.name));
    rows.forEach((row) => body.appendChild(row));
  }
  document.addEventListener("htmx:wsAfterMessage", sortRows);
})();
