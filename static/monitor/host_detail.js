// Host page: draw the window from series.json, then extend every chart as checkpoints arrive.
(function () {
  const root = document.getElementById("charts");
  const WINDOW_S = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000, "90d": 7776000 }[root.dataset.window];
  const CHARTS = [
    // The GPU that runs out first (an OOM happens on one GPU): on a host of one, its memory.
    { id: "chart-gpu-mem", title: "GPU memory (GB)", keys: ["gpu_mem_fullest_used_gb", "gpu_mem_fullest_total_gb"], names: ["used", "total"] },
    { id: "chart-kv", title: "KV cache usage (%)", keys: ["kv_cache_usage_pct"], names: ["KV cache"], range: [0, 100] },
    { id: "chart-requests", title: "Requests", keys: ["requests_running", "requests_waiting"], names: ["running", "waiting"] },
    { id: "chart-throughput", title: "Throughput (tokens/s)", keys: ["prompt_tokens_per_s", "generation_tokens_per_s"], names: ["prompt", "generation"] },
    { id: "chart-latency", title: "Latency (s)", keys: ["ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s", "e2e_p50_s", "e2e_p99_s"],
      names: ["TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "E2E p50", "E2E p99"] },
  ];
  // Forecasts drawn on the charts: metric -> [chart id, scale to the chart's unit].
  const FORECAST_ON = {
    gpu_mem_used_pct: null,  // a GPU's share: drawn in GB of that GPU's memory, below
    kv_cache_usage_pct: ["chart-kv", 1],
    requests_waiting: ["chart-requests", 1],
    itl_p99_s: ["chart-latency", 1],
  };
  const forecastTraces = {};  // chart id -> index of its first forecast trace
  let forecastEnd = 0;  // the end of the newest forecasts (ms): every chart shows up to it
  let lastTotalGb = null;
  let gpuCount = Number(root.dataset.gpuCount) || 1;  // from the host's newest checkpoint
  const several = () => gpuCount > 1;
  // On a host of several GPUs the memory chart is the fullest GPU's, and the memory forecast
  // the one of the GPU that fills first (most often the same one).
  function labelGpuChart(chart) {
    chart.title = several() ? "GPU memory, the fullest GPU (GB)" : "GPU memory (GB)";
    chart.names = several() ? ["used (the fullest GPU)", "its total"] : ["used", "total"];
  }
  labelGpuChart(CHARTS[0]);
  const status = document.getElementById("live-status");
  const toDate = (t) => new Date(t * 1000);

  function layout(chart) {
    return {
      title: { text: chart.title, font: { size: 13 } }, margin: { l: 45, r: 10, t: 30, b: 30 },
      legend: { orientation: "h", y: -0.2 }, xaxis: { type: "date" },
      yaxis: chart.range ? { range: chart.range } : { rangemode: "tozero" },
    };
  }

  function draw(series) {
    const x = series.t.map(toDate);
    CHARTS.forEach((chart) => {
      const traces = chart.keys.map((key, i) => ({ x: x, y: series[key], name: chart.names[i], mode: "lines", type: "scatter" }));
      Plotly.newPlot(chart.id, traces, layout(chart), { displaylogo: false, responsive: true });
    });
  }

  function forecastTrace(fc, scale) {
    const whose = fc.metric === "gpu_mem_used_pct" && several() ? " (the GPU filling first)" : "";
    const x = fc.times.map(toDate);
    const band = {
      x: x.concat(x.slice().reverse()), y: fc.upper.concat(fc.lower.slice().reverse()).map((v) => v * scale),
      fill: "toself", fillcolor: "rgba(214,39,40,0.12)", line: { width: 0 }, hoverinfo: "skip",
      name: "forecast band (about 9 in 10)" + whose, type: "scatter",
    };
    const line = { x: x, y: fc.values.map((v) => v * scale), mode: "lines", type: "scatter",
                   line: { dash: "dot", color: "#d62728" }, name: "forecast" + whose };
    return [band, line];
  }

  // The lines each forecast reaches within the horizon (its own and the guardrails'), by series.
  const LABELS = { gpu_mem_used_pct: "GPU memory", kv_cache_usage_pct: "KV cache", requests_waiting: "requests waiting", itl_p99_s: "ITL p99" };
  const clock = (t) => toDate(t).toLocaleTimeString([], { hour12: false });
  function showCrossings(forecasts) {
    const when = (at) => {
      const s = at - Date.now() / 1000;
      if (s < 5) return "reached";
      return `in ${s < 90 ? Math.round(s) + " s" : Math.round(s / 60) + " min"} (${clock(at)})`;
    };
    const line = (name) => (name.startsWith("guardrail:") ? `guardrail ${name.slice(10)}'s line` : name);
    const parts = forecasts.map((fc) => {
      const reached = Object.entries(fc.crossings || {}).filter(([, at]) => at !== null).sort((a, b) => a[1] - b[1]);
      const label = (LABELS[fc.metric] || fc.metric) + (fc.metric === "gpu_mem_used_pct" && several() ? " (the GPU filling first)" : "");
      return reached.length ? `${label}: ${reached.map(([name, at]) => `${line(name)} ${when(at)}`).join(", ")}` : null;
    }).filter((part) => part);
    document.getElementById("forecast-crossings").textContent = parts.length
      ? `Lines forecast to be reached · ${parts.join(" · ")}`
      : forecastEnd ? `No line forecast to be reached before ${clock(forecastEnd / 1000)}.` : "No forecast yet.";
  }

  function drawForecasts(forecasts) {
    const ends = forecasts.filter((fc) => fc.times.length).map((fc) => 1000 * fc.times[fc.times.length - 1]);
    forecastEnd = ends.length ? Math.max(...ends) : 0;
    showCrossings(forecasts);
    forecasts.forEach((fc) => {
      let target = FORECAST_ON[fc.metric];
      if (fc.metric === "gpu_mem_used_pct" && lastTotalGb) target = ["chart-gpu-mem", lastTotalGb / 100];
      if (!target) return;
      const [chartId, scale] = target;
      const element = document.getElementById(chartId);
      if (!element || !element.data) return;
      const traces = forecastTrace(fc, scale);
      if (forecastTraces[chartId] === undefined) {
        forecastTraces[chartId] = element.data.length;
        Plotly.addTraces(chartId, traces);
      } else {
        const first = forecastTraces[chartId];
        Plotly.deleteTraces(chartId, [first, first + 1]);
        Plotly.addTraces(chartId, traces, [first, first + 1]);
      }
    });
  }

  function extend(point) {
    if (point.gpu_mem_fullest_total_gb) lastTotalGb = point.gpu_mem_fullest_total_gb;
    if (point.gpu_count && point.gpu_count !== gpuCount) {  // the first poll of a new host
      gpuCount = point.gpu_count;
      labelGpuChart(CHARTS[0]);
      Plotly.relayout(CHARTS[0].id, { "title.text": CHARTS[0].title });
      Plotly.restyle(CHARTS[0].id, { name: CHARTS[0].names }, [0, 1]);
    }
    const t = toDate(point.collected_at);
    CHARTS.forEach((chart) => {
      const update = { x: chart.keys.map(() => [t]), y: chart.keys.map((key) => [point[key]]) };
      Plotly.extendTraces(chart.id, update, chart.keys.map((_, i) => i));
    });
    showRange();
  }

  // Every chart over the same span: the window up to now, and the forecasts beyond it.
  function showRange() {
    const range = [new Date(Date.now() - WINDOW_S * 1000), new Date(Math.max(Date.now(), forecastEnd))];
    CHARTS.forEach((chart) => Plotly.relayout(chart.id, { "xaxis.range": range }));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/hosts/${root.dataset.hostId}/`);
    socket.onopen = () => { status.textContent = "live"; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.point) extend(message.point);
      // New transitions, errors, GPU events or a validation report: the server re-rendered them.
      if (message.panels) {
        document.getElementById("host-events").outerHTML = message.panels;
        if (window.reloadHostGraph) window.reloadHostGraph();  // perhaps a new transition
      }
      if (message.predictions) document.getElementById("host-predictions").outerHTML = message.predictions;
      if (message.forecasts) drawForecasts(message.forecasts);
    };
    socket.onclose = () => { status.textContent = "reconnecting…"; setTimeout(connect, 2000); };
  }

  fetch(`${root.dataset.seriesUrl}?window=${root.dataset.window}`, { credentials: "same-origin" })
    .then((response) => response.json())
    .then((series) => {
      draw(series);
      const totals = series.gpu_mem_fullest_total_gb.filter((v) => v !== null);
      if (totals.length) lastTotalGb = totals[totals.length - 1];
      drawForecasts(series.forecasts);
      showRange();
      connect();
    });
})();
