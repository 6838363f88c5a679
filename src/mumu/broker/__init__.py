"""NATS: connecting, the embedded server, streams and buckets."""
