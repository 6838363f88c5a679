// mumu demo page: microphone samples at the device's rate to 16 kHz PCM16 frames.
//
// Input at the audio context's rate (44.1, 48 kHz ...) is resampled by a windowed-sinc
// low-pass (Blackman window, 7.2 kHz cut-off, evaluated at each output instant) into
// little-endian Int16 frames of `frame` samples. It runs on the page's thread, not the audio
// thread: a late page only delays frames, a late audio thread loses audio. (A plain average
// of the input samples around each instant dulls 4-8 kHz enough that Whisper hears "the man
// kiss" for "the bank is": tests/gateway/test_demo_live.py.)
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

class Resampler {
  // onFrame(buffer, last): each frame's ArrayBuffer; flush() sends the part-filled last one
  constructor(inRate, outRate, frame, onFrame) {
    this.step = inRate / outRate;   // input samples per output sample
    this.reach = this.step === 1 ? 0 : HALF_WIDTH * this.step;  // input samples each side
    this.pos = 0;                    // the next output instant, as an index into this.buf
    this.buf = new Float32Array(0);  // input not yet fully used
    this.frame = new Int16Array(frame);
    this.n = 0;
    this.onFrame = onFrame;
  }

  push(x) {
    const v = x < -1 ? -1 : x > 1 ? 1 : x;
    this.frame[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === this.frame.length) {
      const out = this.frame;
      this.frame = new Int16Array(out.length);
      this.n = 0;
      this.onFrame(out.buffer, false);
    }
  }

  flush() {
    this.onFrame(this.frame.slice(0, this.n).buffer, true);
  }

  write(samples) {
    const buf = new Float32Array(this.buf.length + samples.length);
    buf.set(this.buf);
    buf.set(samples, this.buf.length);
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
  }
}
