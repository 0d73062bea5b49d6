// Twinfleet console: one page, hash routes, no framework. Every call goes to the console's own
// backend: its fleet index (/v1/console/fleet...), its live stream, or an app's REST API forwarded
// with the signed-in operator's credential (/v1/console/api/<app>/v1/...).

const main = document.getElementById("main");
let live = null; // the page's EventSource
let session = null;

// -- helpers -------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const when = (ms) => (ms ? new Date(ms > 1e12 ? ms : ms * 1000).toLocaleString() : "—");
const pretty = (v) => JSON.stringify(v, null, 2);
function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text; t.classList.add("show");
  clearTimeout(toast.timer); toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
}
class ApiError extends Error { constructor(code, message) { super(`${code}: ${message}`); this.code = code; } }

async function call(url, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { "X-Twinfleet-Console": "1", ...headers }, credentials: "same-origin" };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["content-type"] = "application/json"; }
  const answer = await fetch(url, init);
  const text = await answer.text();
  const data = text ? JSON.parse(text) : null;
  if (!answer.ok) throw new ApiError(answer.status, (data && data.message) || answer.statusText);
  return data;
}
const api = (app, path, opts) => call(`/v1/console/api/${app}${path}`, opts);
const enc = encodeURIComponent;

function follow(device, onChange) {
  if (live) live.close();
  live = new EventSource(`/v1/console/live${device ? `?device=${enc(device)}` : ""}`);
  let timer = null;
  const later = () => { clearTimeout(timer); timer = setTimeout(onChange, 300); };
  live.addEventListener("twin", later);
  live.addEventListener("reload", later);
  live.onerror = () => {}; // EventSource reconnects by itself
}

function failure(error) {
  if (error instanceof ApiError && error.code === 401) { location.hash = "#/signin"; return h("p", {}, "Signed out."); }
  return h("p", { class: "error", role: "alert" }, String(error.message || error));
}

// -- routes --------------------------------------------------------------------------------------
const routes = [
  [/^#\/signin$/, signinPage],
  [/^#\/fleet$/, fleetPage],
  [/^#\/devices\/(.+)$/, devicePage],
  [/^#\/configurations$/, configurationsPage],
  [/^#\/configurations\/new$/, newConfigurationPage],
  [/^#\/configurations\/(.+)$/, configurationPage],
  [/^#\/releases$/, releasesPage],
];

async function render() {
  if (live) { live.close(); live = null; }
  const hash = location.hash || "#/fleet";
  if (!session && hash !== "#/signin") {
    session = await call("/v1/console/session");
    if (!session.signedIn) { session = null; location.hash = "#/signin"; return; }
  }
  showSession();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", hash.startsWith(a.getAttribute("href")));
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) {
      main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
      try { await page(...m.slice(1).map(decodeURIComponent)); } catch (error) { main.replaceChildren(failure(error)); }
      main.focus({ preventScroll: true });
      return;
    }
  }
  location.hash = "#/fleet";
}

function showSession() {
  const signedIn = Boolean(session);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? `${session.name || session.subject} · ${session.roles.join(", ")}` : "";
}

document.getElementById("signout").addEventListener("click", async () => {
  await call("/v1/console/session", { method: "DELETE" });
  session = null; location.hash = "#/signin";
});

// -- sign in -------------------------------------------------------------------------------------
async function signinPage() {
  const message = h("p", { class: "error", role: "alert" });
  async function submit(event, body) {
    event.preventDefault();
    try {
      session = await call("/v1/console/session", { method: "POST", body });
      location.hash = "#/fleet";
    } catch (error) { message.textContent = error.message; }
  }
  const id = h("input", { id: "client-id", name: "clientId", autocomplete: "username", required: true });
  const secret = h("input", { id: "client-secret", name: "clientSecret", type: "password", autocomplete: "current-password", required: true });
  const token = h("input", { id: "token", name: "token", type: "password", required: true });
  main.replaceChildren(
    h("h1", {}, "Sign in"),
    h("div", { class: "two" },
      h("form", { class: "signin", onsubmit: (e) => submit(e, { clientId: id.value, clientSecret: secret.value }) },
        h("h2", {}, "Client credentials (as `twin login`)"),
        h("label", { for: "client-id" }, "Client id"), id,
        h("label", { for: "client-secret" }, "Client secret"), secret,
        h("button", { type: "submit", id: "signin-client" }, "Sign in")),
      h("form", { class: "signin", onsubmit: (e) => submit(e, { token: token.value }) },
        h("h2", {}, "Token or API key"),
        h("label", { for: "token" }, "Bearer token or API key"), token,
        h("button", { type: "submit", id: "signin-token" }, "Sign in"))),
    message);
}

// -- fleet ---------------------------------------------------------------------------------------
const fleetState = { prefix: "", tag: "", sort: "id", descending: false, offset: 0, limit: 50 };

function facetCard(title, items, total, onPick) {
  return h("section", { class: "card" }, h("h2", {}, title),
    h("div", { class: "bars" }, items.length ? items.slice(0, 8).map((i) => [
      h("div", {}, onPick ? h("a", { href: "#/fleet", onclick: (e) => { e.preventDefault(); onPick(i.value); } }, i.value) : h("span", { class: `state-${i.value}` }, i.value), h("span", {}, i.count)),
      h("div", { class: "bar" }, h("span", { style: `width:${total ? (100 * i.count) / total : 0}%` })),
    ]) : h("p", { class: "muted" }, "none")));
}

async function fleetPage() {
  const counts = h("div", { class: "cards", id: "fleet-counts" });
  const table = h("div", { id: "device-table" });
  const prefix = h("input", { id: "search-id", type: "search", placeholder: "device id starts with…", value: fleetState.prefix, "aria-label": "search by device id" });
  const tag = h("input", { id: "search-tag", type: "search", placeholder: "tag key=value", value: fleetState.tag, "aria-label": "filter by tag" });
  const search = h("form", { class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); fleetState.prefix = prefix.value.trim(); fleetState.tag = tag.value.trim(); fleetState.offset = 0; refresh(); } },
    prefix, tag, h("button", { type: "submit" }, "Search"),
    h("span", { class: "muted", id: "live-note" }, h("span", { class: "live" }), "live"));
  main.replaceChildren(h("h1", {}, "Fleet"), counts, search, table);

  async function refresh() {
    const q = new URLSearchParams({ ...fleetState, descending: String(fleetState.descending) });
    if (!fleetState.prefix) q.delete("prefix");
    if (!fleetState.tag) q.delete("tag");
    const [fleet, page] = await Promise.all([call("/v1/console/fleet"), call(`/v1/console/fleet/devices?${q}`)]);
    counts.replaceChildren(
      h("section", { class: "card" }, h("h2", {}, "Devices"), h("div", { class: "big", id: "fleet-total" }, fleet.twins.toLocaleString()), fleet.ready ? "" : h("p", { class: "muted" }, "index rebuilding…")),
      facetCard("Connection", fleet.connection, fleet.twins),
      facetCard("Encoding", fleet.encoding, fleet.twins),
      facetCard("Software version", fleet.software, fleet.twins),
      facetCard("Tags", fleet.tags, fleet.twins, (value) => { fleetState.tag = value; tag.value = value; fleetState.offset = 0; refresh(); }));
    const head = (key, label) => h("th", { "aria-sort": fleetState.sort === key ? (fleetState.descending ? "descending" : "ascending") : "none" },
      h("button", { type: "button", onclick: () => { fleetState.descending = fleetState.sort === key ? !fleetState.descending : false; fleetState.sort = key; refresh(); } },
        label, fleetState.sort === key ? (fleetState.descending ? " ▼" : " ▲") : ""));
    const rows = page.items.map((d) => h("tr", {},
      h("td", {}, h("a", { href: `#/devices/${enc(d.deviceId)}` }, d.deviceId)),
      h("td", {}, d.version), h("td", {}, when(d.timestamp)),
      h("td", { class: `state-${d.connection}` }, d.connection), h("td", {}, d.encoding),
      h("td", {}, d.software, d.softwareStatus ? h("span", { class: `muted state-${d.softwareStatus}` }, ` ${d.softwareStatus}`) : ""),
      h("td", {}, Object.entries(d.tags).map(([k, v]) => h("span", { class: "pill" }, `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)))));
    const last = Math.min(page.total, fleetState.offset + page.items.length);
    table.replaceChildren(
      h("table", { id: "devices" }, h("thead", {}, h("tr", {}, head("id", "Device"), head("version", "Version"), head("changed", "Last change"), h("th", {}, "Connection"), h("th", {}, "Encoding"), h("th", {}, "Software"), h("th", {}, "Tags"))), h("tbody", {}, rows)),
      h("div", { class: "toolbar" },
        h("button", { class: "secondary", type: "button", disabled: fleetState.offset === 0, onclick: () => { fleetState.offset = Math.max(0, fleetState.offset - fleetState.limit); refresh(); } }, "Previous"),
        h("span", { id: "page-note" }, `${page.total ? fleetState.offset + 1 : 0}–${last} of ${page.total.toLocaleString()}`),
        h("button", { class: "secondary", type: "button", disabled: last >= page.total, onclick: () => { fleetState.offset += fleetState.limit; refresh(); } }, "Next")));
  }
  await refresh();
  follow("", () => refresh().catch(() => {}));
}

// -- device --------------------------------------------------------------------------------------
function leaves(value, meta, path = "") {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    return Object.keys(value).sort().flatMap((k) => leaves(value[k], meta && meta[k], path ? `${path}.${k}` : k));
  }
  const ts = meta && typeof meta === "object" && "timestamp" in meta ? meta.timestamp : null;
  return [h("div", { class: "leaf", "data-path": path }, h("span", {}, h("b", {}, path || "(value)"), " = ", JSON.stringify(value)), h("time", {}, ts ? when(ts) : ""))];
}

function section(title, value, meta, id) {
  return h("section", { class: "card", id }, h("h2", {}, title), value && Object.keys(value).length ? leaves(value, meta) : h("p", { class: "muted" }, "empty"));
}

async function devicePage(deviceId) {
  async function load() {
    const [twin, commands, events] = await Promise.all([
      api("twin-store", `/v1/twins/${enc(deviceId)}`),
      api("commands", `/v1/devices/${enc(deviceId)}/commands`).then((items) => ({ items })).catch((e) => ({ items: [], error: e.message })),
      call(`/v1/console/devices/${enc(deviceId)}/events`).catch((e) => ({ items: [], error: e.message })),
    ]);
    const state = twin.state || {}, meta = twin.metadata || {};
    const software = (state.reported || {}).software;
    const desiredEdit = h("textarea", { id: "desired-patch", "aria-label": "desired state patch (JSON)" }, "{\n  \n}");
    const tagsEdit = h("textarea", { id: "tags-patch", "aria-label": "tags patch (JSON)" }, pretty(twin.tags || {}));
    const commandName = h("input", { id: "command-name", placeholder: "name, e.g. ping", "aria-label": "command name" });
    const commandArgs = h("input", { id: "command-args", placeholder: '{"args": …}', value: "{}", "aria-label": "command args (JSON)" });
    const message = h("p", { class: "error", role: "alert", id: "device-message" });
    async function write(what, path, body) {
      try {
        await api("twin-store", path, { method: "PATCH", body, headers: { "If-Match": `"${twin.version}"` } });
        toast(`${what} saved`); await load();
      } catch (error) { message.textContent = error.message; }
    }
    const parsed = (el) => { try { return JSON.parse(el.value); } catch (e) { message.textContent = `not JSON: ${e.message}`; return null; } };
    main.replaceChildren(
      h("h1", {}, `Device ${twin.deviceId}`, " ", h("span", { class: "muted" }, `version ${twin.version} · ${twin.wire} · changed ${when(twin.timestamp)}`), " ", h("span", { class: "live", title: "live" })),
      h("div", { class: "cols" },
        section("Desired", state.desired, meta.desired, "desired"),
        section("Reported", state.reported, meta.reported, "reported"),
        section("Delta", state.delta, null, "delta")),
      h("div", { class: "two" },
        h("section", { class: "card" }, h("h2", {}, "Software"), software ? h("div", { id: "software" },
          h("p", {}, "running ", h("b", {}, software.version || "—"), " · ", h("span", { class: `state-${software.status}` }, software.status || "")),
          typeof software.progress === "number" ? [h("div", { class: "bar", role: "progressbar", "aria-valuenow": software.progress, "aria-valuemin": 0, "aria-valuemax": 100 }, h("span", { style: `width:${software.progress}%` })), h("span", { class: "muted" }, `download ${software.progress}%`)] : "",
          software.reason ? h("p", { class: "error" }, software.reason) : "") : h("p", { class: "muted" }, "no software reported")),
        h("section", { class: "card" }, h("h2", {}, "Configurations applied"),
          Object.keys(twin.configurations || {}).length ? h("table", {}, h("tbody", {}, Object.entries(twin.configurations).map(([id, mark]) => h("tr", {},
            h("td", {}, h("a", { href: `#/configurations/${enc(id)}` }, id)), h("td", {}, h("pre", {}, pretty(mark))))))) : h("p", { class: "muted" }, "none"))),
      h("div", { class: "two" },
        h("section", { class: "card" }, h("h2", {}, "Edit desired state"), h("p", { class: "muted" }, `a JSON merge patch; null deletes a key; sent with If-Match: ${twin.version}`), desiredEdit,
          h("button", { type: "button", id: "save-desired", onclick: () => { const p = parsed(desiredEdit); if (p) write("desired state", `/v1/twins/${enc(deviceId)}/desired`, p); } }, "Save desired")),
        h("section", { class: "card" }, h("h2", {}, "Tags"), tagsEdit,
          h("button", { type: "button", id: "save-tags", onclick: () => { const p = parsed(tagsEdit); if (p) write("tags", `/v1/twins/${enc(deviceId)}/tags`, p); } }, "Save tags"))),
      message,
      h("section", { class: "card" }, h("h2", {}, "Commands"),
        h("form", { class: "toolbar", onsubmit: async (e) => {
          e.preventDefault(); const args = parsed(commandArgs); if (!args) return;
          try { await api("commands", `/v1/devices/${enc(deviceId)}/commands`, { method: "POST", body: { name: commandName.value, args } }); toast("command queued"); await load(); } catch (error) { message.textContent = error.message; }
        } }, commandName, commandArgs, h("button", { type: "submit", id: "send-command" }, "Send command")),
        commands.error ? h("p", { class: "error" }, commands.error) : "",
        h("table", { id: "commands" }, h("thead", {}, h("tr", {}, h("th", {}, "Command"), h("th", {}, "Status"), h("th", {}, "Created"), h("th", {}, "Deliveries"), h("th", {}, "Result"))),
          h("tbody", {}, (commands.items || []).map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.status), h("td", {}, when(c.createdAt)), h("td", {}, c.deliveries), h("td", {}, c.result ? JSON.stringify(c.result) : c.reason || "")))))),
      h("section", { class: "card" }, h("h2", {}, "Last events"),
        events.error ? h("p", { class: "error" }, events.error) : "",
        events.items.length ? h("table", { id: "events" }, h("thead", {}, h("tr", {}, h("th", {}, "Seq"), h("th", {}, "Time"), h("th", {}, "Type"), h("th", {}, "Data"))),
          h("tbody", {}, events.items.map((e) => h("tr", {}, h("td", {}, e.seq), h("td", {}, when(e.ts)), h("td", {}, e.type), h("td", {}, h("code", {}, JSON.stringify(e.data))))))) : h("p", { class: "muted", id: "events" }, "no events heard since the console started")));
  }
  await load();
  follow(deviceId, () => load().catch(() => {}));
}

// -- configurations ------------------------------------------------------------------------------
function progressBar(s) {
  const target = Math.max(1, s.target);
  const part = (n, cls) => h("span", { class: cls, style: `width:${(100 * n) / target}%` });
  return h("div", { class: "stack", role: "img", "aria-label": `${s.succeeded} succeeded, ${s.failed} failed, ${s.pending} pending of ${s.target}` },
    part(s.succeeded, "s-ok"), part(s.failed, "s-bad"), part(s.pending, "s-pend"));
}

async function configurationsPage() {
  const list = await api("rollout", "/v1/configurations");
  main.replaceChildren(
    h("h1", {}, "Configurations"),
    h("div", { class: "toolbar" }, h("a", { href: "#/configurations/new" }, h("button", { type: "button", tabindex: -1 }, "New configuration"))),
    h("table", { id: "configurations" }, h("thead", {}, h("tr", {}, ["Id", "State", "Priority", "Stage", "Targeted", "Applied", "Succeeded", "Failed", "Pending", "Progress"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.items.map((c) => h("tr", {},
        h("td", {}, h("a", { href: `#/configurations/${enc(c.id)}` }, c.id)), h("td", { class: `state-${c.state}` }, c.state), h("td", {}, c.priority),
        h("td", {}, `${c.stage + 1} / ${c.rollout.stages.length || 1}`), h("td", {}, c.progress.targeted), h("td", {}, c.progress.applied),
        h("td", {}, c.progress.succeeded), h("td", {}, c.progress.failed), h("td", {}, c.progress.pending),
        h("td", { style: "min-width:120px" }, progressBar({ ...c.progress, target: c.progress.targeted })))))));
  follow("", () => configurationsPage().catch(() => {}));
}

async function configurationPage(id) {
  async function load() {
    const [c, history] = await Promise.all([api("rollout", `/v1/configurations/${enc(id)}`), api("rollout", `/v1/configurations/${enc(id)}/history`)]);
    const message = h("p", { class: "error", role: "alert" });
    const act = (verb, body) => async () => {
      try { await api("rollout", `/v1/configurations/${enc(id)}/${verb}`, { method: "POST", body }); toast(`${verb}: done`); await load(); } catch (error) { message.textContent = error.message; }
    };
    const p = c.progress;
    main.replaceChildren(
      h("h1", {}, `Configuration ${c.id} `, h("span", { class: `state-${c.state}`, id: "config-state" }, c.state)),
      h("p", { class: "muted" }, `target ${c.targetCondition} · priority ${c.priority} · stage ${c.stage + 1}`, c.reason ? ` · ${c.reason}` : "", c.hold ? ` · held: ${c.hold}` : ""),
      h("div", { class: "toolbar" },
        c.state === "draft" ? h("button", { type: "button", id: "activate", onclick: act("activate") }, "Activate") : "",
        c.state === "active" ? h("button", { type: "button", id: "pause", onclick: act("pause") }, "Pause") : "",
        c.state === "paused" ? h("button", { type: "button", id: "resume", onclick: act("resume") }, "Resume") : "",
        ["active", "paused"].includes(c.state) ? h("button", { type: "button", class: "secondary", id: "cancel", onclick: act("cancel", { rollback: true }) }, "Cancel") : ""),
      message,
      h("div", { class: "cards" }, ["targeted", "applied", "succeeded", "failed", "pending", "waiting"].map((k) => h("section", { class: "card" }, h("h2", {}, k), h("div", { class: "big", id: `count-${k}` }, p[k])))),
      h("h2", {}, "Stages"),
      h("div", { id: "stages" }, p.stages.map((s) => h("div", { class: "stage card", "data-state": s.state },
        h("div", { class: "leaf" }, h("b", {}, `Stage ${s.index + 1}`), h("span", { class: `state-${s.state}` }, s.state), h("span", {}, `${s.succeeded} ok · ${s.failed} failed · ${s.pending} pending · ${s.admitted}/${s.target} admitted`)),
        progressBar(s)))),
      Object.keys(p.custom || {}).length ? [h("h2", {}, "Custom metrics"), h("div", { class: "cards" }, Object.entries(p.custom).map(([k, v]) => h("section", { class: "card" }, h("h2", {}, k), h("div", { class: "big" }, v))))] : "",
      h("h2", {}, "Decisions"),
      h("table", { id: "history" }, h("tbody", {}, history.items.slice().reverse().map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.message))))),
      h("h2", {}, "Content"), h("pre", { class: "card" }, pretty(c.content)));
  }
  await load();
  follow("", () => load().catch(() => {}));
}

async function newConfigurationPage() {
  const field = (id, label, attrs = {}) => [h("label", { for: id }, label), h(attrs.rows ? "textarea" : "input", { id, ...attrs })];
  const form = h("form", { class: "signin", style: "max-width:none" },
    field("cfg-id", "Id", { required: true }), field("cfg-target", "Target condition (CEL)", { value: "true", required: true }),
    field("cfg-priority", "Priority", { type: "number", value: "0" }),
    field("cfg-content", "Content (desired-state patch, JSON)", { rows: 5 }),
    field("cfg-stages", "Stages (percent, comma separated)", { value: "10, 50, 100" }),
    field("cfg-fail", "Halt when failed above (percent)", { type: "number", value: "5" }),
    field("cfg-pace", "Most twins per minute (empty: unpaced)", { type: "number", min: "1" }));
  form.querySelector("#cfg-content").value = '{"config": {}}';
  const out = h("div", { id: "preview" });
  const message = h("p", { class: "error", role: "alert" });
  const spec = () => ({
    id: form.querySelector("#cfg-id").value.trim(),
    targetCondition: form.querySelector("#cfg-target").value,
    priority: Number(form.querySelector("#cfg-priority").value || 0),
    content: JSON.parse(form.querySelector("#cfg-content").value),
    rollout: {
      stages: form.querySelector("#cfg-stages").value.split(",").map((s) => s.trim()).filter(Boolean).map((s) => ({ percent: Number(s) })),
      failureThreshold: { percent: Number(form.querySelector("#cfg-fail").value || 5) },
      ...(form.querySelector("#cfg-pace").value ? { maxPerMinute: Number(form.querySelector("#cfg-pace").value) } : {}),
    },
  });
  async function preview() {
    try {
      const v = await api("rollout", "/v1/configurations/preview", { method: "POST", body: { spec: spec(), limit: 20 } });
      out.replaceChildren(h("h2", {}, `Would select ${v.targeted} devices`),
        h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "Stage"), h("th", {}, "Admitted at"), h("th", {}, "Wins"))),
          h("tbody", {}, v.devices.map((d) => h("tr", {}, h("td", {}, d.deviceId), h("td", {}, d.stage === null ? "—" : d.stage + 1), h("td", {}, when(d.admitAt)), h("td", {}, d.wins.join(", ")))))),
        v.truncated ? h("p", { class: "muted" }, "(first 20 shown)") : "");
      message.textContent = "";
    } catch (error) { message.textContent = error.message; }
  }
  async function create() {
    try { const s = spec(); await api("rollout", "/v1/configurations", { method: "POST", body: s }); location.hash = `#/configurations/${enc(s.id)}`; } catch (error) { message.textContent = error.message; }
  }
  main.replaceChildren(h("h1", {}, "New configuration"), form,
    h("div", { class: "toolbar" }, h("button", { type: "button", class: "secondary", id: "preview-button", onclick: preview }, "Preview"), h("button", { type: "button", id: "create-button", onclick: create }, "Create (draft)")),
    message, out);
}

// -- releases ------------------------------------------------------------------------------------
async function releasesPage() {
  const [artifacts, keys, configurations] = await Promise.all([
    api("firmware", "/v1/artifacts"), api("firmware", "/v1/keys"), api("rollout", "/v1/configurations"),
  ]);
  const rolledOut = (id) => configurations.items.filter((c) => JSON.stringify(c.content).includes(`"artifact":"${id}"`));
  main.replaceChildren(
    h("h1", {}, "Releases"),
    h("table", { id: "artifacts" }, h("thead", {}, h("tr", {}, ["Artifact", "Version", "Size", "SHA-256", "Status", "Released", "Rolled out by"].map((t) => h("th", {}, t)))),
      h("tbody", {}, artifacts.items.map((a) => h("tr", {},
        h("td", {}, a.name, h("div", { class: "muted" }, a.id)), h("td", {}, a.version), h("td", {}, `${a.length.toLocaleString()} B`),
        h("td", {}, h("code", {}, (a.sha256 || "").slice(0, 16)), "…"), h("td", {}, a.status), h("td", {}, a.released ? "yes" : "no"),
        h("td", {}, rolledOut(a.id).map((c) => h("a", { href: `#/configurations/${enc(c.id)}`, class: "pill" }, `${c.id} (${c.state})`))))))),
    h("h2", {}, "Signing keys"),
    h("p", { class: "muted" }, `root v${keys.rootVersion} (expires ${keys.rootExpires}) · targets v${keys.targetsVersion}`),
    h("table", { id: "keys" }, h("thead", {}, h("tr", {}, h("th", {}, "Role"), h("th", {}, "Threshold"), h("th", {}, "Key ids"))),
      h("tbody", {}, keys.roles.map((r) => h("tr", {}, h("td", {}, r.role), h("td", {}, r.threshold), h("td", {}, r.keyids.map((k) => h("code", { class: "pill" }, k.slice(0, 12)))))))));
}

window.addEventListener("hashchange", () => render().catch((e) => main.replaceChildren(failure(e))));
render().catch((e) => main.replaceChildren(failure(e)));
