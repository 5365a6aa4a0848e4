// Batches: #/batches lists them, #/batches/<id> follows one over its event stream (total progress,
// counts by state, one row per item with its job), with Cancel batch, Retry failed and Delete.
import { api, ENDED, followBatch } from "./api.js";
import { $, confirmTwice, el, fmtTime, showError } from "./ui.js";

let current = null;  // {id, stream, batch, items: Map index -> item, rows: Map index -> tr}

export const batchPath = (id) => `v1/batches/${encodeURIComponent(id)}`;

export function closeBatch() {
  if (current && current.stream) current.stream.stop();
  current = null;
}

function countsText(batch) {
  return Object.entries(batch.counts).map(([state, n]) => `${n} ${state}`).join(", ") || "no jobs";
}

function renderSummary(view) {
  const batch = view.batch;
  $("#batch-state").textContent = batch.state;
  $("#batch-state").className = `state state-${batch.state}`;
  $("#view-batch").dataset.state = batch.state;
  $("#batch-progress").value = batch.progress;
  $("#batch-pct").textContent = `${Math.round(batch.progress * 100)}%`;
  $("#batch-counts").textContent = `${countsText(batch)} (${batch.total} items, ${batch.template?.type || "?"}; created ${fmtTime(batch.created_at)})`;
  $("#batch-cancel").disabled = ENDED.has(batch.state);
  $("#batch-retry").disabled = !(batch.counts.failed || batch.counts.cancelled);
  const rejected = batch.rejected || [];
  $("#batch-rejected").hidden = !rejected.length;
  $("#batch-rejected ul").replaceChildren(...rejected.map((r) => el("li", {}, `item ${r.index + 1}: `, el("span", { class: "error-code" }, r.code), `: ${r.detail ?? r.message ?? ""}`)));
}

function renderItem(view, item) {
  let tr = view.rows.get(item.index);
  if (!tr) {
    tr = el("tr", { dataset: { index: String(item.index), jobId: item.job_id } });
    for (let c = 0; c < 5; c++) tr.appendChild(el("td"));
    tr.children[0].textContent = `${item.index + 1}. ${item.source || ""}`;
    tr.children[1].appendChild(el("a", { href: `#/jobs/${item.job_id}`, class: "job-link" }, item.job_id));
    view.rows.set(item.index, tr);
    const after = [...view.rows.keys()].sort((a, b) => a - b).find((i) => i > item.index);
    $("#batch-items tbody").insertBefore(tr, after === undefined ? null : view.rows.get(after));
  }
  tr.dataset.state = item.state;
  tr.children[2].className = `state state-${item.state}`;
  tr.children[2].textContent = item.state;
  tr.children[3].replaceChildren(...[
    el("progress", { max: 1, value: item.progress, "aria-label": `progress of item ${item.index + 1}` }),
    el("span", { class: "pct" }, `${Math.round(item.progress * 100)}%`),
    item.state === "running" && item.stage ? el("span", { class: "stage" }, item.stage) : null,
  ].filter(Boolean));
  tr.children[4].replaceChildren(...(item.error ? [el("span", { class: "error-code" }, item.error.code), ` ${item.error.message}`] : []));
}

export function openBatch(id) {
  if (current && current.id === id) return;
  closeBatch();
  const view = { id, stream: null, batch: null, rows: new Map() };
  current = view;
  $("#batch-detail").hidden = false;
  $("#batch-list").hidden = true;
  $("#view-batch").setAttribute("aria-labelledby", "batch-detail-title");
  $("#batch-id").textContent = id;
  $("#batch-items tbody").replaceChildren();
  $("#batch-state").textContent = "-";
  $("#batch-counts").textContent = "";
  view.stream = followBatch(id, ({ event, data }) => {
    if (current !== view) return;
    if (event === "batch") {
      view.batch = { ...view.batch, ...data };
      renderSummary(view);
      for (const item of data.items || []) renderItem(view, item);
    } else if (event === "item") {
      renderItem(view, data);
    } else if (event === "deleted") {
      location.hash = "#/batches";
    }
  }, { onError: showError });
}

/** After an action, the batch as the action's answer has it; the stream is restarted so it follows
 * the retried items even when the batch had ended. */
async function act(button, action) {
  const view = current;
  if (!view) return;
  button.disabled = true;
  showError(null);
  try {
    const batch = await action(view);
    if (current !== view || !batch) return;
    view.batch = batch;
    renderSummary(view);
    for (const item of batch.items || []) renderItem(view, item);
    if (!ENDED.has(batch.state)) {
      closeBatch();
      openBatch(view.id);
    }
  } catch (err) {
    showError(err);
    if (current === view && view.batch) renderSummary(view);
  }
}

export async function listBatches() {
  closeBatch();
  $("#batch-detail").hidden = true;
  $("#batch-list").hidden = false;
  $("#view-batch").setAttribute("aria-labelledby", "batch-title");
  try {
    const page = await api("v1/batches?limit=50");
    $("#batches-empty").hidden = page.batches.length > 0;
    $("#batch-table tbody").replaceChildren(...page.batches.map((b) =>
      el("tr", { dataset: { batchId: b.id, state: b.state } },
        el("td", {}, el("a", { href: `#/batches/${b.id}` }, b.id)),
        el("td", {}, b.template?.type || ""),
        el("td", { class: `state state-${b.state}` }, b.state),
        el("td", {}, el("progress", { max: 1, value: b.progress, "aria-label": `progress of ${b.id}` }), el("span", { class: "pct" }, `${Math.round(b.progress * 100)}%`)),
        el("td", {}, countsText(b)),
        el("td", {}, fmtTime(b.created_at)))));
  } catch (err) {
    showError(err);
  }
}

export function setupBatches() {
  $("#batch-cancel").addEventListener("click", (e) => act(e.currentTarget, (v) => api(`${batchPath(v.id)}/cancel`, { method: "POST" })));
  $("#batch-retry").addEventListener("click", (e) => act(e.currentTarget, (v) => api(`${batchPath(v.id)}/retry`, { method: "POST" })));
  const del = $("#batch-delete");
  confirmTwice(del, () =>
    act(del, async (v) => {
      await api(batchPath(v.id), { method: "DELETE" });
      location.hash = "#/batches";
      return null;
    }).then(() => { del.disabled = false; }));
}
