-- Disabled keys, when a key was last used, and its rate limit (the same columns as SQLite's migration of this
-- version); change notifications for every gate; functions for operators.
ALTER TABLE api_keys ADD COLUMN disabled_at BIGINT;   -- Unix seconds; NULL: not disabled (refused while set)
ALTER TABLE api_keys ADD COLUMN rate_limit TEXT;      -- N/UNIT, UNIT s, m or h; NULL: no limit
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;  -- Unix seconds, written behind the request; NULL: never

-- Every change that can alter a decision is announced on the channel `scopegate_api_keys`, with the key id as the
-- payload ('*' for all keys), when its transaction commits; every gate listening drops what it cached for that id.
-- Writes of last_used_at alone announce nothing.
CREATE FUNCTION scopegate_api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('scopegate_api_keys', '*');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('scopegate_api_keys', OLD.id);
    ELSE
        IF TG_OP = 'UPDATE' AND OLD.id IS DISTINCT FROM NEW.id THEN
            PERFORM pg_notify('scopegate_api_keys', OLD.id);
        END IF;
        PERFORM pg_notify('scopegate_api_keys', NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR DELETE OR UPDATE OF id, name, scopes, allow_ips, attributes, pepper_version, key_hash,
        created_at, expires_at, revoked_at, replaces, disabled_at, rate_limit
    ON api_keys FOR EACH ROW EXECUTE FUNCTION scopegate_api_keys_changed();

CREATE TRIGGER api_keys_truncated
    AFTER TRUNCATE ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION scopegate_api_keys_changed();

-- For operators (`SELECT scopegate_revoke('<id>')`): the same writes as `scopegate keys revoke|disable|enable`.
-- Each returns whether a key has this id. Revocation is final: it only moves earlier, and enabling a revoked key is
-- an error.
CREATE FUNCTION scopegate_revoke(key_id TEXT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_secs BIGINT := floor(extract(epoch FROM clock_timestamp()))::BIGINT;
BEGIN
    UPDATE api_keys SET revoked_at = LEAST(COALESCE(revoked_at, now_secs), now_secs) WHERE id = key_id;
    RETURN FOUND;
END
$$;

CREATE FUNCTION scopegate_disable(key_id TEXT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_secs BIGINT := floor(extract(epoch FROM clock_timestamp()))::BIGINT;
BEGIN
    UPDATE api_keys SET disabled_at = COALESCE(disabled_at, now_secs) WHERE id = key_id;
    RETURN FOUND;
END
$$;

CREATE FUNCTION scopegate_enable(key_id TEXT) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_secs BIGINT := floor(extract(epoch FROM clock_timestamp()))::BIGINT;
BEGIN
    IF EXISTS (SELECT 1 FROM api_keys WHERE id = key_id AND revoked_at <= now_secs) THEN
        RAISE EXCEPTION 'API key % is revoked: revocation is final', key_id;
    END IF;
    UPDATE api_keys SET disabled_at = NULL WHERE id = key_id;
    RETURN FOUND;
END
$$;
