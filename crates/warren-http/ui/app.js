// Warren's management UI: plain JavaScript over the management API, no
// libraries, nothing fetched but the API. Credentials stay in
// sessionStorage for the tab; every call sends them as HTTP Basic.
"use strict";

const state = { auth: null, user: null, timer: null, history: [] };
const $ = (sel, root = document) => root.querySelector(sel);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
const enc = encodeURIComponent;
const num = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");
const rate = (d) => (d && typeof d.rate === "number" ? `${d.rate.toFixed(1)}/s` : "–");
const byteRate = (d) => {
  if (!d || typeof d.rate !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = d.rate, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}/s`;
};

async function api(method, path, body, auth = state.auth) {
  // X-Requested-With: the API leaves out its Basic challenge, so the
  // browser does not put up a login dialog of its own over this page's.
  const headers = { Authorization: `Basic ${auth}`, "X-Requested-With": "XMLHttpRequest" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    const reason = (json && (json.reason || json.error)) || `${response.status} ${response.statusText}`;
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return { json, response };
}
const get = async (path) => (await api("GET", path)).json;

function flash(message, bad = false) {
  const box = $("#flash");
  box.textContent = message;
  box.className = bad ? "flash bad" : "flash";
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

async function act(what, work) {
  try {
    await work();
    flash(what);
    await render();
  } catch (error) {
    flash(`${what} failed: ${error.message}`, true);
  }
}

// ----- login ---------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const user = $("#login-user").value;
  const auth = btoa(unescape(encodeURIComponent(`${user}:${$("#login-pass").value}`)));
  $("#login-error").textContent = "";
  try {
    const { json } = await api("GET", "/whoami", undefined, auth);
    sessionStorage.setItem("warren-auth", auth);
    start(auth, json);
  } catch (error) {
    $("#login-error").textContent = error.status === 401 ? `Login refused: ${error.message}` : error.message;
  }
}

function start(auth, whoami) {
  state.auth = auth;
  state.user = whoami;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = `${whoami.name} (${(whoami.tags || []).join(", ") || "no tags"})`;
  if (!location.hash) location.hash = "#/overview";
  render();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, 5000);
}

function logout() {
  sessionStorage.removeItem("warren-auth");
  state.auth = null;
  state.history = [];
  clearInterval(state.timer);
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-pass").value = "";
  $("#view").innerHTML = "";
}

// ----- views -----------------------------------------------------------------

const views = {
  overview, nodes, queues, queue, exchanges, exchange, connections, channels, consumers, admin,
};

function route() {
  const parts = location.hash.replace(/^#\//, "").split("/").map(decodeURIComponent);
  return { name: parts[0] || "overview", args: parts.slice(1) };
}

async function render() {
  if (!state.auth) return;
  const { name, args } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#/${name}` || (name === "queue" && link.getAttribute("href") === "#/queues") || (name === "exchange" && link.getAttribute("href") === "#/exchanges"));
  }
  const view = views[name] || overview;
  try {
    await view(...args);
  } catch (error) {
    if (error.status === 401) { logout(); $("#login-error").textContent = error.message; return; }
    $("#view").innerHTML = `<div class="card error">${esc(error.message)}</div>`;
  }
}

// Lists and the overview refresh themselves; pages with forms do not, so
// nothing typed is lost.
function refresh() {
  const { name } = route();
  if (["overview", "nodes", "queues", "exchanges", "connections", "channels", "consumers"].includes(name)) {
    if (!document.activeElement || !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) render();
  }
}

function table(columns, rows, empty = "Nothing here.") {
  if (!rows.length) return `<p class="muted">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.title)}</th>`).join("");
  const body = rows.map((row) => `<tr>${columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.html ? c.html(row) : esc(c.value(row))}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function stat(label, value, testid = "") {
  return `<div class="stat"><div class="n" ${testid ? `data-testid="${testid}"` : ""}>${esc(value)}</div><div class="l">${esc(label)}</div></div>`;
}

async function overview() {
  const o = await get("/overview");
  const m = o.message_stats || {};
  const q = o.queue_totals || {};
  state.history.push({
    publish: m.publish_details?.rate || 0,
    deliver: m.deliver_get_details?.rate || 0,
    ack: m.ack_details?.rate || 0,
    queued: q.messages || 0,
  });
  if (state.history.length > 120) state.history.shift();
  $("#node-name").textContent = o.node;
  $("#view").innerHTML = `
    <h2>Overview</h2>
    <div class="grid">
      ${stat("Ready", num(q.messages_ready), "total-ready")}
      ${stat("Unacked", num(q.messages_unacknowledged))}
      ${stat("Total", num(q.messages))}
      ${stat("Publish", rate(m.publish_details))}
      ${stat("Deliver / get", rate(m.deliver_get_details))}
      ${stat("Ack", rate(m.ack_details))}
    </div>
    <div class="split">
      <div class="card"><h3>Message rates</h3><canvas id="rates" class="chart"></canvas>
        <div class="legend"><span><i style="background:var(--c1)"></i>publish</span><span><i style="background:var(--c2)"></i>deliver / get</span><span><i style="background:var(--c3)"></i>ack</span></div></div>
      <div class="card"><h3>Queued messages</h3><canvas id="queued" class="chart"></canvas>
        <div class="legend"><span><i style="background:var(--c4)"></i>ready + unacked</span></div></div>
    </div>
    <div class="grid">
      ${Object.entries(o.object_totals || {}).map(([k, v]) => stat(k, num(v))).join("")}
    </div>
    <div class="card"><h3>Listeners of ${esc(o.node)}</h3>${table(
      [{ title: "Protocol", value: (l) => l.protocol }, { title: "Address", value: (l) => l.ip_address }, { title: "Port", value: (l) => l.port, num: true }],
      o.listeners || [])}</div>`;
  chart($("#rates"), [["publish", "--c1"], ["deliver", "--c2"], ["ack", "--c3"]]);
  chart($("#queued"), [["queued", "--c4"]]);
}

function chart(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const points = state.history;
  const max = Math.max(1, ...points.flatMap((p) => series.map(([key]) => p[key])));
  const pad = { l: 48, r: 8, t: 8, b: 18 };
  g.strokeStyle = "#e2e6ee"; g.fillStyle = "#6b7385"; g.font = "11px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (height - pad.t - pad.b) * (i / 4);
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(width - pad.r, y); g.stroke();
    g.fillText((max * (1 - i / 4)).toFixed(max < 10 ? 1 : 0), 4, y + 4);
  }
  const x = (i) => pad.l + (width - pad.l - pad.r) * (points.length <= 1 ? 1 : i / (points.length - 1));
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / max);
  for (const [key, color] of series) {
    g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue(color).trim();
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(i), y(p[key])) : g.moveTo(x(i), y(p[key]))));
    g.stroke();
  }
}

async function nodes() {
  const [cluster, local] = await Promise.all([get("/warren/members"), get("/nodes")]);
  const node = local[0] || {};
  const admin = (state.user.tags || []).includes("administrator");
  $("#view").innerHTML = `
    <h2>Nodes</h2>
    <div class="card"><h3>Raft membership, as ${esc(cluster.answered_by)} sees it (term ${esc(cluster.term)})</h3>${table([
      { title: "Node", value: (m) => m.name },
      { title: "Address", value: (m) => m.addr },
      { title: "Role", html: (m) => `${esc(m.role)} ${m.leader ? '<span class="pill">leader</span>' : ""}` },
      { title: "State", html: (m) => (m.reachable ? '<span class="pill ok">reachable</span>' : '<span class="pill bad">unreachable</span>') },
      { title: "Applied index", value: (m) => m.applied ?? "–", num: true },
      { title: "Lag", value: (m) => m.lag ?? "–", num: true },
      { title: "", html: (m) => (admin ? `<button class="secondary" data-remove-member="${esc(m.node_id)}">Remove</button>` : "") },
    ], cluster.members)}
    <p class="muted">Last log index ${esc(cluster.last_log_index ?? "–")}, snapshot at ${esc(cluster.snapshot_index ?? "–")}. A removed node should then be stopped; a node started with <code>--join</code> adds itself.</p>
    ${admin ? `<form id="add-member" class="row"><label>Node id <input name="node_id" type="number" min="1" required></label>
      <label>Cluster address <input name="addr" placeholder="10.0.0.4:25672" required></label><button type="submit">Add member</button></form>` : ""}</div>
    <div class="card"><h3>${esc(node.name)}</h3><div class="grid">
      ${stat("Uptime", `${Math.round((node.uptime || 0) / 1000)} s`)}
      ${stat("Memory alarm", node.mem_alarm ? "ON" : "off")}
      ${stat("Disk alarm", node.disk_free_alarm ? "ON" : "off")}
      ${stat("Memory watermark", num(node.mem_limit))}
      ${stat("Disk free limit", num(node.disk_free_limit))}
      ${stat("File descriptors", num(node.fd_total))}
    </div></div>`;
  if (!admin) return;
  $("#add-member").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act(`Node ${f.get("node_id")} added`, () => api("POST", "/warren/members", { node_id: Number(f.get("node_id")), addr: f.get("addr") }));
  });
  for (const b of document.querySelectorAll("[data-remove-member]")) {
    b.addEventListener("click", () => confirm(`Remove node ${b.dataset.removeMember} from the cluster?`) && act(`Node ${b.dataset.removeMember} removed`, () => api("DELETE", `/warren/members/${b.dataset.removeMember}`)));
  }
}

async function queues() {
  const list = await get("/queues");
  const vhosts = await get("/vhosts");
  $("#view").innerHTML = `
    <h2>Queues</h2>
    <div class="card" data-testid="queues">${table([
      { title: "Virtual host", value: (q) => q.vhost },
      { title: "Name", html: (q) => `<a href="#/queue/${enc(q.vhost)}/${enc(q.name)}" data-testid="queue-link-${esc(q.name)}">${esc(q.name)}</a>` },
      { title: "Type", value: (q) => q.type },
      { title: "Features", value: (q) => [q.durable ? "D" : "", q.auto_delete ? "AD" : "", q.exclusive ? "Excl" : ""].filter(Boolean).join(" ") },
      { title: "Ready", html: (q) => `<span data-testid="ready-${esc(q.name)}">${num(q.messages_ready)}</span>`, num: true },
      { title: "Unacked", value: (q) => num(q.messages_unacknowledged), num: true },
      { title: "Total", value: (q) => num(q.messages), num: true },
      { title: "Consumers", value: (q) => q.consumers, num: true },
      { title: "Incoming", value: (q) => rate(q.message_stats?.publish_details), num: true },
      { title: "Deliver / get", value: (q) => rate(q.message_stats?.deliver_get_details), num: true },
      { title: "Ack", value: (q) => rate(q.message_stats?.ack_details), num: true },
    ], list, "No queues yet.")}</div>
    <div class="card"><h3>Add a queue</h3><form id="add-queue" class="row">
      <label>Virtual host <select name="vhost">${vhosts.map((v) => `<option>${esc(v.name)}</option>`).join("")}</select></label>
      <label>Name <input name="name" required data-testid="new-queue-name"></label>
      <label>Durability <select name="durable"><option value="true">durable</option><option value="false">transient</option></select></label>
      <label>Arguments (JSON) <input name="arguments" placeholder='{"x-max-length": 1000}'></label>
      <button type="submit" data-testid="add-queue">Add queue</button>
    </form></div>`;
  $("#add-queue").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act(`Queue ${f.get("name")} declared`, async () => {
      const args = f.get("arguments") ? JSON.parse(f.get("arguments")) : {};
      await api("PUT", `/queues/${enc(f.get("vhost"))}/${enc(f.get("name"))}`, { durable: f.get("durable") === "true", auto_delete: false, arguments: args });
    });
  });
}

async function queue(vhost, name) {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  const [q, bindings] = await Promise.all([get(path), get(`${path}/bindings`)]);
  const m = q.message_stats || {};
  $("#view").innerHTML = `
    <h2>Queue <span data-testid="queue-title">${esc(name)}</span> <span class="muted">in ${esc(vhost)}</span></h2>
    <div class="grid">
      ${stat("Ready", num(q.messages_ready), "queue-ready")}
      ${stat("Unacked", num(q.messages_unacknowledged))}
      ${stat("Consumers", num(q.consumers))}
      ${stat("Published", num(m.publish))}
      ${stat("Delivered / got", num(m.deliver_get))}
      ${stat("Acked", num(m.ack))}
    </div>
    ${q.policy ? `<p class="muted">Policy <strong>${esc(q.policy)}</strong>: <code>${esc(JSON.stringify(q.effective_policy_definition))}</code></p>` : ""}
    <div class="split">
      <div class="card"><h3>Publish a message</h3><form id="publish" data-testid="publish-form">
        <div class="row"><label>Routing key (default exchange) <input name="routing_key" value="${esc(name)}"></label>
        <label>Delivery mode <select name="delivery_mode"><option value="2">persistent</option><option value="1">transient</option></select></label></div>
        <label>Headers (JSON) <input name="headers" placeholder='{"k": "v"}'></label>
        <label>Payload <textarea name="payload" data-testid="publish-payload"></textarea></label>
        <p><button type="submit" data-testid="publish">Publish message</button></p>
      </form></div>
      <div class="card"><h3>Get messages</h3><form id="get" class="row">
        <label>Ack mode <select name="ackmode"><option value="ack_requeue_true">Nack, requeue</option><option value="ack_requeue_false">Ack, remove</option><option value="reject_requeue_false">Reject, remove</option></select></label>
        <label>Messages <input name="count" type="number" min="1" value="1"></label>
        <button type="submit" data-testid="get">Get</button>
      </form><div id="got"></div></div>
    </div>
    <div class="card"><h3>Bindings</h3>${table([
      { title: "From", value: (b) => b.source || "(default exchange)" },
      { title: "Routing key", value: (b) => b.routing_key },
      { title: "Arguments", value: (b) => JSON.stringify(b.arguments) },
    ], bindings)}</div>
    <div class="card"><h3>Danger zone</h3><div class="row">
      <button class="secondary" id="purge" data-testid="purge">Purge messages</button>
      <button class="danger" id="delete-queue" data-testid="delete-queue">Delete queue</button>
    </div></div>
    <div class="card"><h3>Details</h3><pre class="payload">${esc(JSON.stringify({ arguments: q.arguments, durable: q.durable, auto_delete: q.auto_delete, exclusive: q.exclusive, node: q.node }, null, 2))}</pre></div>`;
  $("#publish").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act("Message published", async () => {
      const properties = { delivery_mode: Number(f.get("delivery_mode")) };
      if (f.get("headers")) properties.headers = JSON.parse(f.get("headers"));
      const { json } = await api("POST", `/exchanges/${enc(vhost)}/amq.default/publish`, { routing_key: f.get("routing_key"), payload: f.get("payload"), payload_encoding: "string", properties });
      if (!json.routed) throw new Error("the message was not routed to any queue");
    });
  });
  $("#get").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    try {
      const { json } = await api("POST", `${path}/get`, { count: Number(f.get("count")), ackmode: f.get("ackmode"), encoding: "auto", truncate: 50000 });
      $("#got").innerHTML = json.length ? json.map((msg, i) => `<p class="muted">Message ${i + 1}: ${msg.payload_bytes} bytes, ${msg.redelivered ? "redelivered" : "first delivery"}, ${msg.message_count} left, routing key ${esc(msg.routing_key)}</p><pre class="payload" data-testid="got-payload">${esc(msg.payload)}</pre>`).join("") : '<p class="muted">Queue is empty.</p>';
    } catch (error) { flash(`Get failed: ${error.message}`, true); }
  });
  $("#purge").addEventListener("click", () => act(`Queue ${name} purged`, () => api("DELETE", `${path}/contents`)));
  $("#delete-queue").addEventListener("click", () => {
    if (!confirm(`Delete queue ${name}?`)) return;
    act(`Queue ${name} deleted`, async () => { await api("DELETE", path); location.hash = "#/queues"; });
  });
}

async function exchanges() {
  const [list, vhosts] = await Promise.all([get("/exchanges"), get("/vhosts")]);
  $("#view").innerHTML = `
    <h2>Exchanges</h2>
    <div class="card">${table([
      { title: "Virtual host", value: (x) => x.vhost },
      { title: "Name", html: (x) => `<a href="#/exchange/${enc(x.vhost)}/${enc(x.name || "amq.default")}">${esc(x.name || "(AMQP default)")}</a>` },
      { title: "Type", value: (x) => x.type },
      { title: "Features", value: (x) => [x.durable ? "D" : "", x.auto_delete ? "AD" : "", x.internal ? "I" : ""].filter(Boolean).join(" ") },
    ], list)}</div>
    <div class="card"><h3>Add an exchange</h3><form id="add-exchange" class="row">
      <label>Virtual host <select name="vhost">${vhosts.map((v) => `<option>${esc(v.name)}</option>`).join("")}</select></label>
      <label>Name <input name="name" required></label>
      <label>Type <select name="type"><option>direct</option><option>fanout</option><option>topic</option><option>headers</option></select></label>
      <label>Durability <select name="durable"><option value="true">durable</option><option value="false">transient</option></select></label>
      <button type="submit">Add exchange</button>
    </form></div>`;
  $("#add-exchange").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act(`Exchange ${f.get("name")} declared`, () => api("PUT", `/exchanges/${enc(f.get("vhost"))}/${enc(f.get("name"))}`, { type: f.get("type"), durable: f.get("durable") === "true" }));
  });
}

async function exchange(vhost, name) {
  const shown = name === "amq.default" ? "" : name;
  const bindings = shown ? await get(`/exchanges/${enc(vhost)}/${enc(name)}/bindings/source`) : [];
  $("#view").innerHTML = `
    <h2>Exchange ${esc(shown || "(AMQP default)")} <span class="muted">in ${esc(vhost)}</span></h2>
    <div class="card"><h3>Bindings from this exchange</h3>${table([
      { title: "To", value: (b) => `${b.destination_type} ${b.destination}` },
      { title: "Routing key", value: (b) => b.routing_key },
      { title: "Arguments", value: (b) => JSON.stringify(b.arguments) },
      { title: "", html: (b) => `<button class="secondary" data-unbind="${esc(b.destination_type === "queue" ? "q" : "e")}/${esc(enc(b.destination))}/${esc(enc(b.properties_key))}">Unbind</button>` },
    ], bindings, shown ? "No bindings." : "The default exchange routes to the queue its routing key names.")}</div>
    ${shown ? `<div class="card"><h3>Add a binding</h3><form id="bind" class="row">
      <label>To <select name="kind"><option value="q">queue</option><option value="e">exchange</option></select></label>
      <label>Name <input name="destination" required></label>
      <label>Routing key <input name="routing_key"></label>
      <button type="submit">Bind</button></form></div>
    <div class="card"><button class="danger" id="delete-exchange">Delete exchange</button></div>` : ""}`;
  if (!shown) return;
  const base = `/bindings/${enc(vhost)}/e/${enc(name)}`;
  $("#bind").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act("Bound", () => api("POST", `${base}/${f.get("kind")}/${enc(f.get("destination"))}`, { routing_key: f.get("routing_key"), arguments: {} }));
  });
  for (const button of document.querySelectorAll("[data-unbind]")) {
    button.addEventListener("click", () => act("Unbound", () => api("DELETE", `${base}/${button.dataset.unbind}`)));
  }
  $("#delete-exchange").addEventListener("click", () => {
    if (!confirm(`Delete exchange ${name}?`)) return;
    act(`Exchange ${name} deleted`, async () => { await api("DELETE", `/exchanges/${enc(vhost)}/${enc(name)}`); location.hash = "#/exchanges"; });
  });
}

async function connections() {
  const list = await get("/connections");
  $("#view").innerHTML = `<h2>Connections</h2><div class="card">${table([
    { title: "Name", value: (c) => c.name },
    { title: "Client", value: (c) => [c.client_properties?.connection_name, c.client_properties?.product, c.client_properties?.version].filter(Boolean).join(" · ") },
    { title: "Node", value: (c) => c.node },
    { title: "User", value: (c) => c.user },
    { title: "Virtual host", value: (c) => c.vhost },
    { title: "Channels", value: (c) => c.channels, num: true },
    { title: "From client", value: (c) => byteRate(c.recv_oct_details), num: true },
    { title: "To client", value: (c) => byteRate(c.send_oct_details), num: true },
    { title: "Publish", value: (c) => rate(c.message_stats?.publish_details), num: true },
    { title: "Deliver / get", value: (c) => rate(c.message_stats?.deliver_get_details), num: true },
    { title: "Heartbeat", value: (c) => `${c.timeout} s`, num: true },
    { title: "", html: (c) => `<button class="secondary" data-close="${esc(c.name)}">Close</button>` },
  ], list, "No client is connected.")}</div>`;
  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => act("Connection closed", () => api("DELETE", `/connections/${enc(button.dataset.close)}`)));
  }
}

async function channels() {
  const list = await get("/channels");
  $("#view").innerHTML = `<h2>Channels</h2><div class="card">${table([
    { title: "Channel", value: (c) => c.name },
    { title: "Node", value: (c) => c.node },
    { title: "User", value: (c) => c.user },
    { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
    { title: "Consumers", value: (c) => c.consumer_count, num: true },
    { title: "Unacked", value: (c) => c.messages_unacknowledged, num: true },
  ], list, "No channel has consumers or unacked messages.")}</div>`;
}

async function consumers() {
  const list = await get("/consumers");
  $("#view").innerHTML = `<h2>Consumers</h2><div class="card">${table([
    { title: "Queue", value: (c) => `${c.queue.vhost} ${c.queue.name}` },
    { title: "Tag", value: (c) => c.consumer_tag },
    { title: "Channel", value: (c) => c.channel_details?.name },
    { title: "Ack", value: (c) => (c.ack_required ? "manual" : "auto") },
    { title: "Prefetch", value: (c) => c.prefetch_count, num: true },
    { title: "Exclusive", value: (c) => (c.exclusive ? "yes" : "") },
  ], list, "No consumers.")}</div>`;
}

async function admin() {
  if (!(state.user.tags || []).includes("administrator")) {
    $("#view").innerHTML = '<div class="card">Users, virtual hosts and permissions need the <b>administrator</b> tag.</div>';
    return;
  }
  const [users, vhosts, permissions, policies] = await Promise.all([get("/users"), get("/vhosts"), get("/permissions"), get("/policies")]);
  $("#view").innerHTML = `
    <h2>Admin</h2>
    <div class="split">
      <div class="card"><h3>Users</h3>${table([
        { title: "Name", value: (u) => u.name },
        { title: "Tags", value: (u) => (u.tags || []).join(", ") },
        { title: "", html: (u) => `<button class="secondary" data-delete-user="${esc(u.name)}">Delete</button>` },
      ], users)}
      <form id="add-user" class="row" style="margin-top:12px">
        <label>Name <input name="name" required></label><label>Password <input name="password" type="password" required></label>
        <label>Tags <input name="tags" placeholder="management, monitoring"></label><button type="submit">Add user</button></form></div>
      <div class="card"><h3>Virtual hosts</h3>${table([
        { title: "Name", value: (v) => v.name },
        { title: "Messages", value: (v) => num(v.messages), num: true },
        { title: "", html: (v) => `<button class="secondary" data-delete-vhost="${esc(v.name)}">Delete</button>` },
      ], vhosts)}
      <form id="add-vhost" class="row" style="margin-top:12px"><label>Name <input name="name" required></label><button type="submit">Add virtual host</button></form></div>
    </div>
    <div class="card"><h3>Permissions</h3>${table([
      { title: "User", value: (p) => p.user }, { title: "Virtual host", value: (p) => p.vhost },
      { title: "Configure", value: (p) => p.configure }, { title: "Write", value: (p) => p.write }, { title: "Read", value: (p) => p.read },
      { title: "", html: (p) => `<button class="secondary" data-clear="${esc(enc(p.vhost))}/${esc(enc(p.user))}">Clear</button>` },
    ], permissions)}
    <form id="set-permission" class="row" style="margin-top:12px">
      <label>User <select name="user">${users.map((u) => `<option>${esc(u.name)}</option>`).join("")}</select></label>
      <label>Virtual host <select name="vhost">${vhosts.map((v) => `<option>${esc(v.name)}</option>`).join("")}</select></label>
      <label>Configure <input name="configure" value=".*"></label><label>Write <input name="write" value=".*"></label><label>Read <input name="read" value=".*"></label>
      <button type="submit">Set permission</button></form></div>
    <div class="card"><h3>Policies (stored, not applied yet)</h3>${table([
      { title: "Virtual host", value: (p) => p.vhost }, { title: "Name", value: (p) => p.name }, { title: "Pattern", value: (p) => p.pattern },
      { title: "Apply to", value: (p) => p["apply-to"] }, { title: "Definition", value: (p) => JSON.stringify(p.definition) }, { title: "Priority", value: (p) => p.priority, num: true },
    ], policies, "No policies.")}</div>`;
  $("#add-user").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act(`User ${f.get("name")} saved`, () => api("PUT", `/users/${enc(f.get("name"))}`, { password: f.get("password"), tags: f.get("tags") }));
  });
  $("#add-vhost").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act(`Virtual host ${f.get("name")} added`, () => api("PUT", `/vhosts/${enc(f.get("name"))}`, {}));
  });
  $("#set-permission").addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    act("Permission set", () => api("PUT", `/permissions/${enc(f.get("vhost"))}/${enc(f.get("user"))}`, { configure: f.get("configure"), write: f.get("write"), read: f.get("read") }));
  });
  for (const b of document.querySelectorAll("[data-delete-user]")) b.addEventListener("click", () => confirm(`Delete user ${b.dataset.deleteUser}?`) && act("User deleted", () => api("DELETE", `/users/${enc(b.dataset.deleteUser)}`)));
  for (const b of document.querySelectorAll("[data-delete-vhost]")) b.addEventListener("click", () => confirm(`Delete virtual host ${b.dataset.deleteVhost} and everything in it?`) && act("Virtual host deleted", () => api("DELETE", `/vhosts/${enc(b.dataset.deleteVhost)}`)));
  for (const b of document.querySelectorAll("[data-clear]")) b.addEventListener("click", () => act("Permission cleared", () => api("DELETE", `/permissions/${b.dataset.clear}`)));
}

// ----- start ---------------------------------------------------------------

$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", logout);
window.addEventListener("hashchange", render);
(async () => {
  const saved = sessionStorage.getItem("warren-auth");
  if (saved) {
    try {
      const { json } = await api("GET", "/whoami", undefined, saved);
      start(saved, json);
      return;
    } catch (_) {
      sessionStorage.removeItem("warren-auth");
    }
  }
  $("#login").hidden = false;
})();
