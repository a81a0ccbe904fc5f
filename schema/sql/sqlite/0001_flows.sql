-- Lumen relay history, SQLite backend: one row per flow.
-- `response` is the observer.GetFlowsResponse exactly as the node sent it (lossless); the
-- other columns are extracted from it for indexing and SQL filtering only.
CREATE TABLE IF NOT EXISTS flows (
    id            INTEGER PRIMARY KEY,
    time_ns       INTEGER NOT NULL,   -- flow time, ns since the epoch
    node          TEXT    NOT NULL,   -- cluster/node
    uuid          TEXT    NOT NULL,
    src_namespace TEXT    NOT NULL,
    src_pod       TEXT    NOT NULL,
    src_identity  INTEGER NOT NULL,
    dst_namespace TEXT    NOT NULL,
    dst_pod       TEXT    NOT NULL,
    dst_identity  INTEGER NOT NULL,
    src_ip        TEXT    NOT NULL,
    dst_ip        TEXT    NOT NULL,
    src_port      INTEGER NOT NULL,
    dst_port      INTEGER NOT NULL,
    protocol      TEXT    NOT NULL,   -- tcp, udp, icmpv4, icmpv6, sctp, ... or ''
    verdict       INTEGER NOT NULL,   -- flow.Verdict
    drop_reason   INTEGER NOT NULL,   -- flow.DropReason
    direction     INTEGER NOT NULL,   -- flow.TrafficDirection
    event_type    INTEGER NOT NULL,   -- CiliumEventType.type
    event_subtype INTEGER NOT NULL,   -- CiliumEventType.sub_type
    response      BLOB    NOT NULL
);

-- Time-range scans (every query), the per-node watermark, and the common filters.
CREATE INDEX IF NOT EXISTS flows_time ON flows (time_ns);
CREATE INDEX IF NOT EXISTS flows_node_time ON flows (node, time_ns);
CREATE INDEX IF NOT EXISTS flows_src_ns_time ON flows (src_namespace, time_ns);
CREATE INDEX IF NOT EXISTS flows_dst_ns_time ON flows (dst_namespace, time_ns);
CREATE INDEX IF NOT EXISTS flows_verdict_time ON flows (verdict, time_ns);
