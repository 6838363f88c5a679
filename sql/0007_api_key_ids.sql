-- Session tokens name the API key they were issued for (its id), so the gateway can
-- refuse them once that key is revoked or its workspace deleted (docs/security.md).
-- Two narrow SECURITY DEFINER lookups, as mumu.resolve_api_key: the application role
-- still cannot read another workspace's keys, only ask these two questions.

-- The key id and workspace of a live (unrevoked) API key, by its SHA-256.
CREATE OR REPLACE FUNCTION mumu.resolve_api_key_id(p_key_hash bytea)
    RETURNS TABLE (key_id uuid, workspace_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.id, k.workspace_id
      FROM mumu.api_keys k JOIN mumu.workspaces w ON w.id = k.workspace_id
     WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
$$;

-- Which of the given key ids are still live (not revoked, their workspace not deleted),
-- with their workspaces: what every gateway replica asks about the keys behind the
-- session tokens it serves, about once a second.
CREATE OR REPLACE FUNCTION mumu.live_api_keys(p_key_ids uuid[])
    RETURNS TABLE (key_id uuid, workspace_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.id, k.workspace_id
      FROM mumu.api_keys k JOIN mumu.workspaces w ON w.id = k.workspace_id
     WHERE k.id = ANY (p_key_ids) AND k.revoked_at IS NULL
$$;

REVOKE ALL ON FUNCTION mumu.resolve_api_key_id(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION mumu.live_api_keys(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mumu.resolve_api_key_id(bytea) TO mumu_app;
GRANT EXECUTE ON FUNCTION mumu.live_api_keys(uuid[]) TO mumu_app;
