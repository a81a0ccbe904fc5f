//! L2 announcement leases in the API server (`stateSource: kubernetes`): `LeaseStore::api`
//! against an in-process stand-in for the API server that serves
//! `coordination.k8s.io/v1` Leases with its semantics — GET (404 NotFound), POST (409
//! AlreadyExists), PUT with optimistic concurrency (409 Conflict on a stale
//! `resourceVersion`), `Status` bodies. Time is a clock the test moves. Assertions are on
//! what the store reports and what the server holds.

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{Method, StatusCode},
    response::Response,
    routing::{get, post},
    Router,
};
use lumen_dataplane::l2::lease::{Clock, LeaseStore, Outcome};
use serde_json::{json, Value};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

const NAME: &str = "cilium-l2announce-demo-web";
const D: Duration = Duration::from_secs(2);

/// A change made by someone else right before the next PUT is looked at.
type Interference = Box<dyn FnOnce(&mut Value) + Send>;

#[derive(Default)]
struct Db {
    rv: u64,
    /// (namespace, name) → Lease.
    leases: BTreeMap<(String, String), Value>,
    /// Applied (and the resourceVersion bumped) when the next PUT arrives.
    interfere: Option<Interference>,
    /// Every request: (method, name, status code).
    log: Vec<(Method, String, u16)>,
}

#[derive(Default)]
struct Server {
    db: Mutex<Db>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
        "details": {"group": "coordination.k8s.io", "kind": "leases"}});
    respond(code, &body)
}

fn respond(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

impl Server {
    fn lease(&self, name: &str) -> Option<Value> {
        let db = self.db.lock().unwrap();
        db.leases
            .get(&("kube-system".to_string(), name.to_string()))
            .cloned()
    }

    fn codes(&self, method: Method) -> Vec<u16> {
        let db = self.db.lock().unwrap();
        db.log
            .iter()
            .filter(|(m, _, _)| *m == method)
            .map(|(_, _, c)| *c)
            .collect()
    }

    fn interfere_once(&self, f: impl FnOnce(&mut Value) + Send + 'static) {
        self.db.lock().unwrap().interfere = Some(Box::new(f));
    }

    async fn listen(self: &Arc<Self>) -> String {
        let app = Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(create),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(read).put(replace),
            )
            .fallback(|| async {
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                )
            })
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

fn logged(db: &mut Db, method: Method, name: &str, r: Response) -> Response {
    db.log.push((method, name.to_string(), r.status().as_u16()));
    r
}

async fn read(State(s): State<Arc<Server>>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut db = s.db.lock().unwrap();
    let r = match db.leases.get(&(ns, name.clone())) {
        Some(l) => respond(200, l),
        None => status(
            404,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    };
    logged(&mut db, Method::GET, &name, r)
}

async fn create(State(s): State<Arc<Server>>, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut obj: Value = serde_json::from_slice(&body).unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let mut db = s.db.lock().unwrap();
    let key = (ns.clone(), name.clone());
    let r = if db.leases.contains_key(&key) {
        status(
            409,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        )
    } else {
        db.rv += 1;
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["resourceVersion"] = json!(db.rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{}", db.rv));
        db.leases.insert(key, obj.clone());
        respond(201, &obj)
    };
    logged(&mut db, Method::POST, &name, r)
}

async fn replace(
    State(s): State<Arc<Server>>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut obj: Value = serde_json::from_slice(&body).unwrap();
    let mut guard = s.db.lock().unwrap();
    let db = &mut *guard;
    let key = (ns.clone(), name.clone());
    if let Some(f) = db.interfere.take() {
        if let Some(old) = db.leases.get_mut(&key) {
            f(old);
            db.rv += 1;
            old["metadata"]["resourceVersion"] = json!(db.rv.to_string());
        }
    }
    let r = match (db.leases.get(&key), obj["metadata"]["resourceVersion"].as_str()) {
        (None, _) => status(404, "NotFound", format!("leases.coordination.k8s.io \"{name}\" not found")),
        (Some(_), None) => status(422, "Invalid", format!("Lease.coordination.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")),
        (Some(old), Some(rv)) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => status(409, "Conflict", format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again")),
        (Some(_), Some(_)) => {
            db.rv += 1;
            obj["metadata"]["namespace"] = json!(ns);
            obj["metadata"]["resourceVersion"] = json!(db.rv.to_string());
            db.leases.insert(key, obj.clone());
            respond(200, &obj)
        }
    };
    logged(db, Method::PUT, &name, r)
}

/// A clock the test moves.
struct TestClock(Mutex<SystemTime>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

struct Setup {
    server: Arc<Server>,
    url: String,
    clock: Arc<TestClock>,
}

async fn setup() -> Setup {
    let server = Arc::new(Server::default());
    let url = server.listen().await;
    let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
    Setup {
        server,
        url,
        clock: Arc::new(TestClock(Mutex::new(start))),
    }
}

impl Setup {
    /// A candidate with its own API client.
    fn store(&self) -> LeaseStore {
        let client = kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap();
        LeaseStore::api(client, self.clock.clone())
    }

    fn holder(&self) -> Option<String> {
        let l = self.server.lease(NAME)?;
        l["spec"]["holderIdentity"].as_str().map(String::from)
    }
}

fn holder(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Acquired(l) | Outcome::Renewed(l) | Outcome::HeldByOther(l) => l.holder.as_deref(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_candidates_holds_renews_and_loses_it_only_after_expiry() {
    let t = setup().await;
    let (a, b) = (t.store(), t.store());
    let got = a.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(
        matches!(&got, Outcome::Acquired(l) if l.transitions == 0),
        "{got:?}"
    );
    let other = b.acquire_or_renew(NAME, "node2", D).unwrap();
    assert!(matches!(other, Outcome::HeldByOther(_)), "{other:?}");
    assert_eq!(holder(&other), Some("node1"));

    // The server holds a Cilium-named Lease in kube-system with MicroTime timestamps.
    let obj = t.server.lease(NAME).expect("the Lease was created");
    assert_eq!(obj["apiVersion"], "coordination.k8s.io/v1", "{obj}");
    assert_eq!(obj["kind"], "Lease", "{obj}");
    assert_eq!(obj["metadata"]["namespace"], "kube-system", "{obj}");
    assert_eq!(obj["spec"]["holderIdentity"], "node1", "{obj}");
    assert_eq!(obj["spec"]["leaseDurationSeconds"], 2, "{obj}");
    assert_eq!(obj["spec"]["leaseTransitions"], 0, "{obj}");
    let renew = obj["spec"]["renewTime"].as_str().unwrap();
    assert!(
        renew.starts_with("2026-11-18T") && renew.ends_with(".123456Z"),
        "{obj}"
    );

    for _ in 0..6 {
        t.clock.advance(Duration::from_millis(500));
        let r = a.acquire_or_renew(NAME, "node1", D).unwrap();
        assert!(matches!(r, Outcome::Renewed(_)), "{r:?}");
        let o = b.acquire_or_renew(NAME, "node2", D).unwrap();
        assert!(matches!(o, Outcome::HeldByOther(_)), "{o:?}");
    }
    let l = b.get(NAME).unwrap().unwrap();
    assert_eq!(l.transitions, 0);
    assert_eq!(
        l.renew_time
            .unwrap()
            .duration_since(l.acquire_time.unwrap())
            .unwrap(),
        Duration::from_secs(3)
    );

    // node1 stops renewing: node2 waits out the duration, then takes over.
    t.clock.advance(Duration::from_millis(1999));
    let o = b.acquire_or_renew(NAME, "node2", D).unwrap();
    assert!(matches!(o, Outcome::HeldByOther(_)), "{o:?}");
    t.clock.advance(Duration::from_millis(1));
    let taken = b.acquire_or_renew(NAME, "node2", D).unwrap();
    assert!(
        matches!(&taken, Outcome::Acquired(l) if l.transitions == 1),
        "{taken:?}"
    );
    assert_eq!(t.holder().as_deref(), Some("node2"));
    assert_eq!(t.server.lease(NAME).unwrap()["spec"]["leaseTransitions"], 1);
    // node1 comes back: it must not think it still holds the lease.
    let back = a.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(matches!(back, Outcome::HeldByOther(_)), "{back:?}");
    assert_eq!(holder(&back), Some("node2"));
    // Every write was accepted: nobody raced here.
    assert!(t.server.codes(Method::PUT).iter().all(|c| *c == 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn release_hands_over_at_once_and_only_the_holder_can_release() {
    let t = setup().await;
    let (a, b) = (t.store(), t.store());
    a.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(!b.release(NAME, "node2").unwrap(), "not the holder");
    assert_eq!(t.holder().as_deref(), Some("node1"));
    assert!(
        !b.release("cilium-l2announce-demo-none", "node2").unwrap(),
        "no such lease"
    );
    assert!(matches!(
        b.acquire_or_renew(NAME, "node2", D).unwrap(),
        Outcome::HeldByOther(_)
    ));
    assert!(a.release(NAME, "node1").unwrap());
    assert_eq!(t.holder(), None, "{:?}", t.server.lease(NAME));
    assert_eq!(a.get(NAME).unwrap().unwrap().holder, None);
    // No time passes: the released lease is free at once.
    let taken = b.acquire_or_renew(NAME, "node2", D).unwrap();
    assert!(
        matches!(&taken, Outcome::Acquired(l) if l.transitions == 1),
        "{taken:?}"
    );
    assert_eq!(t.holder().as_deref(), Some("node2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_between_read_and_replace_is_a_conflict_and_leaves_one_holder() {
    let t = setup().await;
    let (a, b) = (t.store(), t.store());
    a.acquire_or_renew(NAME, "node1", D).unwrap();
    t.clock.advance(D);

    // node1's lease expired; as node2 replaces it, node3 takes it first.
    let now = t.clock.now();
    let stamp = SystemTime::UNIX_EPOCH;
    let micros = now.duration_since(stamp).unwrap().as_micros() as i64;
    let renew = k8s_openapi::jiff::Timestamp::from_microsecond(micros)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    t.server.interfere_once(move |l| {
        l["spec"]["holderIdentity"] = json!("node3");
        l["spec"]["renewTime"] = json!(renew);
        l["spec"]["acquireTime"] = json!(renew);
        l["spec"]["leaseTransitions"] = json!(1);
    });
    let lost = b.acquire_or_renew(NAME, "node2", D).unwrap();
    assert!(matches!(lost, Outcome::HeldByOther(_)), "{lost:?}");
    assert_eq!(holder(&lost), Some("node3"));
    assert_eq!(
        t.server.codes(Method::PUT),
        [409],
        "node2's replace lost the race"
    );
    assert_eq!(t.holder().as_deref(), Some("node3"));
    // And the old holder does not get it back either.
    let back = a.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(matches!(back, Outcome::HeldByOther(_)), "{back:?}");

    // A change that leaves the holder alone (say, a label) only makes the holder read
    // the Lease again: its renewal still goes through.
    t.clock.advance(D);
    let c = t.store();
    let got = c.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(
        matches!(&got, Outcome::Acquired(l) if l.transitions == 2),
        "{got:?}"
    );
    t.server.interfere_once(|l| {
        l["metadata"]["labels"] = json!({"touched": "yes"});
    });
    t.clock.advance(Duration::from_millis(500));
    let r = c.acquire_or_renew(NAME, "node1", D).unwrap();
    assert!(
        matches!(&r, Outcome::Renewed(l) if l.transitions == 2),
        "{r:?}"
    );
    assert_eq!(t.server.codes(Method::PUT), [409, 200, 409, 200]);
    let obj = t.server.lease(NAME).unwrap();
    assert_eq!(obj["spec"]["holderIdentity"], "node1", "{obj}");
    assert_eq!(
        obj["metadata"]["labels"]["touched"], "yes",
        "the other writer's change is kept: {obj}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_candidates_never_both_acquire() {
    // Six candidates with their own clients race for one lease at every step of time.
    let t = setup().await;
    let stores: Vec<LeaseStore> = (0..6).map(|_| t.store()).collect();
    for round in 0..10 {
        let barrier = Arc::new(std::sync::Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, store)| {
                let barrier = barrier.clone();
                tokio::task::spawn_blocking(move || {
                    let me = format!("node{i}");
                    barrier.wait();
                    match store.acquire_or_renew(NAME, &me, D).unwrap() {
                        Outcome::Acquired(_) | Outcome::Renewed(_) => Some(me),
                        Outcome::HeldByOther(_) => None,
                    }
                })
            })
            .collect();
        let mut winners = vec![];
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            t.holder().as_deref(),
            Some(winners[0].as_str()),
            "round {round}"
        );
        t.clock.advance(Duration::from_millis(2100));
    }
    assert_eq!(t.server.lease(NAME).unwrap()["spec"]["leaseTransitions"], 9);
    let lost: usize = [Method::POST, Method::PUT]
        .into_iter()
        .map(|m| t.server.codes(m).iter().filter(|c| **c == 409).count())
        .sum();
    eprintln!("writes refused with 409 during the race: {lost}");
}
