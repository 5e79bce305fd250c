// Incident page: the host's charts over the incident's window, with when it opened, failed and
// was resolved marked.
(function () {
  const root = document.getElementById("incident-charts");
  if (!root) return;
  const CHARTS = [
    { id: "chart-memory", title: "GPU memory (GB) and KV cache (%)", keys: ["gpu_mem_used_gb", "kv_cache_usage_pct"], names: ["GPU used", "KV cache %"] },
    { id: "chart-load", title: "Requests", keys: ["requests_running", "requests_waiting"], names: ["running", "waiting"] },
    { id: "chart-latency", title: "Latency (s)", keys: ["ttft_p99_s", "itl_p99_s", "e2e_p99_s"], names: ["TTFT p99", "ITL p99", "E2E p99"] },
  ];
  const marks = [["opened", "#d98f00"], ["failed", "#c62828"], ["resolved", "#2e7d32"]]
    .filter(([name]) => root.dataset[name])
    .map(([name, color]) => {
      const at = new Date(Number(root.dataset[name]) * 1000);
      return { type: "line", x0: at, x1: at, yref: "paper", y0: 0, y1: 1, line: { color: color, dash: "dot" }, name: name };
    });
  fetch(root.dataset.series, { credentials: "same-origin" })
    .then((r) => r.json())
    .then((series) => {
      const x = series.t.map((t) => new Date(t * 1000));
      CHARTS.forEach((chart) => {
        const traces = chart.keys.map((key, i) => ({ x: x, y: series[key], name: chart.names[i], mode: "lines", type: "scatter" }));
        Plotly.newPlot(chart.id, traces, {
          title: { text: chart.title, font: { size: 13 } }, margin: { l: 45, r: 10, t: 30, b: 30 },
          legend: { orientation: "h", y: -0.2 }, xaxis: { type: "date" }, yaxis: { rangemode: "tozero" }, shapes: marks,
        }, { displaylogo: false, responsive: true });
      });
    });
})();
