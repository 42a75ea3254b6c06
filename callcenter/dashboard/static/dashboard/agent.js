/* The agent page, live over /ws/agent/. Plain JavaScript, no build step.
 *
 * On every (re)connection the socket says hello; the page then reloads the
 * calls list and fetches the open call's segments it may have missed
 * (GET .../segments?after=<id>: every segment after the last one it has
 * final with all before it final too). Messages that arrive meanwhile are
 * merged: a final is never replaced by a partial or a pending segment.
 */
(function () {
  "use strict";

  const app = document.getElementById("app");
  const $ = (id) => document.getElementById(id);
  const LOW = parseFloat(app.dataset.lowConfidence || "0.6");
  const IS_AGENT = app.dataset.agent === "1";

  const state = {
    calls: new Map(),       // call id -> call (as /agent/api/calls gives it)
    open: null,             // id of the open call
    segments: new Map(),    // segment id -> {state: "pending"|"partial"|"final", msg, el}
    socket: null,
    retry: 0,
    clockOffset: 0,         // server time - browser time, ms
    follow: true,           // auto-scroll while the agent is at the bottom
    reconnects: 0,
    resyncs: 0,
  };
  window.agentPage = state; // for people debugging in the console (and the browser tests)

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function getJson(url, options) {
    const response = await fetch(url, Object.assign({credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRFToken": csrfToken()}}, options || {}));
    if (response.status === 401) { window.location.assign("/accounts/login/?next=/agent/"); }
    const body = await response.json();
    if (!response.ok) { throw Object.assign(new Error(body.error ? body.error.message : response.statusText), {body, status: response.status}); }
    return body;
  }

  function callUrl(id, suffix) { return app.dataset.callUrl.replace(/0$/, String(id)) + (suffix || ""); }
  function serverNow() { return Date.now() + state.clockOffset; }
  function setClock(iso) { if (iso) { state.clockOffset = Date.parse(iso) - Date.now(); } }
  function announce(text) { $("announcer").textContent = text; }

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function callName(call) { return call.caller || "Unknown caller"; }

  function duration(call) {
    const start = Date.parse(call.started_at);
    const end = call.ended_at ? Date.parse(call.ended_at) : serverNow();
    return isNaN(start) ? "" : clock(end - start);
  }

  // --- the calls list ---

  function mergeCall(call) {
    const known = state.calls.get(call.id);
    if (known && known.status !== "live" && call.status === "live") {
      call = Object.assign({}, call, {status: known.status, ended_at: known.ended_at});  // ended wins
    }
    state.calls.set(call.id, Object.assign({}, known || {}, call));
  }

  function renderCalls() {
    const list = $("calls");
    const calls = [...state.calls.values()].sort((a, b) =>
      (a.status === "live" ? 0 : 1) - (b.status === "live" ? 0 : 1) || Date.parse(b.started_at) - Date.parse(a.started_at));
    // Re-rendering must not take the keyboard focus away from the call it was on.
    const focused = document.activeElement && document.activeElement.closest("#calls li");
    list.replaceChildren(...calls.map(callItem));
    if (focused) {
      const again = list.querySelector(`li[data-call="${focused.dataset.call}"] button`);
      if (again) { again.focus(); }
    }
    $("no-calls").hidden = calls.some((c) => c.status === "live");
  }

  function callItem(call) {
    const li = document.createElement("li");
    li.dataset.call = call.id;
    li.dataset.status = call.status;
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-current", String(call.id === state.open));
    const owner = call.agent ? (call.mine ? "yours" : `agent ${call.agent}`) : "unassigned";
    button.innerHTML = `<span class="caller"></span><span class="duration"></span>` +
      `<span class="status status-${call.status}"></span><span class="owner"></span>`;
    button.querySelector(".caller").textContent = callName(call);
    button.querySelector(".duration").textContent = duration(call);
    button.querySelector(".status").textContent = call.status;
    button.querySelector(".owner").textContent = owner;
    button.setAttribute("aria-label", `${callName(call)}, ${call.status}, ${owner}, duration ${duration(call)}`);
    button.addEventListener("click", () => openCall(call.id));
    li.append(button);
    return li;
  }

  function tick() {
    for (const li of $("calls").children) {
      const call = state.calls.get(Number(li.dataset.call));
      if (call && call.status === "live") { li.querySelector(".duration").textContent = duration(call); }
    }
    const call = state.calls.get(state.open);
    if (call) { renderCallHead(call); }
  }

  async function loadCalls() {
    const body = await getJson(app.dataset.callsUrl);
    setClock(body.now);
    const fresh = new Set(body.calls.map((c) => c.id));
    for (const id of [...state.calls.keys()]) {
      // Listed before but not now: ended long ago, or another agent's.
      if (!fresh.has(id) && id !== state.open) { state.calls.delete(id); }
    }
    body.calls.forEach(mergeCall);
    renderCalls();
  }

  let reloadTimer = null;
  function reloadCallsSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadCalls().catch(showError), 250);
  }

  // --- the open call ---

  function renderCallHead(call) {
    $("call-heading").textContent = callName(call);
    const who = call.agent ? (call.mine ? "your call" : `agent ${call.agent}`) : "unassigned";
    $("call-meta").textContent = `${call.status} · ${duration(call)} · ${who}`;
    $("take").hidden = !(IS_AGENT && call.status === "live" && !call.agent);
  }

  // --- alerts (category rules matched live) and the call's analytics ---

  function showAlert(msg) {
    const list = $("alerts");
    if (list.querySelector(`[data-category="${CSS.escape(msg.category)}"]`)) { return; }
    const li = document.createElement("li");
    li.dataset.category = msg.category;
    const name = document.createElement("strong");
    name.textContent = msg.category;
    li.append(name);
    const where = [msg.speaker ? (SPEAKER_LABEL[msg.speaker] || msg.speaker) : null,
                   typeof msg.at_ms === "number" ? clock(msg.at_ms) : null].filter(Boolean).join(" at ");
    if (msg.text || where) { li.append(` — ${msg.text ? `“${msg.text}”` : ""}${msg.text && where ? ", " : ""}${where}`); }
    list.append(li);
    list.hidden = false;
  }

  function seconds(ms) { return `${(ms / 1000).toFixed(1)} s`; }

  function showAnalytics(a) {
    const box = $("analytics");
    if (!a) { box.hidden = true; box.textContent = ""; return; }
    box.textContent = `Talk: customer ${seconds(a.talk_ms.customer)}, agent ${seconds(a.talk_ms.agent)} · ` +
      `silence ${seconds(a.silence_ms)} (longest ${seconds(a.longest_silence_ms)}) · overlap ${seconds(a.overlap_ms)} · ` +
      `interruptions: customer ${a.interruptions.customer}, agent ${a.interruptions.agent}`;
    box.hidden = false;
  }

  async function openCall(id) {
    state.open = id;
    state.segments.clear();
    state.follow = true;
    $("transcript").replaceChildren();
    $("alerts").replaceChildren();
    $("alerts").hidden = true;
    showAnalytics(null);
    $("call-notice").hidden = true;
    $("jump").hidden = true;
    history.replaceState(null, "", `#call-${id}`);
    renderCalls();
    try {
      const body = await getJson(callUrl(id));
      if (state.open !== id) { return; }
      setClock(body.now);
      mergeCall(body.call);
      renderCallHead(state.calls.get(id));
      body.segments.forEach(applySegment);
      (body.alerts || []).forEach(showAlert);
      showAnalytics(body.analytics);
      renderHistory(body.history);
      renderCalls();
    } catch (error) {
      showNotice(error.message);
    }
  }

  function closeCall(text) {
    state.open = null;
    state.segments.clear();
    $("transcript").replaceChildren();
    $("call-heading").textContent = "No call open";
    $("call-meta").textContent = "";
    $("take").hidden = true;
    $("history").innerHTML = '<p class="empty">Open a call to see the caller\'s history.</p>';
    showNotice(text);
  }

  function showNotice(text) { const n = $("call-notice"); n.textContent = text; n.hidden = !text; }
  function showError(error) { console.error(error); }

  // --- the transcript ---

  const RANK = {pending: 0, partial: 1, final: 2};

  /* A partial, a final, or a segment from the JSON (type "final" or "pending"). */
  function applySegment(msg) {
    const kind = msg.type === "partial" ? "partial" : (msg.type === "final" ? "final" : "pending");
    const known = state.segments.get(msg.segment);
    if (known && RANK[known.state] > RANK[kind]) { return; }
    if (known && known.state === "final" && kind === "final" && known.msg.text === msg.text) { return; }
    const el = known ? known.el : segmentElement(msg);
    state.segments.set(msg.segment, {state: kind, msg, el});
    fillSegment(el, msg, kind);
    if (!known) { insertInOrder(el, msg.index); }
    scrollIfFollowing();
  }

  const SPEAKER_LABEL = {customer: "Customer", agent: "Agent"};

  function segmentElement(msg) {
    const li = document.createElement("li");
    li.dataset.segment = msg.segment;
    li.dataset.index = msg.index;
    const time = document.createElement("time");
    // Who spoke: the customer (inbound track, channel 0) or the agent (outbound, channel 1).
    const speaker = document.createElement("span");
    speaker.className = "speaker";
    const text = document.createElement("p");
    text.className = "text";
    li.append(time, speaker, text);
    return li;
  }

  function insertInOrder(el, index) {
    const list = $("transcript");
    const after = [...list.children].find((li) => Number(li.dataset.index) > index);
    list.insertBefore(el, after || null);
  }

  function fillSegment(li, msg, kind) {
    const failed = kind === "final" && msg.status === "failed";
    li.className = `segment ${failed ? "failed" : kind}`;
    li.dataset.state = kind;
    const who = msg.speaker || "customer";
    li.dataset.speaker = who;
    li.querySelector(".speaker").textContent = SPEAKER_LABEL[who] || who;
    // Only final text is announced to screen readers; partials change too often.
    if (kind === "final") { li.removeAttribute("aria-hidden"); } else { li.setAttribute("aria-hidden", "true"); }
    const time = li.querySelector("time");
    if (typeof msg.start_ms === "number") {
      time.textContent = clock(msg.start_ms);
      time.setAttribute("datetime", `PT${(msg.start_ms / 1000).toFixed(1)}S`);
    }
    const text = li.querySelector(".text");
    text.replaceChildren();
    if (failed) { text.textContent = "(could not be recognized)"; return; }
    if (kind === "pending") { text.textContent = "…"; return; }
    if (kind === "final" && (msg.verified || !msg.words || !msg.words.length)) { text.textContent = msg.text || "(silence)"; return; }
    msg.words.forEach((w, i) => {
      if (i) { text.append(" "); }
      if (kind === "final" && typeof w.conf === "number" && w.conf < LOW) {
        const mark = document.createElement("mark");
        mark.className = "low";
        mark.textContent = w.w;
        mark.title = `confidence ${Math.round(w.conf * 100)} %`;
        text.append(mark);
      } else {
        text.append(w.w);
      }
    });
    if (!msg.words.length) { text.textContent = msg.text; }
  }

  function scrollIfFollowing() {
    const box = $("transcript-scroll");
    if (state.follow) { box.scrollTop = box.scrollHeight; } else { $("jump").hidden = false; }
  }

  $("transcript-scroll").addEventListener("scroll", () => {
    const box = $("transcript-scroll");
    state.follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    if (state.follow) { $("jump").hidden = true; }
  });
  $("jump").addEventListener("click", () => {
    state.follow = true;
    scrollIfFollowing();
    $("jump").hidden = true;
    $("transcript-scroll").focus();
  });

  /* The id after which the page may have missed something: the last segment
     that is final with every earlier one final too. */
  function watermark() {
    const ids = [...state.segments.keys()].sort((a, b) => a - b);
    let mark = 0;
    for (const id of ids) {
      if (state.segments.get(id).state !== "final") { break; }
      mark = id;
    }
    return mark;
  }

  async function fetchMissed() {
    const id = state.open;
    if (id === null) { return; }
    const body = await getJson(callUrl(id, `/segments?after=${watermark()}`));
    if (state.open === id) { body.segments.forEach(applySegment); state.resyncs += 1; }
  }

  // --- the caller's history ---

  function renderHistory(h) {
    const box = $("history");
    box.replaceChildren();
    if (!h.customer) { box.innerHTML = '<p class="empty">Unknown caller: no history.</p>'; return; }
    const dl = document.createElement("dl");
    const add = (term, value) => {
      const dt = document.createElement("dt"); dt.textContent = term;
      const dd = document.createElement("dd"); dd.textContent = value;
      dl.append(dt, dd);
    };
    add("Caller", h.customer.name ? `${h.customer.name} (${h.customer.phone})` : h.customer.phone);
    add("Earlier calls", h.earlier_calls.length ? String(h.calls_total != null ? h.calls_total - 1 : h.earlier_calls.length) : "none: first call");
    add("Voice profile", profileText(h.profile));
    box.append(dl);
    if (h.earlier_calls.length) {
      const title = document.createElement("h3");
      title.textContent = "Recent calls";
      title.className = "visually-hidden";
      const ol = document.createElement("ol");
      for (const c of h.earlier_calls) {
        const li = document.createElement("li");
        const when = new Date(c.started_at);
        const len = c.duration_s != null ? clock(c.duration_s * 1000) : c.status;
        li.textContent = `${when.toLocaleString()} · ${len}${c.agent ? " · " + c.agent : ""}`;
        const summary = document.createElement("span");
        summary.className = "summary";
        summary.textContent = c.summary ? `“${c.summary}”` : "(no transcript)";
        li.append(summary);
        ol.append(li);
      }
      box.append(title, ol);
    }
  }

  function profileText(p) {
    if (!p) { return "No profile: recognized with the base model."; }
    let text = `Version ${p.version ?? "?"}${p.model ? ` for model ${p.model}` : ""}`;
    if (typeof p.improvement === "number") {
      const pct = Math.round(-p.improvement * 100);
      text += pct > 0 ? `: ${pct} % fewer recognition errors than before adapting.` : ": no improvement measured yet.";
    } else {
      text += ": improvement not measured.";
    }
    return text;
  }

  // --- the socket ---

  function setConnection(kind, text) {
    const c = $("connection");
    c.dataset.state = kind;
    c.textContent = text;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${app.dataset.wsPath}`);
    state.socket = socket;
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (state.socket !== socket) { return; }
      if (event.code === 4401) { window.location.assign("/accounts/login/?next=/agent/"); return; }
      if (event.code === 4403) { setConnection("closed", "Not allowed: this account is not an agent."); return; }
      const delay = Math.min(1000 * 2 ** state.retry, 10000);
      state.retry += 1;
      setConnection("closed", `Disconnected: reconnecting in ${Math.round(delay / 1000)} s…`);
      setTimeout(connect, delay);
    };
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "hello":
        if (state.retry > 0 || state.reconnects > 0) { state.reconnects += 1; }
        state.retry = 0;
        setConnection("open", "Live");
        // Catch up on whatever happened while there was no socket.
        loadCalls().then(fetchMissed).catch(showError);
        break;
      case "call": {
        const known = state.calls.get(msg.call);
        if (!known) {
          reloadCallsSoon();
          if (msg.status === "live") { announce(`New call from ${msg.caller || "an unknown caller"}`); }
          break;
        }
        const update = {status: msg.status, agent: msg.agent, mine: msg.agent === app.dataset.user && IS_AGENT};
        if (msg.status !== "live" && !known.ended_at) { update.ended_at = new Date(serverNow()).toISOString(); }
        if (known.status === "live" && msg.status !== "live") { announce(`Call from ${callName(known)} ${msg.status}`); }
        Object.assign(known, update);
        renderCalls();
        if (msg.call === state.open) { renderCallHead(known); }
        break;
      }
      case "withdrawn":
        state.calls.delete(msg.call);
        renderCalls();
        if (msg.call === state.open) { closeCall("This call was taken by another agent."); }
        break;
      case "partial":
      case "final":
        if (msg.call === state.open) { applySegment(msg); }
        break;
      case "alert": {
        const call = state.calls.get(msg.call);
        announce(`Alert on the call from ${call ? callName(call) : "a caller"}: ${msg.category}`);
        if (msg.call === state.open) { showAlert(msg); }
        break;
      }
      case "analytics":
        if (msg.call === state.open) { showAnalytics(msg); }
        break;
      case "error":
        setConnection("closed", msg.message);
        break;
      default:
        break;
    }
  }

  $("take").addEventListener("click", async () => {
    const id = state.open;
    try {
      const body = await getJson(callUrl(id, "/take"), {method: "POST"});
      mergeCall(body.call);
      renderCalls();
      renderCallHead(state.calls.get(id));
      announce("You took this call.");
    } catch (error) {
      showNotice(error.message);
      loadCalls().catch(showError);
    }
  });

  // A link to a call (#call-12) opens it, on load and when the address changes.
  function openFromAddress() {
    const m = location.hash.match(/^#call-(\d+)$/);
    if (m && Number(m[1]) !== state.open) { openCall(Number(m[1])); }
  }
  window.addEventListener("hashchange", openFromAddress);

  setInterval(tick, 1000);
  connect();
  openFromAddress();
})();
