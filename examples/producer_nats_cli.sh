#!/usr/bin/env bash
# Send an audio file to mumu with the nats CLI (https://github.com/nats-io/natscli).
#
#   NATS_NKEY=.mumu/credentials/<ws>.nk examples/producer_nats_cli.sh meeting.m4a <ws>
#
# NATS_NKEY is the workspace's producer credentials (an nkey seed file from `mumu up` or
# `mumu workspace credentials <ws> --out FILE`); the nats CLI reads it, and the script
# passes --inbox-prefix _INBOX.<ws>, the only inbox such a producer may read.
# NATS_URL selects the server (default nats://127.0.0.1:4222); MUMU_TIMEOUT the seconds to
# wait for the answer (default 300). Prints this request's final transcript event (JSON)
# and exits 0; on a mumu.error event for this request prints it to stderr and exits 2; on
# no answer in time exits 3. Files over the server's max_payload (1 MiB by default) go
# through the workspace's own Object Store bucket mumu-upload-<workspace>; the message then
# has an empty body and names the object (ingest deletes it once processed). A workspace
# nobody created (`mumu workspace create`) has no intake stream: `nats pub` gets no stream
# response and the script exits 4.
#
# The script subscribes to the workspace's finals and errors before it publishes (a
# producer may subscribe to its own result subjects, not read the streams), and only the
# event carrying this request id counts: other requests of the same workspace finishing
# meanwhile are skipped.
set -euo pipefail

file=${1:?usage: $0 <audio file> <workspace>}
ws=${2:?usage: $0 <audio file> <workspace>}
timeout_s=${MUMU_TIMEOUT:-300}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
: "${NATS_NKEY:?set NATS_NKEY to the workspace producer credentials file}"
export NATS_NKEY
nats() { command nats --inbox-prefix "_INBOX.${ws}" "$@"; }
request_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
case "${file##*.}" in
  wav) type=audio/wav ;; flac) type=audio/flac ;; mp3) type=audio/mpeg ;;
  ogg|opus) type=audio/ogg ;; webm) type=audio/webm ;; m4a|mp4) type=audio/mp4 ;;
  *) type=application/octet-stream ;;
esac
size=$(wc -c < "$file")
max_payload=$((1024 * 1024 - 4096))

# Listen to this workspace's finals and errors first, so nothing is missed.
out=$(mktemp -d)
pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ "${#pids[@]}" -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$out"
}
trap cleanup EXIT
nats sub "mumu.transcript.final.${ws}" --raw > "$out/final" 2>/dev/null &
pids+=($!)
nats sub "mumu.error.${ws}" --raw > "$out/error" 2>/dev/null &
pids+=($!)

sleep 0.5  # let both subscriptions reach the server before publishing

headers=(
  -H "Content-Type:${type}"
  -H "Mumu-Session:cli"
  -H "Mumu-Request-Id:${request_id}"
  -H "Nats-Msg-Id:${ws}.${request_id}"
)
if [ "$size" -gt "$max_payload" ]; then
  object="${request_id}.${file##*.}"
  if ! nats object put "mumu-upload-${ws}" "$file" --name "$object" --force >/dev/null; then
    echo "workspace ${ws} has no upload bucket: create it with \`mumu workspace create\`" >&2
    exit 4
  fi
  # an empty body: the event names the object; --jetstream waits for the stream's PubAck
  published=$(nats pub --jetstream "mumu.ingest.audio.${ws}" "" "${headers[@]}" \
    -H "Mumu-Audio-Object:${object}" 2>&1) || published="failed: ${published}"
else
  # --force-stdin: the body is the file; --no-templates: never expand {{ }} in binary audio
  published=$(nats pub --jetstream "mumu.ingest.audio.${ws}" --force-stdin --no-templates \
    "${headers[@]}" < "$file" 2>&1) || published="failed: ${published}"
fi
case "$published" in
  failed:*)
    echo "workspace ${ws}: ${published} (no intake stream? \`mumu workspace create\`)" >&2
    exit 4 ;;
esac

match="\"request_id\":\"${request_id}\""
deadline=$(( $(date +%s) + timeout_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if line=$(grep -m1 -F "$match" "$out/final"); then
    printf '%s\n' "$line"
    exit 0
  fi
  if line=$(grep -m1 -F "$match" "$out/error"); then
    printf 'mumu refused %s: %s\n' "$request_id" "$line" >&2
    exit 2
  fi
  sleep 0.2
done
echo "no transcript for ${request_id} within ${timeout_s} s (see mumu.dlq.ingest.${ws})" >&2
exit 3
