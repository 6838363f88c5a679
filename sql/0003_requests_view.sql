-- Requests become a view over what is stored, instead of a table the persist stage
-- upserted beside every batch: each request's id and session are already on its
-- transcript and answer rows, so the table only repeated them, and writing it cost
-- the persist stage about a quarter of its throughput (see docs/persist.md).
--
-- security_invoker: the view runs with the caller's privileges, so the row-level
-- security policies of mumu.transcripts and mumu.answers apply to it unchanged (no
-- workspace set: nothing; workspace A set: A's requests only). It cannot be written.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'mumu' AND c.relname = 'requests' AND c.relkind = 'r') THEN
        DROP TABLE mumu.requests;
    END IF;
END
$$;

CREATE OR REPLACE VIEW mumu.requests WITH (security_invoker = true) AS
SELECT workspace_id, request_id AS id, min(session_id) AS session_id,
       min(occurred_at) AS created_at,
       bool_or(kind = 'transcript') AS has_transcript, bool_or(kind = 'answer') AS has_answer
  FROM (SELECT workspace_id, request_id, session_id, occurred_at, 'transcript' AS kind
          FROM mumu.transcripts
        UNION ALL
        SELECT workspace_id, request_id, session_id, occurred_at, 'answer' AS kind
          FROM mumu.answers) AS stored
 GROUP BY workspace_id, request_id;

REVOKE ALL ON mumu.requests FROM PUBLIC;
GRANT SELECT ON mumu.requests TO mumu_app;
