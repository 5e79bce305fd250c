// The fleet's state graph page: redraw every 30 s as the fleet's transitions accumulate.
(function () {
  const element = document.getElementById("fleet-graph");
  function load() {
    fetch(element.dataset.graphUrl, { credentials: "same-origin" }).then((r) => r.json()).then((graph) => {
      window.drawStateGraph("fleet-graph", graph);
      const rows = graph.nodes.filter((n) => !n.state.startsWith("failed_")).sort((a, b) => b.risk - a.risk);
      document.getElementById("risk-table").innerHTML = rows.map((n) =>
        `<tr><td>${n.state}</td><td class="num">${(100 * n.risk).toFixed(1)} %</td>` +
        `<td class="muted">${n.paths.map((p) => p.states.join(" → ") + ` (${(100 * p.probability).toFixed(0)} %)`).join("; ")}</td></tr>`
      ).join("");
    });
  }
  load();
  setInterval(load, 30000);
})();
