// mumu demo page: the microphone as 16 kHz mono PCM16 frames, resampled in the audio thread.
//
// Input at the context's rate (whatever the device gives: 44.1, 48 kHz ...) is mixed to
// mono, low-passed by averaging the input samples around each output instant (a box filter
// one output period wide, enough for speech going to Whisper) and posted to the page as
// little-endian Int16 frames of `frame` samples. "flush" posts the part-filled frame as the
// last one ({last: true}) and ends the processor.
"use strict";

class MumuMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate, frame } = options.processorOptions;
    this.step = sampleRate / rate;  // input samples per output sample (sampleRate: global)
    this.half = this.step / 2;
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
    // one output sample per step: the mean of the input samples within half a step of it
    while (Math.floor(this.pos + this.half) < buf.length) {
      const a = Math.max(0, Math.ceil(this.pos - this.half));
      const b = Math.floor(this.pos + this.half);
      let sum = 0;
      for (let j = a; j <= b; j++) sum += buf[j];
      this.push(sum / (b - a + 1));
      this.pos += this.step;
    }
    const used = Math.max(0, Math.min(buf.length, Math.ceil(this.pos - this.half)));
    this.buf = buf.slice(used);
    this.pos -= used;
    return true;
  }
}

registerProcessor("mumu-mic", MumuMic);
