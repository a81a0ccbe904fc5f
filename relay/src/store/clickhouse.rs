//! The ClickHouse backend (the `clickhouse` crate over HTTP, RowBinary): for clusters whose
//! history outgrows one machine.
//!
//! Works against ClickHouse 18.16 (Debian's) and current releases: row validation is off
//! (its schema queries need newer servers), times are `Int64` ns plus a `DateTime` for the
//! day partition and the hour key (no `DateTime64` in 18.16). Schema from
//! `schema/sql/clickhouse/`, created on open; see its comments for the key. HTTP
//! compression is off: the crate's LZ4 response framing reads as empty rows from 18.16.
//!
//! - Inserts: one `INSERT … FORMAT RowBinary` per batch the writer hands over (a batch is
//!   one MergeTree part: the writer must batch), retried with backoff on transient errors
//!   (network, timeouts, too many parts). When the retries are spent the error is
//!   [`ClickHouseError::Unavailable`]: [`StoreError::is_retryable`] tells the writer to
//!   hold the batch and slow down rather than drop it.
//! - Duplicates: a retried INSERT may land twice (non-replicated MergeTree has no insert
//!   dedup in 18.16). Rows carry `row_key`, a stable hash of the response bytes, at the end
//!   of a `ReplacingMergeTree` key: merges collapse copies, and readers dedupe with
//!   `LIMIT 1 BY time_ns, row_key` meanwhile. Counts ([`FlowStore::stats`], deletes) may
//!   include copies not merged yet.
//! - Retention: table TTL exists only from 19.6; the store sets one
//!   ([`ClickHouseOptions::ttl`]) when the server has it. Otherwise (and for
//!   [`FlowStore::delete_before`] / [`FlowStore::delete_oldest`]) whole day partitions are
//!   dropped and the rest deleted by an `ALTER TABLE … DELETE` mutation, waited for.
//! - Errors: [`ClickHouseError`], carried as [`StoreError::ClickHouse`].

use super::{
    prefilter::{Dialect, SqlValue},
    Cursor, FlowStore, Order, Page, Query, StoreError, StoreStats, StoredFlow,
};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::codegen::Bytes;

/// The schema, one statement per `;`.
const SCHEMA: &str = include_str!("../../../schema/sql/clickhouse/0001_flows.sql");

/// The table.
const TABLE: &str = "flows";

/// First version with table TTL.
const TTL_SINCE: (u32, u32) = (19, 6);

/// Why a ClickHouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// A transient failure persisted through every retry: the server is down or
    /// overloaded. The batch was not stored; try again later.
    #[error("clickhouse unavailable after {attempts} attempts: {source}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        source: clickhouse::error::Error,
    },
    /// The server refused a statement (or its answer could not be read).
    #[error("clickhouse {what}: {source}")]
    Statement {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: clickhouse::error::Error,
    },
    /// A retention mutation did not finish in time (it goes on in the background).
    #[error("clickhouse mutation on {table} still running after {waited:?}")]
    MutationPending {
        /// The table.
        table: &'static str,
        /// How long the store waited.
        waited: Duration,
    },
}

impl ClickHouseError {
    /// Whether trying again later may succeed (the writer's back-pressure signal).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClickHouseError::Unavailable { .. } | ClickHouseError::MutationPending { .. } => true,
            ClickHouseError::Statement { source, .. } => transient(source),
        }
    }
}

/// ClickHouse error codes worth retrying: timeouts, network, too many parts (inserts
/// faster than merges: back-pressure), memory limits, readonly replicas.
const TRANSIENT_CODES: &[u32] = &[159, 160, 164, 202, 209, 210, 241, 242, 252, 285, 319, 425];

fn transient(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => true,
        E::BadResponse(text) => text
            .split_once("Code: ")
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
        _ => false,
    }
}

/// How to reach and use the server.
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// HTTP endpoint, e.g. `http://clickhouse:8123`.
    pub url: String,
    /// Database (created if missing).
    pub database: String,
    /// User.
    pub user: String,
    /// Password (empty: none).
    pub password: String,
    /// Insert attempts before [`ClickHouseError::Unavailable`].
    pub insert_attempts: u32,
    /// Wait before the first retry (doubled each time).
    pub retry_backoff: Duration,
    /// Longest an INSERT may take, sending included.
    pub insert_timeout: Duration,
    /// Longest the store waits for a retention mutation.
    pub mutation_timeout: Duration,
    /// Server-side retention as a table TTL, applied only on servers that have it (19.6+);
    /// `None`: retention by the relay's `delete_before` only.
    pub ttl: Option<Duration>,
}

impl Default for ClickHouseOptions {
    fn default() -> Self {
        ClickHouseOptions {
            url: "http://127.0.0.1:8123".into(),
            database: "lumen".into(),
            user: "default".into(),
            password: String::new(),
            insert_attempts: 4,
            retry_backoff: Duration::from_millis(200),
            insert_timeout: Duration::from_secs(30),
            mutation_timeout: Duration::from_secs(120),
            ttl: None,
        }
    }
}

/// A ClickHouse flow store.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    opts: ClickHouseOptions,
    version: String,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("url", &self.opts.url)
            .field("database", &self.opts.database)
            .field("version", &self.version)
            .finish()
    }
}

/// One row as inserted (column order of the table is irrelevant: columns are named).
#[derive(Row, Serialize)]
struct FlowRow<'a> {
    time: u32,
    time_ns: i64,
    row_key: i64,
    node: &'a str,
    uuid: &'a str,
    src_namespace: &'a str,
    src_pod: &'a str,
    src_identity: u32,
    dst_namespace: &'a str,
    dst_pod: &'a str,
    dst_identity: u32,
    src_ip: &'a str,
    dst_ip: &'a str,
    src_port: u32,
    dst_port: u32,
    protocol: &'a str,
    verdict: i32,
    drop_reason: i32,
    direction: i32,
    event_type: i32,
    event_subtype: i32,
    #[serde(with = "serde_bytes")]
    response: &'a [u8],
}

#[derive(Row, Deserialize)]
struct OutRow {
    time_ns: i64,
    row_key: i64,
    #[serde(with = "serde_bytes")]
    response: Vec<u8>,
}

#[derive(Row, Deserialize)]
struct Watermark {
    node: String,
    last: i64,
}

#[derive(Row, Deserialize)]
struct Counted {
    flows: u64,
    oldest: i64,
}

#[derive(Row, Deserialize)]
struct DayUsage {
    day: String,
    rows: u64,
    covered: u64,
    droppable: u8,
}

/// Whole seconds of a ns time, clamped to `DateTime`'s range (monotonic: conditions on
/// `time` derived from ones on `time_ns` only widen).
fn seconds(ns: i64) -> u32 {
    ns.div_euclid(1_000_000_000).clamp(0, i64::from(u32::MAX)) as u32
}

/// FNV-1a 64 of the response: stable across builds (the dedup key must be).
fn row_key(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// `major.minor` of a `version()` answer.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// The statements of a schema file: `--` comments removed (the schema has no string
/// literals), split on `;`, empty ones skipped.
fn schema_statements(schema: &str) -> Vec<String> {
    let code: String = schema
        .lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The statement for one page (deduplicated on `(time_ns, row_key)`), with its values.
/// Conditions on `time_ns` are doubled on `time` so the day partitions and the hour key
/// prune.
fn query_sql(q: &Query) -> (String, Vec<SqlValue>) {
    let mut binds = vec![];
    let mut wh = vec![];
    if let Some(s) = q.since_ns {
        wh.push("time >= toDateTime(?) AND time_ns >= ?".to_string());
        binds.push(SqlValue::Int(i64::from(seconds(s))));
        binds.push(SqlValue::Int(s));
    }
    if let Some(u) = q.until_ns {
        wh.push("time <= toDateTime(?) AND time_ns <= ?".to_string());
        binds.push(SqlValue::Int(i64::from(seconds(u))));
        binds.push(SqlValue::Int(u));
    }
    let (cmp, tcmp, dir) = match q.order {
        Order::Ascending => (">", ">=", "ASC"),
        Order::Descending => ("<", "<=", "DESC"),
    };
    if let Some(c) = q.after {
        wh.push(format!(
            "time {tcmp} toDateTime(?) AND (time_ns, row_key) {cmp} (?, ?)"
        ));
        binds.push(SqlValue::Int(i64::from(seconds(c.time_ns))));
        binds.push(SqlValue::Int(c.time_ns));
        binds.push(SqlValue::Int(c.id));
    }
    if let Some(p) = q.prefilter.to_sql(Dialect::ClickHouse, &mut binds) {
        wh.push(p);
    }
    let sql = format!(
        "SELECT time_ns, row_key, response FROM {TABLE} {} \
         ORDER BY time_ns {dir}, row_key {dir} LIMIT 1 BY time_ns, row_key LIMIT ?",
        if wh.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", wh.join(" AND "))
        }
    );
    binds.push(SqlValue::Int(i64::from(q.limit.max(1))));
    (sql, binds)
}

fn bind_all(mut query: clickhouse::query::Query, binds: Vec<SqlValue>) -> clickhouse::query::Query {
    for b in binds {
        query = match b {
            SqlValue::Int(i) => query.bind(i),
            SqlValue::Text(t) => query.bind(t),
        };
    }
    query
}

fn statement(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> ClickHouseError {
    move |source| ClickHouseError::Statement { what, source }
}

impl ClickHouseStore {
    /// Connects, creates the database and table if missing, and applies the TTL where the
    /// server supports it.
    pub async fn open(opts: ClickHouseOptions) -> Result<ClickHouseStore, StoreError> {
        let mut base = Client::default()
            .with_url(&opts.url)
            .with_user(&opts.user)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if !opts.password.is_empty() {
            base = base.with_password(&opts.password);
        }
        base.query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(clickhouse::sql::Identifier(&opts.database))
            .execute()
            .await
            .map_err(statement("create database"))?;
        let client = base.with_database(&opts.database);
        for stmt in schema_statements(SCHEMA) {
            client
                .query(&stmt)
                .execute()
                .await
                .map_err(statement("create schema"))?;
        }
        let version: String = client
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(statement("server version"))?;
        let store = ClickHouseStore {
            client,
            opts,
            version,
        };
        if let Some(ttl) = store.opts.ttl {
            if store.supports_ttl() {
                store
                    .client
                    .query(&format!(
                        "ALTER TABLE {TABLE} MODIFY TTL time + toIntervalSecond({})",
                        ttl.as_secs()
                    ))
                    .execute()
                    .await
                    .map_err(statement("set ttl"))?;
            } else {
                tracing::info!(
                    version = %store.version,
                    "clickhouse has no table TTL (19.6+): retention by partition drops only"
                );
            }
        }
        tracing::info!(url = %store.opts.url, database = %store.opts.database,
            version = %store.version, "clickhouse history store open");
        Ok(store)
    }

    /// The server's version.
    pub fn server_version(&self) -> &str {
        &self.version
    }

    /// Whether the server has table TTL (19.6+).
    pub fn supports_ttl(&self) -> bool {
        major_minor(&self.version).is_some_and(|v| v >= TTL_SINCE)
    }

    /// One INSERT of a batch.
    async fn insert_once(&self, batch: &[StoredFlow]) -> Result<(), clickhouse::error::Error> {
        let mut insert = self
            .client
            .insert::<FlowRow<'_>>(TABLE)
            .await?
            .with_timeouts(
                Some(self.opts.insert_timeout),
                Some(self.opts.insert_timeout),
            );
        for f in batch {
            let c = &f.columns;
            insert
                .write(&FlowRow {
                    time: seconds(c.time_ns),
                    time_ns: c.time_ns,
                    row_key: row_key(&f.response),
                    node: &c.node,
                    uuid: &c.uuid,
                    src_namespace: &c.src_namespace,
                    src_pod: &c.src_pod,
                    src_identity: c.src_identity,
                    dst_namespace: &c.dst_namespace,
                    dst_pod: &c.dst_pod,
                    dst_identity: c.dst_identity,
                    src_ip: &c.src_ip,
                    dst_ip: &c.dst_ip,
                    src_port: c.src_port,
                    dst_port: c.dst_port,
                    protocol: c.protocol,
                    verdict: c.verdict,
                    drop_reason: c.drop_reason,
                    direction: c.direction,
                    event_type: c.event_type,
                    event_subtype: c.event_subtype,
                    response: &f.response,
                })
                .await?;
        }
        insert.end().await
    }

    /// Runs a mutation and waits until the server has applied it.
    async fn mutate(&self, sql: &str, binds: Vec<SqlValue>) -> Result<(), ClickHouseError> {
        bind_all(self.client.query(sql), binds)
            .execute()
            .await
            .map_err(statement("delete mutation"))?;
        let start = tokio::time::Instant::now();
        loop {
            let pending: u64 = self
                .client
                .query(
                    "SELECT count() FROM system.mutations \
                     WHERE database = ? AND table = ? AND is_done = 0",
                )
                .bind(&self.opts.database)
                .bind(TABLE)
                .fetch_one()
                .await
                .map_err(statement("mutation status"))?;
            if pending == 0 {
                return Ok(());
            }
            if start.elapsed() > self.opts.mutation_timeout {
                return Err(ClickHouseError::MutationPending {
                    table: TABLE,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes every row at or before `(time_ns, row_key)`; returns how many. Day
    /// partitions entirely covered and older than the cutoff's day (no live flow can still
    /// land in them) are dropped; the rest goes through one DELETE mutation.
    async fn delete_through(&self, time_ns: i64, key: i64) -> Result<u64, ClickHouseError> {
        let days: Vec<DayUsage> = self
            .client
            .query(&format!(
                "SELECT toString(toDate(time)) AS day, count() AS rows, \
                 countIf((time_ns, row_key) <= (?, ?)) AS covered, \
                 toUInt8(toDate(time) < toDate(toDateTime(?))) AS droppable \
                 FROM {TABLE} GROUP BY day ORDER BY day"
            ))
            .bind(time_ns)
            .bind(key)
            .bind(seconds(time_ns))
            .fetch_all()
            .await
            .map_err(statement("retention scan"))?;
        let mut deleted = 0;
        let mut partial = false;
        for d in days.iter().filter(|d| d.covered > 0) {
            deleted += d.covered;
            if d.covered == d.rows && d.droppable == 1 {
                self.client
                    .query(&format!("ALTER TABLE {TABLE} DROP PARTITION ?"))
                    .bind(&d.day)
                    .execute()
                    .await
                    .map_err(statement("drop partition"))?;
            } else {
                partial = true;
            }
        }
        if partial {
            self.mutate(
                &format!("ALTER TABLE {TABLE} DELETE WHERE (time_ns, row_key) <= (?, ?)"),
                vec![SqlValue::Int(time_ns), SqlValue::Int(key)],
            )
            .await?;
        }
        Ok(deleted)
    }
}

#[tonic::async_trait]
impl FlowStore for ClickHouseStore {
    async fn insert(&self, batch: &[StoredFlow]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let attempts = self.opts.insert_attempts.max(1);
        let mut backoff = self.opts.retry_backoff;
        for attempt in 1..=attempts {
            match self.insert_once(batch).await {
                Ok(()) => return Ok(()),
                Err(e) if transient(&e) && attempt < attempts => {
                    tracing::debug!(error = %e, attempt, flows = batch.len(),
                        "clickhouse insert failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) if transient(&e) => {
                    return Err(ClickHouseError::Unavailable {
                        attempts,
                        source: e,
                    }
                    .into())
                }
                Err(e) => return Err(statement("insert")(e).into()),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let (sql, binds) = query_sql(q);
        let rows: Vec<OutRow> = bind_all(self.client.query(&sql), binds)
            .fetch_all()
            .await
            .map_err(statement("query"))?;
        let limit = q.limit.max(1) as usize;
        let mut page = Page::default();
        let mut last = None;
        for r in rows {
            last = Some(Cursor {
                time_ns: r.time_ns,
                id: r.row_key,
            });
            page.rows.push((r.time_ns, Bytes::from(r.response)));
        }
        if page.rows.len() == limit {
            page.next = last;
        }
        Ok(page)
    }

    async fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<Watermark> = self
            .client
            .query(&format!(
                "SELECT node, max(time_ns) AS last FROM {TABLE} GROUP BY node"
            ))
            .fetch_all()
            .await
            .map_err(statement("watermarks"))?;
        Ok(rows.into_iter().map(|w| (w.node, w.last)).collect())
    }

    async fn delete_before(&self, before_ns: i64) -> Result<u64, StoreError> {
        Ok(self
            .delete_through(before_ns.saturating_sub(1), i64::MAX)
            .await?)
    }

    async fn delete_oldest(&self, count: u64) -> Result<u64, StoreError> {
        if count == 0 {
            return Ok(0);
        }
        #[derive(Row, Deserialize)]
        struct Key {
            time_ns: i64,
            row_key: i64,
        }
        let cutoff: Option<Key> = self
            .client
            .query(&format!(
                "SELECT time_ns, row_key FROM {TABLE} ORDER BY time_ns, row_key \
                 LIMIT 1 BY time_ns, row_key LIMIT ?, 1"
            ))
            .bind(count - 1)
            .fetch_optional()
            .await
            .map_err(statement("retention cutoff"))?;
        let (t, k) = cutoff.map_or((i64::MAX, i64::MAX), |c| (c.time_ns, c.row_key));
        Ok(self.delete_through(t, k).await?)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let c: Counted = self
            .client
            .query(&format!(
                "SELECT count() AS flows, min(time_ns) AS oldest FROM {TABLE}"
            ))
            .fetch_one()
            .await
            .map_err(statement("stats"))?;
        let bytes: u64 = self
            .client
            .query(
                "SELECT sum(bytes_on_disk) FROM system.parts \
                 WHERE database = ? AND table = ? AND active",
            )
            .bind(&self.opts.database)
            .bind(TABLE)
            .fetch_one()
            .await
            .map_err(statement("stats"))?;
        Ok(StoreStats {
            flows: c.flows,
            bytes,
            oldest_ns: if c.flows == 0 { 0 } else { c.oldest },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_transient_server_errors() {
        use clickhouse::error::Error as E;
        let too_many_parts = E::BadResponse(
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300)".into(),
        );
        assert!(transient(&too_many_parts));
        assert!(transient(&E::TimedOut));
        let syntax = E::BadResponse("Code: 62, e.displayText() = DB::Exception: Syntax".into());
        assert!(!transient(&syntax));
        let e: StoreError = ClickHouseError::Unavailable {
            attempts: 3,
            source: E::TimedOut,
        }
        .into();
        assert!(e.is_retryable());
        let e: StoreError = statement("insert")(syntax).into();
        assert!(!e.is_retryable());
        assert!(matches!(e, StoreError::ClickHouse(_)));
    }

    #[test]
    fn versions_and_time_mapping() {
        assert_eq!(major_minor("18.16.1"), Some((18, 16)));
        assert_eq!(major_minor("24.8.4.13"), Some((24, 8)));
        assert!(major_minor("18.16.1").unwrap() < TTL_SINCE);
        assert!(major_minor("19.6.2").unwrap() >= TTL_SINCE);
        assert_eq!(seconds(-1), 0);
        assert_eq!(seconds(1_999_999_999), 1);
        assert_eq!(seconds(i64::MAX), u32::MAX);
        assert_eq!(row_key(b""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(row_key(b"a"), row_key(b"b"));
    }

    #[test]
    fn the_schema_is_one_create_table_without_comments() {
        let stmts = schema_statements(SCHEMA);
        assert_eq!(stmts.len(), 1);
        assert!(stmts[0].starts_with("CREATE TABLE IF NOT EXISTS flows"));
        assert!(!stmts[0].contains("--"));
    }
}
