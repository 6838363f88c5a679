#!/usr/bin/env python3
"""Send an audio file to mumu with plain nats-py and print the transcript as it arrives.

Nothing from mumu is imported: this is what any upstream producer does.

    python examples/producer_nats_py.py --server nats://127.0.0.1:4222 --workspace <ws> \
        --creds .mumu/credentials/<ws>.nk meeting.m4a

``--creds`` is the workspace's producer credentials (an nkey seed file, from `mumu up`
or `mumu workspace credentials <ws> --out FILE`). The connection uses the inbox prefix
``_INBOX.<ws>``: the only inbox a producer of that workspace may read, so its PubAcks
arrive there and nobody else's traffic does.

Files that fit in one NATS message (the server's max_payload, 1 MiB by default) travel
as the message body. Bigger files (or ``--object``) are put into the workspace's own
Object Store bucket ``mumu-upload-<workspace>`` first, and the message carries only
headers, ``Mumu-Audio-Object`` naming the object (ingest deletes it once it is processed).

A workspace nobody created has no intake stream: the publish fails at once with "no
response from stream" (exit 4); `mumu workspace create` makes the stream and the bucket.
"""

# ruff: noqa: T201 - a command-line example prints its results

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
import uuid
from pathlib import Path

import nats
import nats.js.errors

HEADER_ROOM = 4096  # headers travel in the same message as the body


async def main(args: argparse.Namespace) -> int:
    nc = await nats.connect(
        args.server, nkeys_seed=str(args.creds), inbox_prefix=f"_INBOX.{args.workspace}"
    )
    js = nc.jetstream()
    ws, request_id = args.workspace, args.request_id or str(uuid.uuid4())
    data = args.file.read_bytes()
    headers = {
        "Content-Type": mimetypes.guess_type(args.file.name)[0] or "application/octet-stream",
        "Mumu-Session": args.session,
        "Mumu-Request-Id": request_id,
        "Nats-Msg-Id": f"{ws}.{request_id}",  # a re-send is dropped as a duplicate
    }
    if args.language:
        headers["Mumu-Language"] = args.language
    if args.word_timestamps:
        headers["Mumu-Word-Timestamps"] = "true"

    done = asyncio.get_running_loop().create_future()

    async def on_result(msg: nats.aio.msg.Msg) -> None:
        event = json.loads(msg.data)
        if event.get("request_id") != request_id:
            return
        kind = msg.subject.split(".")[1:3]
        if kind == ["transcript", "partial"]:
            seg = event["segment"]
            print(f"[{seg['start']:7.2f} → {seg['end']:7.2f}] {seg['text']}", flush=True)
        elif not done.done() and (kind == ["transcript", "final"] or kind[0] == "error"):
            done.set_result(event)

    # subscribe before publishing so nothing is missed
    for prefix in ("mumu.transcript.partial", "mumu.transcript.final", "mumu.error"):
        await nc.subscribe(f"{prefix}.{ws}", cb=on_result)

    subject = f"mumu.ingest.audio.{ws}"
    try:
        if args.object or len(data) + HEADER_ROOM > nc.max_payload:
            store = await js.object_store(f"mumu-upload-{ws}")  # this workspace's bucket
            name = f"{request_id}{args.file.suffix}"
            await store.put(name, data)
            headers["Mumu-Audio-Object"] = name
            ack = await js.publish(subject, b"", headers=headers)
            print(f"uploaded {len(data)} bytes as object {name}; stream seq {ack.seq}",
                  flush=True)
        else:
            ack = await js.publish(subject, data, headers=headers)
            print(f"published {len(data)} bytes; stream seq {ack.seq}", flush=True)
    except (nats.js.errors.NoStreamResponseError, nats.js.errors.BucketNotFoundError) as exc:
        print(f"workspace {ws} has no intake stream or upload bucket ({exc}): "
              "create it with `mumu workspace create`", file=sys.stderr)
        await nc.drain()
        return 4

    try:
        result = await asyncio.wait_for(done, args.timeout)
    except TimeoutError:
        print("no result in time: is `mumu up` (or ingest + transcribe) running?", file=sys.stderr)
        return 1
    finally:
        await nc.drain()
    if "code" in result:
        print(f"error {result['code']}: {result['message']}", file=sys.stderr)
        return 2
    print(f"language {result['language']} (p={result['language_probability']:.2f}), "
          f"{result['duration']:.1f} s of audio in {result['compute_seconds']:.2f} s")
    print(result["text"])
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--server", default="nats://127.0.0.1:4222")
    parser.add_argument("--workspace", required=True, help="your workspace id")
    parser.add_argument("--creds", type=Path, required=True,
                        help="the workspace's producer credentials (nkey seed file)")
    parser.add_argument("--session", default="cli")
    parser.add_argument("--request-id")
    parser.add_argument("--language", help="ISO 639-1 code; unset: detect")
    parser.add_argument("--word-timestamps", action="store_true")
    parser.add_argument("--object", action="store_true", help="always go through the bucket")
    parser.add_argument("--timeout", type=float, default=600)
    sys.exit(asyncio.run(main(parser.parse_args())))
