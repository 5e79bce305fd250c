// Host page: the fleet's lifecycle graph with this host's state ringed, and in words its risk,
// its likeliest way to a failure and its best way back to serving. Redrawn every 30 s and
// when a poll brings the host a new transition (host_detail.js calls reloadHostGraph).
(function () {
  const element = document.getElementById("host-graph");
  const summary = document.getElementById("host-graph-summary");
  const minutes = (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

  function describe(graph) {
    const current = graph.current;
    const node = current && graph.nodes.find((n) => n.state === current.state);
    if (!node || !node.visits) {
      return `No transition into ${current ? current.state : "this state"} learned yet: no risk to tell.`;
    }
    const horizon = `${Math.round(graph.horizon_s / 60)} min`;
    const words = [`${current.state}` + (current.elapsed_s === null ? "" : ` for ${minutes(current.elapsed_s)}`)];
    if (current.state.startsWith("failed_")) {
      words.push("failed");
    } else if (!graph.edges.some((e) => e.from === current.state && e.to !== current.state)) {
      words.push(`no host has left ${current.state} yet: no risk to tell`);
    } else {
      words.push(`${(100 * current.risk).toFixed(0)} % chance of a failure within ${horizon}`);
      if (node.paths.length) words.push(`likeliest: ${window.describeWay(node.paths[0].states, node.paths[0].probability)}`);
    }
    if (node.recovery) {
      const back = node.recovery;
      words.push(`way back: ${back.states.join(" → ")}, ${(100 * back.probability_within_horizon).toFixed(0)} % within ${horizon}` +
                 (back.expected_duration_s === null ? "" : `, about ${minutes(back.expected_duration_s)}`));
    }
    return words.join(" · ");
  }

  let loadedAt = 0;
  function load() {
    loadedAt = Date.now();
    fetch(element.dataset.graphUrl, { credentials: "same-origin" }).then((r) => r.json()).then((graph) => {
      window.drawStateGraph("host-graph", graph);
      summary.textContent = describe(graph);
    });
  }
  // A poll with new events may bring a transition; the graph is built from the whole fleet's
  // history, so at most once in RELOAD_MIN_MS however often they come (the last one waits).
  const RELOAD_MIN_MS = 5000;
  let pending = null;
  window.reloadHostGraph = () => {
    if (pending) return;
    const wait = Math.max(0, loadedAt + RELOAD_MIN_MS - Date.now());
    pending = setTimeout(() => { pending = null; load(); }, wait);
  };
  load();
  setInterval(load, 30000);
})();
