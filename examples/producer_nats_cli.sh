#!/usr/bin/env bash
# Send an audio file to mumu with the nats CLI (https://github.com/nats-io/natscli).
#
#   examples/producer_nats_cli.sh meeting.m4a [workspace]
#
# NATS_URL selects the server (default nats://127.0.0.1:4222). Prints the final transcript
# event (JSON). Files over the server's max_payload (1 MiB by default) go through the
# mumu-audio Object Store bucket; the message then has an empty body and names the object.
set -euo pipefail

file=${1:?usage: $0 <audio file> [workspace]}
ws=${2:-demo}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
request_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
case "${file##*.}" in
  wav) type=audio/wav ;; flac) type=audio/flac ;; mp3) type=audio/mpeg ;;
  ogg|opus) type=audio/ogg ;; webm) type=audio/webm ;; m4a|mp4) type=audio/mp4 ;;
  *) type=application/octet-stream ;;
esac
size=$(wc -c < "$file")
max_payload=$((1024 * 1024 - 4096))

# wait for the answer in the background (subscribed before publishing)
nats sub "mumu.transcript.final.${ws}" --count 1 --raw > "/tmp/mumu-final-${request_id}.json" &
waiter=$!
sleep 0.5

headers=(
  -H "Content-Type:${type}"
  -H "Mumu-Session:cli"
  -H "Mumu-Request-Id:${request_id}"
  -H "Nats-Msg-Id:${request_id}"
)
if [ "$size" -gt "$max_payload" ]; then
  object="${ws}/${request_id}.${file##*.}"
  nats object put mumu-audio "$file" --name "$object" --force
  # an empty body: the event names the object
  nats pub "mumu.ingest.audio.${ws}" "" "${headers[@]}" -H "Mumu-Audio-Object:${object}"
else
  # --force-stdin: the body is the file; --no-templates: never expand {{ }} in binary audio
  nats pub "mumu.ingest.audio.${ws}" --force-stdin --no-templates "${headers[@]}" < "$file"
fi

wait "$waiter"
grep -v '^$' "/tmp/mumu-final-${request_id}.json" | grep -F "\"request_id\":\"${request_id}\"" \
  || { echo "no transcript for ${request_id} (see mumu.error.${ws} and mumu.dlq.ingest)" >&2; exit 1; }
rm -f "/tmp/mumu-final-${request_id}.json"
