// mumu demo page: the microphone's samples, mixed to mono, posted to the page in blocks.
//
// The audio thread only copies (resampler.js resamples on the page's thread). "flush"
// posts the part-filled block as the last one ({last: true}) and ends the processor.
"use strict";

const BLOCK = 2048;  // samples per message (about 45 ms at 44.1 kHz)

class MumuMic extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.n = 0;
    this.running = true;
    this.port.onmessage = (ev) => {
      if (ev.data !== "flush" || !this.running) return;
      this.running = false;
      const last = this.block.slice(0, this.n);
      this.port.postMessage({ samples: last, last: true }, [last.buffer]);
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;  // not connected (yet)
    const len = channels[0].length;
    for (let i = 0; i < len; i++) {
      let x = 0;
      for (const ch of channels) x += ch[i];
      this.block[this.n++] = x / channels.length;
      if (this.n === BLOCK) {
        const out = this.block;
        this.block = new Float32Array(BLOCK);
        this.n = 0;
        this.port.postMessage({ samples: out, last: false }, [out.buffer]);
      }
    }
    return true;
  }
}

registerProcessor("mumu-mic", MumuMic);
