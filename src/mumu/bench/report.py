"""The README's benchmark table, rendered from ``benchmarks/results/*.json``.

``mumu bench report --readme README.md`` rewrites the section between the
``<!-- benchmarks -->`` markers; a test fails when the README and the files disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKERS = ("<!-- benchmarks -->\n", "<!-- /benchmarks -->")
Row = tuple[str, str, str, str]


def _yes(ok: object) -> str:
    return "**met**" if ok else "**not met**"


def _runtime(d: dict[str, Any]) -> list[Row]:
    m, r, f = d["mumu_runtime"], d["raw_nats_py"], d["faststream"]
    return [
        (
            "runtime: 3-hop pass-through, 20k events",
            f"{m['throughput_events_per_s']:.0f} ev/s vs raw nats-py "
            f"{r['throughput_events_per_s']:.0f} (FastStream "
            f"{f['throughput_events_per_s']:.0f}, {d['faststream_throughput_ratio']}x)",
            f"{d['throughput_ratio']}x (floor 0.7)",
            _yes(d["throughput_ratio"] >= d["floor"]["throughput_ratio"]),
        ),
        (
            "runtime: p99 per hop at half peak",
            f"{m['per_hop_ms']['p99']} ms (p50 {m['per_hop_ms']['p50']} ms; raw "
            f"{r['per_hop_ms']['p99']} ms)",
            "≤ 20 ms",
            _yes(m["per_hop_ms"]["p99"] <= d["floor"]["p99_per_hop_ms"]),
        ),
    ]


def _runtime_secure(d: dict[str, Any]) -> list[Row]:
    s, p = d["secure"], d["plain"]
    low, high = d["throughput_ratio_min_max"]
    return [
        (
            f"runtime: 3 hops, {d['events'] // 1000}k events, nkey users + permissions + "
            "mutual TLS vs anonymous plaintext",
            f"{s['throughput_events_per_s']:.0f} vs {p['throughput_events_per_s']:.0f} ev/s; "
            f"p99 per hop {s['per_hop_ms']['p99']} vs {p['per_hop_ms']['p99']} ms "
            f"({d['p99_ratio']}x); CPU per event {s['cpu_us_per_event']['total']:.0f} vs "
            f"{p['cpu_us_per_event']['total']:.0f} µs ({d['cpu_ratio']}x)",
            f"{d['throughput_ratio']}x (floor {d['floor']['throughput_ratio']}; median of "
            f"{d['rounds']} rounds, {low}-{high})",
            _yes(d["meets_floor"]),
        ),
    ]


def _transcribe(d: dict[str, Any]) -> list[Row]:
    seq, conc = d["sequential"], d["concurrent"]
    mb = d.get("micro_batching", {})
    return [
        (
            "transcribe: pipeline vs faster-whisper in-process, sequential",
            f"RTF {seq['pipeline']['real_time_factor']} vs {seq['direct']['real_time_factor']}",
            f"{seq['throughput_ratio']}x (floor 0.95)",
            _yes(seq["throughput_ratio"] >= 0.95),
        ),
        (
            "transcribe: same, concurrency 4",
            f"RTF {conc['pipeline']['real_time_factor']} vs {conc['direct']['real_time_factor']}",
            f"{conc['throughput_ratio']}x (floor 0.95)",
            _yes(conc["throughput_ratio"] >= 0.95),
        ),
        (
            "transcribe: time the pipeline adds outside the model",
            f"p50 {seq['outside_model_ms']['p50']} ms, p99 {seq['outside_model_ms']['p99']} ms",
            "p50 ≤ 30 ms",
            _yes(seq["outside_model_ms"]["p50"] <= 30),
        ),
        (
            "transcribe: micro-batching (CPU, concurrency 4)",
            f"{mb.get('speedup_vs_unbatched_pipeline', '—')}x the unbatched pipeline",
            "—",
            "measured",
        ),
    ]


def _reason(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "reason: first delta at the client vs first token from the backend",
            f"{d['mumu_first_delta_ms']['p50']} ms vs {d['direct_first_token_ms']['p50']} ms (p50)",
            f"overhead p50 {d['overhead_ms']['p50']} ms (≤ 15 ms)",
            _yes(d["met"]),
        ),
    ]


def _persist(d: dict[str, Any]) -> list[Row]:
    wp, r = d["write_path"], d["rows_per_s"]
    return [
        (
            "persist: stage end to end vs plain nats-py + asyncpg (executemany) consumer",
            f"{r['mumu']:.0f} vs {r['plain']:.0f} rows/s ({d['ratio_vs_plain_unnest']}x a plain "
            f"consumer using the stage's own unnest inserts, {r['plain_unnest']:.0f} rows/s)",
            f"{d['ratio']}x (floor 0.8; rounds {d['ratio_min_max'][0]}-"
            f"{d['ratio_min_max'][1]})",
            _yes(d["floor_met"]),
        ),
        (
            "persist: encrypted + RLS writes vs plain asyncpg inserts (no NATS)",
            f"{wp['rows_per_s']['mumu']:.0f} vs {wp['rows_per_s']['plain']:.0f} rows/s "
            f"({wp['ratio_vs_plain_unnest']}x plain unnest inserts)",
            f"{wp['ratio']}x (floor 0.8; rounds {wp['ratio_min_max'][0]}-"
            f"{wp['ratio_min_max'][1]})",
            _yes(wp["floor_met"]),
        ),
    ]


def _gateway(d: dict[str, Any]) -> list[Row]:
    m, b = d["mumu"], d["baseline"]
    return [
        (
            f"gateway: {d['sessions']} websockets, publish → client",
            f"p50 {m['latency']['p50_ms']} ms, p99 {m['latency']['p99_ms']} ms at "
            f"{d['rate']:.0f} msg/s",
            "p99 ≤ 50 ms",
            _yes(d["met"]["p99"]),
        ),
        (
            "gateway: message rate vs bare aiohttp echo",
            f"{m['throughput']['rate_per_s']:.0f} vs {b['throughput']['rate_per_s']:.0f} msg/s; "
            f"{m['memory_per_connection_kib']} vs {b['memory_per_connection_kib']} KiB/connection",
            f"{d['rate_ratio']}x (floor {d['floor']['rate_ratio']}, no round below "
            f"{d['floor'].get('rate_ratio_round', d['floor']['rate_ratio'])}; median of "
            f"{d.get('rounds', 1)} rounds, {d['rate_ratio_min_max'][0]}-"
            f"{d['rate_ratio_min_max'][1]})",
            _yes(d["met"]["rate"]),
        ),
    ]


def _replay(d: dict[str, Any]) -> list[Row]:
    read, pub, floor = d["dry_run_read"], d["to_stage_republish"], d["floor"]
    n = f"{d['messages'] // 1000}k"
    return [
        (
            f"replay: --dry-run read of {n} stored messages vs a raw nats-py ordered consumer",
            f"{read['mumu']['msgs_per_s']} vs {read['raw_nats_py']['msgs_per_s']} msg/s",
            f"{read['ratio']}x (floor {floor['ratio']}, and ≥ "
            f"{floor['read_msgs_per_s']:.0f} msg/s; rounds {read['ratio_min_max'][0]}-"
            f"{read['ratio_min_max'][1]})",
            _yes(d["met"]["read_ratio"] and d["met"]["read_rate"]),
        ),
        (
            f"replay: --to-stage republish of {n} (read + publish) vs raw pipelined publishing",
            f"{pub['mumu']['msgs_per_s']} vs {pub['raw_nats_py']['msgs_per_s']} msg/s",
            f"{pub['ratio']}x (floor {floor['ratio']}; rounds {pub['ratio_min_max'][0]}-"
            f"{pub['ratio_min_max'][1]})",
            _yes(d["met"]["republish_ratio"]),
        ),
    ]


def _cluster(d: dict[str, Any]) -> list[Row]:
    t, n = d["throughput_asks_per_s"], d["requests"]
    killed = ", ".join(f"{f['stream']} ({f['killed']}, {f['finals_while_down']} answers "
                       "while it was down)" for f in d["faults"])
    return [
        (
            "cluster: 3 nodes, text asks through the whole pipeline, streams at R3 vs R1",
            f"{t['r3']} vs {t['r1']} asks/s",
            f"{t['r3_over_r1']}x (recorded; no floor)",
            "recorded",
        ),
        (
            f"cluster: {n['sent']} mixed asks, leader of {killed} killed and restarted",
            f"lost {n['lost']}, duplicated {n['duplicated']}, finals to clients "
            f"{n['finals_to_clients']}/{n['sent']}",
            "0 lost, 0 duplicated, every final",
            _yes(n["lost"] == 0 and n["duplicated"] == 0
                 and n["finals_to_clients"] == n["sent"]),
        ),
    ]


def _ms(d: dict[str, Any]) -> str:
    return "—" if d.get("p50") is None else f"{d['p50']:.0f} ms"


def _live(d: dict[str, Any]) -> list[Row]:
    ptt, up, met = d["push_to_talk"], d["upload"], d["met"]
    hf, w, cap = d["hands_free"]["speech_end_to_final_ms"], d["wer_percent"], d["capacity"]
    return [
        (
            f"live ({d['driver']}): push-to-talk stream.end → transcript.final / → first "
            "answer delta (p50)",
            f"{_ms(ptt['stream_end_to_final_ms'])} / "
            f"{_ms(ptt['stream_end_to_first_delta_ms'])}; upload path upload → first delta "
            f"{_ms(up['upload_to_first_delta_ms'])}",
            "≤ 400 ms / ≤ 700 ms",
            _yes(met["ptt_final"] and met["ptt_first_delta"]),
        ),
        (
            "live: hands-free end of speech → final; a word's end → committed (p50)",
            f"{_ms(hf)} (silence {d['silence_s']} s); {_ms(d['word_commit_ms'])}",
            "≤ silence + 400 ms; ≤ 1,500 ms",
            _yes(met["hands_free"] and met["word_commit"]),
        ),
        (
            "live: WER of live finals vs whole-file; concurrent real-time streams",
            f"{w['live']} % vs {w['whole_file']} %; {cap['streams_kept_up']} streams kept up",
            "≤ +2 points; ≥ 2 streams",
            _yes(met["wer"] and met["capacity"]),
        ),
    ]


COMMANDS = {"runtime-secure": "mumu bench runtime --secure",
            "cluster": "MUMU_RECORD_RESULTS=1 pytest tests/cluster/test_failover.py"}
"""What writes a result whose name is not its `mumu bench` command's."""

SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "runtime": _runtime,
    "runtime-secure": _runtime_secure,
    "transcribe": _transcribe,
    "reason": _reason,
    "persist": _persist,
    "gateway": _gateway,
    "replay": _replay,
    "cluster": _cluster,
    "live": _live,
}


def table(results: Path) -> str:
    lines = [
        "| benchmark | mumu vs baseline (same run) | ratio / bound | floor |",
        "|---|---|---|---|",
    ]
    for name, summarise in SUMMARIES.items():
        path = results / f"{name}.json"
        if not path.exists():
            command = COMMANDS.get(name, f"mumu bench {name}")
            lines.append(f"| {name} | not run yet (`{command}`) | — | — |")
            continue
        data = json.loads(path.read_text())
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summarise(data)]
        lines.append(f"| | *benchmarks/results/{path.name}, {data['when']}* | | |")
    return "\n".join(lines) + "\n"


def with_table(readme: str, results: Path) -> str:
    start, end = MARKERS
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}{table(results)}{end}{tail}"
