-- Lumen relay history, ClickHouse backend: one row per flow. Runs on ClickHouse 18.16
-- (Debian's) and later: no DateTime64, no LowCardinality (experimental in 18.16), no table
-- TTL (19.6+; added by the store with ALTER … MODIFY TTL only on servers that have it).
--
-- `response` is the observer.GetFlowsResponse exactly as the node sent it (lossless); the
-- other columns are extracted from it for pruning and SQL filtering only.
--
-- Key: ORDER BY (hour, verdict, src_namespace, dst_namespace, time_ns, row_key).
--   * every history query is a time range: the hour prefix (and the day partition) cut it
--     to the hours asked for;
--   * "denied flows in namespace X in the last hour" is (src_ns = X OR dst_ns = X) AND
--     verdict = DROPPED: within each hour the verdict range leaves only the drops, a small
--     fraction of all flows; src_namespace narrows further when only the source is asked;
--   * (time_ns, row_key) ends the key so that the ReplacingMergeTree collapses the copies a
--     retried INSERT may leave (row_key is a hash of the response bytes: same flow, same
--     key). Merges are eventual: readers also dedupe with LIMIT 1 BY time_ns, row_key.
-- Retention: the store drops whole day partitions (ALTER TABLE … DROP PARTITION) and
-- deletes the rest with ALTER TABLE … DELETE mutations.
CREATE TABLE IF NOT EXISTS flows (
    time          DateTime,  -- flow time, whole seconds (partition, hour key, TTL)
    time_ns       Int64,     -- flow time, ns since the epoch
    row_key       Int64,     -- FNV-1a 64 of `response`: page tie-breaker and dedup key
    node          String,    -- cluster/node
    uuid          String,
    src_namespace String,
    src_pod       String,
    src_identity  UInt32,
    dst_namespace String,
    dst_pod       String,
    dst_identity  UInt32,
    src_ip        String,
    dst_ip        String,
    src_port      UInt32,
    dst_port      UInt32,
    protocol      String,    -- tcp, udp, icmpv4, icmpv6, sctp, ... or ''
    verdict       Int32,     -- flow.Verdict
    drop_reason   Int32,     -- flow.DropReason
    direction     Int32,     -- flow.TrafficDirection
    event_type    Int32,     -- CiliumEventType.type
    event_subtype Int32,     -- CiliumEventType.sub_type
    response      String     -- encoded GetFlowsResponse
) ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (toStartOfHour(time), verdict, src_namespace, dst_namespace, time_ns, row_key)
