-- The scopegate API key store. Written to run unchanged on PostgreSQL: TEXT, BIGINT, CHECK and REFERENCES only;
-- JSON is kept as TEXT and the digest as hex, so no type differs between the two databases.
CREATE TABLE api_keys (
    id             TEXT   NOT NULL PRIMARY KEY CHECK (length(id) = 16),   -- public key id, 16 base62 characters
    name           TEXT   NOT NULL,
    scopes         TEXT   NOT NULL,           -- JSON array of scope strings
    allow_ips      TEXT,                      -- JSON array of CIDR strings; NULL: any address
    attributes     TEXT   NOT NULL,           -- JSON object of string values
    pepper_version BIGINT NOT NULL CHECK (pepper_version >= 0),
    key_hash       TEXT   NOT NULL CHECK (length(key_hash) = 64),  -- hex HMAC-SHA256(pepper, id || secret)
    created_at     BIGINT NOT NULL,           -- Unix seconds
    expires_at     BIGINT,                    -- Unix seconds; NULL: never
    revoked_at     BIGINT,                    -- Unix seconds, refused as revoked from then on; NULL: not revoked
    replaces       TEXT   REFERENCES api_keys (id)  -- the key this one replaced by rotation
);

CREATE INDEX api_keys_replaces ON api_keys (replaces);
