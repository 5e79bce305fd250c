// Draw a lifecycle state graph (nodes: states; edges: transitions) from graph.json with plotly.
// Nodes sit on a circle in lifecycle order; colour is the risk of failing within the horizon,
// failed states are red, and the host's current state (if any) is ringed. Each transition is
// an arrow (a state pair seen both ways has a head at each end).
window.drawStateGraph = function (elementId, graph) {
  const nodes = graph.nodes, n = nodes.length;
  const pos = {};
  nodes.forEach((node, i) => {
    const angle = Math.PI / 2 - (2 * Math.PI * i) / Math.max(n, 1);
    pos[node.state] = [Math.cos(angle), Math.sin(angle)];
  });
  const edges = graph.edges.filter((e) => pos[e.from] && pos[e.to] && e.from !== e.to);
  const edgeText = (e) => `${e.from} → ${e.to}: ${(100 * e.probability).toFixed(0)} % (${e.count})`;
  const edgeTraces = edges.map((e) => ({
    x: [pos[e.from][0], pos[e.to][0]], y: [pos[e.from][1], pos[e.to][1]], mode: "lines", type: "scatter",
    line: { width: 0.5 + 6 * e.probability, color: "rgba(90,100,115,0.45)" }, hoverinfo: "text",
    text: edgeText(e), showlegend: false,
  }));
  const arrows = edges.map((e) => ({
    x: pos[e.to][0], y: pos[e.to][1], ax: pos[e.from][0], ay: pos[e.from][1],
    xref: "x", yref: "y", axref: "x", ayref: "y", text: "", showarrow: true,
    arrowhead: 2, arrowsize: 1.2, arrowwidth: 1, arrowcolor: "rgba(60,68,80,0.8)", standoff: 10,
  }));
  const current = graph.current ? graph.current.state : null;
  const color = (node) => node.state.startsWith("failed_") ? "#c62828" : node.risk;
  const nodeTrace = {
    x: nodes.map((nd) => pos[nd.state][0]), y: nodes.map((nd) => pos[nd.state][1]),
    mode: "markers+text", type: "scatter", text: nodes.map((nd) => nd.state.replace(/_/g, " ")),
    textposition: "top center", textfont: { size: 11 }, hoverinfo: "text", showlegend: false,
    hovertext: nodes.map((nd) => `${nd.state}<br>seen ${nd.visits}×` +
      (nd.mean_dwell_s === null ? "" : `, mean stay ${Math.round(nd.mean_dwell_s)} s`) +
      `<br>risk of failure within ${Math.round(graph.horizon_s / 60)} min: ${(100 * nd.risk).toFixed(0)} %`),
    marker: {
      size: nodes.map((nd) => 12 + 4 * Math.log1p(nd.visits)),
      color: nodes.map(color), colorscale: [[0, "#1a7f37"], [0.3, "#e0a800"], [1, "#c62828"]],
      cmin: 0, cmax: 1, showscale: true, colorbar: { title: { text: "risk" }, thickness: 10 },
      line: { width: nodes.map((nd) => (nd.state === current ? 4 : 1)), color: "#1d232b" },
    },
  };
  const layout = {
    margin: { l: 10, r: 10, t: 10, b: 10 }, xaxis: { visible: false, range: [-1.4, 1.4] },
    yaxis: { visible: false, range: [-1.3, 1.3], scaleanchor: "x" }, hovermode: "closest",
    annotations: arrows,
  };
  Plotly.react(elementId, [...edgeTraces, nodeTrace], layout, { displaylogo: false, responsive: true });
};

// A way through the graph as text: "a → b → c (62 %)", the share being the way's probability.
window.describeWay = function (states, probability) {
  return `${states.join(" → ")} (${(100 * probability).toFixed(0)} %)`;
};
