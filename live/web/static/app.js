// The autoencoded web remote: builds one control per entry of GET /api/v1/params, sends moves over the
// WebSocket (POST when it is down), follows every change pushed back (OSC, MIDI, other browsers).
"use strict";
(() => {
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  const $ = (id) => document.getElementById(id);
  const widgets = {};      // control name -> {set(value)}
  const dragging = new Set();  // controls under a finger: pushed values must not move them
  let ws = null, controls = {};

  function say(text) { $("message").textContent = text; }

  async function api(path, body) {
    const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify(body)};
    const headers = Object.assign({}, init.headers || {});
    if (token) headers["X-Token"] = token;
    const r = await fetch(path, Object.assign(init, {headers}));
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  // ---- sending: at most one message per control every 30 ms, and always the last value
  const pending = {}; let timer = null;
  function send(values) {
    Object.assign(pending, values);
    if (!timer) timer = setTimeout(flush, 30);
  }
  function flush() {
    timer = null;
    const values = Object.assign({}, pending);
    for (const k of Object.keys(pending)) delete pending[k];
    if (!Object.keys(values).length) return;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({set: values}));
    else api("api/v1/params", values).catch((e) => say(e.message));
  }
  const press = (name) => send({[name]: true});

  // ---- building the page from the control list
  function fmt(spec, v) {
    return spec.type === "float" ? Number(v).toFixed(3) : String(v);
  }

  function slider(name, spec) {
    const box = document.createElement("div");
    box.className = "control";
    box.dataset.control = name;
    const top = document.createElement("div"); top.className = "top";
    const label = document.createElement("label"); label.textContent = name; label.htmlFor = "c-" + name;
    const out = document.createElement("output");
    top.append(label, out);
    const input = document.createElement("input");
    input.type = "range"; input.id = "c-" + name; input.dataset.name = name;
    input.min = spec.min; input.max = spec.max;
    input.step = spec.type === "float" ? (spec.max - spec.min) / 1000 : 1;
    const help = document.createElement("div"); help.className = "help"; help.textContent = spec.help;
    box.append(top, input, help);
    const down = () => dragging.add(name), up = () => dragging.delete(name);
    input.addEventListener("pointerdown", down);
    input.addEventListener("pointerup", up);
    input.addEventListener("pointercancel", up);
    input.addEventListener("blur", up);
    input.addEventListener("input", () => {
      const v = spec.type === "float" ? parseFloat(input.value) : parseInt(input.value, 10);
      out.textContent = fmt(spec, v);
      send({[name]: v});
    });
    widgets[name] = {set(v) { if (!dragging.has(name)) input.value = v; out.textContent = fmt(spec, v); }};
    return box;
  }

  function toggle(name, spec, extra) {
    const box = document.createElement("div"); box.className = "control"; box.dataset.control = name;
    const b = document.createElement("button"); b.textContent = name; b.dataset.name = name; b.title = spec.help;
    let on = false;
    b.addEventListener("click", () => send({[name]: !on}));
    const row = document.createElement("div"); row.className = "buttons"; row.append(b, ...(extra || []));
    box.append(row);
    widgets[name] = {set(v) { on = !!v; b.classList.toggle("on", on); }};
    return box;
  }

  function number(name, spec, extra) {
    const box = document.createElement("div"); box.className = "control"; box.dataset.control = name;
    const top = document.createElement("div"); top.className = "top";
    const label = document.createElement("label"); label.textContent = name; label.htmlFor = "c-" + name;
    const input = document.createElement("input"); input.type = "number"; input.id = "c-" + name;
    input.dataset.name = name; input.min = spec.min; input.max = spec.max; input.step = 1;
    input.addEventListener("change", () => send({[name]: parseInt(input.value, 10)}));
    input.addEventListener("focus", () => dragging.add(name));
    input.addEventListener("blur", () => dragging.delete(name));
    top.append(label, input);
    const row = document.createElement("div"); row.className = "buttons"; row.append(...(extra || []));
    const help = document.createElement("div"); help.className = "help"; help.textContent = spec.help;
    box.append(top, row, help);
    widgets[name] = {set(v) { if (!dragging.has(name)) input.value = v; }};
    return box;
  }

  function button(name, spec) {
    const b = document.createElement("button"); b.textContent = name; b.dataset.name = name; b.title = spec.help;
    b.addEventListener("click", () => press(name));
    return b;
  }

  const companions = {"noise/seed": ["noise/reseed"], "freeze": ["freeze/toggle"]};  // buttons beside a control

  function build(list) {
    controls = list;
    const root = $("controls"); root.replaceChildren();
    const used = new Set();
    const learn = $("learn-target"); learn.replaceChildren();
    for (const [name, spec] of Object.entries(list)) {
      if (spec.type === "trigger") continue;
      if (name === "cue/recall") continue;  // the cue grid plays it
      const extra = (companions[name] || []).filter((t) => list[t]).map((t) => { used.add(t); return button(t, list[t]); });
      if (spec.type === "toggle") root.append(toggle(name, spec, extra));
      else if (spec.type === "int" && spec.max - spec.min > 1000) root.append(number(name, spec, extra));
      else root.append(slider(name, spec));
    }
    const rest = Object.entries(list).filter(([n, s]) => s.type === "trigger" && !used.has(n) && !/^cue\//.test(n));
    if (rest.length) {
      const box = document.createElement("div"); box.className = "control buttons";
      for (const [n, s] of rest) box.append(button(n, s));
      root.append(box);
    }
    // the cue grid: tap recalls; in store mode, tap stores; the recalled cue is lit; "none" lets go
    const cues = $("cues"); cues.replaceChildren();
    const pads = [];
    for (let n = 0; list["cue/recall/" + n]; n++) {
      const b = document.createElement("button"); b.textContent = n; b.dataset.cue = n;
      b.addEventListener("click", () => {
        if ($("store-mode").checked) { press("cue/store/" + n); say("stored cue " + n); }
        else press("cue/recall/" + n);
      });
      cues.append(b); pads.push(b);
    }
    const none = document.createElement("button"); none.textContent = "none"; none.dataset.cue = "none";
    none.addEventListener("click", () => send({"cue/recall": -1}));
    cues.append(none);
    widgets["cue/recall"] = {set(v) { pads.forEach((b, i) => b.classList.toggle("on", i === v)); }};
    $("store-mode").onchange = () => cues.classList.toggle("store", $("store-mode").checked);
    for (const name of Object.keys(list)) {
      const o = document.createElement("option"); o.value = o.textContent = name; learn.append(o);
    }
    for (const [name, spec] of Object.entries(list)) if ("value" in spec) update(name, spec.value);
  }

  function update(name, value) {
    if (controls[name]) controls[name].value = value;
    if (widgets[name]) widgets[name].set(value);
  }

  // ---- stats and signals
  const shown = [["fps_out", "fps out"], ["fps_in", "fps in"], ["engine_ms_p50", "engine ms"],
                 ["latency_ms_p50", "latency ms"], ["dropped", "dropped"], ["engine_faults", "faults"],
                 ["model", "model"], ["preset", "preset"], ["source", "source"]];
  function stats(s) {
    const box = $("stats"); box.replaceChildren();
    for (const [key, label] of shown) {
      if (!(key in s) || s[key] === null) continue;
      const d = document.createElement("div");
      const b = document.createElement("b");
      b.textContent = typeof s[key] === "number" ? (Number.isInteger(s[key]) ? s[key] : s[key].toFixed(1)) : s[key];
      d.append(label + " ", b); d.dataset.stat = key; box.append(d);
    }
    $("headline").textContent = [s.model, s.preset && "preset " + s.preset].filter(Boolean).join(" · ");
    if (s.midi_learn) say("MIDI learn: move a control to bind it to " + s.midi_learn);
  }
  function signals(values) {
    const box = $("signals"); box.hidden = false;
    for (const [name, v] of Object.entries(values)) {
      let bar = box.querySelector(`[data-signal="${CSS.escape(name)}"] i`);
      if (!bar) {
        const label = document.createElement("span"); label.textContent = name;
        const meter = document.createElement("div"); meter.className = "meter"; meter.dataset.signal = name;
        bar = document.createElement("i"); meter.append(bar); box.append(label, meter);
      }
      bar.style.width = Math.round(Math.max(0, Math.min(1, v)) * 100) + "%";
    }
  }

  // ---- the WebSocket: follows every change, reconnects when the show restarts
  function connect() {
    const url = new URL(withToken("api/v1/ws"), location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(url);
    ws.onopen = () => $("link").classList.add("on");
    ws.onclose = () => { $("link").classList.remove("on"); setTimeout(connect, 1000); };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type === "params") for (const [k, v] of Object.entries(m.values)) update(k, v);
      else if (m.type === "status") stats(m.status);
      else if (m.type === "signals") signals(m.values);
      else if (m.type === "error") say(m.error);
    };
  }

  // ---- presets, models, MIDI learn
  async function presets() {
    const p = await api("api/v1/presets");
    const sel = $("preset"); sel.replaceChildren();
    for (const name of p.presets) {
      const o = document.createElement("option"); o.value = o.textContent = name;
      if (name === p.current) o.selected = true;
      sel.append(o);
    }
  }
  $("preset-go").onclick = () => api("api/v1/presets", {name: $("preset").value})
    .then(() => say("preset " + $("preset").value)).catch((e) => say(e.message));
  $("model-go").onclick = () => api("api/v1/model", {model: $("model").value})
    .then((r) => say("loading " + r.loading)).catch((e) => say(e.message));
  $("learn").onclick = () => api("api/v1/midi-learn", {target: $("learn-target").value})
    .then((r) => say("MIDI learn: move a control to bind it to " + r.learning)).catch((e) => say(e.message));

  // the endless MJPEG response would hold the page's load event: start it once the page has loaded
  const startPreview = () => { $("preview").src = withToken("preview.mjpg"); };
  if (document.readyState === "complete") startPreview(); else window.addEventListener("load", startPreview);
  api("api/v1/params").then((r) => { build(r.controls); connect(); }).catch((e) => say(e.message));
  presets().catch(() => {});
})();
