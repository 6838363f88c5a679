-- Shred is final: a crypto-shredded workspace gets no new data key until an operator
-- re-enables it (`mumu keys reenable <ws>`).
--
-- mumu.workspace_shreds holds one row per workspace ever shredded: `shredded_at` of the
-- last shred, `reenabled_at` once an operator let it store data again (NULL while the
-- workspace stays shredded). `mumu keys shred` (owner role) writes it in the transaction
-- that destroys the data keys; `mumu keys reenable` (owner role) sets `reenabled_at`.
-- The application role only reads it, for its own workspace (row-level security).
--
-- The rule is the database's, not only the code's: a RESTRICTIVE policy on
-- mumu.data_keys refuses the INSERT of a data key of a shredded workspace for every
-- role (the stages, `mumu keys rotate --data-keys`, anything), so no code path can
-- quietly give a shredded workspace a new key. A writer racing a shred reads the key
-- row FOR KEY SHARE (mumu.db.datakeys): once the shred commits, the key is gone and this
-- row is visible to the writer's next statement, so its INSERT of a new key is refused.
-- Every statement can run again.

CREATE TABLE IF NOT EXISTS mumu.workspace_shreds (
    workspace_id uuid PRIMARY KEY REFERENCES mumu.workspaces (id) ON DELETE CASCADE,
    shredded_at  timestamptz NOT NULL DEFAULT now(),
    reenabled_at timestamptz,
    CHECK (reenabled_at IS NULL OR reenabled_at >= shredded_at)
);

ALTER TABLE mumu.workspace_shreds ENABLE ROW LEVEL SECURITY;
ALTER TABLE mumu.workspace_shreds FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON mumu.workspace_shreds;
CREATE POLICY tenant_isolation ON mumu.workspace_shreds FOR ALL
    USING (workspace_id = nullif(current_setting('app.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.workspace_id', true), '')::uuid);

-- Restrictive: AND-ed with tenant_isolation, for every role row-level security binds
-- (the owner too: FORCE; a superuser bypasses it, as it bypasses every policy).
DROP POLICY IF EXISTS no_key_after_shred ON mumu.data_keys;
CREATE POLICY no_key_after_shred ON mumu.data_keys AS RESTRICTIVE FOR INSERT
    WITH CHECK (NOT EXISTS (
        SELECT FROM mumu.workspace_shreds s
         WHERE s.workspace_id = data_keys.workspace_id AND s.reenabled_at IS NULL));

-- Workspaces shredded before this migration whose every data key is shredded stay
-- shredded (before, their next write made a new key). The owner sees data_keys only
-- through row-level security, one workspace at a time (set_config local to this
-- migration's transaction).
DO $$
DECLARE
    w uuid;
BEGIN
    FOR w IN SELECT id FROM mumu.workspaces LOOP
        PERFORM set_config('app.workspace_id', w::text, true);
        INSERT INTO mumu.workspace_shreds (workspace_id, shredded_at)
            SELECT workspace_id, max(shredded_at) FROM mumu.data_keys
             WHERE workspace_id = w GROUP BY workspace_id HAVING bool_and(wrapped IS NULL)
            ON CONFLICT (workspace_id) DO NOTHING;
    END LOOP;
    PERFORM set_config('app.workspace_id', '', true);
END
$$;

-- Least privilege (sql/0004): the application role reads the state, never writes it.
REVOKE ALL ON mumu.workspace_shreds FROM mumu_app;
GRANT SELECT ON mumu.workspace_shreds TO mumu_app;
