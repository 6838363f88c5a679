// mumu demo page: a session token, one websocket (resumed by cursor), asks by voice or text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  apiKey: null, token: null, renewTimer: null, sessionId: null, ws: null, cursor: 0,
  connected: false, recorder: null, cards: {}, log: [],
};

// stream.ended is an event (the transcribe stage's, with its own cursor), not a control
const CONTROL = new Set(["ready", "accepted", "resumed", "cancelling", "pong", "authenticated",
  "stream.started"]);
const LIVE_CONTROL = new Set(["stream.started", "stream.ended"]);  // live.js handles them
const CLOSE_UNAUTHORIZED = 4401;

function setStatus(text) { $("status").textContent = text; }

async function startSession() {
  const key = $("api-key").value.trim();
  if (!key) { setStatus("Enter a workspace API key first."); return; }
  state.apiKey = key;
  state.sessionId = null;
  try { await newToken(); } catch (e) { setStatus("Session refused: " + e.message); return; }
  state.cursor = 0;
  state.connected = false;
  $("ask").hidden = false;
  connect();
}

// A session token for this page's session (a new session the first time), renewed
// before it expires: the open socket gets it as an "auth" message and stays open.
async function newToken() {
  const resp = await fetch("/api/session", {
    method: "POST",
    headers: { Authorization: "Bearer " + state.apiKey, "Content-Type": "application/json" },
    body: JSON.stringify(state.sessionId ? { session_id: state.sessionId } : {}),
  });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error.message);
  state.token = body.token;
  state.sessionId = body.session_id;
  const left = Date.parse(body.expires_at) - Date.now();
  clearTimeout(state.renewTimer);  // renew with a fifth of its life left (≤ 1 min before)
  state.renewTimer = setTimeout(renew, Math.max(0, left - Math.min(60_000, left / 5)));
}

async function renew() {
  try { await newToken(); } catch (e) { setStatus("Session not renewed: " + e.message); return; }
  // a socket that is not open reconnects with the new token by itself
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    send({ type: "auth", token: state.token });
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = state.token;
  let url = `${proto}//${location.host}/api/ws?token=${encodeURIComponent(token)}`;
  // a reconnect always resumes, from 0 when no event had arrived yet
  if (state.connected) url += `&after=${state.cursor}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
    // renewed while this socket was connecting: give it the new token too
    if (state.token !== token) send({ type: "auth", token: state.token });
    setStatus(`Connected — session ${state.sessionId}`);
  };
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = async (ev) => {
    if (state.ws !== ws) return;
    if (ev.code === CLOSE_UNAUTHORIZED) {  // the token expired on the open socket
      setStatus("Session token expired; renewing and resuming…");
      try { await newToken(); } catch (e) { setStatus("Session ended: " + e.message); return; }
    } else {
      setStatus(`Disconnected (${ev.code}); reconnecting and resuming…`);
    }
    setTimeout(connect, 1000);  // resumes after the cursor: nothing lost, nothing twice
  };
}

function card(requestId) {
  if (state.cards[requestId]) return state.cards[requestId];
  const el = document.createElement("article");
  el.className = "request";
  el.dataset.requestId = requestId;
  el.innerHTML = `<div class="meta"></div>
    <div class="label">Transcript</div><div class="transcript partial"></div>
    <div class="label">Answer</div><div class="answer"></div><div class="error"></div>`;
  el.querySelector(".meta").textContent = "request " + requestId;
  $("requests").prepend(el);
  const c = { el, partial: [], answer: "" };
  state.cards[requestId] = c;
  return c;
}

function onMessage(m) {
  state.log.push(`${m.cursor} ${m.type}`);
  if (state.log.length > 100) state.log.shift();
  // resume from the highest cursor of an EVENT received (control messages only echo it)
  const control = CONTROL.has(m.type) || (m.type === "error" && m.stage === "gateway");
  if (!control && typeof m.cursor === "number" && m.cursor > state.cursor) {
    state.cursor = m.cursor;
  }
  liveMessage(m);
  if (LIVE_CONTROL.has(m.type)) return;
  if (!m.request_id) {
    if (m.type === "error") setStatus("Error: " + m.message);
    return;
  }
  const c = card(m.request_id);
  const transcript = c.el.querySelector(".transcript");
  const answer = c.el.querySelector(".answer");
  switch (m.type) {
    case "accepted":
      transcript.textContent = m.bytes ? "(listening to your audio…)" : "";
      break;
    case "transcript.partial":
      if (c.final) break;  // a late partial never overwrites the final
      if (m.stream_id) {   // live: the utterance so far, committed then tentative
        showLive(c, transcript, m);
        break;
      }
      c.partial[m.segment.id] = m.segment.text;
      transcript.textContent = c.partial.join("");
      break;
    case "transcript.final":
      c.final = true;
      if (m.stream_id) liveMeta(c, m);
      transcript.classList.remove("partial");
      transcript.textContent = m.text;
      break;
    case "answer.delta":
      if (m.restart) c.answer = "";
      c.answer += m.text;
      answer.textContent = c.answer;
      break;
    case "answer.final":
      if (!c.el.querySelector(".transcript").textContent) transcript.textContent = m.question;
      transcript.classList.remove("partial");
      answer.textContent = m.text;
      c.el.classList.add("done");
      break;
    case "error":
      c.el.querySelector(".error").textContent = `${m.stage || "gateway"}: ${m.message}`;
      break;
  }
}

function liveMeta(c, m) {
  c.el.querySelector(".meta").textContent =
    `live utterance ${m.utterance ?? "?"} — request ${m.request_id}`;
}

// committed words in normal weight (never taken back), the tentative rest greyed
function showLive(c, transcript, m) {
  liveMeta(c, m);
  const committed = document.createElement("span");
  committed.className = "committed";
  committed.textContent = m.committed || "";
  const tentative = document.createElement("span");
  tentative.className = "tentative";
  tentative.textContent = (m.committed && m.tentative ? " " : "") + (m.tentative || "");
  transcript.classList.add("live");
  transcript.replaceChildren(committed, tentative);
}

function send(obj) { state.ws.send(JSON.stringify(obj)); }

async function toggleRecording() {
  const button = $("record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const mime = MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
  const recorder = new MediaRecorder(stream, mime ? { mimeType: mime } : {});
  state.recorder = recorder;
  recorder.ondataavailable = async (ev) => {
    if (ev.data.size) state.ws.send(await ev.data.arrayBuffer());
  };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    // the last dataavailable fires before stop; give its send a tick
    setTimeout(() => send({ type: "audio.end", format: "webm" }), 50);
    state.recorder = null;
    button.classList.remove("on");
    button.textContent = "● Record";
  };
  recorder.start(250);
  button.classList.add("on");
  button.textContent = "■ Stop";
}

async function uploadFile(file) {
  const data = await file.arrayBuffer();
  const chunk = 256 * 1024;
  for (let i = 0; i < data.byteLength; i += chunk) state.ws.send(data.slice(i, i + chunk));
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  send({ type: "audio.end", format: ext });
}

async function loadHistory() {
  const resp = await fetch(`/api/sessions/${state.sessionId}/history`, {
    headers: { Authorization: "Bearer " + state.token },
  });
  const body = await resp.json();
  const list = $("history-items");
  list.replaceChildren();
  $("history").hidden = false;
  if (!resp.ok) { list.textContent = body.error.message; return; }
  for (const item of body.items) {
    const li = document.createElement("li");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = item.kind;
    const text = item.kind === "answer" && item.question
      ? `${item.question} → ${item.text}` : item.text;
    li.append(kind, document.createTextNode(text));
    list.append(li);
  }
}

$("start").onclick = startSession;
$("record").onclick = toggleRecording;
$("upload").onchange = (ev) => { if (ev.target.files[0]) uploadFile(ev.target.files[0]); };
$("load-history").onclick = loadHistory;
$("text-form").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (text) { send({ type: "ask", text }); $("text").value = ""; }
};
