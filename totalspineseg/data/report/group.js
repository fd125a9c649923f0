"use strict";
(function () {
  const rows = JSON.parse(document.getElementById("qc-data").textContent);
  const RATINGS = { p: "Pass", f: "Fail", a: "Artifact" };
  const CYCLE = ["", "Pass", "Fail", "Artifact"];
  const COLUMNS = [
    { key: "index", label: "#", num: true },
    { key: "thumb", label: "preview", sort: false },
    { key: "id", label: "image" },
    { key: "role", label: "role" },
    { key: "n_vertebrae", label: "vertebrae", num: true },
    { key: "n_discs", label: "discs", num: true },
    { key: "range", label: "range" },
    { key: "cord_mm3", label: "cord mm\u00b3", num: true },
    { key: "canal_mm3", label: "canal mm\u00b3", num: true },
    { key: "n_flags", label: "QC flags", num: true },
    { key: "rating", label: "rating" },
  ];
  const storageKey = "totalspineseg-qc:" + document.title;
  let ratings = load();
  let order = rows.map((_, i) => i);
  let sortKey = "index", sortDir = 1, selected = 0;

  function load() {
    try { return JSON.parse(localStorage.getItem(storageKey)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(storageKey, JSON.stringify(ratings)); } catch (e) { /* storage may be off */ }
  }
  function value(row, key) { return key === "rating" ? (ratings[row.id] || "") : row[key]; }

  function header() {
    const tr = document.getElementById("qc-head");
    COLUMNS.forEach(col => {
      const th = document.createElement("th");
      th.textContent = col.label;
      th.dataset.key = col.key;
      if (col.sort !== false) th.addEventListener("click", () => sortBy(col.key));
      tr.appendChild(th);
    });
  }

  function cell(row, col) {
    const td = document.createElement("td");
    if (col.num) td.className = "num";
    if (col.key === "thumb") {
      if (row.thumb) { const img = document.createElement("img"); img.className = "thumb"; img.src = row.thumb; img.alt = row.id; td.appendChild(img); }
    } else if (col.key === "id") {
      td.className = "id";
      const a = document.createElement("a"); a.href = row.link; a.textContent = row.id; a.title = row.source;
      td.appendChild(a);
    } else if (col.key === "n_flags") {
      if (!row.flags.length) { td.innerHTML = '<span class="ok">none</span>'; td.className = ""; }
      row.flags.forEach(f => { const s = document.createElement("span"); s.className = "flag"; s.textContent = f.code; s.title = f.message; td.appendChild(s); });
    } else if (col.key === "rating") {
      td.className = "rating"; td.textContent = ratings[row.id] || "";
    } else {
      const v = row[col.key];
      td.textContent = v === null || v === undefined ? "" : (col.num && typeof v === "number" ? v.toLocaleString("en-US", { maximumFractionDigits: 1 }) : v);
    }
    return td;
  }

  function matches(row) {
    const text = document.getElementById("filter").value.trim().toLowerCase();
    if (document.getElementById("flagged-only").checked && !row.flags.length) return false;
    if (!text) return true;
    return [row.id, row.source, row.role].concat(row.flags.map(f => f.code + " " + f.message)).join(" ").toLowerCase().includes(text);
  }

  function render() {
    const body = document.getElementById("qc-body");
    body.textContent = "";
    order.filter(i => matches(rows[i])).forEach(i => {
      const row = rows[i];
      const tr = document.createElement("tr");
      tr.dataset.index = i; tr.id = "row-" + row.id;
      const r = ratings[row.id];
      if (r) tr.classList.add("rating-" + r.toLowerCase());
      if (i === selected) tr.classList.add("selected");
      COLUMNS.forEach(col => tr.appendChild(cell(row, col)));
      tr.addEventListener("click", () => select(i));
      body.appendChild(tr);
    });
    document.querySelectorAll("#qc-head th").forEach(th => {
      th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir < 0);
    });
    summary(); view();
  }

  function visible() { return Array.from(document.querySelectorAll("#qc-body tr")).map(tr => +tr.dataset.index); }

  function sortBy(key) {
    sortDir = key === sortKey ? -sortDir : 1; sortKey = key;
    order.sort((a, b) => {
      const x = value(rows[a], key), y = value(rows[b], key);
      const c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return c * sortDir || a - b;
    });
    render();
  }

  function select(i) {
    selected = i; render();
    const tr = document.querySelector("#qc-body tr.selected");
    if (tr && tr.scrollIntoView) tr.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    const vis = visible();
    if (!vis.length) return;
    const at = vis.indexOf(selected);
    select(vis[Math.max(0, Math.min(vis.length - 1, at < 0 ? 0 : at + step))]);
  }

  function rate(label) {
    const row = rows[selected];
    if (!row) return;
    if (label) ratings[row.id] = label; else delete ratings[row.id];
    save(); render();
  }

  function summary() {
    const counts = { Pass: 0, Fail: 0, Artifact: 0 };
    Object.values(ratings).forEach(r => { if (r in counts) counts[r] += 1; });
    const flagged = rows.filter(r => r.flags.length).length;
    document.getElementById("summary").textContent = rows.length + " images \u00b7 " + flagged + " flagged \u00b7 rated: " +
      counts.Pass + " pass, " + counts.Fail + " fail, " + counts.Artifact + " artifact";
  }

  function view() {
    const row = rows[selected];
    const img = document.getElementById("viewer-img");
    if (!row) return;
    img.src = row.thumb || ""; img.alt = row.id;
    document.getElementById("viewer-caption").textContent = row.source + (row.flags.length ? " \u2014 " + row.flags.map(f => f.message).join("; ") : "");
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type }));
    const a = document.createElement("a"); a.href = url; a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function exported() {
    return rows.map(r => ({ id: r.id, source: r.source, rating: ratings[r.id] || "", flags: r.flags.map(f => f.code) }));
  }
  function exportTsv() {
    const lines = ["image_id\tsource\trating\tqc_flags"].concat(exported().map(r => [r.id, r.source, r.rating, r.flags.join(",")].join("\t")));
    download("qc_ratings.tsv", lines.join("\n") + "\n", "text/tab-separated-values");
  }
  function exportJson() {
    download("qc_ratings.json", JSON.stringify({ report: document.title, ratings: exported() }, null, 2) + "\n", "application/json");
  }

  document.addEventListener("keydown", ev => {
    if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    if (k === "ArrowDown" || k === "j") move(1);
    else if (k === "ArrowUp" || k === "k") move(-1);
    else if (k.toLowerCase() in RATINGS) rate(RATINGS[k.toLowerCase()]);
    else if (k === " ") rate(CYCLE[(CYCLE.indexOf(ratings[(rows[selected] || {}).id] || "") + 1) % CYCLE.length]);
    else if (k === "x" || k === "Delete" || k === "Backspace") rate("");
    else if (k === "Enter" && rows[selected]) window.location.href = rows[selected].link;
    else return;
    ev.preventDefault();
  });
  document.getElementById("filter").addEventListener("input", render);
  document.getElementById("flagged-only").addEventListener("change", render);
  document.getElementById("export-tsv").addEventListener("click", exportTsv);
  document.getElementById("export-json").addEventListener("click", exportJson);
  header(); render();
})();
