"""Regenerate the audio test data with espeak-ng + sox (+ PyAV for the compressed formats).

Run from the repository root: ``python tests/data/make_data.py``. The output is committed;
tests never regenerate it. Every speech clip is 16 kHz mono and has a reference text in
``references.json``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).parent
SPEECH = HERE / "speech"
BAD = HERE / "bad"
OPTIONS = HERE / "options"
NAME_SENTENCE = "Our new colleague Kathryn Nguyen starts on Monday."
"""Whisper base writes "Catherine" unless the initial prompt spells the name."""

ENGLISH = {
    "en01": "The quick brown fox jumps over the lazy dog.",
    "en02": "Please send the quarterly report to the finance team by Friday.",
    "en03": "The weather today is sunny with a light breeze from the west.",
    "en04": "My favourite book is about a boy who learns to sail across the ocean.",
    "en05": "Can you tell me how many people live in the capital city?",
    "en06": "We will meet at the train station at nine o'clock tomorrow morning.",
    "en07": "The doctor said I should drink more water and sleep eight hours.",
    "en08": "Turn left at the second traffic light and the bank is on your right.",
}
LONG = (
    "Good morning everyone, and thank you for joining this meeting. "
    "Today we will talk about the new project, the budget for next year, and the plan for "
    "hiring. First, the project. The team has finished the design and the first version of "
    "the software is ready for testing. We expect to release it to our customers in the "
    "spring. Second, the budget. We have asked for more money for travel and for training, "
    "because many people want to learn new skills. Third, hiring. We need two more engineers "
    "and one designer. If you know someone who would like to work with us, please send me "
    "their name. Finally, I want to thank all of you for your hard work this year. "
    "The results are very good, and our customers are happy. Let us keep going. "
    "Next week we will share the full plan with every team, and we will ask for your "
    "ideas. Are there any questions before we finish?"
)
SHORT = {
    "q01": "What is two plus two?",
    "q02": "Where is Paris?",
    "q03": "Who wrote Hamlet?",
    "q04": "How tall is a giraffe?",
}
"""Short questions (about 1.5 s) for the load, chaos and cluster runs: the product's own
path at a cost two cores can carry a thousand times."""
LOAD = HERE / "load"
OTHER = {
    "de01": ("de", "Guten Morgen, wie geht es dir heute? Ich habe heute viel Arbeit im Büro."),
    "fr01": ("fr", "Bonjour, je voudrais réserver une table pour deux personnes ce soir."),
}


def speak(text: str, voice: str, out: Path, speed: int = 150) -> None:
    """espeak-ng at 22.05 kHz, then sox to 16 kHz mono 16-bit with a little silence padding."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True
        )
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out),
             "pad", "0.3", "0.3"],
            check=True,
        )


def transcode(src: Path, dst: Path, container: str, codec: str, rate: int) -> None:
    """Re-encode ``src`` with PyAV (mp3, ogg/opus, webm/opus, m4a/aac)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)  # type: ignore[union-attr]
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                for packet in stream.encode(f):  # type: ignore[union-attr,arg-type]
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):  # type: ignore[union-attr,arg-type]
                out.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            out.mux(packet)


def png_image(width: int = 16, height: int = 16) -> bytes:
    """A complete, valid RGB PNG (a colour gradient), built with zlib and struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\0" + bytes(v for x in range(width) for v in (x * 16, y * 16, 128))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def option_clips() -> None:
    """Clips whose transcript visibly depends on a per-request option (prompt, VAD)."""
    OPTIONS.mkdir(exist_ok=True)
    speak(NAME_SENTENCE, "en-us", OPTIONS / "name.wav")
    with tempfile.TemporaryDirectory() as tmp:
        silence = Path(tmp) / "silence.wav"
        subprocess.run(
            ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "6"],
            check=True,
        )
        # 6 s of silence, then en03: without VAD Whisper starts the segment at 0 s
        subprocess.run(
            ["sox", str(silence), str(SPEECH / "en03.wav"), str(OPTIONS / "late_start.flac")],
            check=True,
        )


def bad_files(src: Path) -> None:
    """Bad files, each with the code ingest must give, and a file cut mid-data (valid)."""
    wav = src.read_bytes()
    (BAD / "truncated_header.wav").write_bytes(wav[:30])  # cut inside the RIFF header
    # cut in the middle of the sample data: decodes to the first half (a cut-off upload)
    (HERE / "formats" / "en01_truncated.wav").write_bytes(wav[: len(wav) // 2 + 1])
    (BAD / "random.wav").write_bytes(np.random.default_rng(7).bytes(4096))
    (BAD / "image.wav").write_bytes(png_image())  # a real PNG, named .wav
    (BAD / "zero.wav").write_bytes(b"")
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(BAD / "silence.wav"),
         "trim", "0", "2"],
        check=True,
    )
    bad = {
        "truncated_header.wav": "unsupported_audio",
        "random.wav": "unsupported_audio",
        "image.wav": "unsupported_audio",
        "zero.wav": "empty_audio",
        "silence.wav": "empty_audio",
    }
    (BAD / "expected.json").write_text(json.dumps(bad, indent=2) + "\n")


def load_clips() -> None:
    LOAD.mkdir(exist_ok=True)
    for name, text in SHORT.items():
        speak(text, "en-us", LOAD / f"{name}.wav", speed=175)


def main() -> None:
    load_clips()
    SPEECH.mkdir(parents=True, exist_ok=True)
    BAD.mkdir(parents=True, exist_ok=True)
    refs: dict[str, dict[str, str]] = {}
    for name, text in ENGLISH.items():
        speak(text, "en-us", SPEECH / f"{name}.wav")
        refs[f"{name}.wav"] = {"language": "en", "text": text}
    speak(LONG, "en-us", SPEECH / "long_en.wav", speed=140)
    subprocess.run(
        ["sox", str(SPEECH / "long_en.wav"), str(SPEECH / "long_en.flac")], check=True
    )
    (SPEECH / "long_en.wav").unlink()
    refs["long_en.flac"] = {"language": "en", "text": LONG}
    for name, (lang, text) in OTHER.items():
        speak(text, lang, SPEECH / f"{name}.wav")
        refs[f"{name}.wav"] = {"language": lang, "text": text}

    # the same sentence in every container a producer may send
    src = SPEECH / "en01.wav"
    formats = {
        "en01.flac": ("flac", "flac", 16000),
        "en01.mp3": ("mp3", "libmp3lame", 16000),
        "en01.ogg": ("ogg", "libopus", 48000),
        "en01.webm": ("webm", "libopus", 48000),
        "en01.m4a": ("ipod", "aac", 16000),
    }
    formats_dir = HERE / "formats"
    formats_dir.mkdir(exist_ok=True)
    for name, (container, codec, rate) in formats.items():
        transcode(src, formats_dir / name, container, codec, rate)
    # 1 channel, 8 kHz: valid, must still work
    subprocess.run(
        ["sox", str(src), "-r", "8000", "-c", "1", str(formats_dir / "en01_8k.wav")], check=True
    )

    bad_files(src)
    option_clips()
    (SPEECH / "references.json").write_text(
        json.dumps(refs, indent=2, ensure_ascii=False) + "\n"
    )


if __name__ == "__main__":
    os.chdir(HERE.parent.parent)
    main()
