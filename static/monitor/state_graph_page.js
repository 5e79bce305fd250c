// The fleet's state graph page: redraw every 30 s as the fleet's transitions accumulate.
(function () {
  const element = document.getElementById("fleet-graph");
  const cell = (text, className) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  };
  function load() {
    fetch(element.dataset.graphUrl, { credentials: "same-origin" }).then((r) => r.json()).then((graph) => {
      window.drawStateGraph("fleet-graph", graph);
      // The states a host can still fail from, riskiest first, then the failed ones (their way back).
      const failed = (n) => n.state.startsWith("failed_");
      const rows = [...graph.nodes.filter((n) => !failed(n)).sort((a, b) => b.risk - a.risk),
                    ...graph.nodes.filter(failed)];
      document.getElementById("risk-table").replaceChildren(...rows.map((n) => {
        const tr = document.createElement("tr");
        const back = n.recovery
          ? window.describeWay(n.recovery.states, n.recovery.probability_within_horizon) : "";
        tr.append(cell(n.state), cell(failed(n) ? "failed" : `${(100 * n.risk).toFixed(1)} %`, "num"),
                  cell(n.paths.map((p) => window.describeWay(p.states, p.probability)).join("; "), "muted"),
                  cell(back, "muted"));
        return tr;
      }));
    });
  }
  load();
  setInterval(load, 30000);
})();
