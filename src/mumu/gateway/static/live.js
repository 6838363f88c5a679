// mumu demo page, live mode: the microphone streamed over the page's websocket as 16 kHz
// PCM16 frames ("stream.start" ... binary frames ... "stream.end"); the server's partials,
// finals and answers arrive as events and app.js shows them, each utterance as a request.
//
// Push-to-talk: hold the button (or Space / Enter on it) while speaking; letting go ends the
// stream, and its last utterance is final at once. Hands-free: a click starts listening and
// the server's voice activity detection ends each utterance; a second click stops.
"use strict";

const LIVE_RATE = 16000;    // what the server takes: 16 kHz mono little-endian PCM16
const FRAME_MS = 100;       // audio per websocket frame

const live = {
  phase: "idle",            // idle | opening | live | closing
  stopWanted: false,        // let go (or clicked) while still opening
  ws: null, media: null, ctx: null, node: null,
  started: false,           // the server's "stream.started" arrived
  flushed: false,           // the worklet's last frame arrived
  streamId: null, pending: [],
  captured: 0,              // samples captured since the start (audio position)
  sent: 0,                  // samples sent
};

function liveStatus(text) { $("live-status").textContent = text; }
function handsFree() { return $("hands-free").checked; }

function liveButton() {
  const button = $("talk");
  const on = live.phase === "opening" || live.phase === "live";
  button.classList.toggle("on", on);
  if (on) button.textContent = handsFree() ? "■ Stop listening" : "● Listening — let go to send";
  else button.textContent = handsFree() ? "◉ Start listening" : "◉ Hold to talk";
}

async function liveStart() {
  if (live.phase !== "idle") return;
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    liveStatus("Not connected.");
    return;
  }
  Object.assign(live, {
    phase: "opening", stopWanted: false, ws: state.ws, started: false, flushed: false,
    streamId: null, pending: [], captured: 0, sent: 0,
  });
  liveButton();
  try {
    // the raw microphone: Whisper copes with noise better than with a noise suppressor's
    // artefacts or an automatic gain's pumping, and the page plays nothing to cancel
    live.media = await navigator.mediaDevices.getUserMedia({ audio: {
      channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false,
    } });
    live.ctx = new AudioContext();
    await live.ctx.audioWorklet.addModule("/static/mic-worklet.js");
    live.node = new AudioWorkletNode(live.ctx, "mumu-mic");
  } catch (e) {
    liveAbort("Microphone unavailable: " + e.message);
    return;
  }
  const resampler = new Resampler(live.ctx.sampleRate, LIVE_RATE, (LIVE_RATE * FRAME_MS) / 1000,
                                  onFrame);
  live.node.port.onmessage = (ev) => {
    resampler.write(ev.data.samples);
    if (ev.data.last) resampler.flush();
  };
  // the node writes no output: connected to the destination only so that it is pulled
  live.ctx.createMediaStreamSource(live.media).connect(live.node).connect(live.ctx.destination);
  await live.ctx.resume();
  if (live.ws !== state.ws || live.ws.readyState !== WebSocket.OPEN) {
    liveAbort("The connection dropped; no live stream.");
    return;
  }
  live.phase = "live";
  const start = { type: "stream.start", format: "pcm16", sample_rate: LIVE_RATE };
  if ($("language").value) start.language = $("language").value;
  live.ws.send(JSON.stringify(start));
  liveStatus("Listening…");
  liveButton();
  if (live.stopWanted) liveStop();
}

function onFrame(pcm, last) {
  if (live.phase === "idle") return;
  if (live.ws !== state.ws || live.ws.readyState !== WebSocket.OPEN) {
    liveAbort("The connection dropped; the live stream ended.");
    return;
  }
  live.captured += pcm.byteLength / 2;
  if (live.started) sendFrame(pcm); else live.pending.push(pcm);
  if (last) {
    live.flushed = true;
    if (live.started) finish();  // else on "stream.started"
  } else if (live.phase === "live") {
    liveStatus(`Listening… ${(live.captured / LIVE_RATE).toFixed(1)} s`);
  }
}

function sendFrame(pcm) {
  if (pcm.byteLength) live.ws.send(pcm);
  live.sent += pcm.byteLength / 2;
}

// the last frame is out: end the stream and release the microphone
function finish() {
  live.ws.send(JSON.stringify({ type: "stream.end" }));
  liveStatus(`Sent ${(live.sent / LIVE_RATE).toFixed(1)} s of audio.`);
  release();
}

function liveStop() {
  if (live.phase === "opening") { live.stopWanted = true; return; }
  if (live.phase !== "live") return;
  live.phase = "closing";
  liveButton();
  live.node.port.postMessage("flush");  // the worklet answers with the last frame
}

function release() {
  if (live.media) live.media.getTracks().forEach((t) => t.stop());
  if (live.ctx) live.ctx.close();
  Object.assign(live, { phase: "idle", media: null, ctx: null, node: null, pending: [] });
  liveButton();
}

function liveAbort(reason) {
  liveStatus(reason);
  release();
}

// the errors that refuse or end a live stream (docs/audio.md, "Websocket and Realtime")
const LIVE_ERRORS = new Set([
  "unsupported_audio", "busy", "too_long", "stream_timeout", "too_many_uploads", "overloaded",
]);

// every message of the socket goes through here first (called by app.js)
function liveMessage(m) {
  const ours = live.phase !== "idle";
  if (m.type === "stream.started" && ours && !live.started) {
    live.started = true;
    live.streamId = m.stream_id;
    for (const pcm of live.pending) sendFrame(pcm);
    live.pending = [];
    if (live.flushed) finish();
  } else if (m.type === "stream.ended") {
    const seconds = typeof m.seconds === "number" ? ` after ${m.seconds.toFixed(1)} s` : "";
    const text = `Stream ended${seconds}` + (m.reason === "end" ? "." : ` (${m.reason}).`);
    if (ours && m.stream_id === live.streamId) liveAbort(text);  // ended by the server
    else if (!ours) liveStatus(text);
  } else if (m.type === "error" && ours && LIVE_ERRORS.has(m.code)) {
    liveAbort(`Live stream: ${m.message}`);
  }
}

const talk = $("talk");
talk.addEventListener("pointerdown", (ev) => {
  if (handsFree() || ev.button !== 0) return;
  talk.setPointerCapture(ev.pointerId);
  liveStart();
});
for (const end of ["pointerup", "pointercancel"]) {
  talk.addEventListener(end, () => { if (!handsFree()) liveStop(); });
}
talk.addEventListener("keydown", (ev) => {
  if ((ev.key === " " || ev.key === "Enter") && !ev.repeat && !handsFree()) {
    ev.preventDefault();
    liveStart();
  }
});
talk.addEventListener("keyup", (ev) => {
  if ((ev.key === " " || ev.key === "Enter") && !handsFree()) liveStop();
});
talk.addEventListener("click", () => {
  if (!handsFree()) return;
  if (live.phase === "idle") liveStart(); else liveStop();
});
$("hands-free").addEventListener("change", () => { liveStop(); liveButton(); });
