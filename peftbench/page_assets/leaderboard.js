// leaderboard.html's behaviour: sort and filter the table, draw the Pareto plot of the two chosen figures.
// The rows' figures come from peftbench/page.py (Row.numbers()); nothing statistical is computed here.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const byId = (id) => document.getElementById(id);
  const table = byId("rows");
  const plot = byId("pareto");
  const xSelect = byId("x-axis");
  const ySelect = byId("y-axis");
  const search = byId("search");
  const labels = byId("labels");
  const filters = Array.from(document.querySelectorAll("select[data-filter]"));
  // Plotly's default colour sequence, fixed per table (task · model · budget) so filtering never recolours.
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const body = table ? table.tBodies[0] : null;
  const trOf = body ? Array.from(body.rows) : []; // in DATA.rows order (data-row = index)

  const axisOf = (key) => DATA.axes.find((a) => a.key === key);
  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  const shownRows = () => DATA.rows.filter((_, i) => !trOf[i].hidden);

  // +1 when a higher value is better on this axis for this row.
  function sign(axis, row) {
    if (axis.better === "metric") return row.higher_is_better ? 1 : -1;
    return axis.better === "higher" ? 1 : -1;
  }

  // The rows no other row beats on both axes (at least as good on both, better on one). Written out: a
  // table has tens of rows, and plotly has no dominance helper.
  function front(points) {
    return points.filter((p) => !points.some((q) => q !== p &&
      q.sx * q.x >= p.sx * p.x && q.sy * q.y >= p.sy * p.y && (q.sx * q.x > p.sx * p.x || q.sy * q.y > p.sy * p.y)));
  }

  function errorBars(axis, rows) {
    if (!axis.low) return undefined;
    const gap = (a, b) => (isNumber(a) && isNumber(b) ? a - b : 0); // one seed: no interval, no bar
    return {
      type: "data", symmetric: false, visible: true, thickness: 1, width: 3,
      array: rows.map((r) => gap(r.values[axis.high], r.values[axis.key])),
      arrayminus: rows.map((r) => gap(r.values[axis.key], r.values[axis.low])),
    };
  }

  function title(axis, rows) {
    let text = axis.title;
    if (axis.key === "mean") {
      const metrics = Array.from(new Set(rows.map((r) => r.metric)));
      text = `test ${metrics.join(" / ") || "score"} (mean, 95 % interval)`;
    }
    if (axis.key.startsWith("peak_mem")) {
      const kinds = Array.from(new Set(rows.map((r) => r.peak_mem_kind)));
      text += ` [${kinds.join(", ") || "–"}${kinds.length > 1 ? ": sources differ" : ""}]`;
    }
    const higher = rows.length ? sign(axis, rows[0]) > 0 : axis.better !== "lower";
    return `${text}, ${higher ? "higher" : "lower"} is better`;
  }

  // Spans orders of magnitude (as the static plots decide): log scale shows them all.
  function scale(values) {
    if (!values.length || values.some((v) => v <= 0)) return "linear";
    return Math.max(...values) / Math.min(...values) > 10 ? "log" : "linear";
  }

  const short = (v) => (isNumber(v) ? String(Number(v.toPrecision(4))) : "–");

  function draw() {
    const ax = axisOf(xSelect.value);
    const ay = axisOf(ySelect.value);
    const rows = shownRows().filter((r) => isNumber(r.values[ax.key]) && isNumber(r.values[ay.key]));
    const traces = [];
    const single = DATA.sections.length === 1;
    DATA.sections.forEach((section, s) => {
      const color = COLORS[s % COLORS.length];
      const members = rows.filter((r) => r.section === section);
      for (const ranked of [true, false]) {
        const group = members.filter((r) => r.ranked === ranked);
        if (!group.length) continue;
        traces.push({
          type: "scatter", mode: labels.checked ? "markers+text" : "markers", name: (single ? (ranked ? "rows" : "not ranked") :
            section + (ranked ? "" : " (not ranked)")),
          x: group.map((r) => r.values[ax.key]), y: group.map((r) => r.values[ay.key]),
          error_x: errorBars(ax, group), error_y: errorBars(ay, group),
          text: group.map((r) => r.label), textposition: "top right", textfont: { size: 10 },
          marker: { color, size: 9, symbol: ranked ? "circle" : "x", opacity: ranked ? 1 : 0.5 },
          hovertext: group.map((r) => `${r.hover}<br>${ax.short}: ${short(r.values[ax.key])} · ${ay.short}: ${short(r.values[ay.key])}`),
          hoverinfo: "text",
        });
      }
      const points = members.filter((r) => r.ranked).map((r) => ({
        x: r.values[ax.key], y: r.values[ay.key], sx: sign(ax, r), sy: sign(ay, r),
      }));
      const best = front(points).sort((a, b) => a.x - b.x || a.y - b.y);
      if (best.length > 1) {
        traces.push({
          type: "scatter", mode: "lines", name: single ? "Pareto front (point estimates)" : `${section}: front`,
          x: best.map((p) => p.x), y: best.map((p) => p.y), hoverinfo: "skip",
          line: { color, width: 1.5, dash: "dot" },
        });
      }
    });
    const layout = {
      xaxis: { title: { text: title(ax, rows) }, type: scale(rows.map((r) => r.values[ax.key])), zeroline: false },
      yaxis: { title: { text: title(ay, rows) }, type: scale(rows.map((r) => r.values[ay.key])), zeroline: false },
      hovermode: "closest", height: 520, margin: { t: 20 },
      legend: { orientation: "h", y: -0.2 },
      annotations: rows.length ? [] : [{ text: "no row shown has both figures", showarrow: false,
        xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
    };
    Plotly.react(plot, traces, layout, { displaylogo: false, responsive: true });
  }

  function applyFilters() {
    const text = search.value.trim().toLowerCase();
    let shown = 0;
    trOf.forEach((tr, i) => {
      const row = DATA.rows[i];
      const keep = filters.every((f) => f.value === "" || row[f.dataset.filter] === f.value) &&
        (!text || tr.textContent.toLowerCase().includes(text));
      tr.hidden = !keep;
      shown += keep ? 1 : 0;
    });
    byId("shown").textContent = `${shown} of ${trOf.length} rows shown`;
    draw();
  }

  // Sort by one column: numbers by their raw figure (data-sort), text by its text; empty cells last in
  // both directions; equal cells keep the leaderboard's order.
  function sortBy(th) {
    const index = th.cellIndex;
    const numeric = th.dataset.type === "number";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    for (const other of th.parentElement.cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const key = (tr) => {
      const cell = tr.cells[index];
      if (!numeric) return cell.textContent.trim() === "–" ? null : cell.textContent;
      return cell.dataset.sort === "" ? null : Number(cell.dataset.sort);
    };
    const ordered = Array.from(body.rows).sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      if (ka === null || kb === null) return (ka === null) - (kb === null) || a.dataset.row - b.dataset.row;
      const order = numeric ? ka - kb : ka.localeCompare(kb);
      return (ascending ? order : -order) || a.dataset.row - b.dataset.row;
    });
    for (const tr of ordered) body.appendChild(tr);
  }

  if (table) {
    for (const th of table.tHead.rows[0].cells) th.addEventListener("click", () => sortBy(th));
  }
  for (const control of [...filters, xSelect, ySelect, labels]) control.addEventListener("change", applyFilters);
  search.addEventListener("input", applyFilters);
  applyFilters();
})();
