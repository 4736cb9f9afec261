-- hub's PostgreSQL app table, applied by `hub apps migrate` (every statement may run again safely).
-- One row per app. Column names are Soketi's where Soketi has the setting, so a Soketi `apps` table
-- can be pointed at hub and upgraded in place; NULL in a column means "the default".
-- The names in braces are filled in by hub from --postgres-table (default: apps).

CREATE TABLE IF NOT EXISTS {table} (
    id text PRIMARY KEY,
    "key" text NOT NULL,
    secret text NOT NULL
);

ALTER TABLE {table}
    ADD COLUMN IF NOT EXISTS enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS enable_client_messages boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS enable_user_authentication boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS user_authentication_timeout double precision NOT NULL DEFAULT 30,
    ADD COLUMN IF NOT EXISTS enable_subscription_count boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS enable_watchlist_events boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS max_connections integer NOT NULL DEFAULT -1,
    ADD COLUMN IF NOT EXISTS max_backend_events_per_sec integer NOT NULL DEFAULT -1,
    ADD COLUMN IF NOT EXISTS max_client_events_per_sec integer NOT NULL DEFAULT 10,
    ADD COLUMN IF NOT EXISTS max_read_req_per_sec integer NOT NULL DEFAULT -1,
    ADD COLUMN IF NOT EXISTS max_channel_name_length integer NOT NULL DEFAULT 200,
    ADD COLUMN IF NOT EXISTS max_event_name_length integer NOT NULL DEFAULT 200,
    ADD COLUMN IF NOT EXISTS max_event_payload_in_kb integer NOT NULL DEFAULT 100,
    ADD COLUMN IF NOT EXISTS max_event_channels_at_once integer NOT NULL DEFAULT 100,
    ADD COLUMN IF NOT EXISTS max_event_batch_size integer NOT NULL DEFAULT 10,
    ADD COLUMN IF NOT EXISTS max_presence_members_per_channel integer NOT NULL DEFAULT 100,
    ADD COLUMN IF NOT EXISTS max_presence_member_size_in_kb integer NOT NULL DEFAULT 2,
    ADD COLUMN IF NOT EXISTS max_watchlist_size integer NOT NULL DEFAULT 100,
    ADD COLUMN IF NOT EXISTS encryption_master_key_base64 text,
    ADD COLUMN IF NOT EXISTS webhooks jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE UNIQUE INDEX IF NOT EXISTS {key_index} ON {table} ("key");

-- Every committed change tells the nodes which app id changed; they re-read the table.
CREATE OR REPLACE FUNCTION {notify_function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify({channel}, COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS {trigger} ON {table};
CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {notify_function}();
