-- mumu storage: tenants, their keys, and their (encrypted) transcripts and answers.
-- Idempotent: every statement can run again. Applied by `mumu migrate` as the owner role.

-- The application role: no superuser, no BYPASSRLS, so row-level security always applies.
-- It cannot log in by itself; `mumu migrate` grants it to the login user of MUMU_DATABASE_URL.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mumu_app') THEN
        CREATE ROLE mumu_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
-- An existing mumu_app is checked, never ALTERed: changing SUPERUSER or BYPASSRLS (even
-- to NO...) needs a superuser (PostgreSQL 16+), and managed PostgreSQL owners are not.
-- (Revised: this file once ALTERed the role; see REVISED in mumu/db/migrate.py.)
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

CREATE SCHEMA IF NOT EXISTS mumu;

CREATE TABLE IF NOT EXISTS mumu.workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is stored; keys are 256-bit random, so no slow hash is needed.
CREATE TABLE IF NOT EXISTS mumu.api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES mumu.workspaces (id) ON DELETE CASCADE,
    key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    prefix       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Per-workspace data keys, wrapped by a master key. Shredding drops the wrapped key:
-- rows sealed with that version can never be decrypted again.
CREATE TABLE IF NOT EXISTS mumu.data_keys (
    workspace_id  uuid NOT NULL REFERENCES mumu.workspaces (id) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version > 0),
    master_key_id text,
    wrapped       bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz,
    shredded_at   timestamptz,
    PRIMARY KEY (workspace_id, version),
    CHECK ((wrapped IS NULL) = (shredded_at IS NOT NULL)),
    CHECK ((wrapped IS NULL) = (master_key_id IS NULL))
);

-- Sessions and requests index what is stored; the persist stage upserts them in the same
-- transaction as the rows that name them (no per-row foreign-key triggers on the hot path).
CREATE TABLE IF NOT EXISTS mumu.sessions (
    workspace_id uuid NOT NULL REFERENCES mumu.workspaces (id) ON DELETE CASCADE,
    id           text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE IF NOT EXISTS mumu.requests (
    workspace_id uuid NOT NULL,
    id           text NOT NULL,
    session_id   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

-- Text columns are AES-256-GCM ciphertexts (see mumu.crypto.envelope); key_version
-- repeats the data-key version of the ciphertext header so rotation can find old rows.
CREATE TABLE IF NOT EXISTS mumu.transcripts (
    workspace_id uuid NOT NULL,
    event_id     uuid NOT NULL,
    request_id   text NOT NULL,
    session_id   text NOT NULL,
    key_version  integer NOT NULL,
    text         bytea NOT NULL,
    language     text,
    duration     double precision,
    model        text,
    occurred_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, event_id)
);
CREATE INDEX IF NOT EXISTS transcripts_by_session
    ON mumu.transcripts (workspace_id, session_id, occurred_at);

CREATE TABLE IF NOT EXISTS mumu.answers (
    workspace_id      uuid NOT NULL,
    event_id          uuid NOT NULL,
    request_id        text NOT NULL,
    session_id        text NOT NULL,
    key_version       integer NOT NULL,
    question          bytea NOT NULL,
    text              bytea NOT NULL,
    language          text,
    model             text,
    cancelled         boolean NOT NULL DEFAULT false,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    total_seconds     double precision,
    occurred_at       timestamptz NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, event_id)
);
CREATE INDEX IF NOT EXISTS answers_by_session
    ON mumu.answers (workspace_id, session_id, occurred_at);
