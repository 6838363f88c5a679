-- The application role gets exactly what the application does, nothing more.
--
-- What the code of the stages and the gateway runs as mumu_app (mumu.db.records,
-- mumu.db.datakeys, mumu.db.history, mumu.db.workspaces):
--   * transcripts, answers, sessions: INSERT ... ON CONFLICT DO NOTHING (needs INSERT
--     only, no UPDATE) and SELECT for the history; rows are never updated or deleted by
--     the application (re-encryption and shredding run as the owner);
--   * data_keys: SELECT the active key FOR KEY SHARE (a row lock: PostgreSQL asks for
--     UPDATE on at least one column for any locking clause, so UPDATE (rewrapped_at)
--     only), INSERT the first data key of a workspace on demand;
--   * workspaces, api_keys: SELECT of the own workspace only; API keys are resolved by
--     the SECURITY DEFINER function mumu.resolve_api_key and created by the owner.
-- Row-level security still narrows every one of these to the workspace of the
-- transaction. Every statement can run again (REVOKE/GRANT are idempotent).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mumu_app'
                                      AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role mumu_app is a superuser or has BYPASSRLS: row-level security '
                        'would not protect tenants; a superuser must run: ALTER ROLE mumu_app '
                        'NOSUPERUSER NOBYPASSRLS';
    END IF;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA mumu FROM mumu_app;
GRANT SELECT ON mumu.workspaces, mumu.api_keys, mumu.requests TO mumu_app;
GRANT SELECT, INSERT ON mumu.sessions, mumu.transcripts, mumu.answers TO mumu_app;
GRANT SELECT, INSERT ON mumu.data_keys TO mumu_app;
GRANT UPDATE (rewrapped_at) ON mumu.data_keys TO mumu_app;
