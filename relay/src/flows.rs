//! GetFlows across nodes: the same request goes to every selected, connected node (filters
//! are applied there), and their streams are merged by a [`SortBuffer`].
//!
//! - `number` is per node, as in Hubble: each node answers its own last/first N.
//! - Non-follow: the stream ends when every node asked has finished or failed.
//! - Follow: the stream never ends by itself. A node whose stream fails or ends is
//!   reported `NODE_UNAVAILABLE` and asked again when the pool reconnects it (a new
//!   connection generation); nodes that join later are asked too, then `NODE_CONNECTED`
//!   is sent. A (re)joining node is asked with `number` 0 and `since` = one ns after the
//!   last event it sent on this stream (or the time the stream began), so nothing is
//!   repeated and a short outage leaves no gap when the agent kept its flows.
//! - Node status events go to the client as they happen (not through the sort buffer).
//! - Lost events from nodes are merged like flows.
//!
//! Responses stay encoded all the way ([`lumen_api::encoded`]): the relay reads only each
//! one's time, and writes the bytes the node sent. Every hop (node stream → merge →
//! client stream) carries batches: whatever has arrived, never waiting to fill one.

use crate::{
    error::RelayError,
    merge::SortBuffer,
    pool::{NodeInfo, Snapshot},
    select::NodeSelector,
};
use lumen_api::{
    encoded::{EncodedResponse, GetFlowsClientCodec},
    observer::{get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse},
    relay::{NodeState, NodeStatusEvent},
    wkt::Timestamp,
};
use prost::Message;
use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    pin::Pin,
    task::Poll,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{codegen::Bytes, Status, Streaming};

/// Batches queued between one node's stream and the merge.
const NODE_QUEUE: usize = 4;

/// Most responses in one batch from a node.
const NODE_BATCH: usize = 256;

/// Most responses in one batch towards the client.
const CLIENT_BATCH: usize = 512;

/// Batches queued towards the client.
pub const CLIENT_QUEUE: usize = 4;

/// How far out of time order one node's stream may be: an agent's records from different
/// CPUs reach its ring in reservation order, not timestamp order (seen: ~1 µs apart). The
/// merge absorbs disorder up to this much.
pub const NODE_REORDER_SLACK: Duration = Duration::from_millis(1);

/// Merge settings.
#[derive(Debug, Clone, Copy)]
pub struct MergeConfig {
    /// `sortBufferMaxLen`.
    pub max_len: usize,
    /// `sortBufferDrainTimeout` (follow requests).
    pub drain_timeout: Duration,
    /// How long to wait for a node to accept the request.
    pub open_timeout: Duration,
}

/// What a node's pump reports.
enum NodeMsg {
    Opened,
    /// Responses in stream order (never empty).
    Resps(Vec<EncodedResponse>),
    Ended,
    Failed(String),
}

struct NodeStream {
    name: String,
    rx: mpsc::Receiver<NodeMsg>,
    /// Received, not yet in the sort buffer (held back by its bound).
    pending: VecDeque<EncodedResponse>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NodeStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn timestamp(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

/// A `node_status` response.
pub fn node_status(state: NodeState, nodes: Vec<String>, message: &str) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: String::new(),
        time: Some(timestamp(now_ns())),
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: nodes,
            message: message.to_string(),
        })),
    }
}

fn encoded_status(state: NodeState, nodes: Vec<String>, message: &str) -> Bytes {
    Bytes::from(node_status(state, nodes, message).encode_to_vec())
}

pub(crate) async fn open(
    node: &NodeInfo,
    req: GetFlowsRequest,
    timeout: Duration,
) -> Result<Streaming<EncodedResponse>, Status> {
    let channel = node
        .channel
        .clone()
        .ok_or_else(|| Status::unavailable("not connected"))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(16 << 20);
    let call = async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("node not ready: {e}")))?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/observer.Observer/GetFlows");
        grpc.server_streaming(tonic::Request::new(req), path, GetFlowsClientCodec)
            .await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(Status::deadline_exceeded("the node did not answer in time")),
    }
}

/// Forwards a node's stream in batches of what has arrived; `announce`: first say it
/// opened (a node joining later).
async fn pump(mut stream: Streaming<EncodedResponse>, tx: mpsc::Sender<NodeMsg>, announce: bool) {
    if announce && tx.send(NodeMsg::Opened).await.is_err() {
        return;
    }
    let last = loop {
        let first = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break NodeMsg::Ended,
            Err(s) => break NodeMsg::Failed(s.message().to_string()),
        };
        let mut batch = vec![first];
        let mut end = None;
        while batch.len() < NODE_BATCH {
            let next = poll_fn(|cx| Poll::Ready(Pin::new(&mut stream).poll_next(cx))).await;
            match next {
                Poll::Ready(Some(Ok(r))) => batch.push(r),
                Poll::Ready(Some(Err(s))) => {
                    end = Some(NodeMsg::Failed(s.message().to_string()));
                    break;
                }
                Poll::Ready(None) => {
                    end = Some(NodeMsg::Ended);
                    break;
                }
                Poll::Pending => break,
            }
        }
        if tx.send(NodeMsg::Resps(batch)).await.is_err() {
            return;
        }
        if let Some(end) = end {
            break end;
        }
    };
    let _ = tx.send(last).await;
}

fn spawn_stream(name: &str, stream: Streaming<EncodedResponse>) -> NodeStream {
    let (tx, rx) = mpsc::channel(NODE_QUEUE);
    NodeStream {
        name: name.to_string(),
        rx,
        pending: VecDeque::new(),
        task: tokio::spawn(pump(stream, tx, false)),
    }
}

fn spawn_open(node: NodeInfo, req: GetFlowsRequest, timeout: Duration) -> NodeStream {
    let (tx, rx) = mpsc::channel(NODE_QUEUE);
    let name = node.name.clone();
    let task = tokio::spawn(async move {
        match open(&node, req, timeout).await {
            Ok(s) => pump(s, tx, true).await,
            Err(s) => {
                let _ = tx.send(NodeMsg::Failed(s.message().to_string())).await;
            }
        }
    });
    NodeStream {
        name,
        rx,
        pending: VecDeque::new(),
        task,
    }
}

/// A started GetFlows fan-out: run [`FanOut::run`] to feed `tx`.
pub struct FanOut {
    req: GetFlowsRequest,
    selector: NodeSelector,
    cfg: MergeConfig,
    pool: watch::Receiver<Snapshot>,
    streams: Vec<NodeStream>,
    /// Connection generation each node was last asked on.
    asked: HashMap<String, u64>,
    /// Time of the last event each node sent.
    last_ns: HashMap<String, i64>,
    started_ns: i64,
    initial_unavailable: Vec<(String, String)>,
}

impl FanOut {
    /// Asks every selected, connected node. Fails if the request is invalid, if a node
    /// refuses it as invalid, or (non-follow) if no node could be asked.
    pub async fn start(
        req: GetFlowsRequest,
        mut pool: watch::Receiver<Snapshot>,
        cfg: MergeConfig,
    ) -> Result<FanOut, RelayError> {
        let selector = NodeSelector::from_whitelist(&req.whitelist)?;
        // Nodes still being dialled for the first time (relay just started, node just
        // discovered) get up to the open timeout to connect.
        let deadline = tokio::time::Instant::now() + cfg.open_timeout;
        while pool
            .borrow()
            .values()
            .any(|n| n.state == NodeState::UnknownNodeState && selector.matches(&n.name))
        {
            match tokio::time::timeout_at(deadline, pool.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let snapshot = pool.borrow().clone();
        let mut opening = tokio::task::JoinSet::new();
        let mut initial_unavailable = vec![];
        let mut asked = HashMap::new();
        for node in snapshot.values().filter(|n| selector.matches(&n.name)) {
            if node.state == NodeState::NodeConnected {
                asked.insert(node.name.clone(), node.generation);
                let (node, req, t) = (node.clone(), req.clone(), cfg.open_timeout);
                opening.spawn(async move { (node.name.clone(), open(&node, req, t).await) });
            } else {
                initial_unavailable.push((node.name.clone(), node.message.clone()));
            }
        }
        let mut streams = vec![];
        while let Some(r) = opening.join_next().await {
            let Ok((name, r)) = r else { continue };
            match r {
                Ok(s) => streams.push(spawn_stream(&name, s)),
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(RelayError::Node { node: name, status });
                }
                Err(status) => initial_unavailable.push((name, status.message().to_string())),
            }
        }
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        initial_unavailable.sort();
        if streams.is_empty() && !req.follow {
            let why = initial_unavailable
                .iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RelayError::NoNodes(why));
        }
        Ok(FanOut {
            req,
            selector,
            cfg,
            pool,
            streams,
            asked,
            last_ns: HashMap::new(),
            started_ns: now_ns(),
            initial_unavailable,
        })
    }

    /// The request a (re)joining node gets.
    fn rejoin_request(&self, node: &str) -> GetFlowsRequest {
        let since = self
            .last_ns
            .get(node)
            .map(|t| t + 1)
            .unwrap_or(self.started_ns);
        let since = match self.req.since.as_ref() {
            Some(s) => since.max(s.seconds.saturating_mul(1_000_000_000) + s.nanos as i64),
            None => since,
        };
        GetFlowsRequest {
            number: 0,
            first: false,
            since: Some(timestamp(since)),
            ..self.req.clone()
        }
    }

    /// Nodes connected (on a newer connection than last asked) and not streaming: ask them.
    fn join_new_nodes(&mut self) {
        let snapshot = self.pool.borrow_and_update().clone();
        for node in snapshot.values() {
            if node.state != NodeState::NodeConnected
                || !self.selector.matches(&node.name)
                || self.streams.iter().any(|s| s.name == node.name)
                || self
                    .asked
                    .get(&node.name)
                    .is_some_and(|g| *g >= node.generation)
            {
                continue;
            }
            tracing::debug!(node = %node.name, "asking (re)joining node");
            self.asked.insert(node.name.clone(), node.generation);
            let req = self.rejoin_request(&node.name);
            self.streams
                .push(spawn_open(node.clone(), req, self.cfg.open_timeout));
        }
    }

    /// Moves queued responses into the sort buffer as its bound allows, round the nodes,
    /// and collects into `out` what may leave it. Sends full batches on the way; `false`:
    /// the client went away.
    async fn feed(
        &mut self,
        buf: &mut SortBuffer<Bytes>,
        out: &mut Vec<Bytes>,
        tx: &mpsc::Sender<Vec<Bytes>>,
    ) -> bool {
        let now = Instant::now();
        let mut next = 0usize;
        loop {
            while let Some(r) = buf.pop(now) {
                out.push(r);
                if out.len() >= CLIENT_BATCH
                    && tx
                        .send(std::mem::replace(out, Vec::with_capacity(CLIENT_BATCH)))
                        .await
                        .is_err()
                {
                    return false;
                }
            }
            let n = self.streams.len();
            let mut fed = false;
            for k in 0..n {
                let i = (next + k) % n;
                let s = &mut self.streams[i];
                if s.pending.is_empty() || !buf.wants(&s.name) {
                    continue;
                }
                // While there is room, a node's queue goes in at once; when full, one entry
                // at a time from the nodes holding the merge back, as they came.
                for _ in 0..buf.room().max(1).min(s.pending.len()) {
                    if let Some(e) = s.pending.pop_front() {
                        buf.push(&s.name, e.time_ns, e.bytes, now);
                    }
                }
                next = i + 1;
                fed = true;
                break;
            }
            if !fed {
                return true;
            }
        }
    }

    /// Merges until the client goes away or (non-follow) every node has finished.
    pub async fn run(mut self, tx: mpsc::Sender<Vec<Bytes>>) {
        let follow = self.req.follow;
        let mut buf = SortBuffer::new(
            self.cfg.max_len,
            follow.then_some(self.cfg.drain_timeout),
            NODE_REORDER_SLACK,
        );
        let connected: Vec<String> = self.streams.iter().map(|s| s.name.clone()).collect();
        for name in &connected {
            buf.open(name);
        }
        let mut status = vec![];
        if !connected.is_empty() {
            status.push(encoded_status(NodeState::NodeConnected, connected, ""));
        }
        let unavailable = std::mem::take(&mut self.initial_unavailable);
        if !unavailable.is_empty() {
            let msg = unavailable
                .iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            status.push(encoded_status(
                NodeState::NodeUnavailable,
                unavailable.into_iter().map(|(n, _)| n).collect(),
                &msg,
            ));
        }
        if !status.is_empty() && tx.send(status).await.is_err() {
            return;
        }
        let mut rotate = 0usize;
        let mut out = Vec::new();
        loop {
            if !self.feed(&mut buf, &mut out, &tx).await {
                return;
            }
            if !out.is_empty() && tx.send(std::mem::take(&mut out)).await.is_err() {
                return;
            }
            if !follow && self.streams.is_empty() && buf.is_empty() {
                return;
            }
            let deadline = buf.next_deadline();
            let streams = &mut self.streams;
            let bufr = &buf;
            rotate = rotate.wrapping_add(1);
            let next = poll_fn(|cx| {
                let n = streams.len();
                for k in 0..n {
                    let i = (k + rotate) % n;
                    if !streams[i].pending.is_empty() || !bufr.wants(&streams[i].name) {
                        continue;
                    }
                    match streams[i].rx.poll_recv(cx) {
                        Poll::Ready(m) => {
                            return Poll::Ready((
                                i,
                                m.unwrap_or(NodeMsg::Failed("relay task ended".into())),
                            ))
                        }
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                (i, msg) = next => {
                    match msg {
                        NodeMsg::Opened => {
                            let name = self.streams[i].name.clone();
                            buf.open(&name);
                            let s = encoded_status(NodeState::NodeConnected, vec![name], "");
                            if tx.send(vec![s]).await.is_err() {
                                return;
                            }
                        }
                        NodeMsg::Resps(batch) => {
                            let s = &mut self.streams[i];
                            if let Some(last) = batch.last() {
                                match self.last_ns.get_mut(&s.name) {
                                    Some(t) => *t = last.time_ns,
                                    None => {
                                        self.last_ns.insert(s.name.clone(), last.time_ns);
                                    }
                                }
                            }
                            s.pending.extend(batch);
                        }
                        NodeMsg::Ended | NodeMsg::Failed(_) => {
                            let name = self.streams[i].name.clone();
                            self.streams.swap_remove(i);
                            buf.close(&name);
                            let why = match msg {
                                NodeMsg::Failed(m) => Some(m),
                                _ if follow => Some("stream ended".to_string()),
                                _ => None,
                            };
                            if let Some(why) = why {
                                tracing::info!(node = %name, reason = %why, "node left the stream");
                                let s = encoded_status(NodeState::NodeUnavailable, vec![name], &why);
                                if tx.send(vec![s]).await.is_err() {
                                    return;
                                }
                            }
                            if follow {
                                // The pool may have reconnected it before its old stream
                                // failed here: that change has been seen already.
                                self.join_new_nodes();
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {}
                changed = self.pool.changed(), if follow => {
                    if changed.is_err() {
                        return;
                    }
                    self.join_new_nodes();
                }
                _ = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The fan-out against synthetic agents: in-process Observer servers on unix sockets
    //! whose GetFlows streams are scripted.
    use super::*;
    use crate::{config::Backoff, dial::Dialer, merge::time_ns, pool::Pool};
    use lumen_api::{
        flow::Flow,
        observer::{
            observer_server::{Observer, ObserverServer},
            *,
        },
    };
    use std::{path::PathBuf, sync::Arc};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::{Request, Response};

    /// A fake agent: `history` (times in ms) answered to every request (the last `number`
    /// when set), then, on follow, whatever is sent on `live`.
    #[derive(Clone)]
    pub(crate) struct FakeAgent {
        node: String,
        history: Vec<i64>,
        live: Arc<tokio::sync::Mutex<Option<mpsc::Receiver<i64>>>>,
        pub(crate) requests: Arc<std::sync::Mutex<Vec<GetFlowsRequest>>>,
    }

    fn flow_resp(node: &str, ms: i64) -> GetFlowsResponse {
        let t = timestamp(ms * 1_000_000);
        GetFlowsResponse {
            node_name: node.into(),
            time: Some(t),
            response_types: Some(ResponseTypes::Flow(Flow {
                node_name: node.into(),
                time: Some(t),
                ..Default::default()
            })),
        }
    }

    #[tonic::async_trait]
    impl Observer for FakeAgent {
        type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
        type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
        type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

        async fn get_flows(
            &self,
            req: Request<GetFlowsRequest>,
        ) -> Result<Response<Self::GetFlowsStream>, Status> {
            let req = req.into_inner();
            if req.whitelist.iter().any(|f| f.source_ip == ["bad"]) {
                return Err(Status::invalid_argument("invalid source_ip"));
            }
            self.requests.lock().unwrap().push(req.clone());
            let (tx, rx) = mpsc::channel(16);
            let since_ms = req.since.as_ref().map_or(i64::MIN, |t| {
                (t.seconds * 1_000_000_000 + t.nanos as i64 + 999_999) / 1_000_000
            });
            let mut hist: Vec<i64> = self
                .history
                .iter()
                .copied()
                .filter(|t| *t >= since_ms)
                .collect();
            if req.number > 0 && (req.number as usize) < hist.len() {
                hist = hist[hist.len() - req.number as usize..].to_vec();
            }
            let node = self.node.clone();
            let live = self.live.clone();
            tokio::spawn(async move {
                for t in hist {
                    if tx.send(Ok(flow_resp(&node, t))).await.is_err() {
                        return;
                    }
                }
                if req.follow {
                    if let Some(mut live) = live.lock().await.take() {
                        while let Some(t) = live.recv().await {
                            if t < 0 {
                                let _ = tx.send(Err(Status::unavailable("agent died"))).await;
                                return;
                            }
                            if tx.send(Ok(flow_resp(&node, t))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
        async fn get_agent_events(
            &self,
            _: Request<GetAgentEventsRequest>,
        ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_debug_events(
            &self,
            _: Request<GetDebugEventsRequest>,
        ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_nodes(
            &self,
            _: Request<GetNodesRequest>,
        ) -> Result<Response<GetNodesResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_namespaces(
            &self,
            _: Request<GetNamespacesRequest>,
        ) -> Result<Response<GetNamespacesResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn server_status(
            &self,
            _: Request<ServerStatusRequest>,
        ) -> Result<Response<ServerStatusResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    pub(crate) struct Running {
        pub(crate) agent: FakeAgent,
        pub(crate) live: Option<mpsc::Sender<i64>>,
        pub(crate) server: tokio::task::JoinHandle<()>,
        pub(crate) path: PathBuf,
    }

    pub(crate) fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lumen-relay-test-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn serve(dir: &std::path::Path, node: &str, history: Vec<i64>) -> Running {
        let path = dir.join(format!("{}.sock", node.replace('/', "_")));
        let _ = std::fs::remove_file(&path);
        let (ltx, lrx) = mpsc::channel(16);
        let agent = FakeAgent {
            node: node.into(),
            history,
            live: Arc::new(tokio::sync::Mutex::new(Some(lrx))),
            requests: Default::default(),
        };
        let uds = tokio::net::UnixListener::bind(&path).unwrap();
        let (_, health) = tonic_health::server::health_reporter();
        let svc = ObserverServer::new(agent.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(uds))
                .await;
        });
        Running {
            agent,
            live: Some(ltx),
            server,
            path,
        }
    }

    pub(crate) fn pool() -> Pool {
        Pool::new(
            Dialer {
                timeout: Duration::from_secs(2),
                tls: None,
            },
            Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(100),
            },
        )
    }

    pub(crate) async fn wait_connected(pool: &Pool, n: usize) {
        let mut rx = pool.subscribe();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let c = rx
                    .borrow_and_update()
                    .values()
                    .filter(|n| n.state == NodeState::NodeConnected)
                    .count();
                if c >= n {
                    return;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("nodes connected");
    }

    pub(crate) const CFG: MergeConfig = MergeConfig {
        max_len: 100,
        drain_timeout: Duration::from_millis(50),
        open_timeout: Duration::from_secs(2),
    };

    async fn run(
        pool: &Pool,
        req: GetFlowsRequest,
    ) -> Result<mpsc::Receiver<Result<GetFlowsResponse, Status>>, RelayError> {
        let fan = FanOut::start(req, pool.subscribe(), CFG).await?;
        let (tx, brx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(fan.run(tx));
        // What a client decodes from the stream the relay serves.
        let (dtx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut s = lumen_api::encoded::BatchStream::new(brx);
            while let Some(b) = s.next().await {
                let r = b.and_then(|b| {
                    GetFlowsResponse::decode(b).map_err(|e| Status::internal(e.to_string()))
                });
                if dtx.send(r).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn collect(
        rx: &mut mpsc::Receiver<Result<GetFlowsResponse, Status>>,
    ) -> Vec<GetFlowsResponse> {
        let mut out = vec![];
        while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            out.push(r.unwrap());
        }
        out
    }

    fn flows(rs: &[GetFlowsResponse]) -> Vec<(String, i64)> {
        rs.iter()
            .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
            .map(|r| (r.node_name.clone(), time_ns(r) / 1_000_000))
            .collect()
    }

    fn statuses(rs: &[GetFlowsResponse]) -> Vec<(NodeState, Vec<String>)> {
        rs.iter()
            .filter_map(|r| match &r.response_types {
                Some(ResponseTypes::NodeStatus(s)) => {
                    Some((s.state_change(), s.node_names.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn merges_history_in_time_order_with_number_per_node() {
        let d = dir();
        let a = serve(&d, "c/a", vec![1, 3, 5, 7, 9]);
        let b = serve(&d, "c/b", vec![2, 4, 6]);
        let pool = pool();
        pool.upsert("c/a", &format!("unix://{}", a.path.display()));
        pool.upsert("c/b", &format!("unix://{}", b.path.display()));
        wait_connected(&pool, 2).await;

        let mut rx = run(&pool, GetFlowsRequest::default()).await.unwrap();
        let all = collect(&mut rx).await;
        let times: Vec<i64> = flows(&all).iter().map(|f| f.1).collect();
        assert_eq!(times, [1, 2, 3, 4, 5, 6, 7, 9]);
        assert_eq!(
            statuses(&all),
            [(NodeState::NodeConnected, vec!["c/a".into(), "c/b".into()])]
        );

        let mut rx = run(
            &pool,
            GetFlowsRequest {
                number: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            flows(&collect(&mut rx).await),
            [
                ("c/b".into(), 4),
                ("c/b".into(), 6),
                ("c/a".into(), 7),
                ("c/a".into(), 9)
            ]
        );
        std::fs::remove_dir_all(&d).ok();
        drop((a.server, b.server));
    }

    #[tokio::test]
    async fn node_name_filter_asks_one_node_and_bad_requests_fail() {
        let d = dir();
        let a = serve(&d, "c/a", vec![1]);
        let b = serve(&d, "c/b", vec![2]);
        let pool = pool();
        pool.upsert("c/a", &format!("unix://{}", a.path.display()));
        pool.upsert("c/b", &format!("unix://{}", b.path.display()));
        wait_connected(&pool, 2).await;
        let req = GetFlowsRequest {
            whitelist: vec![lumen_api::flow::FlowFilter {
                node_name: vec!["c/b".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut rx = run(&pool, req).await.unwrap();
        assert_eq!(flows(&collect(&mut rx).await), [("c/b".into(), 2)]);
        assert!(a.agent.requests.lock().unwrap().is_empty());
        assert_eq!(b.agent.requests.lock().unwrap().len(), 1);

        let bad = GetFlowsRequest {
            whitelist: vec![lumen_api::flow::FlowFilter {
                source_ip: vec!["bad".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let Err(e) = run(&pool, bad).await else {
            panic!("refused")
        };
        assert_eq!(Status::from(e).code(), tonic::Code::InvalidArgument);
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn follow_survives_a_node_going_away_and_takes_late_nodes() {
        let d = dir();
        let a = serve(&d, "c/a", vec![1]);
        let mut b = serve(&d, "c/b", vec![2]);
        let pool = pool();
        pool.upsert("c/a", &format!("unix://{}", a.path.display()));
        pool.upsert("c/b", &format!("unix://{}", b.path.display()));
        wait_connected(&pool, 2).await;
        let mut rx = run(
            &pool,
            GetFlowsRequest {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("stream stalled")
                .expect("stream ended")
                .unwrap()
        };
        let mut seen = vec![];
        while flows(&seen).len() < 2 {
            seen.push(next().await);
        }
        assert_eq!(flows(&seen), [("c/a".into(), 1), ("c/b".into(), 2)]);

        // b dies mid-stream: reported, a keeps flowing.
        b.live.take().unwrap().send(-1).await.unwrap();
        let r = next().await;
        assert_eq!(
            statuses(&[r]),
            [(NodeState::NodeUnavailable, vec!["c/b".to_string()])]
        );
        let la = a.live.clone().unwrap();
        la.send(10).await.unwrap();
        assert_eq!(flows(&[next().await]), [("c/a".into(), 10)]);

        // A late node joins: NODE_CONNECTED, then its flows, asked from the stream start on.
        let c = serve(&d, "c/late", vec![]);
        pool.upsert("c/late", &format!("unix://{}", c.path.display()));
        let r = next().await;
        assert_eq!(
            statuses(&[r]),
            [(NodeState::NodeConnected, vec!["c/late".to_string()])]
        );
        let lreq = c.agent.requests.lock().unwrap()[0].clone();
        assert!(lreq.follow && lreq.since.is_some() && lreq.number == 0);
        let lc = c.live.clone().unwrap();
        lc.send(20).await.unwrap();
        la.send(21).await.unwrap();
        let mut got = vec![];
        while got.len() < 2 {
            got.extend(flows(&[next().await]));
        }
        assert_eq!(got, [("c/late".into(), 20), ("c/a".into(), 21)]);
        std::fs::remove_dir_all(&d).ok();
    }

    #[tokio::test]
    async fn non_follow_ends_when_a_node_dies_and_no_nodes_is_unavailable() {
        let pool = pool();
        let e = run(&pool, GetFlowsRequest::default()).await.err().unwrap();
        assert_eq!(Status::from(e).code(), tonic::Code::Unavailable);
        pool.upsert("c/gone", "unix:///nonexistent/lumen.sock");
        let e = run(&pool, GetFlowsRequest::default()).await.err().unwrap();
        assert!(e.to_string().contains("c/gone"), "{e}");
    }
}
