//! The SQLite backend (sqlx, bundled libsqlite3): the embedded default, nothing to set up.
//!
//! One file in WAL mode (`synchronous=NORMAL`: a crash may lose the last commits, never
//! corrupt), schema from `schema/sql/sqlite/` applied by `sqlx::migrate!` on open. Batches
//! are inserted in one transaction as multi-row `INSERT`s of [`ROWS_PER_INSERT`] rows
//! (sqlx hands every statement to SQLite's worker thread: one per row would cost more than
//! the insert). Readers page by `(time_ns, id)` on the time indexes.

use super::{
    prefilter::{Dialect, SqlValue},
    Cursor, FlowStore, Order, Page, Query, StoreError, StoreStats, StoredFlow,
};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Row, SqlitePool,
};
use std::{path::Path, str::FromStr, time::Duration};
use tonic::codegen::Bytes;

/// Rows per `INSERT` statement (21 parameters each, under SQLite's 32766 limit).
pub const ROWS_PER_INSERT: usize = 128;

const COLUMNS: &str = "time_ns, node, uuid, src_namespace, src_pod, src_identity, \
    dst_namespace, dst_pod, dst_identity, src_ip, dst_ip, src_port, dst_port, protocol, \
    verdict, drop_reason, direction, event_type, event_subtype, response";

/// A SQLite flow store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; 20].join(","));
    format!(
        "INSERT INTO flows ({COLUMNS}) VALUES {}",
        vec![one; rows].join(",")
    )
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at `path` and brings
    /// its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../schema/sql/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Closes the pool (every connection, checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[tonic::async_trait]
impl FlowStore for SqliteStore {
    async fn insert(&self, batch: &[StoredFlow]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for f in chunk {
                let c = &f.columns;
                q = q
                    .bind(c.time_ns)
                    .bind(c.node.as_str())
                    .bind(c.uuid.as_str())
                    .bind(c.src_namespace.as_str())
                    .bind(c.src_pod.as_str())
                    .bind(i64::from(c.src_identity))
                    .bind(c.dst_namespace.as_str())
                    .bind(c.dst_pod.as_str())
                    .bind(i64::from(c.dst_identity))
                    .bind(c.src_ip.as_str())
                    .bind(c.dst_ip.as_str())
                    .bind(i64::from(c.src_port))
                    .bind(i64::from(c.dst_port))
                    .bind(c.protocol)
                    .bind(c.verdict)
                    .bind(c.drop_reason)
                    .bind(c.direction)
                    .bind(c.event_type)
                    .bind(c.event_subtype)
                    .bind(f.response.as_ref());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let mut binds = vec![];
        let mut wh = vec![];
        if let Some(s) = q.since_ns {
            wh.push("time_ns >= ?".to_string());
            binds.push(SqlValue::Int(s));
        }
        if let Some(u) = q.until_ns {
            wh.push("time_ns <= ?".to_string());
            binds.push(SqlValue::Int(u));
        }
        let (cmp, dir) = match q.order {
            Order::Ascending => (">", "ASC"),
            Order::Descending => ("<", "DESC"),
        };
        if let Some(c) = q.after {
            wh.push(format!("(time_ns, id) {cmp} (?, ?)"));
            binds.push(SqlValue::Int(c.time_ns));
            binds.push(SqlValue::Int(c.id));
        }
        if let Some(p) = q.prefilter.to_sql(Dialect::Sqlite, &mut binds) {
            wh.push(p);
        }
        let sql = format!(
            "SELECT id, time_ns, response FROM flows {} ORDER BY time_ns {dir}, id {dir} LIMIT ?",
            if wh.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", wh.join(" AND "))
            }
        );
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                SqlValue::Int(i) => query.bind(i),
                SqlValue::Text(t) => query.bind(t),
            };
        }
        let limit = q.limit.max(1);
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let mut page = Page::default();
        let mut last = None;
        for r in rows {
            let (id, t, b): (i64, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
            last = Some(Cursor { time_ns: t, id });
            page.rows.push((t, Bytes::from(b)));
        }
        if page.rows.len() as u32 == limit {
            page.next = last;
        }
        Ok(page)
    }

    async fn watermarks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT node, MAX(time_ns) FROM flows GROUP BY node")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn delete_before(&self, before_ns: i64) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM flows WHERE time_ns < ?")
            .bind(before_ns)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn delete_oldest(&self, count: u64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM flows WHERE id IN (SELECT id FROM flows ORDER BY time_ns, id LIMIT ?)",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&mut *conn)
            .await?;
        let (flows, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(time_ns) FROM flows")
                .fetch_one(&mut *conn)
                .await?;
        Ok(StoreStats {
            flows: flows as u64,
            bytes: ((pages - free).max(0) * page_size) as u64,
            oldest_ns: oldest.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{columns, prefilter::Prefilter};
    use lumen_api::{
        flow::{Endpoint, Flow, FlowFilter},
        observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
        wkt::Timestamp,
    };
    use prost::Message;

    /// A flow response at `ns` from `node`, from pod `ns_pod` ("namespace/pod").
    pub(crate) fn stored(node: &str, t: i64, ns_pod: &str, verdict: i32) -> StoredFlow {
        let (ns, pod) = ns_pod.split_once('/').unwrap();
        let time = Some(Timestamp {
            seconds: t / 1_000_000_000,
            nanos: (t % 1_000_000_000) as i32,
        });
        let resp = GetFlowsResponse {
            node_name: node.into(),
            time,
            response_types: Some(ResponseTypes::Flow(Flow {
                time,
                node_name: node.into(),
                uuid: format!("{node}-{t}"),
                verdict,
                source: Some(Endpoint {
                    namespace: ns.into(),
                    pod_name: pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        StoredFlow {
            columns: columns(&resp).unwrap(),
            response: Bytes::from(resp.encode_to_vec()),
        }
    }

    fn times(p: &Page) -> Vec<i64> {
        p.rows.iter().map(|(t, _)| *t).collect()
    }

    fn q(since: Option<i64>, until: Option<i64>, order: Order, limit: u32) -> Query {
        Query {
            since_ns: since,
            until_ns: until,
            prefilter: Prefilter::default(),
            order,
            after: None,
            limit,
        }
    }

    #[tokio::test]
    async fn stores_losslessly_queries_by_time_filter_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("h/flows.db"))
            .await
            .unwrap();
        let batch: Vec<StoredFlow> = (1..=300)
            .map(|i| {
                let pod = if i % 3 == 0 {
                    "shop/web-1"
                } else {
                    "kube-system/dns-1"
                };
                stored(
                    if i % 2 == 0 { "c/a" } else { "c/b" },
                    i * 10,
                    pod,
                    1 + (i % 2) as i32,
                )
            })
            .collect();
        s.insert(&batch).await.unwrap();

        let p = s
            .query(&q(Some(100), Some(150), Order::Ascending, 100))
            .await
            .unwrap();
        assert_eq!(times(&p), [100, 110, 120, 130, 140, 150]);
        assert!(p.next.is_none());
        // Bytes back exactly as stored.
        assert_eq!(p.rows[0].1, batch[9].response);
        let decoded = GetFlowsResponse::decode(p.rows[0].1.clone()).unwrap();
        assert_eq!(decoded.node_name, "c/a");

        // Newest first, paged.
        let mut query = q(None, None, Order::Descending, 2);
        let p1 = s.query(&query).await.unwrap();
        assert_eq!(times(&p1), [3000, 2990]);
        query.after = p1.next;
        assert_eq!(times(&s.query(&query).await.unwrap()), [2980, 2970]);

        // Namespace/pod prefix and verdict in SQL.
        let mut query = q(None, Some(600), Order::Ascending, 1000);
        query.prefilter = Prefilter::from_whitelist(&[FlowFilter {
            source_pod: vec!["shop/web".into()],
            verdict: vec![2],
            ..Default::default()
        }]);
        // i%3==0 and i odd, i*10 ≤ 600.
        assert_eq!(
            times(&s.query(&query).await.unwrap()),
            [30, 90, 150, 210, 270, 330, 390, 450, 510, 570]
        );
        query.prefilter = Prefilter::from_whitelist(&[FlowFilter {
            source_pod: vec!["shop/nothing".into()],
            ..Default::default()
        }]);
        assert!(s.query(&query).await.unwrap().rows.is_empty());

        let mut w = s.watermarks().await.unwrap();
        w.sort();
        assert_eq!(w, [("c/a".to_string(), 3000), ("c/b".to_string(), 2990)]);
    }

    #[tokio::test]
    async fn retention_by_age_and_by_count_and_reopen_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        let s = SqliteStore::open(&path).await.unwrap();
        let batch: Vec<StoredFlow> = (1..=1000).map(|i| stored("c/a", i, "a/b", 1)).collect();
        s.insert(&batch).await.unwrap();
        let before = s.stats().await.unwrap();
        assert_eq!((before.flows, before.oldest_ns), (1000, 1));
        assert!(before.bytes > 0);

        assert_eq!(s.delete_before(101).await.unwrap(), 100);
        assert_eq!(s.delete_oldest(400).await.unwrap(), 400);
        let after = s.stats().await.unwrap();
        assert_eq!((after.flows, after.oldest_ns), (500, 501));
        assert!(after.bytes < before.bytes, "{after:?} vs {before:?}");
        s.close().await;
        drop(s);

        let s = SqliteStore::open(&path).await.unwrap();
        let p = s
            .query(&q(None, None, Order::Ascending, 10_000))
            .await
            .unwrap();
        assert_eq!(p.rows.len(), 500);
        assert_eq!(p.rows[0].0, 501);
        assert_eq!(p.rows[0].1, batch[500].response);
    }
}
