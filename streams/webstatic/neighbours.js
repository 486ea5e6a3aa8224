/* mmc-stream model page: "who crowds you" — the model's nearest stakers, its crowd's stake share
 * over rounds and its crowding tax, from GET /api/models/<id>/neighbours.
 *
 * Fills the one container the page holds for it (#who-crowds-you) on "/models/<id>" pages and
 * nothing else; charts with window.mmcCharts (charts.js). Reloaded every REFRESH_MS (one request;
 * no second live stream, which would count against the server's cap on live clients).
 */
"use strict";

(function () {
  const REFRESH_MS = 60000;
  const isNum = v => typeof v === "number" && isFinite(v);
  const signed = (v, digits) => (isNum(v) ? (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toFixed(digits) : "–");
  const pct = v => (isNum(v) ? (100 * v).toFixed(1) + "%" : "–");

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  function table(id, head, rows) {
    return el("div", {class: "table-wrap"},
      el("table", {id, class: "data"},
        el("thead", {}, el("tr", {}, ...head.map(h => el("th", {class: h.num ? "num" : null, title: h.title}, h.label)))),
        el("tbody", {}, ...rows.map(r => el("tr", {}, ...r.map((v, i) => el("td", {class: head[i].num ? "num" : null}, v)))))));
  }

  function render(box, data) {
    const msg = data.neighbours;
    const modelLink = m => el("a", {href: `/models/${encodeURIComponent(m)}`}, m);
    const neighbours = msg.neighbours.length
      ? table("neighbours-table",
          [{label: "Model"}, {label: "Correlation", num: true, title: "Pearson correlation of the gaussianized ranks"}, {label: "Stake share", num: true}],
          msg.neighbours.map(n => [modelLink(n.model), isNum(n.correlation) ? n.correlation.toFixed(3) : "–", pct(n.stake_share)]))
      : el("p", {class: "empty"}, "No staker has a defined correlation with this model in this round.");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("id", "crowd-share-chart");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 560 250");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "the crowd's share of the stake by round");
    const tax = data.tax.length
      ? table("crowd-tax-table",
          [{label: "Round"}, {label: "MMC earned", num: true}, {label: "MMC without its crowd", num: true}, {label: "Difference", num: true}],
          data.tax.slice().reverse().map(t => [String(t.round), signed(t.contribution, 4), signed(t.contribution_without_crowd, 4), signed(t.tax, 4)]))
      : el("p", {class: "empty"}, "No final round with this model staked yet: the tax is measured on a round's final targets.");
    box.replaceChildren(
      el("div", {class: "card-head"},
        el("h2", {}, "Who crowds you"),
        el("span", {class: "meta"}, `round ${data.round} · the ${msg.k} nearest stakers at close`)),
      el("p", {id: "crowd-summary", class: "note"},
        `In round ${data.round}, ${msg.crowd_size} staker${msg.crowd_size === 1 ? "" : "s"} correlated at least ${msg.threshold} with ${data.model} ` +
        `held ${pct(msg.crowd_share)} of the stake (its crowd); ${data.model} held ${pct(msg.own_share)}.`),
      neighbours,
      el("p", {class: "note"}, "Correlation: how alike the two models' ranked predictions are (1 = the same ranking). " +
        "Stake share: that staker's part of the stake-weighted meta model."),
      svg,
      el("p", {class: "note"}, "Crowd's stake share by round: the share of all stake held by the stakers correlated at least " +
        `${msg.threshold} with this model — the part of the meta model that already predicts what it predicts.`),
      el("h3", {}, "Crowding tax by final round"),
      tax,
      el("p", {class: "note"}, "MMC earned: today's MMC (contribution) as the round was scored. " +
        "MMC without its crowd: the same round re-scored with the stakes of its nearest stakers set to 0. " +
        "Difference: what its crowd cost it (negative: the crowd helped)."));
    window.mmcCharts.lineChart(svg, {
      x: data.crowd.map(p => p.round),
      series: [
        {label: "crowd's stake share", values: data.crowd.map(p => p.crowd_share), cls: "s2"},
        {label: "own stake share", values: data.crowd.map(p => p.own_share), cls: "s3"},
      ],
      format: v => (100 * v).toFixed(0) + "%",
      zero: true,
      empty: "no closed round yet",
    });
    box.hidden = false;
  }

  async function load(box, model) {
    const response = await fetch(`/api/models/${encodeURIComponent(model)}/neighbours`, {headers: {Accept: "application/json"}});
    if (!response.ok) { box.hidden = true; return; }  // unknown model, or no round closed with it yet
    render(box, await response.json());
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("who-crowds-you");
    const match = location.pathname.match(/^\/models\/([^/]+)$/);
    if (!box || !match) return;
    const model = decodeURIComponent(match[1]);
    load(box, model).catch(() => { box.hidden = true; });
    // a round closing or resolving final may bring new neighbours or a new tax: look again now and then
    setInterval(() => load(box, model).catch(() => {}), REFRESH_MS);
  });
})();
