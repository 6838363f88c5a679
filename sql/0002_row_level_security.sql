-- Row-level security: every workspace-scoped table sees only the workspace set for the
-- transaction by mumu.db.pool.workspace_tx (set_config('app.workspace_id', ..., true)).
-- No workspace set: nothing is visible and nothing can be written.
DO $$
DECLARE
    t text;
    ws_column text;
BEGIN
    FOREACH t IN ARRAY ARRAY['workspaces', 'api_keys', 'data_keys', 'sessions', 'requests',
                             'transcripts', 'answers']
    LOOP
        -- guard (revised, see REVISED in mumu/db/migrate.py): 0003 turns requests into a
        -- view, which has no row-level security of its own; skip what is not a table
        CONTINUE WHEN NOT EXISTS (
            SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'mumu' AND c.relname = t AND c.relkind = 'r');
        ws_column := CASE WHEN t = 'workspaces' THEN 'id' ELSE 'workspace_id' END;
        EXECUTE format('ALTER TABLE mumu.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE mumu.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON mumu.%I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON mumu.%I FOR ALL '
            'USING (%I = nullif(current_setting(''app.workspace_id'', true), '''')::uuid) '
            'WITH CHECK (%I = nullif(current_setting(''app.workspace_id'', true), '''')::uuid)',
            t, ws_column, ws_column);
    END LOOP;
END
$$;

-- The owner (who runs migrations and the admin CLI) may list workspaces and look up
-- API key hashes across workspaces; the application role never can. The two narrow
-- SECURITY DEFINER functions below rely on this when the owner is not a superuser.
DROP POLICY IF EXISTS owner_registry ON mumu.workspaces;
CREATE POLICY owner_registry ON mumu.workspaces FOR SELECT TO CURRENT_USER USING (true);
DROP POLICY IF EXISTS owner_key_lookup ON mumu.api_keys;
CREATE POLICY owner_key_lookup ON mumu.api_keys FOR SELECT TO CURRENT_USER USING (true);

CREATE OR REPLACE FUNCTION mumu.resolve_api_key(p_key_hash bytea) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT workspace_id FROM mumu.api_keys
     WHERE key_hash = p_key_hash AND revoked_at IS NULL
$$;

CREATE OR REPLACE FUNCTION mumu.workspace_exists(p_workspace_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM mumu.workspaces WHERE id = p_workspace_id)
$$;

REVOKE ALL ON FUNCTION mumu.resolve_api_key(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION mumu.workspace_exists(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mumu.resolve_api_key(bytea) TO mumu_app;
GRANT EXECUTE ON FUNCTION mumu.workspace_exists(uuid) TO mumu_app;

-- Privileges of the application role (RLS narrows every one of them to one workspace).
REVOKE ALL ON ALL TABLES IN SCHEMA mumu FROM mumu_app;
GRANT USAGE ON SCHEMA mumu TO mumu_app;
GRANT SELECT ON mumu.workspaces TO mumu_app;
GRANT SELECT, INSERT, UPDATE ON mumu.api_keys TO mumu_app;
GRANT SELECT, INSERT ON mumu.data_keys TO mumu_app;
GRANT SELECT, INSERT, UPDATE ON mumu.sessions, mumu.requests TO mumu_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON mumu.transcripts, mumu.answers TO mumu_app;
