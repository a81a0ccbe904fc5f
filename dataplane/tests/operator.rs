//! `lumen-operator` against an in-process stand-in for the API server: real-shaped objects
//! (fixtures recorded from a cluster) served over HTTP with the API server's semantics for
//! what the operator touches — list and watch (resourceVersions, ADDED/MODIFIED/DELETED),
//! create (409 AlreadyExists), update with optimistic concurrency (409 Conflict on a stale
//! resourceVersion), JSON merge patch of objects and of their status subresource, delete.
//! Each operator instance talks to its own listener, so every request is attributed.
//! Assertions are on what the cluster holds after the run.

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{Method, StatusCode, Uri},
    response::Response,
    Router,
};
use lumen_dataplane::operator::{self, OperatorConfig};
use serde_json::{json, Value};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

const NODES: &str = "api/v1/nodes";
const SERVICES: &str = "api/v1/services";
const LEASES: &str = "apis/coordination.k8s.io/v1/leases";
const CILIUM_NODES: &str = "apis/cilium.io/v2/ciliumnodes";
const POOLS: &str = "apis/cilium.io/v2alpha1/ciliumloadbalancerippools";
const EVENTS: &str = "apis/events.k8s.io/v1/events";

fn fixture(name: &str, vars: &[(&str, &str)]) -> Value {
    let path = format!(
        "{}/tests/fixtures/operator/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(k, v);
    }
    serde_json::from_str(&text).unwrap()
}

/// One request the server got.
#[derive(Debug, Clone)]
struct Request {
    /// Which listener (operator instance).
    from: &'static str,
    method: Method,
    /// Collection, e.g. `apis/cilium.io/v2/ciliumnodes`.
    collection: String,
    subresource: Option<String>,
}

#[derive(Default)]
struct Db {
    rv: u64,
    /// (collection, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// Every change: (resourceVersion, collection, namespace, type, object).
    log: Vec<(u64, String, String, &'static str, Value)>,
    requests: Vec<Request>,
    /// Listeners whose Lease requests fail with 503 (that instance cannot renew).
    lease_outage: BTreeSet<&'static str>,
}

/// The stand-in API server's storage.
struct Fake {
    db: Mutex<Db>,
    tick: watch::Sender<u64>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    respond(code, &body)
}

fn respond(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn list_kind(collection: &str) -> &'static str {
    match collection.rsplit('/').next().unwrap() {
        "nodes" => "NodeList",
        "services" => "ServiceList",
        "leases" => "LeaseList",
        "ciliumnodes" => "CiliumNodeList",
        "ciliumloadbalancerippools" => "CiliumLoadBalancerIPPoolList",
        _ => "EventList",
    }
}

/// A parsed request path.
struct Path {
    collection: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Path> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix = match *segs.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    let mut rest = segs.get(prefix..)?;
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        namespace = rest[1].to_string();
        rest = &rest[2..];
    }
    Some(Path {
        collection: format!("{}/{}", segs[..prefix].join("/"), rest.first()?),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Fake {
            db: Mutex::new(Db::default()),
            tick: watch::channel(0).0,
        })
    }

    /// Stores a change and wakes the watchers.
    fn commit(&self, db: &mut Db, coll: &str, ns: &str, kind: &'static str, obj: Value) {
        self.tick.send_replace(db.rv);
        db.log.push((db.rv, coll.into(), ns.into(), kind, obj));
    }

    /// Creates an object as another client (kubectl, the kubelet) would.
    fn create(&self, coll: &str, mut obj: Value) -> Value {
        let mut db = self.db.lock().unwrap();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        db.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(db.rv.to_string());
        if obj["metadata"]["uid"].as_str().is_none_or(|u| u == "UID") {
            obj["metadata"]["uid"] = json!(format!("6f1c2a3b-0000-4000-8000-{:012}", db.rv));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-11-27T22:00:00Z");
        }
        db.objects
            .insert((coll.into(), ns.clone(), name), obj.clone());
        let db = &mut *db;
        self.commit(db, coll, &ns, "ADDED", obj.clone());
        obj
    }

    /// Deletes an object as another client would.
    fn delete(&self, coll: &str, ns: &str, name: &str) {
        let mut db = self.db.lock().unwrap();
        let obj = db
            .objects
            .remove(&(coll.into(), ns.into(), name.into()))
            .unwrap();
        db.rv += 1;
        let db = &mut *db;
        self.commit(db, coll, ns, "DELETED", obj);
    }

    fn get(&self, coll: &str, ns: &str, name: &str) -> Option<Value> {
        self.db
            .lock()
            .unwrap()
            .objects
            .get(&(coll.into(), ns.into(), name.into()))
            .cloned()
    }

    fn list(&self, coll: &str) -> Vec<Value> {
        let db = self.db.lock().unwrap();
        db.objects
            .iter()
            .filter(|((c, _, _), _)| c == coll)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn requests(&self) -> Vec<Request> {
        self.db.lock().unwrap().requests.clone()
    }

    /// Serves one instance's requests, tagged `from`, on a new port; returns its URL.
    async fn listen(self: &Arc<Self>, from: &'static str) -> String {
        let app = Router::new()
            .fallback(handle)
            .with_state((self.clone(), from));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

async fn handle(
    State((fake, from)): State<(Arc<Fake>, &'static str)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(p) = parse_path(uri.path()) else {
        return status(
            404,
            "NotFound",
            format!("the server could not find {}", uri.path()),
        );
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut db = fake.db.lock().unwrap();
    db.requests.push(Request {
        from,
        method: method.clone(),
        collection: p.collection.clone(),
        subresource: p.subresource.clone(),
    });
    if p.collection == LEASES && db.lease_outage.contains(from) {
        return status(
            503,
            "ServiceUnavailable",
            "etcdserver: request timed out".into(),
        );
    }
    let coll = p.collection.clone();
    let resource = coll.rsplit('/').next().unwrap().to_string();
    let key = |name: &str| (coll.clone(), p.namespace.clone(), name.to_string());
    let not_found =
        |name: &str| status(404, "NotFound", format!("{resource} \"{name}\" not found"));
    match (method.clone(), p.name.as_deref()) {
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            let from_rv: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut initial = vec![];
            if from_rv == 0 {
                initial = db
                    .objects
                    .iter()
                    .filter(|((c, n, _), _)| {
                        *c == coll && (p.namespace.is_empty() || *n == p.namespace)
                    })
                    .map(|(_, o)| json!({"type": "ADDED", "object": o}).to_string() + "\n")
                    .collect();
            }
            let start = if from_rv == 0 { db.rv } else { from_rv };
            drop(db);
            watch_stream(fake.clone(), coll, p.namespace, start, initial)
        }
        (Method::GET, None) => {
            let items: Vec<Value> = db
                .objects
                .iter()
                .filter(|((c, n, _), _)| {
                    *c == coll && (p.namespace.is_empty() || *n == p.namespace)
                })
                .map(|(_, o)| o.clone())
                .collect();
            respond(
                200,
                &json!({"kind": list_kind(&coll), "apiVersion": "v1",
                "metadata": {"resourceVersion": db.rv.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(name)) => match db.objects.get(&key(name)) {
            Some(o) => respond(200, o),
            None => not_found(name),
        },
        (Method::POST, None) => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap();
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            if db.objects.contains_key(&key(&name)) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{resource} \"{name}\" already exists"),
                );
            }
            if !p.namespace.is_empty() {
                obj["metadata"]["namespace"] = json!(p.namespace);
            }
            drop(db);
            respond(201, &fake.create(&coll, obj))
        }
        (Method::PUT | Method::PATCH, Some(name)) => {
            let Some(old) = db.objects.get(&key(name)).cloned() else {
                return not_found(name);
            };
            let body: Value = serde_json::from_slice(&body).unwrap();
            let sent_rv = body["metadata"]["resourceVersion"].as_str();
            if sent_rv.is_some_and(|rv| Some(rv) != old["metadata"]["resourceVersion"].as_str()) {
                return status(409, "Conflict", format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
            }
            let mut new = apply_write(
                &method,
                &old,
                &body,
                p.subresource.as_deref() == Some("status"),
            );
            db.rv += 1;
            new["metadata"]["resourceVersion"] = json!(db.rv.to_string());
            db.objects.insert(key(name), new.clone());
            let db = &mut *db;
            fake.commit(db, &coll, &p.namespace, "MODIFIED", new.clone());
            respond(200, &new)
        }
        (Method::DELETE, Some(name)) => {
            if !db.objects.contains_key(&key(name)) {
                return not_found(name);
            }
            drop(db);
            let obj = fake.get(&coll, &p.namespace, name).unwrap();
            fake.delete(&coll, &p.namespace, name);
            respond(200, &obj)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method".into(),
        ),
    }
}

/// The object after a PUT (replace) or PATCH (merge patch) of `old`. Writes to the `status`
/// subresource change only `status`; other writes leave `status` alone, as for resources
/// with a status subresource.
fn apply_write(method: &Method, old: &Value, body: &Value, status_only: bool) -> Value {
    let mut new = old.clone();
    if status_only {
        let st = body.get("status").cloned().unwrap_or(Value::Null);
        if *method == Method::PUT {
            new["status"] = st;
        } else {
            merge(&mut new["status"], &st);
        }
        return new;
    }
    if *method == Method::PUT {
        new = body.clone();
        for k in ["uid", "creationTimestamp"] {
            new["metadata"][k] = old["metadata"][k].clone();
        }
    } else {
        let mut patch = body.clone();
        if let Some(p) = patch.as_object_mut() {
            p.remove("status");
        }
        merge(&mut new, &patch);
    }
    match old.get("status") {
        Some(st) => new["status"] = st.clone(),
        None => {
            if let Some(o) = new.as_object_mut() {
                o.remove("status");
            }
        }
    }
    new
}

/// A watch response: `initial` events, then every change to `coll` after `from_rv`.
fn watch_stream(
    fake: Arc<Fake>,
    coll: String,
    ns: String,
    from_rv: u64,
    initial: Vec<String>,
) -> Response {
    let tick = fake.tick.subscribe();
    let stream = futures::stream::unfold(
        (from_rv, initial, tick),
        move |(mut rv, mut pending, mut tick)| {
            let fake = fake.clone();
            let coll = coll.clone();
            let ns = ns.clone();
            async move {
                loop {
                    if !pending.is_empty() {
                        let chunk = pending.concat();
                        pending.clear();
                        return Some((
                            Ok::<_, std::io::Error>(Bytes::from(chunk)),
                            (rv, pending, tick),
                        ));
                    }
                    // Mark the current version seen before reading, so no change slips by.
                    tick.borrow_and_update();
                    {
                        let db = fake.db.lock().unwrap();
                        for (erv, c, n, kind, obj) in &db.log {
                            if *erv > rv && *c == coll && (ns.is_empty() || *n == ns) {
                                pending
                                    .push(json!({"type": kind, "object": obj}).to_string() + "\n");
                            }
                        }
                        rv = rv.max(db.rv);
                    }
                    if pending.is_empty() && tick.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    );
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Leader election fast enough for a test: the Lease expires 2 s after the last renewal.
const FAST: &str = "leaderElection: {leaseNamespace: kube-system, leaseDuration: 2s, renewDeadline: 1s, retryPeriod: 200ms}\n";
const CLUSTER_POOL: &str =
    "ipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: \"10.100.0.0/16\"\n";

/// An operator instance; dropping it kills it (as a deleted pod, without releasing).
struct Instance(tokio::task::JoinHandle<()>);

impl Drop for Instance {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn start(fake: &Arc<Fake>, name: &'static str, cfg: &str) -> Instance {
    start_until(fake, name, cfg, std::future::pending()).await
}

/// An instance that shuts down (as on SIGTERM) when `shutdown` completes.
async fn start_until(
    fake: &Arc<Fake>,
    name: &'static str,
    cfg: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Instance {
    let cfg = OperatorConfig::parse("test", cfg).unwrap();
    let url = fake.listen(name).await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    Instance(tokio::spawn(operator::run(
        client,
        cfg,
        name.to_string(),
        shutdown,
    )))
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn add_node(fake: &Fake, name: &str, address: &str) {
    fake.create(
        NODES,
        fixture("node.json", &[("NAME", name), ("ADDRESS", address)]),
    );
}

/// CiliumNode name → its `spec.ipam.podCIDRs`.
fn pod_cidrs(fake: &Fake) -> BTreeMap<String, Vec<String>> {
    fake.list(CILIUM_NODES)
        .iter()
        .map(|cn| {
            let cidrs = cn["spec"]["ipam"]["podCIDRs"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (cn["metadata"]["name"].as_str().unwrap().to_string(), cidrs)
        })
        .collect()
}

fn lease(fake: &Fake) -> Option<Value> {
    fake.get(LEASES, "kube-system", "lumen-operator-resource-lock")
}

fn holder(fake: &Fake) -> Option<String> {
    lease(fake).and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// Who wrote to `collection` (every method but GET), in order.
fn writers(fake: &Fake, collection: &str) -> Vec<&'static str> {
    fake.requests()
        .iter()
        .filter(|r| r.collection == collection && r.method != Method::GET)
        .map(|r| r.from)
        .collect()
}

fn assert_distinct_blocks(cidrs: &BTreeMap<String, Vec<String>>, mask: u8) {
    let pool: ipnet::Ipv4Net = "10.100.0.0/16".parse().unwrap();
    let mut seen = BTreeSet::new();
    for (node, c) in cidrs {
        assert_eq!(c.len(), 1, "{node}: {c:?}");
        let net: ipnet::Ipv4Net = c[0].parse().unwrap();
        assert_eq!(net.prefix_len(), mask, "{node}: {net}");
        assert!(pool.contains(&net), "{node}: {net} outside the pool");
        assert!(
            seen.insert(net),
            "{node}: {net} handed out twice: {cidrs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_allocates_and_its_successor_keeps_the_allocations() {
    let fake = Fake::new();
    for (i, n) in ["talos-cp-1", "talos-w-1", "talos-w-2"].iter().enumerate() {
        add_node(&fake, n, &format!("192.168.1.{}", 10 + i));
    }
    let cfg = format!("{CLUSTER_POOL}{FAST}");
    let mut a = Some(start(&fake, "op-a", &cfg).await);
    let mut b = Some(start(&fake, "op-b", &cfg).await);

    let first = wait_for(
        "three CiliumNodes with pod CIDRs",
        Duration::from_secs(10),
        || {
            let c = pod_cidrs(&fake);
            (c.len() == 3 && c.values().all(|v| !v.is_empty())).then_some(c)
        },
    )
    .await;
    assert_distinct_blocks(&first, 24);
    let cn = fake.get(CILIUM_NODES, "", "talos-w-1").unwrap();
    let node = fake.get(NODES, "", "talos-w-1").unwrap();
    assert_eq!(
        cn["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    assert_eq!(cn["metadata"]["ownerReferences"][0]["kind"], "Node");

    // Exactly one holds the Lease, and only it wrote CiliumNodes, also a while later.
    let leader = holder(&fake).expect("a Lease holder");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        holder(&fake).as_deref(),
        Some(leader.as_str()),
        "the leader renews"
    );
    let w = writers(&fake, CILIUM_NODES);
    assert!(!w.is_empty());
    assert!(
        w.iter().all(|f| *f == leader),
        "CiliumNode writes from {w:?}, leader {leader}"
    );
    assert_eq!(pod_cidrs(&fake), first, "no churn");

    // Kill the leader; the standby takes over once the Lease expires, keeps the blocks,
    // allocates for a new Node and releases a deleted Node's block.
    let standby = if leader == "op-a" { "op-b" } else { "op-a" };
    let killed = Instant::now();
    if leader == "op-a" {
        a.take();
    } else {
        b.take();
    }
    add_node(&fake, "talos-w-3", "192.168.1.20");
    wait_for(
        "the standby to take the Lease",
        Duration::from_secs(10),
        || (holder(&fake).as_deref() == Some(standby)).then_some(()),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "took over after {took:?}, before the Lease expired"
    );
    assert_eq!(lease(&fake).unwrap()["spec"]["leaseTransitions"], 1);
    let second = wait_for("a block for the new Node", Duration::from_secs(10), || {
        let c = pod_cidrs(&fake);
        c.get("talos-w-3")
            .is_some_and(|v| !v.is_empty())
            .then_some(c)
    })
    .await;
    assert_distinct_blocks(&second, 24);
    for (n, c) in &first {
        assert_eq!(&second[n], c, "{n}'s block changed across the failover");
    }
    let after_kill: Vec<_> = writers(&fake, CILIUM_NODES);
    assert_eq!(after_kill.last(), Some(&standby));

    let freed = first["talos-w-1"].clone();
    fake.delete(NODES, "", "talos-w-1");
    wait_for(
        "the deleted Node's CiliumNode to go",
        Duration::from_secs(10),
        || (!pod_cidrs(&fake).contains_key("talos-w-1")).then_some(()),
    )
    .await;
    add_node(&fake, "talos-w-4", "192.168.1.21");
    let third = wait_for("a block for the next Node", Duration::from_secs(10), || {
        let c = pod_cidrs(&fake);
        c.get("talos-w-4")
            .is_some_and(|v| !v.is_empty())
            .then_some(c)
    })
    .await;
    assert_eq!(third["talos-w-4"], freed, "the released block is reused");
    assert_distinct_blocks(&third, 24);
    drop((a, b));
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_addresses_from_the_pool() {
    let fake = Fake::new();
    fake.create(POOLS, fixture("lb-pool.json", &[("NAME", "homelab-pool")]));
    for (name, created, ip) in [
        ("web-lb", "2026-11-21T08:00:00Z", "10.96.12.7"),
        ("web-lb-2", "2026-11-21T09:00:00Z", "10.96.12.8"),
    ] {
        fake.create(
            SERVICES,
            fixture(
                "service-lb.json",
                &[("NAME", name), ("CREATED", created), ("CLUSTERIP", ip)],
            ),
        );
    }
    // Someone else's condition on the pool stays.
    {
        let mut db = fake.db.lock().unwrap();
        let pool = db
            .objects
            .get_mut(&(POOLS.into(), String::new(), "homelab-pool".into()))
            .unwrap();
        pool["status"] = json!({"conditions": [{"type": "example.com/Audited", "status": "True",
            "reason": "ok", "message": "", "lastTransitionTime": "2026-11-21T07:00:00Z"}]});
    }
    // ipam.mode kubernetes: LB-IPAM only, no pod-CIDR allocation.
    let _op = start(
        &fake,
        "op-a",
        &format!("ipam: {{mode: kubernetes}}\n{FAST}"),
    )
    .await;

    let web = wait_for("web-lb's address", Duration::from_secs(10), || {
        let s = fake.get(SERVICES, "demo", "web-lb")?;
        condition(&s, "cilium.io/IPAMRequestSatisfied").map(|_| s)
    })
    .await;
    assert_eq!(
        web["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "192.168.77.240"}])
    );
    let c = condition(&web, "cilium.io/IPAMRequestSatisfied").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("satisfied"))
    );
    assert_eq!(c["message"], "192.168.77.240 from pool homelab-pool");
    assert!(
        c["lastTransitionTime"].as_str().unwrap().starts_with("20"),
        "{c}"
    );
    assert_eq!(web["spec"]["type"], "LoadBalancer", "spec untouched");

    let web2 = wait_for("web-lb-2's condition", Duration::from_secs(10), || {
        let s = fake.get(SERVICES, "demo", "web-lb-2")?;
        condition(&s, "cilium.io/IPAMRequestSatisfied").map(|_| s)
    })
    .await;
    let c = condition(&web2, "cilium.io/IPAMRequestSatisfied").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("out_of_ips"))
    );
    assert!(
        web2["status"]["loadBalancer"].get("ingress").is_none(),
        "{web2}"
    );

    let pool = wait_for("the pool's status", Duration::from_secs(10), || {
        let p = fake.get(POOLS, "", "homelab-pool")?;
        condition(&p, "cilium.io/IPsUsed").map(|_| p)
    })
    .await;
    let msg = |t: &str| condition(&pool, t).unwrap()["message"].clone();
    assert_eq!(
        (
            msg("cilium.io/IPsTotal"),
            msg("cilium.io/IPsUsed"),
            msg("cilium.io/IPsAvailable")
        ),
        (json!("1"), json!("1"), json!("0"))
    );
    assert_eq!(
        condition(&pool, "cilium.io/PoolConflict").unwrap()["status"],
        "False"
    );
    assert!(condition(&pool, "example.com/Audited").is_some(), "{pool}");

    // Status goes through the status subresource only; nothing else is written.
    let writes: Vec<Request> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != Method::GET)
        .collect();
    for r in &writes {
        if r.collection == LEASES {
            continue;
        }
        assert!(
            r.method == Method::PATCH && r.subresource.as_deref() == Some("status"),
            "unexpected write {r:?}"
        );
    }
    assert!(writes
        .iter()
        .all(|r| r.collection != CILIUM_NODES && r.collection != NODES));
    assert!(
        fake.requests().iter().all(|r| r.collection != NODES),
        "kubernetes mode does not watch Nodes"
    );

    // Deleting the first Service frees its address for the second.
    fake.delete(SERVICES, "demo", "web-lb");
    wait_for(
        "web-lb-2 to get the freed address",
        Duration::from_secs(10),
        || {
            let s = fake.get(SERVICES, "demo", "web-lb-2")?;
            (s["status"]["loadBalancer"]["ingress"] == json!([{"ip": "192.168.77.240"}]))
                .then_some(())
        },
    )
    .await;
    // Stable afterwards: no more status writes once converged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = |f: &Fake| {
        f.requests()
            .iter()
            .filter(|r| r.collection == SERVICES && r.method == Method::PATCH)
            .count()
    };
    let before = count(&fake);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(count(&fake), before, "status rewritten without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_reported_on_the_node() {
    let fake = Fake::new();
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        add_node(&fake, n, &format!("192.168.1.{}", 10 + i));
    }
    let cfg = format!(
        "ipam:\n  mode: cluster-pool\n  operator:\n    clusterPoolIPv4PodCIDRList: [10.100.0.0/23]\n    clusterPoolIPv4MaskSize: 24\n{FAST}"
    );
    let _op = start(&fake, "op-a", &cfg).await;
    let event = wait_for(
        "an event about the exhausted pool",
        Duration::from_secs(10),
        || fake.list(EVENTS).into_iter().next(),
    )
    .await;
    let cidrs = pod_cidrs(&fake);
    assert_eq!(cidrs.len(), 2, "{cidrs:?}");
    assert_distinct_blocks(&cidrs, 24);
    let unlucky = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !cidrs.contains_key(*n))
        .unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "PodCIDRAllocationFailed");
    assert_eq!(event["regarding"]["kind"], "Node");
    assert_eq!(event["regarding"]["name"], unlucky);
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("10.100.0.0/23") && note.contains("clusterPoolIPv4PodCIDRList"),
        "{note}"
    );
    assert_eq!(event["reportingController"], "lumen-operator");

    // Reported once, not on every round.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(fake.list(EVENTS).len(), 1);
    // A Node leaving frees a block for the one waiting.
    let gone = cidrs.keys().next().unwrap().clone();
    fake.delete(NODES, "", &gone);
    wait_for("the waiting Node's block", Duration::from_secs(10), || {
        let c = pod_cidrs(&fake);
        (c.get(unlucky) == cidrs.get(&gone) && !c.contains_key(&gone)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_allocating() {
    let fake = Fake::new();
    add_node(&fake, "n1", "192.168.1.10");
    // The leader steps down 1 s after its last renewal; others wait 3 s.
    let cfg = format!("{CLUSTER_POOL}leaderElection: {{leaseNamespace: kube-system, leaseDuration: 3s, renewDeadline: 1s, retryPeriod: 200ms}}\n");
    let _a = start(&fake, "op-a", &cfg).await;
    wait_for("op-a to lead and allocate", Duration::from_secs(10), || {
        (holder(&fake).as_deref() == Some("op-a") && pod_cidrs(&fake).contains_key("n1"))
            .then_some(())
    })
    .await;
    let _b = start(&fake, "op-b", &cfg).await;
    // op-a can still reach everything but the Lease.
    fake.db.lock().unwrap().lease_outage.insert("op-a");
    let cut = Instant::now();
    let before = writers(&fake, CILIUM_NODES).len();
    // A Node joins after op-a had to step down and before op-b may take over: nobody
    // leads, so it waits for its block.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        holder(&fake).as_deref(),
        Some("op-a"),
        "the Lease has not expired yet"
    );
    add_node(&fake, "n2", "192.168.1.11");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !pod_cidrs(&fake).contains_key("n2"),
        "allocated without a leader"
    );
    wait_for("op-b to take over", Duration::from_secs(10), || {
        (holder(&fake).as_deref() == Some("op-b")).then_some(())
    })
    .await;
    assert!(
        cut.elapsed() >= Duration::from_millis(2500),
        "took over after {:?}",
        cut.elapsed()
    );
    wait_for("n2's block", Duration::from_secs(10), || {
        pod_cidrs(&fake).contains_key("n2").then_some(())
    })
    .await;
    let after = writers(&fake, CILIUM_NODES);
    assert!(
        after[before..].iter().all(|w| *w == "op-b"),
        "writes after the cut: {:?}",
        &after[before..]
    );
    assert_distinct_blocks(&pod_cidrs(&fake), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shutting_down_hands_over_without_waiting_for_expiry() {
    let fake = Fake::new();
    add_node(&fake, "n1", "192.168.1.10");
    let cfg = format!("{CLUSTER_POOL}leaderElection: {{leaseNamespace: kube-system, leaseDuration: 5s, renewDeadline: 2s, retryPeriod: 200ms}}\n");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a = start_until(&fake, "op-a", &cfg, async move {
        let _ = stopped.await;
    })
    .await;
    wait_for("op-a to lead and allocate", Duration::from_secs(10), || {
        (holder(&fake).as_deref() == Some("op-a") && pod_cidrs(&fake).contains_key("n1"))
            .then_some(())
    })
    .await;
    let _b = start(&fake, "op-b", &cfg).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).unwrap();
    let t = Instant::now();
    wait_for("op-b to take over", Duration::from_secs(10), || {
        (holder(&fake).as_deref() == Some("op-b")).then_some(())
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}: the Lease was not released",
        t.elapsed()
    );
    assert!(a.0.is_finished(), "op-a exits after releasing");
    assert_eq!(pod_cidrs(&fake)["n1"], ["10.100.0.0/24"]);
}
