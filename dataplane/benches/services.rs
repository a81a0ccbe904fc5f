//! Service map computation at scale: the frontends of 10 and 10,000 Services (each with an
//! EndpointSlice of two backends) from the state, as every regeneration computes them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lumen_dataplane::config::LbAlgorithm;
use lumen_dataplane::datapath::services::desired;
use lumen_dataplane::state::{manifests::parse_objects, ClusterState};
use std::path::Path;

fn objects(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let (hi, lo) = (i / 250, i % 250);
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: bench}}
spec:
  clusterIP: 10.96.{hi}.{lo}
  ports: [{{port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-1
  namespace: bench
  labels: {{kubernetes.io/service-name: svc-{i}}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
- addresses: [10.1.{hi}.{lo}]
  conditions: {{ready: true}}
- addresses: [10.2.{hi}.{lo}]
  conditions: {{ready: true}}
"
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("service_frontends");
    g.sample_size(10);
    for n in [10usize, 10_000] {
        let objs = parse_objects(Path::new("bench.yaml"), &objects(n)).expect("objects");
        let (state, problems) = ClusterState::from_objects(objs);
        assert!(problems.is_empty(), "{problems:?}");
        g.bench_with_input(BenchmarkId::new("desired", n), &state, |b, state| {
            b.iter(|| {
                let (want, _) = desired(state, "node1", LbAlgorithm::Random);
                assert_eq!(want.len(), n);
                want
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
