-- Presence across nodes. A node heart-beats in gw_nodes; its users are
-- online while it does. When a node stops (or dies), its rows go and its
-- users' last-seen times are kept in gw_last_seen.

CREATE TABLE gw_nodes (
    id           text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gw_presence (
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    node_id    text NOT NULL REFERENCES gw_nodes ON DELETE CASCADE,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, node_id)
);
CREATE INDEX gw_presence_node ON gw_presence (node_id);

CREATE TABLE gw_last_seen (
    account_id bigint PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,
    at         timestamptz NOT NULL
);
