//! Service map benchmark: `build` (grouping + layout) and `render_svg` on generated flows,
//! 200 workloads with 2,000 edges (target: under 200 ms in all) and 50 workloads with 250.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use lumen_api::flow::{layer4, DropReason, Endpoint, Flow, Ip, Layer4, Tcp, Verdict, Workload};
use lumen_ui::map::{build, layout, render_svg, Node};

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn pod(w: usize) -> Endpoint {
    let ns = format!("team-{}", w % 8);
    Endpoint {
        identity: 10_000 + w as u32,
        namespace: ns.clone(),
        pod_name: format!("svc-{w}-7d9f8c-{:05}", w * 7919 % 100_000),
        labels: vec![
            format!("k8s:app=svc-{w}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        workloads: vec![Workload {
            name: format!("svc-{w}"),
            kind: "Deployment".into(),
        }],
        ..Default::default()
    }
}

/// Flows over `edges` distinct client → server pairs among `workloads` workloads, mostly
/// from lower to higher tiers (with some back edges, world and host peers); per pair a
/// request, its reply and a second connection; one pair in ten denied by policy.
fn flows(workloads: usize, edges: usize) -> Vec<Flow> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pairs = BTreeSet::new();
    let max_pairs = workloads * workloads.saturating_sub(1);
    while pairs.len() < edges.min(max_pairs) {
        let a = rng.below(workloads);
        // Tiers: a client mostly calls a workload further down the list.
        let b = if rng.below(10) < 8 {
            a + 1 + rng.below((workloads - a).max(1))
        } else {
            rng.below(workloads)
        };
        if b < workloads && a != b {
            pairs.insert((a, b));
        }
    }
    let world = Endpoint {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    };
    let host = Endpoint {
        identity: 1,
        labels: vec!["reserved:host".into()],
        ..Default::default()
    };
    let mut out = Vec::with_capacity(pairs.len() * 3 + 40);
    for (k, &(a, b)) in pairs.iter().enumerate() {
        let denied = k % 10 == 0;
        let port = [80, 443, 5432, 6379, 8080][k % 5];
        for (sport, reply) in [
            (40_000 + k as u32, false),
            (40_000 + k as u32, true),
            (50_000 + k as u32, false),
        ] {
            let (src, dst, sp, dp) = if reply {
                (pod(b), pod(a), port, sport)
            } else {
                (pod(a), pod(b), sport, port)
            };
            out.push(Flow {
                verdict: if denied {
                    Verdict::Dropped
                } else {
                    Verdict::Forwarded
                } as i32,
                drop_reason_desc: if denied {
                    DropReason::PolicyDenied as i32
                } else {
                    0
                },
                ip: Some(Ip {
                    source: format!("10.0.{}.{}", a / 250, a % 250),
                    destination: format!("10.0.{}.{}", b / 250, b % 250),
                    ..Default::default()
                }),
                l4: Some(Layer4 {
                    protocol: Some(layer4::Protocol::Tcp(Tcp {
                        source_port: sp,
                        destination_port: dp,
                        flags: None,
                    })),
                }),
                source: Some(src),
                destination: Some(dst),
                is_reply: Some(reply.into()),
                ..Default::default()
            });
        }
    }
    for k in 0..20 {
        let w = rng.below(workloads);
        let (src, dst) = if k % 2 == 0 {
            (world.clone(), pod(w))
        } else {
            (host.clone(), pod(w))
        };
        out.push(Flow {
            verdict: Verdict::Forwarded as i32,
            source: Some(src),
            destination: Some(dst),
            ..Default::default()
        });
    }
    out
}

fn link(a: &Node, b: &Node) -> String {
    format!(
        "/?from_pod={}/{}&to_pod={}/{}",
        a.namespace, a.name, b.namespace, b.name
    )
}

fn bench(c: &mut Criterion) {
    for (workloads, edges) in [(200, 2000), (50, 250)] {
        let input = flows(workloads, edges);
        let g = build(&input, None);
        let svg = render_svg(&g, &link);
        eprintln!(
            "map {workloads}x{edges}: {} flows -> {} nodes, {} edges, drawing {:.0}x{:.0}, SVG {} KiB",
            input.len(),
            g.nodes.len(),
            g.edges.len(),
            g.layout.width,
            g.layout.height,
            svg.len() / 1024
        );
        let name = format!("{workloads}w_{edges}e");
        // To look at the drawings: LUMEN_MAP_SVG_DIR=/tmp cargo bench -p lumen-ui --bench map
        if let Some(dir) = std::env::var_os("LUMEN_MAP_SVG_DIR") {
            let path = std::path::Path::new(&dir).join(format!("map-{name}.svg"));
            if let Err(e) = std::fs::write(&path, &svg) {
                eprintln!("{}: {e}", path.display());
            }
        }
        c.bench_function(&format!("map/{name}/build+layout+svg"), |b| {
            b.iter(|| render_svg(&build(black_box(&input), None), &link).len())
        });
        c.bench_function(&format!("map/{name}/layout"), |b| {
            b.iter(|| layout(black_box(&g.nodes), black_box(&g.edges)))
        });
        c.bench_function(&format!("map/{name}/render_svg"), |b| {
            b.iter(|| render_svg(black_box(&g), &link).len())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
