"""Per-workspace quotas: limits (settings + PostgreSQL overrides, ``limits``), shared usage
(JetStream KV, compare-and-set, ``usage``) and the gate the gateway and the stages ask
before doing work (``gate.QuotaGate``)."""
