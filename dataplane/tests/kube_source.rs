//! The Kubernetes state source against an API server made of recorded responses
//! (`tests/fixtures/kube/`): List bodies as the API server returns them, watch streams as
//! newline-delimited events, a 410 `Expired` Status. The server below answers over a real
//! HTTP socket with the API's semantics (one global resourceVersion, watches from a
//! resourceVersion replay what followed it or fail with 410 once it is compacted away,
//! `timeoutSeconds`, bookmarks, 404 for a CRD that is not installed) and can be killed and
//! restarted on the same port. Every test asserts on the [`ClusterState`] the agent acts on.

use apiserver::ApiServer;
use lumen_dataplane::state::{
    kube::{self as source, KubeSourceError, KubeSourceOptions},
    manifests::ManifestDir,
    ClusterState,
};
use std::{sync::Arc, time::Duration};
use tokio::{sync::watch, time::timeout};

/// Bound on anything the source must do on its own (reconnect backoff starts at 0.8 s
/// and doubles).
const WAIT: Duration = Duration::from_secs(20);

async fn start_source(server: &ApiServer) -> watch::Receiver<Arc<ClusterState>> {
    // The source's warnings (reconnects, 410s, missing CRDs) show with a failure.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let opts = KubeSourceOptions {
        sync_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    timeout(WAIT, source::watch(server.client(), opts))
        .await
        .expect("watch returns")
        .expect("source syncs")
}

/// Waits until the published state satisfies `pred`.
async fn until(
    rx: &mut watch::Receiver<Arc<ClusterState>>,
    what: &str,
    pred: impl Fn(&ClusterState) -> bool,
) -> Arc<ClusterState> {
    let got = timeout(WAIT, rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.expect("source alive").clone());
    got.unwrap_or_else(|_| {
        panic!(
            "timed out waiting for: {what}\npods: {:?}",
            pod_names(&rx.borrow())
        )
    })
}

fn pod_names(st: &ClusterState) -> Vec<String> {
    st.pods.keys().map(|(ns, n)| format!("{ns}/{n}")).collect()
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/kube/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn lines(name: &str) -> Vec<String> {
    fixture(name).lines().map(str::to_string).collect()
}

/// The fixture objects as manifests, one file each (list items get their kind back;
/// `managedFields`, which the source drops, is left out).
fn fixture_manifests(dir: &std::path::Path) {
    for r in apiserver::RESOURCES {
        let list: serde_json::Value =
            serde_json::from_str(&fixture(&format!("{}.json", r.plural))).unwrap();
        for (i, item) in list["items"].as_array().unwrap().iter().enumerate() {
            let mut item = item.clone();
            item["apiVersion"] = r.api_version.into();
            item["kind"] = r.kind.into();
            item["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            let path = dir.join(format!("{}-{i}.json", r.plural));
            std::fs::write(path, serde_json::to_string_pretty(&item).unwrap()).unwrap();
        }
    }
}

#[tokio::test]
async fn initial_list_gives_the_same_state_as_the_manifests() {
    let server = ApiServer::start().await;
    let rx = start_source(&server).await;
    let st = rx.borrow().clone();

    let dir = tempfile::tempdir().unwrap();
    fixture_manifests(dir.path());
    let mut manifests = ManifestDir::new(dir.path());
    let (_, errors) = manifests.rescan();
    assert!(errors.is_empty(), "{errors:?}");
    let (mut expected, problems) = manifests.state();
    assert!(problems.is_empty(), "{problems:?}");
    for o in expected.objects.values_mut() {
        o.source = None; // the file name; the API has none
    }
    assert_eq!(*st, expected);

    // What the agent reads from it.
    assert_eq!(
        pod_names(&st),
        ["demo/client1", "demo/server2", "kube-system/coredns-5d78c"]
    );
    let client1 = st.pod("demo", "client1").unwrap();
    assert_eq!(
        client1.ips,
        ["10.244.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(client1.service_account, "client");
    assert_eq!(client1.owner.as_ref().unwrap().kind, "ReplicaSet");
    assert_eq!(client1.named_ports["metrics"], (6, 9090));
    assert_eq!(
        st.pod("demo", "server2").unwrap().named_ports["dns"],
        (17, 53)
    );
    assert_eq!(st.namespaces["demo"].labels["team"], "web");
    let node1 = &st.nodes["node1"];
    assert_eq!(
        node1.pod_cidrs,
        ["10.100.0.0/24".parse::<ipnet::IpNet>().unwrap()],
        "the CiliumNode's cluster-pool CIDR wins over the Node's"
    );
    assert_eq!(
        node1.wg_pub_key.as_deref(),
        Some("bm9kZTEta2V5LWJhc2U2NC1wYWRkaW5nLTMyYnl0ZXM=")
    );
    assert_eq!(node1.internal_ip(), Some("192.168.77.11".parse().unwrap()));
    let raw = |kind: &str, name: &str| {
        st.objects
            .iter()
            .find(|(k, _)| k.kind == kind && k.name == name)
            .and_then(|(_, o)| o.raw.clone())
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    let lb = lumen_lb::Service::parse(&raw("Service", "web-lb")).unwrap();
    assert_eq!(
        lb.ingress_ips,
        ["192.168.77.200".parse::<std::net::IpAddr>().unwrap()]
    );
    lumen_lb::EndpointSlice::parse(&raw("EndpointSlice", "web-x7k2p")).unwrap();
    lumen_lb::IpPool::parse(&raw("CiliumLoadBalancerIPPool", "demo-pool")).unwrap();
    let kinds: std::collections::BTreeSet<_> = st.objects.keys().map(|k| k.kind.as_str()).collect();
    assert_eq!(kinds.len(), 11, "every watched kind delivered: {kinds:?}");
    let cnp = st
        .objects
        .values()
        .find(|o| o.kind == "CiliumNetworkPolicy")
        .unwrap();
    assert_eq!(cnp.metadata.generation, Some(1));
    assert!(!cnp.spec.is_null());

    // Each kind was listed once, then watched from the list's resourceVersion.
    let reqs = server.requests();
    for r in apiserver::RESOURCES {
        let path = r.path();
        let listed = reqs
            .iter()
            .filter(|q| q.path == path && !q.is_watch())
            .count();
        assert_eq!(listed, 1, "{path} listed once");
    }
}

#[tokio::test]
async fn watch_events_add_modify_and_delete() {
    let server = ApiServer::start().await;
    let mut rx = start_source(&server).await;
    let events = lines("pods-watch.jsonl");

    server.play(&events[0]); // ADDED demo/client3, pending, no IP yet
    let st = until(&mut rx, "client3 added", |s| {
        s.pod("demo", "client3").is_some()
    })
    .await;
    assert!(st.pod("demo", "client3").unwrap().ips.is_empty());

    server.play(&events[1]); // MODIFIED: running with its IP
    until(&mut rx, "client3 has its IP", |s| {
        s.pod("demo", "client3")
            .is_some_and(|p| p.ips == ["10.244.0.9".parse::<std::net::IpAddr>().unwrap()])
    })
    .await;

    server.play(&events[2]); // DELETED demo/client1
    let st = until(&mut rx, "client1 deleted", |s| {
        s.pod("demo", "client1").is_none()
    })
    .await;
    assert_eq!(
        pod_names(&st),
        ["demo/client3", "demo/server2", "kube-system/coredns-5d78c"]
    );
    // Watch events need no re-list.
    let pod_lists = server
        .requests()
        .iter()
        .filter(|q| q.path == "/api/v1/pods" && !q.is_watch())
        .count();
    assert_eq!(pod_lists, 1);
}

#[tokio::test]
async fn bookmarks_advance_the_resource_version_without_changing_state() {
    let server = ApiServer::start().await;
    let mut rx = start_source(&server).await;
    let events = lines("bookmark.jsonl");

    server.play(&events[0]); // a Service changes: the cluster's resourceVersion moves on
    until(&mut rx, "service annotated", |s| {
        s.objects.values().any(|o| {
            o.metadata
                .annotations
                .get("note")
                .is_some_and(|n| n == "touched")
        })
    })
    .await;
    rx.borrow_and_update();
    let before = rx.borrow().clone();

    server.play(&events[1]); // BOOKMARK on the pods watch at that resourceVersion
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!rx.has_changed().unwrap(), "a bookmark is no change");
    assert_eq!(*rx.borrow().clone(), *before);

    // The history before the bookmark is compacted away and the watches time out: the
    // pods watch resumes from the bookmark, so it needs no re-list (the ones that saw
    // no bookmark get 410 and re-list).
    server.compact();
    server.close_watches();
    let resumed = timeout(WAIT, async {
        loop {
            let reqs = server.requests();
            let watches: Vec<_> = reqs
                .iter()
                .filter(|q| q.path == "/api/v1/pods" && q.is_watch())
                .collect();
            if watches.len() >= 2 {
                return watches[1].query.get("resourceVersion").cloned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("pods watch resumed");
    assert_eq!(resumed.as_deref(), Some("1150"));
    let lists = |path: &str| {
        server
            .requests()
            .iter()
            .filter(|q| q.path == path && !q.is_watch())
            .count()
    };
    // Namespaces saw no bookmark: 410 Expired, then (after the backoff) a re-list.
    timeout(WAIT, async {
        while lists("/api/v1/namespaces") < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("namespaces re-listed after 410");
    assert_eq!(
        lists("/api/v1/pods"),
        1,
        "pods resumed from the bookmark, no re-list"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *rx.borrow().clone(),
        *before,
        "re-lists of unchanged kinds change nothing"
    );
}

#[tokio::test]
async fn gone_410_relists_without_duplicates_or_lost_deletes() {
    let server = ApiServer::start().await;
    let mut rx = start_source(&server).await;
    let before = rx.borrow_and_update().clone();
    assert!(before
        .objects
        .keys()
        .any(|k| k.kind == "NetworkPolicy" && k.name == "allow-web"));

    // The watches end and their re-watches wait; meanwhile objects change and the
    // history is compacted, so the re-watches get `ERROR` 410 Expired.
    server.hold_watches(true);
    server.close_watches();
    for e in lines("while-disconnected.jsonl") {
        server.play(&e);
    }
    server.compact();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*rx.borrow().clone(), *before, "nothing seen yet");
    server.hold_watches(false);

    let st = until(&mut rx, "every change made while disconnected", |s| {
        s.pod("demo", "client4").is_some()
            && s.pod("demo", "server2").is_none()
            && s.pod("demo", "client1")
                .is_some_and(|p| p.labels.contains_key("version"))
            && !s.objects.keys().any(|k| k.name == "allow-web")
    })
    .await;
    assert_eq!(
        pod_names(&st),
        ["demo/client1", "demo/client4", "kube-system/coredns-5d78c"],
        "no duplicates, deletes kept"
    );
    let policies: Vec<_> = st
        .objects
        .keys()
        .filter(|k| k.kind == "NetworkPolicy")
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(policies, ["default-deny"]);
    let expired = server.requests().iter().filter(|q| q.expired).count();
    assert!(expired >= 2, "watches were answered with 410: {expired}");
    let pod_lists = server
        .requests()
        .iter()
        .filter(|q| q.path == "/api/v1/pods" && !q.is_watch())
        .count();
    assert_eq!(pod_lists, 2, "re-listed once after the 410");
}

#[tokio::test]
async fn survives_an_api_server_restart() {
    let mut server = ApiServer::start().await;
    let mut rx = start_source(&server).await;
    let before = rx.borrow_and_update().clone();
    assert!(before.nodes["node2"].wg_pub_key.is_none());

    server.kill().await;
    // While it is down (the watches fail, the reconnects are refused), the cluster changes.
    for e in lines("while-down.jsonl") {
        server.play(&e);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*rx.borrow().clone(), *before, "nothing seen while down");
    server.restart().await;

    let st = until(&mut rx, "changes made while down", |s| {
        s.pod("demo", "server3").is_some()
            && s.pod("demo", "client1").is_none()
            && s.nodes["node2"].wg_pub_key.is_some()
    })
    .await;
    assert_eq!(
        pod_names(&st),
        ["demo/server2", "demo/server3", "kube-system/coredns-5d78c"]
    );
    // And it keeps watching on the new connection.
    server.play(&lines("after-restart.jsonl")[0]);
    until(&mut rx, "watching again", |s| {
        s.pod("demo", "client5").is_some()
    })
    .await;
}

#[tokio::test]
async fn a_missing_crd_is_empty_and_picked_up_once_installed() {
    let server = ApiServer::start().await;
    server.uninstall("ciliuml2announcementpolicies");
    let mut rx = start_source(&server).await;
    let st = rx.borrow_and_update().clone();
    assert!(!st
        .objects
        .keys()
        .any(|k| k.kind == "CiliumL2AnnouncementPolicy"));
    assert_eq!(st.pods.len(), 3, "the other kinds synced");
    assert!(st
        .objects
        .keys()
        .any(|k| k.kind == "CiliumLoadBalancerIPPool"));

    server.install("ciliuml2announcementpolicies");
    let st = until(&mut rx, "policy after install", |s| {
        s.objects
            .keys()
            .any(|k| k.kind == "CiliumL2AnnouncementPolicy")
    })
    .await;
    assert_eq!(st.pods.len(), 3);
}

#[tokio::test]
async fn an_unreachable_api_server_fails_with_the_kinds_and_what_to_check() {
    let mut server = ApiServer::start().await;
    server.kill().await;
    let opts = KubeSourceOptions {
        sync_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = timeout(WAIT, source::watch(server.client(), opts))
        .await
        .expect("gives up")
        .expect_err("cannot sync");
    assert!(matches!(err, KubeSourceError::NotSynced { .. }), "{err}");
    let msg = err.to_string();
    for needle in [
        "Pod (v1/pods)",
        "CiliumNode (cilium.io/v2/ciliumnodes)",
        "k8sServiceHost",
        "RBAC",
    ] {
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    }
}

#[tokio::test]
async fn node_annotation_reaches_the_state() {
    let server = ApiServer::start().await;
    let mut rx = start_source(&server).await;
    source::write_node_annotation(
        server.client(),
        "node2",
        lumen_dataplane::state::WG_PUB_KEY_ANNOTATION,
        Some("bmV3LWtleQ=="),
    )
    .await
    .unwrap();
    let st = until(&mut rx, "node2 key", |s| {
        s.nodes["node2"].wg_pub_key.is_some()
    })
    .await;
    assert_eq!(
        st.nodes["node2"].wg_pub_key.as_deref(),
        Some("bmV3LWtleQ==")
    );
    // Only the annotation changed: the CIDR the operator wrote stays.
    assert_eq!(
        st.nodes["node2"].pod_cidrs,
        ["10.100.1.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    // node3 has no CiliumNode yet (ipam.mode kubernetes, or before the operator): the
    // agent creates it with the annotation, as Cilium's agent creates its own.
    server.play(
        r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Node","metadata":{"name":"node3","uid":"5f0c1a4e-3b1d-4d9e-9a61-0c7e3f1b2a93","resourceVersion":"900000","labels":{"kubernetes.io/hostname":"node3"}},"spec":{"podCIDR":"10.100.3.0/24","podCIDRs":["10.100.3.0/24"]},"status":{"addresses":[{"type":"InternalIP","address":"192.168.77.3"}]}}}"#,
    );
    let st = until(&mut rx, "node3", |s| s.nodes.contains_key("node3")).await;
    assert!(st.nodes["node3"].wg_pub_key.is_none());
    source::write_node_annotation(
        server.client(),
        "node3",
        lumen_dataplane::state::WG_PUB_KEY_ANNOTATION,
        Some("dGhyZWU="),
    )
    .await
    .unwrap();
    let st = until(&mut rx, "node3 key", |s| {
        s.nodes["node3"].wg_pub_key.is_some()
    })
    .await;
    assert_eq!(st.nodes["node3"].wg_pub_key.as_deref(), Some("dGhyZWU="));
    // A server that refuses says which node and annotation failed.
    server.uninstall("ciliumnodes");
    let err = source::write_node_annotation(server.client(), "node4", "k", Some("v"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node4"), "{err}");
}

/// A Kubernetes API server over recorded objects and events.
mod apiserver {
    use axum::{
        body::{Body, Bytes},
        extract::State,
        http::{header, Method, StatusCode, Uri},
        response::Response,
        Router,
    };
    use futures::StreamExt;
    use serde_json::{json, Value};
    use std::{
        collections::BTreeMap,
        future::Future,
        io,
        net::SocketAddr,
        pin::Pin,
        sync::{Arc, Mutex},
        task::{Context, Poll},
        time::Duration,
    };
    use tokio::{
        io::{AsyncRead, AsyncWrite, ReadBuf},
        net::{TcpListener, TcpStream},
        sync::{mpsc, watch},
        task::JoinHandle,
    };

    /// A served resource and its fixture (`<plural>.json`).
    pub struct Resource {
        pub kind: &'static str,
        pub api_version: &'static str,
        pub plural: &'static str,
        /// Built into the API server (its list items carry no apiVersion/kind), not a CRD.
        pub builtin: bool,
    }

    impl Resource {
        pub fn path(&self) -> String {
            if self.builtin && self.api_version == "v1" {
                format!("/api/v1/{}", self.plural)
            } else {
                format!("/apis/{}/{}", self.api_version, self.plural)
            }
        }
    }

    const fn r(
        kind: &'static str,
        api_version: &'static str,
        plural: &'static str,
        builtin: bool,
    ) -> Resource {
        Resource {
            kind,
            api_version,
            plural,
            builtin,
        }
    }

    pub const RESOURCES: &[Resource] = &[
        r("Namespace", "v1", "namespaces", true),
        r("Pod", "v1", "pods", true),
        r("Node", "v1", "nodes", true),
        r("Service", "v1", "services", true),
        r(
            "EndpointSlice",
            "discovery.k8s.io/v1",
            "endpointslices",
            true,
        ),
        r(
            "NetworkPolicy",
            "networking.k8s.io/v1",
            "networkpolicies",
            true,
        ),
        r(
            "CiliumNetworkPolicy",
            "cilium.io/v2",
            "ciliumnetworkpolicies",
            false,
        ),
        r(
            "CiliumClusterwideNetworkPolicy",
            "cilium.io/v2",
            "ciliumclusterwidenetworkpolicies",
            false,
        ),
        r("CiliumNode", "cilium.io/v2", "ciliumnodes", false),
        r(
            "CiliumLoadBalancerIPPool",
            "cilium.io/v2alpha1",
            "ciliumloadbalancerippools",
            false,
        ),
        r(
            "CiliumL2AnnouncementPolicy",
            "cilium.io/v2alpha1",
            "ciliuml2announcementpolicies",
            false,
        ),
    ];

    /// One request as received.
    #[derive(Debug, Clone)]
    pub struct Request {
        pub path: String,
        pub query: BTreeMap<String, String>,
        /// Answered with 410 Expired.
        pub expired: bool,
    }

    impl Request {
        pub fn is_watch(&self) -> bool {
            matches!(
                self.query.get("watch").map(String::as_str),
                Some("true" | "1")
            )
        }
    }

    struct Collection {
        res: &'static Resource,
        path: String,
        installed: bool,
        /// By (namespace, name), in watch form (with apiVersion and kind).
        objects: BTreeMap<(String, String), Value>,
    }

    struct Inner {
        /// The cluster's resourceVersion (etcd's revision).
        rv: u64,
        collections: Vec<Collection>,
        /// Watch history: (resourceVersion, collection path, event line).
        log: Vec<(u64, String, String)>,
        /// Watches from before this resourceVersion get 410 Expired.
        log_start: u64,
        /// Open watch responses.
        live: Vec<(String, mpsc::UnboundedSender<String>)>,
        requests: Vec<Request>,
    }

    impl Inner {
        fn collection(&mut self, path: &str) -> Option<&mut Collection> {
            self.collections.iter_mut().find(|c| c.path == path)
        }

        fn broadcast(&mut self, path: &str, line: &str) {
            self.live
                .retain(|(p, tx)| p != path || tx.send(line.to_string()).is_ok());
        }

        fn record(&mut self, rv: u64, path: &str, line: String) {
            self.broadcast(path, &line);
            self.log.push((rv, path.to_string(), line));
        }
    }

    #[derive(Clone)]
    struct Shared {
        inner: Arc<Mutex<Inner>>,
        hold: watch::Receiver<bool>,
        kill: watch::Receiver<bool>,
    }

    pub struct ApiServer {
        inner: Arc<Mutex<Inner>>,
        addr: SocketAddr,
        hold: watch::Sender<bool>,
        running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    }

    fn key(obj: &Value) -> (String, String) {
        let m = &obj["metadata"];
        (
            m["namespace"].as_str().unwrap_or_default().to_string(),
            m["name"].as_str().unwrap_or_default().to_string(),
        )
    }

    fn rv_of(obj: &Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("objects carry a resourceVersion")
    }

    impl ApiServer {
        /// Serves the fixtures' lists on a free port.
        pub async fn start() -> Self {
            let mut rv = 0;
            let collections = RESOURCES
                .iter()
                .map(|res| {
                    let list: Value =
                        serde_json::from_str(&super::fixture(&format!("{}.json", res.plural)))
                            .unwrap();
                    rv = rv.max(
                        list["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                    let objects = list["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|item| {
                            let mut o = item.clone();
                            o["apiVersion"] = res.api_version.into();
                            o["kind"] = res.kind.into();
                            (key(&o), o)
                        })
                        .collect();
                    Collection {
                        res,
                        path: res.path(),
                        installed: true,
                        objects,
                    }
                })
                .collect();
            let inner = Arc::new(Mutex::new(Inner {
                rv,
                collections,
                log: vec![],
                log_start: rv,
                live: vec![],
                requests: vec![],
            }));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (hold, _) = watch::channel(false);
            let mut s = ApiServer {
                inner,
                addr,
                hold,
                running: None,
            };
            s.serve(listener);
            s
        }

        fn serve(&mut self, listener: TcpListener) {
            let (kill_tx, kill) = watch::channel(false);
            let shared = Shared {
                inner: self.inner.clone(),
                hold: self.hold.subscribe(),
                kill: kill.clone(),
            };
            let app = Router::new().fallback(handle).with_state(shared);
            let task = tokio::spawn(async move {
                let _ = axum::serve(
                    KillListener {
                        inner: listener,
                        kill,
                    },
                    app,
                )
                .await;
            });
            self.running = Some((kill_tx, task));
        }

        /// A client for it (plain HTTP, no credentials).
        pub fn client(&self) -> kube::Client {
            let url = format!("http://{}", self.addr).parse().unwrap();
            kube::Client::try_from(kube::Config::new(url)).unwrap()
        }

        pub fn requests(&self) -> Vec<Request> {
            self.inner.lock().unwrap().requests.clone()
        }

        fn set_installed(&self, plural: &str, installed: bool) {
            let mut inner = self.inner.lock().unwrap();
            let c = inner
                .collections
                .iter_mut()
                .find(|c| c.res.plural == plural)
                .unwrap();
            c.installed = installed;
        }

        /// Its CRD is not installed: the API server does not serve it.
        pub fn uninstall(&self, plural: &str) {
            self.set_installed(plural, false);
        }

        pub fn install(&self, plural: &str) {
            self.set_installed(plural, true);
        }

        /// Applies one recorded watch event: the object store changes and open watches
        /// of its collection get the line.
        pub fn play(&self, line: &str) {
            let ev: Value = serde_json::from_str(line).unwrap();
            let obj = &ev["object"];
            let kind = obj["kind"].as_str().unwrap();
            let rv = rv_of(obj);
            let mut inner = self.inner.lock().unwrap();
            assert!(
                rv > inner.rv || ev["type"] == "BOOKMARK",
                "recorded events move forward"
            );
            inner.rv = inner.rv.max(rv);
            let c = inner
                .collections
                .iter_mut()
                .find(|c| c.res.kind == kind)
                .unwrap();
            let path = c.path.clone();
            match ev["type"].as_str().unwrap() {
                "ADDED" | "MODIFIED" => {
                    c.objects.insert(key(obj), obj.clone());
                }
                "DELETED" => {
                    assert!(
                        c.objects.remove(&key(obj)).is_some(),
                        "deleting what exists"
                    );
                }
                "BOOKMARK" => {
                    inner.broadcast(&path, line);
                    return;
                }
                t => panic!("unknown event type {t}"),
            }
            inner.record(rv, &path, line.to_string());
        }

        /// Ends every open watch response normally (as `timeoutSeconds` does).
        pub fn close_watches(&self) {
            self.inner.lock().unwrap().live.clear();
        }

        /// Compacts the history: watches from an older resourceVersion get 410.
        pub fn compact(&self) {
            let mut inner = self.inner.lock().unwrap();
            inner.log_start = inner.rv;
            inner.log.clear();
        }

        /// Holds new watch requests unanswered until released.
        pub fn hold_watches(&self, on: bool) {
            self.hold.send_replace(on);
        }

        /// Stops it: the listener closes and every connection is reset.
        pub async fn kill(&mut self) {
            let (kill, task) = self.running.take().expect("running");
            kill.send_replace(true);
            task.abort();
            let _ = task.await;
            self.inner.lock().unwrap().live.clear();
        }

        /// Starts it again on the same port, with a fresh watch cache (watches from
        /// before the restart get 410, as from a restarted API server).
        pub async fn restart(&mut self) {
            assert!(self.running.is_none());
            self.compact();
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("rebinding {}: {e}", self.addr),
                }
            };
            self.serve(listener);
        }
    }

    impl Drop for ApiServer {
        fn drop(&mut self) {
            if let Some((kill, task)) = self.running.take() {
                kill.send_replace(true);
                task.abort();
            }
        }
    }

    fn not_found() -> Response {
        // What the API server says for a group/version nothing serves.
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("404 page not found\n"))
            .unwrap()
    }

    fn json_response(status: StatusCode, v: &Value) -> Response {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap()
    }

    async fn handle(State(s): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
        let path = uri.path().to_string();
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let req = Request {
            path: path.clone(),
            query,
            expired: false,
        };
        if method == Method::GET && req.is_watch() {
            watch_response(s, req).await
        } else if method == Method::GET {
            let mut inner = s.inner.lock().unwrap();
            inner.requests.push(req);
            list(&mut inner, &path)
        } else if method == Method::PATCH {
            let mut inner = s.inner.lock().unwrap();
            inner.requests.push(req);
            patch(&mut inner, &path, &body)
        } else if method == Method::POST {
            let mut inner = s.inner.lock().unwrap();
            inner.requests.push(req);
            create(&mut inner, &path, &body)
        } else {
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}))
        }
    }

    fn list(inner: &mut Inner, path: &str) -> Response {
        let rv = inner.rv;
        let Some(c) = inner.collection(path).filter(|c| c.installed) else {
            return not_found();
        };
        let items: Vec<Value> = c
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                if c.res.builtin {
                    let m = o.as_object_mut().unwrap();
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", c.res.kind),
                "apiVersion": c.res.api_version,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }),
        )
    }

    async fn watch_response(s: Shared, mut req: Request) -> Response {
        let from: u64 = req
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let secs: u64 = req
            .query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        let mut hold = s.hold.clone();
        let _ = hold.wait_for(|h| !*h).await;
        let lines: Pin<Box<dyn futures::Stream<Item = String> + Send>> = {
            let mut inner = s.inner.lock().unwrap();
            let log_start = inner.log_start;
            let path = req.path.clone();
            match inner.collection(&path) {
                Some(c) if c.installed => {}
                _ => {
                    inner.requests.push(req);
                    return not_found();
                }
            }
            if from < log_start {
                let mut ev: Value = serde_json::from_str(&super::fixture("expired.json")).unwrap();
                ev["object"]["message"] =
                    format!("too old resource version: {from} ({log_start})").into();
                req.expired = true;
                inner.requests.push(req);
                Box::pin(futures::stream::iter([ev.to_string()]))
            } else {
                let backlog: Vec<String> = inner
                    .log
                    .iter()
                    .filter(|(rv, p, _)| *rv > from && *p == path)
                    .map(|(_, _, l)| l.clone())
                    .collect();
                let (tx, rx) = mpsc::unbounded_channel();
                inner.live.push((path, tx));
                inner.requests.push(req);
                Box::pin(
                    futures::stream::iter(backlog)
                        .chain(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
                )
            }
        };
        // Ends at `timeoutSeconds`; a killed server breaks the response off mid-stream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let body = futures::stream::unfold(Some((lines, s.kill.clone())), move |st| async move {
            let (mut lines, mut kill) = st?;
            let next = tokio::select! {
                l = lines.next() => Ok(l),
                _ = kill.wait_for(|k| *k) => Err(()),
                _ = tokio::time::sleep_until(deadline) => Ok(None),
            };
            match next {
                Ok(l) => l.map(|l| (Ok(Bytes::from(l + "\n")), Some((lines, kill)))),
                Err(()) => Some((Err(io::Error::from(io::ErrorKind::ConnectionReset)), None)),
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(body))
            .unwrap()
    }

    /// Creates one object in a cluster-scoped collection (409 if it exists).
    fn create(inner: &mut Inner, path: &str, body: &[u8]) -> Response {
        let rv = inner.rv + 1;
        let Some(c) = inner.collection(path).filter(|c| c.installed) else {
            return not_found();
        };
        let mut obj: Value = serde_json::from_slice(body).unwrap();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (String::new(), name.clone());
        if c.objects.contains_key(&key) {
            return json_response(
                StatusCode::CONFLICT,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                        "message": format!("{} \"{name}\" already exists", c.res.plural),
                        "reason":"AlreadyExists","code":409}),
            );
        }
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        c.objects.insert(key, obj.clone());
        inner.rv = rv;
        inner.record(
            rv,
            path,
            json!({"type": "ADDED", "object": obj}).to_string(),
        );
        json_response(StatusCode::CREATED, &obj)
    }

    /// A JSON merge patch (RFC 7386) on one object of a cluster-scoped collection.
    fn patch(inner: &mut Inner, path: &str, body: &[u8]) -> Response {
        let Some((coll, name)) = path.rsplit_once('/') else {
            return not_found();
        };
        let rv = inner.rv + 1;
        let Some(c) = inner.collection(coll).filter(|c| c.installed) else {
            return not_found();
        };
        let Some(obj) = c.objects.get_mut(&(String::new(), name.to_string())) else {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                        "message": format!("{} \"{name}\" not found", c.res.plural),
                        "reason":"NotFound","details":{"name":name,"group":"cilium.io","kind":c.res.plural},"code":404}),
            );
        };
        let p: Value = serde_json::from_slice(body).unwrap();
        merge(obj, &p);
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let obj = obj.clone();
        let coll = coll.to_string();
        inner.rv = rv;
        inner.record(
            rv,
            &coll,
            json!({"type": "MODIFIED", "object": obj}).to_string(),
        );
        json_response(StatusCode::OK, &obj)
    }

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

    /// A TCP listener whose connections all fail once the server is killed.
    struct KillListener {
        inner: TcpListener,
        kill: watch::Receiver<bool>,
    }

    impl axum::serve::Listener for KillListener {
        type Io = KillIo;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (KillIo, SocketAddr) {
            loop {
                if let Ok((io, addr)) = self.inner.accept().await {
                    let mut kill = self.kill.clone();
                    let killed = Box::pin(async move {
                        let _ = kill.wait_for(|k| *k).await;
                    });
                    return (KillIo { io, killed }, addr);
                }
            }
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.inner.local_addr()
        }
    }

    struct KillIo {
        io: TcpStream,
        killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    }

    impl KillIo {
        fn killed(&mut self, cx: &mut Context<'_>) -> bool {
            self.killed.as_mut().poll(cx).is_ready()
        }
    }

    fn reset<T>() -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
    }

    impl AsyncRead for KillIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.killed(cx) {
                return reset();
            }
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for KillIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.killed(cx) {
                return reset();
            }
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.killed(cx) {
                return reset();
            }
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }
}
