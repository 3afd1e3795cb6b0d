// micro web: the dashboard page. Plain JavaScript, no framework: the list
// follows /api/events (Server-Sent Events); a service's detail comes from
// /api/services/{name}; the form posts to /api/call. Text goes into the page
// through textContent only, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { services: [], selected: null, detail: null, endpoint: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function selectedFromHash() {
  const m = location.hash.match(/^#\/service\/(.+)$/);
  try {
    return m ? decodeURIComponent(m[1]) : null;
  } catch {
    return null;
  }
}

// --- the service list ---------------------------------------------------

function renderList() {
  const list = $("services");
  const filter = $("filter").value.trim().toLowerCase();
  const shown = state.services.filter((s) => s.name.toLowerCase().includes(filter));
  list.replaceChildren(
    ...shown.map((s) => {
      const link = el("a", { href: "#/service/" + encodeURIComponent(s.name) }, s.name);
      const info = el(
        "span",
        { class: "muted" },
        s.versions.join(", ") + " · " + s.nodes + (s.nodes === 1 ? " node" : " nodes"),
      );
      const item = el("li", { "data-service": s.name }, link, info);
      // A web service (go.micro.web.NAME) opens under /NAME/, proxied.
      if (s.web) item.append(" ", el("a", { href: s.web, class: "open-web" }, "open"));
      if (s.name === state.selected) item.classList.add("selected");
      return item;
    }),
  );
  $("service-count").textContent = "(" + state.services.length + ")";
  $("no-services").hidden = state.services.length !== 0;
}

function onServices(summary) {
  state.services = summary.services;
  renderList();
  const live = $("live");
  if (summary.registry_error) {
    live.dataset.state = "degraded";
    live.textContent = "registry unavailable";
    live.title = summary.registry_error;
  } else {
    live.dataset.state = "live";
    live.textContent = "live";
    live.title = "following the registry";
  }
  if (!state.selected) return;
  const entry = state.services.find((s) => s.name === state.selected);
  $("service-gone").hidden = Boolean(entry);
  $("service").dataset.gone = entry ? "false" : "true";
  if (entry && (!state.detail || state.detail.rev !== entry.rev)) loadDetail(state.selected);
}

// --- one service --------------------------------------------------------

async function loadDetail(name) {
  const response = await fetch("/api/services/" + encodeURIComponent(name), {
    headers: { accept: "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (name !== state.selected) return;
  if (!response.ok) {
    $("service-gone").hidden = false;
    $("service").dataset.gone = "true";
    return;
  }
  const same = state.detail && state.detail.name === name;
  state.detail = body;
  renderDetail(same);
}

function metadataText(metadata) {
  return Object.entries(metadata || {})
    .map(([k, v]) => k + "=" + v)
    .join(", ");
}

function shapeText(value, depth) {
  if (!value || !value.values || value.values.length === 0) return "{}";
  const pad = "  ".repeat(depth + 1);
  const lines = value.values.map((field) => {
    const nested = field.values && field.values.length ? " " + shapeText(field, depth + 1) : "";
    return pad + field.name + " " + field.type + nested;
  });
  return "{\n" + lines.join("\n") + "\n" + "  ".repeat(depth) + "}";
}

function renderDetail(keepForm) {
  const d = state.detail;
  $("placeholder").hidden = true;
  $("service").hidden = false;
  $("service-name").textContent = d.name;
  $("service-gone").hidden = true;
  $("service").dataset.gone = "false";

  const rows = [];
  for (const version of d.versions) {
    for (const node of version.nodes) {
      const health = node.health || {};
      const badge = el("span", { class: "badge", "data-health": health.status }, health.status);
      if (health.error) badge.title = health.error;
      else if (health.latency_ms !== undefined) badge.title = health.latency_ms.toFixed(1) + " ms";
      rows.push(
        el(
          "tr",
          { "data-node": node.id },
          el("td", {}, version.version),
          el("td", { class: "mono" }, node.id),
          el("td", { class: "mono address" }, node.address),
          el("td", { class: "mono small" }, metadataText(node.metadata)),
          el("td", {}, badge),
        ),
      );
    }
  }
  $("nodes").tBodies[0].replaceChildren(...rows);

  $("endpoints").replaceChildren(
    ...d.endpoints.map((e) => {
      const summary = el("summary", {}, el("span", { class: "mono" }, e.name));
      const meta = metadataText(e.metadata);
      if (meta) summary.append(el("span", { class: "muted" }, " " + meta));
      return el(
        "details",
        { "data-endpoint": e.name },
        summary,
        el(
          "div",
          { class: "shapes" },
          el("div", {}, el("h4", {}, "Request"), el("pre", {}, shapeText(e.request, 0))),
          el("div", {}, el("h4", {}, "Response"), el("pre", {}, shapeText(e.response, 0))),
        ),
      );
    }),
  );

  // What the service subscribes to: the topic, the handler and the shape
  // of the message it takes.
  const subscriptions = d.subscriptions || [];
  $("subscriptions").replaceChildren(
    ...subscriptions.map((s) => {
      const summary = el("summary", {}, el("span", { class: "mono" }, s.topic));
      summary.append(el("span", { class: "muted" }, " " + s.handler));
      return el(
        "details",
        { "data-topic": s.topic },
        summary,
        el("div", { class: "shapes" }, el("div", {}, el("h4", {}, "Message"), el("pre", {}, shapeText(s.message, 0)))),
      );
    }),
  );
  $("no-subscriptions").hidden = subscriptions.length > 0;

  const select = $("call-endpoint");
  const previous = keepForm ? select.value : null;
  select.replaceChildren(...d.endpoints.map((e) => el("option", { value: e.name }, e.name)));
  if (previous && d.endpoints.some((e) => e.name === previous)) {
    select.value = previous;
  } else {
    fillTemplate();
  }
  if (!keepForm) {
    $("call-result").textContent = "";
    $("call-result").dataset.state = "idle";
  }
}

function fillTemplate() {
  const d = state.detail;
  const endpoint = d && d.endpoints.find((e) => e.name === $("call-endpoint").value);
  $("call-request").value = JSON.stringify(endpoint ? endpoint.template : {}, null, 2);
}

function select(name) {
  state.selected = name;
  state.detail = null;
  for (const item of $("services").children) {
    item.classList.toggle("selected", item.dataset.service === name);
  }
  if (!name) {
    $("service").hidden = true;
    $("placeholder").hidden = false;
    return;
  }
  loadDetail(name);
}

// --- the call form ------------------------------------------------------

function parseMetadata(text) {
  const metadata = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error("metadata line " + JSON.stringify(line) + " is not key=value");
    metadata[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return metadata;
}

async function submitCall(event) {
  event.preventDefault();
  const result = $("call-result");
  const button = $("call-submit");
  let metadata;
  try {
    metadata = parseMetadata($("call-metadata").value);
  } catch (e) {
    result.dataset.state = "error";
    result.textContent = e.message;
    return;
  }
  const endpoint = state.detail && state.detail.endpoints.find((e) => e.name === $("call-endpoint").value);
  if (endpoint && endpoint.metadata && endpoint.metadata.stream === "true") {
    return streamCall(result, button, metadata);
  }
  result.dataset.state = "pending";
  result.textContent = "calling…";
  button.disabled = true;
  try {
    const response = await fetch("/api/call", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({
        service: state.selected,
        endpoint: $("call-endpoint").value,
        request: $("call-request").value,
        metadata,
      }),
    });
    const body = await response.json();
    if (response.ok) {
      result.dataset.state = "ok";
      result.textContent = JSON.stringify(body.reply, null, 2);
    } else {
      const err = body.error || {};
      result.dataset.state = "error";
      result.textContent =
        "Error " + (err.code || response.status) + " " + (err.status || "") + "\n" + (err.detail || "") +
        (err.id ? "\n(" + err.id + ")" : "");
    }
    if (body.took_ms !== undefined) result.title = body.took_ms.toFixed(1) + " ms";
  } catch (e) {
    result.dataset.state = "error";
    result.textContent = "The call failed: " + e.message;
  } finally {
    button.disabled = false;
  }
}

// --- live updates -------------------------------------------------------

function errorText(err, status) {
  return "Error " + (err.code || status) + " " + (err.status || "") + "\n" + (err.detail || "") +
    (err.id ? "\n(" + err.id + ")" : "");
}

// A streaming endpoint: each reply shows as it arrives (one JSON line each
// from /api/stream), then the end or the error.
async function streamCall(result, button, metadata) {
  result.dataset.state = "streaming";
  result.dataset.count = "0";
  result.textContent = "";
  button.disabled = true;
  let count = 0;
  const show = (line) => {
    const item = JSON.parse(line);
    if (item.message !== undefined) {
      count += 1;
      result.dataset.count = String(count);
      result.append(JSON.stringify(item.message, null, 2) + "\n");
    } else if (item.error) {
      result.dataset.state = "error";
      result.append(errorText(item.error, "") + "\n");
    } else if (item.end) {
      result.dataset.state = "ok";
      result.title = count + " messages, " + item.end.took_ms.toFixed(1) + " ms";
    }
  };
  try {
    const response = await fetch("/api/stream", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/x-ndjson" },
      body: JSON.stringify({
        service: state.selected,
        endpoint: $("call-endpoint").value,
        request: $("call-request").value,
        metadata,
      }),
    });
    if (!response.ok) {
      const body = await response.json();
      result.dataset.state = "error";
      result.textContent = errorText(body.error || {}, response.status);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let at;
      while ((at = pending.indexOf("\n")) >= 0) {
        show(pending.slice(0, at));
        pending = pending.slice(at + 1);
      }
    }
    if (result.dataset.state === "streaming") {
      result.dataset.state = "error";
      result.append("The stream ended without its end.\n");
    }
  } catch (e) {
    result.dataset.state = "error";
    result.append("The stream failed: " + e.message + "\n");
  } finally {
    button.disabled = false;
  }
}

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("services", (e) => onServices(JSON.parse(e.data)));
  events.addEventListener("open", () => {
    $("live").dataset.state = "live";
    $("live").textContent = "live";
  });
  events.addEventListener("error", () => {
    // EventSource reconnects by itself (the server asks for 1 s).
    $("live").dataset.state = "connecting";
    $("live").textContent = "reconnecting…";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", renderList);
  $("call-endpoint").addEventListener("change", fillTemplate);
  $("call-form").addEventListener("submit", submitCall);
  window.addEventListener("hashchange", () => select(selectedFromHash()));
  connect();
  select(selectedFromHash());
  // Health changes without a registry event: ask again every 10 s while shown.
  setInterval(() => {
    if (state.selected && state.detail && !document.hidden) loadDetail(state.selected);
  }, 10000);
});
