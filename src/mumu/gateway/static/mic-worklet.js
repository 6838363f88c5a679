// mumu demo page: the microphone as 16 kHz mono PCM16 frames, resampled in the audio thread.
//
// Input at the context's rate (whatever the device gives: 44.1, 48 kHz ...) is mixed to
// mono, resampled by a windowed-sinc low-pass (Blackman window, 7.2 kHz cut-off, evaluated at
// each output instant) and posted to the page as little-endian Int16 frames of `frame`
// samples. "flush" posts the part-filled frame as the last one ({last: true}) and ends the
// processor. (A plain average of the input samples around each instant dulls 4-8 kHz enough
// that Whisper hears "the man kiss" for "the bank is": tests/gateway/test_demo_live.py.)
"use strict";

const HALF_WIDTH = 16;   // the kernel's reach, in output samples either side
const CUTOFF = 0.45;     // of the output rate (7.2 kHz at 16 kHz)
const RES = 256;         // table points per output sample
const TABLE = new Float32Array(2 * HALF_WIDTH * RES + 2);
for (let i = 0; i < TABLE.length - 1; i++) {
  const t = i / RES - HALF_WIDTH;
  const x = 2 * CUTOFF * t;
  const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
  const w = 0.42 + 0.5 * Math.cos((Math.PI * t) / HALF_WIDTH)
    + 0.08 * Math.cos((2 * Math.PI * t) / HALF_WIDTH);
  TABLE[i] = 2 * CUTOFF * sinc * w;
}

// the low-pass kernel at t output samples from the output instant (|t| <= HALF_WIDTH)
function kernel(t) {
  const u = (t + HALF_WIDTH) * RES;
  const i = Math.floor(u);
  return TABLE[i] + (TABLE[i + 1] - TABLE[i]) * (u - i);
}

class MumuMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate, frame } = options.processorOptions;
    this.step = sampleRate / rate;  // input samples per output sample (sampleRate: global)
    this.reach = this.step === 1 ? 0 : HALF_WIDTH * this.step;  // input samples each side
    this.pos = 0;                    // the next output instant, as an index into this.buf
    this.buf = new Float32Array(0);  // input not yet fully used (mono)
    this.frame = new Int16Array(frame);
    this.n = 0;
    this.running = true;
    this.port.onmessage = (ev) => {
      if (ev.data !== "flush" || !this.running) return;
      this.running = false;
      const last = this.frame.slice(0, this.n);
      this.port.postMessage({ pcm: last.buffer, last: true }, [last.buffer]);
    };
  }

  push(x) {
    const v = x < -1 ? -1 : x > 1 ? 1 : x;
    this.frame[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === this.frame.length) {
      const out = this.frame;
      this.frame = new Int16Array(out.length);
      this.n = 0;
      this.port.postMessage({ pcm: out.buffer, last: false }, [out.buffer]);
    }
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;  // not connected (yet)
    const len = channels[0].length;
    const buf = new Float32Array(this.buf.length + len);
    buf.set(this.buf);
    for (const ch of channels) {
      for (let i = 0; i < len; i++) buf[this.buf.length + i] += ch[i] / channels.length;
    }
    // one output sample per step: the input around it weighted by the low-pass kernel
    while (Math.floor(this.pos + this.reach) < buf.length) {
      const a = Math.max(0, Math.ceil(this.pos - this.reach));
      const b = Math.floor(this.pos + this.reach);
      let sum = 0;
      let weights = 0;
      for (let j = a; j <= b; j++) {
        const h = this.reach ? kernel((j - this.pos) / this.step) : 1;
        sum += buf[j] * h;
        weights += h;
      }
      this.push(sum / weights);
      this.pos += this.step;
    }
    const used = Math.max(0, Math.min(buf.length, Math.ceil(this.pos - this.reach)));
    this.buf = buf.slice(used);
    this.pos -= used;
    return true;
  }
}

registerProcessor("mumu-mic", MumuMic);
