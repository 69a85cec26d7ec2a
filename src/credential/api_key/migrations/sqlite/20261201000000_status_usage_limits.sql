-- Disabled keys, when a key was last used, and its rate limit. The same columns as PostgreSQL's migration of this
-- version, which also adds the change notifications and the operators' functions.
ALTER TABLE api_keys ADD COLUMN disabled_at BIGINT;   -- Unix seconds; NULL: not disabled (refused while set)
ALTER TABLE api_keys ADD COLUMN rate_limit TEXT;      -- N/UNIT, UNIT s, m or h; NULL: no limit
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;  -- Unix seconds, written behind the request; NULL: never
