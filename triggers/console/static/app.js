/* The Journeys console: one page per path under /ui/, each drawn from the API's JSON. */
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const TEMPORAL_UI = document.querySelector('meta[name="temporal-ui"]').content;
const CURRENCY = document.querySelector('meta[name="currency"]').content;
const app = document.getElementById("app");
const params = new URLSearchParams(location.search);

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const L = (en, zh) => `${en} ${zh}`;
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const money = (n) => (n === null || n === undefined ? "–" : `${CURRENCY} ${Number(n).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2})}`);
const pct = (r) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(1)}%`);
const when = (t) => (t ? new Date(t).toLocaleString("zh-CN", {hour12: false}) : "–");
const enc = encodeURIComponent;

async function api(path) {
  const answer = await fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (answer.status === 401) { location.href = `/ui/login?next=${enc(location.pathname + location.search)}`; throw new Error("signed out"); }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
  return body;
}

async function act(path, body) {
  const answer = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF, Accept: "application/json"},
    body: JSON.stringify(body || {}),
  });
  const found = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(found.detail || `${answer.status} ${answer.statusText}`);
  return found;
}

function problem(err) { return h("p", {class: "error", role: "alert"}, String(err.message || err)); }
function table(headers, rows, caption) {
  return h("div", {class: "table-wrap"}, h("table", {}, caption ? h("caption", {class: "sr"}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", {class: cls || null, scope: "col"}, label)))),
    h("tbody", {}, rows)));
}
const td = (value, cls) => h("td", {class: cls || null}, value);
const kpi = (label, value) => h("div", {class: "kpi"}, h("b", {}, value), h("span", {}, label));
function show(...nodes) { app.replaceChildren(...nodes); }
function reasons(byReason) {
  const parts = Object.entries(byReason || {}).map(([r, n]) => `${r} ${n}`);
  return parts.length ? parts.join(", ") : "–";
}

function periodForm(extra) {
  const from = params.get("from") || "", to = params.get("to") || "";
  return h("form", {class: "filters", method: "get"},
    h("label", {}, L("From", "开始"), h("input", {type: "date", name: "from", value: from, "aria-label": "From 开始日期"})),
    h("label", {}, L("To", "结束"), h("input", {type: "date", name: "to", value: to, "aria-label": "To 结束日期"})),
    extra || null,
    h("button", {type: "submit"}, L("Show", "查看")));
}
function periodQuery(more) {
  const q = new URLSearchParams();
  for (const name of ["from", "to"]) if (params.get(name)) q.set(name, params.get(name));
  for (const [k, v] of Object.entries(more || {})) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/* ---------------------------------------------------------------- journeys */

async function journeysPage() {
  const heading = h("h1", {}, L("Journeys", "旅程"));
  show(heading, periodForm(), h("p", {}, L("Loading…", "加载中…")));
  const [report, running] = await Promise.all([api(`/effect${periodQuery()}`), api("/journeys").catch((e) => e)]);
  const versions = Array.isArray(running) ? Object.fromEntries(running.map((j) => [j.name, j])) : {};
  const rows = Object.values(report.journeys).map((j) => {
    const v = versions[j.journey];
    return h("tr", {},
      td(h("a", {href: `/ui/journeys/${enc(j.journey)}${periodQuery()}`}, j.title || j.journey)),
      td(v ? h("code", {}, v.version.slice(0, 8)) : "–"),
      td(v ? `${num(v.running_this_version)} / ${num(v.running_older_versions)}` : "–", "num"),
      td(num(j.sent), "num"), td(reasons(j.skipped_by_reason)), td(num(j.converted), "num"),
      td(pct(j.conversion_rate), "num"), td(money(j.revenue), "num"), td(j.roi === null ? "–" : `${j.roi}×`, "num"));
  });
  const t = report.totals;
  show(heading, periodForm(),
    h("p", {class: "muted"}, `${report.start.slice(0, 10)} → ${report.end.slice(0, 10)} (${report.timezone})`),
    h("div", {class: "kpis"}, kpi(L("Sent", "发送"), num(t.sent)), kpi(L("Converted orders", "转化订单"), num(t.converted_orders)),
      kpi(L("Revenue", "回款"), money(t.revenue)), kpi(L("Cost", "成本"), money(t.cost)), kpi("ROI", t.roi === null ? "–" : `${t.roi}×`)),
    Array.isArray(running) ? null : problem(new Error(`running instances unknown: ${running.message}`)),
    h("h2", {}, L("Every journey", "全部旅程")),
    table([[L("Journey", "旅程")], [L("Version", "版本")], [L("Running: this / older", "运行中：当前/旧版本"), "num"],
      [L("Sent", "发送"), "num"], [L("Skipped", "跳过")], [L("Converted", "转化"), "num"], [L("Rate", "转化率"), "num"],
      [L("Revenue", "回款"), "num"], ["ROI", "num"]], rows, "Journeys"));
}

const STEP_KINDS = ["send", "wait", "wait_until", "wait_for", "if", "split", "exit", "repeat"];
function kindOf(step) { return STEP_KINDS.find((k) => k in step) || Object.keys(step)[0]; }

function diagram(steps, byStep, onPreview) {
  return h("ol", {}, steps.map((step) => {
    const kind = kindOf(step), spec = step[kind];
    let label = "", extra = [], cls = kind.startsWith("wait") ? "wait" : kind;
    if (kind === "send") {
      const id = spec.id || spec.template, f = byStep[id] || {};
      label = `${id} · ${spec.channel}${spec.fallback ? ` → ${spec.fallback}` : ""}`;
      extra.push(h("span", {class: "counts"}, `${L("sent", "发送")} ${num(f.sent || 0)} · ${L("skipped", "跳过")} ${num(f.skipped || 0)} · ` +
        `${L("failed", "失败")} ${num(f.failed || 0)} · ${L("converted", "转化")} ${num(f.converted || 0)}`));
      extra.push(h("button", {type: "button", class: "secondary", onclick: () => onPreview(id), "aria-label": `Preview ${id} 预览`}, L("Preview", "预览")));
    } else if (kind === "wait") label = `${L("wait", "等待")} ${spec}`;
    else if (kind === "wait_until") label = `${L("wait until", "等到")} ${spec.at}${spec.offset ? ` ${spec.offset}` : ""}`;
    else if (kind === "wait_for") label = `${L("wait for", "等待事件")} ${spec.event} (≤ ${spec.timeout})`;
    else if (kind === "if") label = `${L("if", "如果")} ${spec.condition}`;
    else if (kind === "split") label = `${L("split", "分流")}${spec.holdout ? ` · holdout ${pct(spec.holdout)}` : ""}`;
    else if (kind === "exit") label = L("exit", "退出");
    else label = `${kind} ${typeof spec === "object" ? "" : spec}`;
    const arms = [];
    if (kind === "wait_for") arms.push(["on event 收到事件", spec.on_event], ["on timeout 超时", spec.on_timeout]);
    if (kind === "if") arms.push(["then 是", spec.then], ["else 否", spec.else]);
    if (kind === "split") for (const [i, b] of (spec.branches || []).entries()) arms.push([`${b.name || `branch_${i + 1}`} (${b.weight})`, b.steps]);
    if (kind === "repeat" && spec.steps) arms.push(["repeat 重复", spec.steps]);
    return h("li", {}, h("div", {class: `step ${cls}`}, h("span", {class: "kind"}, kind), label, ...extra),
      arms.filter(([, s]) => s && s.length).map(([name, s]) => [h("p", {class: "arm"}, name), diagram(s, byStep, onPreview)]));
  }));
}

function previewBox(journey) {
  const out = h("div", {class: "preview", "aria-live": "polite"});
  const step = h("input", {id: "pv-step", name: "step", required: true, "aria-label": "Step 步骤"});
  const customer = h("input", {id: "pv-customer", name: "customer", required: true, value: params.get("customer") || "", "aria-label": "Customer id 客户编号"});
  const order = h("input", {id: "pv-order", name: "order", value: params.get("order") || "", "aria-label": "Order id 订单编号"});
  async function run(event) {
    if (event) event.preventDefault();
    out.replaceChildren(h("p", {}, L("Rendering…", "生成中…")));
    try {
      const q = new URLSearchParams({step: step.value, customer: customer.value});
      if (order.value) q.set("order", order.value);
      const p = await api(`/journeys/${enc(journey)}/preview?${q}`);
      out.replaceChildren(h("p", {}, h("b", {}, `${p.step} → ${p.customer_id}`), ` · ${p.policy}`),
        ...p.notes.map((n) => h("p", {class: "muted"}, n)),
        ...p.channels.map((c) => h("div", {class: "card"}, h("h3", {}, c.channel), c.subject ? h("p", {}, h("b", {}, c.subject)) : null,
          c.error ? problem(new Error(c.error)) : h("pre", {}, c.body || ""))));
    } catch (err) { out.replaceChildren(problem(err)); }
  }
  const form = h("form", {class: "filters", onsubmit: run},
    h("label", {for: "pv-step"}, L("Step", "步骤"), step), h("label", {for: "pv-customer"}, L("Customer", "客户"), customer),
    h("label", {for: "pv-order"}, L("Order (optional)", "订单（可选）"), order), h("button", {type: "submit"}, L("Preview", "预览")));
  return {node: h("section", {class: "card", id: "preview"}, h("h2", {}, L("Step preview", "步骤预览")), form, out),
    choose(id) { step.value = id; if (customer.value) run(); else customer.focus(); document.getElementById("preview").scrollIntoView(); }};
}

async function journeyPage(name) {
  show(h("h1", {}, name), h("p", {}, L("Loading…", "加载中…")));
  const [whole, byDay, byStep, definition] = await Promise.all([
    api(`/journeys/${enc(name)}/effect${periodQuery()}`), api(`/journeys/${enc(name)}/effect${periodQuery({by: "day"})}`),
    api(`/journeys/${enc(name)}/effect${periodQuery({by: "step"})}`), api(`/journeys/${enc(name)}/definition`).catch(() => null)]);
  const j = whole.journeys[name] || {}, days = (byDay.journeys[name] || {}).groups || {}, steps = (byStep.journeys[name] || {}).groups || {};
  const canvas = h("canvas", {id: "daily-chart", role: "img", "aria-label": "Sent, converted and revenue per day 每日发送、转化与回款"});
  const preview = previewBox(name);
  const uplift = j.uplift;
  show(
    h("h1", {}, j.title || name), periodForm(),
    h("p", {class: "muted"}, `${name} · ${L("version", "版本")} ${definition ? definition.version.slice(0, 8) : "–"} · ${L("goal", "目标")} ${j.goal || "–"} ${j.within ? `(${j.within})` : ""}`),
    h("div", {class: "kpis"}, kpi(L("Entered", "进入"), num(j.entered)), kpi(L("Sent", "发送"), num(j.sent)), kpi(L("Skipped", "跳过"), num(j.skipped)),
      kpi(L("Converted", "转化"), num(j.converted)), kpi(L("Conversion rate", "转化率"), pct(j.conversion_rate)),
      kpi(L("Revenue", "回款"), money(j.revenue)), kpi(L("Cost", "成本"), money(j.cost)), kpi("ROI", j.roi === null || j.roi === undefined ? "–" : `${j.roi}×`)),
    h("p", {class: "muted"}, `${L("Skipped by reason", "跳过原因")}: ${reasons(j.skipped_by_reason)} · ${L("deferred", "延后")}: ${reasons(j.deferred_by_reason)} · ${L("failed", "失败")}: ${reasons(j.failed_by_reason)}`),
    h("div", {class: "grid"},
      h("section", {class: "card"}, h("h2", {}, L("Per day", "每日")), h("div", {class: "chart-box"}, canvas)),
      h("section", {class: "card funnel"}, h("h2", {}, L("Funnel per step", "步骤漏斗")), funnel(steps))),
    h("section", {class: "card", id: "uplift"}, h("h2", {}, L("Holdout uplift", "对照组提升")), uplift ? h("p", {},
      `${L("treated", "实验组")} ${pct(uplift.treated.rate)} (${uplift.treated.converted}/${uplift.treated.instances}) · ` +
      `${L("holdout", "对照组")} ${pct(uplift.holdout.rate)} (${uplift.holdout.converted}/${uplift.holdout.instances}) · ` +
      `${L("uplift", "提升")} ${uplift.absolute === null ? "–" : `${(uplift.absolute * 100).toFixed(1)} pt`}` +
      (uplift.interval ? ` [95%: ${(uplift.interval[0] * 100).toFixed(1)}, ${(uplift.interval[1] * 100).toFixed(1)}]` : "")) :
      h("p", {class: "muted"}, L("This journey has no holdout.", "此旅程没有对照组。"))),
    h("section", {class: "card diagram"}, h("h2", {}, L("Steps", "步骤图")),
      definition ? diagram(definition.definition.steps, steps, (id) => preview.choose(id)) : problem(new Error("no definition loaded"))),
    preview.node);
  const labels = Object.keys(days).sort();
  new Chart(canvas, {
    data: {labels, datasets: [
      {type: "bar", label: "Sent 发送", data: labels.map((d) => days[d].sent), yAxisID: "y", backgroundColor: "#9db4e8"},
      {type: "bar", label: "Converted 转化", data: labels.map((d) => days[d].converted), yAxisID: "y", backgroundColor: "#2457c5"},
      {type: "line", label: `Revenue 回款 (${CURRENCY})`, data: labels.map((d) => days[d].revenue), yAxisID: "money", borderColor: "#197a43", backgroundColor: "#197a43"}]},
    options: {responsive: true, maintainAspectRatio: false, animation: false,
      scales: {y: {beginAtZero: true, position: "left"}, money: {beginAtZero: true, position: "right", grid: {drawOnChartArea: false}}}},
  });
  canvas.dataset.days = String(labels.length);
}

function funnel(steps) {
  const names = Object.keys(steps);
  if (!names.length) return h("p", {class: "muted"}, L("No messages in this period.", "此期间没有消息。"));
  const top = Math.max(1, ...names.map((s) => steps[s].sent + steps[s].skipped + steps[s].failed));
  const bar = (n, label) => h("div", {class: "bar", style: `width:${Math.max(2, (100 * n) / top)}%`, title: label}, `${label} ${num(n)}`);
  return table([[L("Step", "步骤")], [L("Sent → delivered → clicked → converted", "发送→送达→点击→转化")]],
    names.map((s) => h("tr", {}, td(s), td(h("div", {}, bar(steps[s].sent, "sent"), bar(steps[s].delivered, "delivered"),
      bar(steps[s].clicked, "clicked"), bar(steps[s].converted, "converted"))))), "Funnel");
}

/* ---------------------------------------------------------------- customers and orders */

async function customersPage() {
  const q = params.get("q") || "";
  show(h("h1", {}, L("Customers", "客户")), h("p", {}, q ? L("Searching…", "查找中…") : L("Search by id, phone or email above.", "请在上方按编号、手机或邮箱查找。")));
  if (!q) return;
  const found = await api(`/customers?q=${enc(q)}`);
  if (found.length === 1) { location.replace(`/ui/customers/${enc(found[0].customer_id)}`); return; }
  show(h("h1", {}, L("Customers", "客户")), found.length ? table([[L("Customer", "客户")], [L("Name", "姓名")], [L("Phone", "手机")], ["Email"]],
    found.map((c) => h("tr", {}, td(h("a", {href: `/ui/customers/${enc(c.customer_id)}`}, c.customer_id)), td(c.name || "–"), td(c.phone || "–"), td(c.email || "–"))), "Customers")
    : h("p", {}, `${L("No customer matches", "没有匹配的客户")} “${q}”.`));
}

function timeline(history) {
  const instances = table([[L("Journey", "旅程")], [L("Status", "状态")], [L("Step", "步骤")], [L("Next wake-up", "下次唤醒")], [L("Started", "开始")], ["Temporal"]],
    history.instances.map((i) => h("tr", {}, td(i.journey), td(h("span", {class: `pill ${i.status}`}, i.status)), td(i.step || "–"),
      td(when(i.next_wake_up)), td(when(i.started_at)), td(h("a", {href: i.temporal_ui, target: "_blank", rel: "noopener"}, L("history", "历史"))))), "Instances");
  const messages = table([[L("When", "时间")], [L("Journey · step", "旅程·步骤")], [L("Channel", "渠道")], [L("Status", "状态")], [L("Reason", "原因")], [L("Message", "内容")]],
    history.messages.map((m) => h("tr", {}, td(when(m.at)), td(`${m.journey} · ${m.step}`), td(m.channel || "–"),
      td(h("span", {class: `pill ${m.status}`}, m.status)), td(m.reason || m.error || "–"), td(m.body ? m.body.slice(0, 120) : "–"))), "Messages");
  const events = table([[L("When", "时间")], [L("Event", "事件")], [L("Order", "订单")], [L("Applied", "处理")]],
    (history.events || []).map((e) => h("tr", {}, td(when(e.occurred_at)), td(e.type),
      td(e.order_id ? h("a", {href: `/ui/orders/${enc(e.order_id)}`}, e.order_id) : "–"),
      td(e.dispatched_at ? when(e.dispatched_at) : e.failed_at ? h("span", {class: "pill failed"}, `failed: ${e.last_error || ""}`) : L("pending", "待处理")))), "Events");
  return [h("h2", {}, L("Journey instances", "旅程实例")), instances, h("h2", {}, L("Messages", "消息")), messages,
    h("h2", {}, L("Events", "事件")), events];
}

async function customerPage(id) {
  show(h("h1", {}, id), h("p", {}, L("Loading…", "加载中…")));
  const [profile, history] = await Promise.all([api(`/customers/${enc(id)}`).catch((e) => e), api(`/customers/${enc(id)}/history`).catch((e) => e)]);
  const parts = [h("h1", {}, `${L("Customer", "客户")} ${id}`)];
  if (profile instanceof Error) parts.push(problem(profile));
  else parts.push(h("section", {class: "card", id: "profile"}, h("h2", {}, L("Profile", "档案")),
    h("div", {class: "kpis"}, kpi("RFM", `${profile.rfm.tier || "–"}`), kpi(L("Lifecycle", "生命周期"), profile.lifecycle || "–"), kpi(L("Segments", "分群"), profile.segments.join(", ") || "–"),
      kpi(L("Tags", "标签"), profile.tags.join(", ") || "–"), kpi(L("Unsubscribed", "退订"), profile.unsubscribed.join(", ") || "–"),
      kpi(L("Blacklisted", "黑名单"), profile.blacklisted ? "yes 是" : "no 否")),
    table([[L("Field", "字段")], [L("Value", "值")]], [...Object.entries(profile.record), ...Object.entries(profile.traits)].map(([k, v]) =>
      h("tr", {}, td(k), td(v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v)))), "Profile"),
    profile.suppressions.length ? h("p", {}, `${L("Suppressed", "已屏蔽")}: ${profile.suppressions.map((s) => `${s.channel} ${s.address} (${s.reason})`).join("; ")}`) : null));
  if (history instanceof Error) parts.push(problem(history)); else parts.push(h("section", {class: "card", id: "timeline"}, ...timeline(history)));
  show(...parts);
}

async function orderPage(id) {
  show(h("h1", {}, id), h("p", {}, L("Loading…", "加载中…")));
  const history = await api(`/orders/${enc(id)}/history`);
  const customers = [...new Set([...history.messages, ...(history.events || [])].map((m) => m.customer_id))];
  show(h("h1", {}, `${L("Order", "订单")} ${id}`),
    h("p", {}, L("Customer", "客户"), " ", ...customers.map((c) => h("a", {href: `/ui/customers/${enc(c)}`}, c))),
    h("section", {class: "card", id: "timeline"}, ...timeline(history)));
}

/* ---------------------------------------------------------------- segments, broadcasts, events */

async function segmentsPage() {
  const segments = await api("/segments");
  show(h("h1", {}, L("Segments", "分群")), table([[L("Segment", "分群")], [L("Members", "人数"), "num"]],
    segments.map((s) => h("tr", {}, td(s.title ? `${s.title} (${s.name})` : s.name), td(num(s.members ?? s.count), "num"))), "Segments"));
}

async function broadcastsPage() {
  const list = await api("/broadcasts");
  const status = h("p", {role: "status", "aria-live": "polite"});
  const run = (name, action) => async () => {
    status.textContent = `${action} ${name}…`;
    try { const s = await act(`/broadcasts/${enc(name)}/${action}`); status.textContent = `${name}: ${s.state}`; setTimeout(broadcastsPage, 800); }
    catch (err) { status.replaceChildren(problem(err)); }
  };
  show(h("h1", {}, L("Broadcasts", "群发")), status,
    table([[L("Broadcast", "群发")], [L("Segment", "分群")], [L("State", "状态")], [L("Path", "方式")], [L("Members", "人数"), "num"],
      [L("Reached", "已触达"), "num"], [L("Held out", "对照组"), "num"], [L("Deferred", "已推迟"), "num"], [L("Waiting", "等待中"), "num"],
      [L("Next send", "下次发送")], [L("Outcomes", "结果")], [L("Actions", "操作")]],
    list.map((b) => h("tr", {"data-broadcast": b.name}, td(b.title || b.name), td(b.segment), td(h("span", {class: `pill state ${b.state.replace(/ /g, "-")}`}, b.state)),
      td(b.path === "batched" ? L("batched", "批量") : L("instances", "逐个实例"), "path"),
      td(num(b.members), "num"), td(num(b.started), "num"), td(num(b.held_out), "num"), td(num(b.deferred), "num"), td(num(b.waiting), "num"),
      td(b.next_at ? when(b.next_at) : "", "next"), td(reasons(b.outcomes)),
      td(h("span", {class: "actions"},
        h("button", {type: "button", onclick: run(b.name, "start"), "aria-label": `Start ${b.name} 启动`}, L("Start", "启动")), " ",
        h("button", {type: "button", class: "danger", onclick: run(b.name, "cancel"), "aria-label": `Cancel ${b.name} 取消`}, L("Cancel", "取消")))))), "Broadcasts"));
}

async function eventsPage() {
  const [failed, pending] = await Promise.all([api("/events/failed"), api("/events/pending")]);
  const status = h("p", {role: "status", "aria-live": "polite"});
  const replay = (ids) => async () => {
    try { const r = await act("/events/replay", ids ? {event_ids: ids} : {all_failed: true}); status.textContent = `${L("Replayed", "已重放")}: ${r.replayed.length}`; setTimeout(eventsPage, 800); }
    catch (err) { status.replaceChildren(problem(err)); }
  };
  show(h("h1", {}, L("Event log", "事件日志")), status, h("h2", {}, L("Failed events", "失败事件")),
    failed.length ? h("p", {}, h("button", {type: "button", onclick: replay(null)}, L("Replay all", "全部重放"))) : h("p", {class: "muted"}, L("No failed events.", "没有失败的事件。")),
    table([[L("Event", "事件")], [L("Type", "类型")], [L("Customer", "客户")], [L("Order", "订单")], [L("Failed", "失败时间")], [L("Attempts", "次数"), "num"], [L("Why", "原因")], [""]],
      failed.map((e) => h("tr", {}, td(e.event_id), td(e.type), td(h("a", {href: `/ui/customers/${enc(e.customer_id)}`}, e.customer_id)),
        td(e.order_id ? h("a", {href: `/ui/orders/${enc(e.order_id)}`}, e.order_id) : "–"), td(when(e.failed_at)), td(num(e.attempts), "num"), td(e.last_error || "–"),
        td(h("button", {type: "button", class: "secondary", onclick: replay([e.event_id]), "aria-label": `Replay ${e.event_id} 重放`}, L("Replay", "重放"))))), "Failed events"),
    h("h2", {}, L("Waiting for dispatch", "待分发")),
    pending.length ? table([[L("Event", "事件")], [L("Type", "类型")], [L("Customer", "客户")], [L("Received", "接收时间")], [L("Attempts", "次数"), "num"], [L("Next try", "下次重试")], [L("Last error", "最近错误")]],
      pending.map((e) => h("tr", {}, td(e.event_id), td(e.type), td(h("a", {href: `/ui/customers/${enc(e.customer_id)}`}, e.customer_id)),
        td(when(e.received_at)), td(num(e.attempts), "num"), td(when(e.retry_at)), td(e.last_error || "–"))), "Pending events")
      : h("p", {class: "muted"}, L("Nothing is waiting.", "没有待分发的事件。")));
}

/* ---------------------------------------------------------------- routing */

const routes = [
  [/^\/ui\/?$/, journeysPage], [/^\/ui\/journeys\/?$/, journeysPage], [/^\/ui\/journeys\/([^/]+)$/, journeyPage],
  [/^\/ui\/customers\/?$/, customersPage], [/^\/ui\/customers\/([^/]+)$/, customerPage], [/^\/ui\/orders\/([^/]+)$/, orderPage],
  [/^\/ui\/segments\/?$/, segmentsPage], [/^\/ui\/broadcasts\/?$/, broadcastsPage], [/^\/ui\/events\/?$/, eventsPage],
];
for (const link of document.querySelectorAll("header nav a")) {
  const path = new URL(link.href).pathname;
  if (path === location.pathname || (path !== "/ui/" && location.pathname.startsWith(path))) link.setAttribute("aria-current", "page");
}
/* Other scripts (authoring.js) add their pages to window.ConsoleRoutes and use window.Console's helpers. */
window.Console = {h, L, num, money, pct, when, enc, api, act, problem, table, td, kpi, show, reasons, diagram, params};
window.ConsoleRoutes = window.ConsoleRoutes || [];
document.addEventListener("DOMContentLoaded", async () => {
  for (const [pattern, page] of [...routes, ...window.ConsoleRoutes]) {
    const match = location.pathname.match(pattern);
    if (match) {
      try { await page(...match.slice(1).map(decodeURIComponent)); } catch (err) { app.append(problem(err)); }
      document.body.dataset.ready = "true";
      return;
    }
  }
  show(h("h1", {}, L("Not found", "页面不存在")), h("p", {}, h("a", {href: "/ui/"}, L("Journeys", "旅程"))));
  document.body.dataset.ready = "true";
});
