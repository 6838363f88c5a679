-- Per-workspace quota overrides. The defaults are settings (MUMU_QUOTA__*); a row here
-- replaces one limit for one workspace (`mumu workspace limits <ws> --set name=value`).
-- Usage (asks, in-flight requests, audio seconds) is not stored here: it lives in the
-- JetStream KV bucket mumu-quota, shared by every gateway replica and stage (see
-- docs/reliability.md, "Quotas").
CREATE TABLE IF NOT EXISTS mumu.workspace_limits (
    workspace_id uuid NOT NULL REFERENCES mumu.workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name IN ('asks_per_minute', 'audio_seconds_per_day',
                                               'concurrent_requests', 'longest_audio')),
    value        double precision NOT NULL CHECK (value >= 0 AND value < 'infinity'),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

ALTER TABLE mumu.workspace_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE mumu.workspace_limits FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON mumu.workspace_limits;
CREATE POLICY tenant_isolation ON mumu.workspace_limits FOR ALL
    USING (workspace_id = nullif(current_setting('app.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.workspace_id', true), '')::uuid);

-- Least privilege (as 0004): the application (gateway, ingest, reason) only reads the
-- limits of the workspace of its transaction; only the owner (the CLI) sets them.
REVOKE ALL ON mumu.workspace_limits FROM mumu_app;
GRANT SELECT ON mumu.workspace_limits TO mumu_app;
