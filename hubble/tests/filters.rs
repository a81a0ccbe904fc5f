//! Flag translation: each `hubble observe` flag becomes the FlowFilter(s) the upstream CLI
//! sends (plus `--verdict policy_denied`), parsed through the real command line.

use clap::{CommandFactory, FromArgMatches};
use hubble_cli::{
    cli::{filter_builder, Cli, Command},
    cmd::observe::{flows_request, print_options},
    format::Output,
};
use lumen_api::{
    flow::{
        DropReason, EventTypeFilter, FlowFilter, IpVersion, TcpFlags, TrafficDirection, Verdict,
    },
    observer::GetFlowsRequest,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NOW: u64 = 1_795_770_000;

fn request(args: &[&str]) -> Result<GetFlowsRequest, String> {
    let mut argv = vec!["hubble", "observe"];
    argv.extend_from_slice(args);
    let m = Cli::command()
        .try_get_matches_from(&argv)
        .map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?;
    let Command::Observe(a) = &cli.command else {
        panic!("not observe")
    };
    let filters =
        filter_builder(m.subcommand_matches("observe").unwrap()).map_err(|e| e.to_string())?;
    flows_request(a, &filters, UNIX_EPOCH + Duration::from_secs(NOW)).map_err(|e| e.to_string())
}

fn wl(args: &[&str]) -> Vec<FlowFilter> {
    request(args).unwrap().whitelist
}

fn err(args: &[&str]) -> String {
    request(args).expect_err("must fail")
}

fn ff(f: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
    let mut x = FlowFilter::default();
    f(&mut x);
    x
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn defaults_and_selection() {
    let r = request(&[]).unwrap();
    assert_eq!((r.number, r.first, r.follow), (20, false, false));
    assert!(r.whitelist.is_empty() && r.blacklist.is_empty());
    assert_eq!(request(&["--last", "5"]).unwrap().number, 5);
    let r = request(&["--first", "7"]).unwrap();
    assert_eq!((r.number, r.first), (7, true));
    assert_eq!(request(&["--all"]).unwrap().number, u64::MAX);
    let r = request(&["-f"]).unwrap();
    assert_eq!((r.number, r.follow), (0, true));
    let r = request(&["--follow", "--last", "3"]).unwrap();
    assert_eq!((r.number, r.follow), (3, true));
    assert!(err(&["--first", "1", "--last", "1"]).contains("cannot set both --first and --last"));
    assert!(err(&["--last", "1", "--all"]).contains("--last and --all"));
    assert!(err(&["--first", "1", "-f"]).contains("--first and --follow"));
}

#[test]
fn since_and_until() {
    let r = request(&["--since", "5m"]).unwrap();
    let since = r.since.unwrap();
    assert_eq!((since.seconds, since.nanos), (NOW as i64 - 300, 0));
    assert_eq!(r.number, 0, "a time range selects by itself");
    let r = request(&["--since", "1h30m", "--until", "2026-11-27T09:00:00Z"]).unwrap();
    assert_eq!(r.since.unwrap().seconds, NOW as i64 - 5400);
    assert_eq!(r.until.unwrap().seconds, 1_795_770_000);
    let r = request(&["--since", "5m", "--last", "2"]).unwrap();
    assert_eq!(r.number, 2);
    assert!(request(&["--until", "1m", "-f"]).unwrap().until.is_none());
    let e = err(&["--since", "noon"]);
    assert!(e.contains("failed to parse the since time"), "{e}");
    assert!(!e.contains('\n'));
    assert!(err(&["--until", "2026-13-01T00:00:00Z"]).contains("until"));
    let _ = SystemTime::now();
}

#[test]
fn verdicts() {
    assert_eq!(
        wl(&["--verdict", "dropped"]),
        vec![ff(|f| f.verdict = vec![Verdict::Dropped as i32])]
    );
    assert_eq!(
        wl(&["--verdict", "FORWARDED", "--verdict", "Translated"]),
        vec![ff(|f| f.verdict = vec![1, 7])]
    );
    let e = err(&["--verdict", "allowed"]);
    assert!(e.contains("invalid --verdict value: allowed"), "{e}");
}

#[test]
fn policy_denied() {
    let denied = ff(|f| {
        f.verdict = vec![Verdict::Dropped as i32];
        f.drop_reason_desc = vec![
            DropReason::PolicyDenied as i32,
            DropReason::PolicyDeny as i32,
        ];
    });
    assert_eq!(denied.drop_reason_desc, vec![133, 181]);
    assert_eq!(wl(&["--verdict", "policy_denied"]), vec![denied.clone()]);
    assert_eq!(wl(&["--verdict", "POLICY_DENIED"]), vec![denied.clone()]);
    // With other filters, in the same filter.
    assert_eq!(
        wl(&["--verdict", "policy_denied", "--from-pod", "shop/frontend"]),
        vec![FlowFilter {
            source_pod: s(&["shop/frontend"]),
            ..denied.clone()
        }]
    );
    // With another verdict: that verdict OR a policy denial.
    assert_eq!(
        wl(&["--verdict", "FORWARDED", "--verdict", "policy_denied"]),
        vec![ff(|f| f.verdict = vec![1]), denied.clone()]
    );
    // DROPPED already covers policy denials.
    assert_eq!(
        wl(&["--verdict", "policy_denied", "--verdict", "DROPPED"]),
        vec![ff(|f| f.verdict = vec![2])]
    );
    // Negated: policy denials are removed.
    let r = request(&["--not", "--verdict", "policy_denied"]).unwrap();
    assert!(r.whitelist.is_empty());
    assert_eq!(r.blacklist, vec![denied]);
    assert!(err(&[
        "--verdict",
        "policy_denied",
        "--drop-reason-desc",
        "POLICY_DENY"
    ])
    .contains("cannot be combined"));
}

#[test]
fn drop_reason_and_types() {
    assert_eq!(
        wl(&["--drop-reason-desc", "POLICY_DENIED"]),
        vec![ff(|f| f.drop_reason_desc = vec![133])]
    );
    assert!(err(&["--drop-reason-desc", "NOPE"]).contains("invalid --drop-reason-desc value: NOPE"));
    let t = |ty, sub: Option<i32>| EventTypeFilter {
        r#type: ty,
        match_sub_type: sub.is_some(),
        sub_type: sub.unwrap_or(0),
    };
    assert_eq!(
        wl(&[
            "-t",
            "trace",
            "-t",
            "drop",
            "-t",
            "policy-verdict",
            "-t",
            "l7"
        ]),
        vec![ff(
            |f| f.event_type = vec![t(4, None), t(1, None), t(5, None), t(129, None)]
        )]
    );
    assert_eq!(
        wl(&[
            "--type",
            "trace:to-endpoint",
            "--type",
            "trace:from-network",
            "--type",
            "drop:133",
            "--type",
            "agent:policy-updated",
            "--type",
            "trace-sock"
        ]),
        vec![ff(|f| f.event_type = vec![
            t(4, Some(0)),
            t(4, Some(10)),
            t(1, Some(133)),
            t(130, Some(3)),
            t(7, None)
        ])]
    );
    assert_eq!(
        wl(&["-t", "9"]),
        vec![ff(|f| f.event_type = vec![t(9, None)])]
    );
    assert!(err(&["-t", "bogus"]).contains("unable to parse type"));
    assert!(err(&["-t", "trace:sideways"]).contains("sub-type"));
}

#[test]
fn namespaces() {
    assert_eq!(
        wl(&["-n", "demo"]),
        vec![
            ff(|f| f.source_pod = s(&["demo/"])),
            ff(|f| f.destination_pod = s(&["demo/"]))
        ]
    );
    assert_eq!(
        wl(&["--namespace", "a", "--namespace", "b"]),
        vec![
            ff(|f| f.source_pod = s(&["a/", "b/"])),
            ff(|f| f.destination_pod = s(&["a/", "b/"]))
        ]
    );
    assert_eq!(
        wl(&["--from-namespace", "shop"]),
        vec![ff(|f| f.source_pod = s(&["shop/"]))]
    );
    assert_eq!(
        wl(&["--from-namespace", "shop", "--to-namespace", "db"]),
        vec![ff(|f| {
            f.source_pod = s(&["shop/"]);
            f.destination_pod = s(&["db/"]);
        })]
    );
    // A namespace qualifies bare pod names.
    assert_eq!(
        wl(&["--pod", "client", "-n", "demo"]),
        vec![
            ff(|f| f.source_pod = s(&["demo/client"])),
            ff(|f| f.destination_pod = s(&["demo/client"]))
        ]
    );
    assert_eq!(
        wl(&["-n", "demo", "--verdict", "DROPPED"]),
        vec![
            ff(|f| {
                f.source_pod = s(&["demo/"]);
                f.verdict = vec![2];
            }),
            ff(|f| {
                f.destination_pod = s(&["demo/"]);
                f.verdict = vec![2];
            })
        ]
    );
    // -A restricts nothing.
    assert!(wl(&["-A"]).is_empty());
    assert_eq!(
        wl(&["-A", "--protocol", "udp"]),
        vec![ff(|f| f.protocol = s(&["udp"]))]
    );
    assert!(err(&["-n", "a", "-A"]).contains("cannot be combined"));
    assert!(err(&["-n", "a", "--from-pod", "x"])
        .contains("filters --from-pod and --namespace cannot be combined"));
}

#[test]
fn pods_ips_labels_services_identities_ports_fqdns() {
    // One-sided flags share one filter (ANDed)...
    assert_eq!(
        wl(&["--from-pod", "demo/client", "--to-pod", "demo/server"]),
        vec![ff(|f| {
            f.source_pod = s(&["demo/client"]);
            f.destination_pod = s(&["demo/server"]);
        })]
    );
    // ...two-sided flags make a source filter OR a destination filter.
    for (flag, set) in [
        (
            "--pod",
            (|f: &mut FlowFilter, v: Vec<String>, src: bool| {
                if src {
                    f.source_pod = v
                } else {
                    f.destination_pod = v
                }
            }) as fn(&mut FlowFilter, Vec<String>, bool),
        ),
        ("--ip", |f, v, src| {
            if src {
                f.source_ip = v
            } else {
                f.destination_ip = v
            }
        }),
        ("--label", |f, v, src| {
            if src {
                f.source_label = v
            } else {
                f.destination_label = v
            }
        }),
        ("--service", |f, v, src| {
            if src {
                f.source_service = v
            } else {
                f.destination_service = v
            }
        }),
        ("--port", |f, v, src| {
            if src {
                f.source_port = v
            } else {
                f.destination_port = v
            }
        }),
        ("--fqdn", |f, v, src| {
            if src {
                f.source_fqdn = v
            } else {
                f.destination_fqdn = v
            }
        }),
    ] {
        assert_eq!(
            wl(&[flag, "x"]),
            vec![
                ff(|f| set(f, s(&["x"]), true)),
                ff(|f| set(f, s(&["x"]), false))
            ],
            "{flag}"
        );
    }
    assert_eq!(
        wl(&["--pod", "demo/client", "--protocol", "tcp"]),
        vec![
            ff(|f| {
                f.source_pod = s(&["demo/client"]);
                f.protocol = s(&["tcp"]);
            }),
            ff(|f| {
                f.destination_pod = s(&["demo/client"]);
                f.protocol = s(&["tcp"]);
            })
        ]
    );
    assert_eq!(
        wl(&["--from-ip", "10.0.0.1", "--to-ip", "10.0.0.0/8"]),
        vec![ff(|f| {
            f.source_ip = s(&["10.0.0.1"]);
            f.destination_ip = s(&["10.0.0.0/8"]);
        })]
    );
    assert_eq!(
        wl(&[
            "--from-label",
            "app=a",
            "--to-label",
            "app=b",
            "--from-service",
            "shop/cart",
            "--to-service",
            "db/pg"
        ]),
        vec![ff(|f| {
            f.source_label = s(&["app=a"]);
            f.destination_label = s(&["app=b"]);
            f.source_service = s(&["shop/cart"]);
            f.destination_service = s(&["db/pg"]);
        })]
    );
    assert_eq!(
        wl(&[
            "--from-port",
            "1234",
            "--to-port",
            "80",
            "--from-fqdn",
            "*.example.com",
            "--to-fqdn",
            "api.example.com"
        ]),
        vec![ff(|f| {
            f.source_port = s(&["1234"]);
            f.destination_port = s(&["80"]);
            f.source_fqdn = s(&["*.example.com"]);
            f.destination_fqdn = s(&["api.example.com"]);
        })]
    );
    assert_eq!(
        wl(&["--from-identity", "world", "--to-identity", "31002"]),
        vec![ff(|f| {
            f.source_identity = vec![2];
            f.destination_identity = vec![31002];
        })]
    );
    assert_eq!(
        wl(&["--identity", "host"]),
        vec![
            ff(|f| f.source_identity = vec![1]),
            ff(|f| f.destination_identity = vec![1])
        ]
    );
    assert!(err(&["--identity", "nobody"]).contains("invalid security identity"));
    assert!(err(&["--port", "1", "--to-port", "2"]).contains("cannot be combined"));
    assert!(err(&["--ip", "1.1.1.1", "--from-ip", "2.2.2.2"]).contains("cannot be combined"));
}

#[test]
fn node_protocol_flags_direction_version() {
    assert_eq!(
        wl(&[
            "--node-name",
            "lab/node1",
            "--protocol",
            "udp",
            "--protocol",
            "icmp"
        ]),
        vec![ff(|f| {
            f.node_name = s(&["lab/node1"]);
            f.protocol = s(&["udp", "icmp"]);
        })]
    );
    assert_eq!(
        wl(&["--tcp-flags", "SYN,ack", "--tcp-flags", "FIN"]),
        vec![ff(|f| f.tcp_flags = vec![
            TcpFlags {
                syn: true,
                ack: true,
                ..Default::default()
            },
            TcpFlags {
                fin: true,
                ..Default::default()
            }
        ])]
    );
    assert!(err(&["--tcp-flags", "SYN,XMAS"]).contains("unknown tcp flag: XMAS"));
    assert_eq!(
        wl(&["--traffic-direction", "Ingress"]),
        vec![ff(
            |f| f.traffic_direction = vec![TrafficDirection::Ingress as i32]
        )]
    );
    assert!(err(&["--traffic-direction", "up"]).contains("invalid traffic direction"));
    assert_eq!(
        wl(&["--ip-version", "6"]),
        vec![ff(|f| f.ip_version = vec![IpVersion::IPv6 as i32])]
    );
    assert_eq!(
        wl(&["-4"]),
        vec![ff(|f| f.ip_version = vec![IpVersion::IPv4 as i32])]
    );
    assert!(err(&["--ip-version", "5"]).contains("--ip-version"));
}

#[test]
fn not_negates_only_the_next_filter() {
    let r = request(&[
        "--from-pod",
        "demo/client",
        "--not",
        "--to-port",
        "53",
        "--protocol",
        "udp",
    ])
    .unwrap();
    assert_eq!(
        r.whitelist,
        vec![ff(|f| {
            f.source_pod = s(&["demo/client"]);
            f.protocol = s(&["udp"]);
        })]
    );
    assert_eq!(r.blacklist, vec![ff(|f| f.destination_port = s(&["53"]))]);
    let r = request(&[
        "--not",
        "--pod",
        "kube-system/",
        "--not",
        "--verdict",
        "FORWARDED",
    ])
    .unwrap();
    assert!(r.whitelist.is_empty());
    assert_eq!(
        r.blacklist,
        vec![
            ff(|f| {
                f.source_pod = s(&["kube-system/"]);
                f.verdict = vec![1];
            }),
            ff(|f| {
                f.destination_pod = s(&["kube-system/"]);
                f.verdict = vec![1];
            })
        ]
    );
    let r = request(&["--not", "-n", "kube-system"]).unwrap();
    assert_eq!(
        r.blacklist,
        vec![
            ff(|f| f.source_pod = s(&["kube-system/"])),
            ff(|f| f.destination_pod = s(&["kube-system/"]))
        ]
    );
    assert!(err(&["--not", "--not", "--pod", "x"]).contains("consecutive --not"));
    assert!(err(&["--pod", "x", "--not"]).contains("--not must be followed"));
}

#[test]
fn output_flags() {
    let parse = |args: &[&str], tty| {
        let mut argv = vec!["hubble", "observe"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from_args(&argv);
        let Command::Observe(a) = cli.command else {
            panic!()
        };
        print_options(&a, tty)
    };
    let o = parse(&[], false).unwrap();
    assert_eq!((o.output, o.color), (Output::Compact, false));
    assert!(
        parse(&[], true).unwrap().color,
        "auto: colours on a terminal"
    );
    assert!(!parse(&["--color", "never"], true).unwrap().color);
    assert!(parse(&["--color", "always"], false).unwrap().color);
    assert!(
        !parse(&["--color", "always", "-o", "table"], false)
            .unwrap()
            .color
    );
    assert_eq!(parse(&["-o", "json"], false).unwrap().output, Output::Json);
    assert_eq!(
        parse(&["-o", "jsonpb"], false).unwrap().output,
        Output::Json
    );
    assert_eq!(parse(&["-o", "dict"], false).unwrap().output, Output::Dict);
    assert_eq!(
        parse(&["--output", "table"], false).unwrap().output,
        Output::Table
    );
    assert!(parse(&["-o", "yaml"], false).is_err());
    let o = parse(&["--print-node-name", "--print-policy-names"], false).unwrap();
    assert!(o.node_name && o.policy_names);
}

trait ParseArgs {
    fn try_parse_from_args(argv: &[&str]) -> Cli;
}
impl ParseArgs for Cli {
    fn try_parse_from_args(argv: &[&str]) -> Cli {
        <Cli as clap::Parser>::try_parse_from(argv).unwrap()
    }
}

#[test]
fn global_flags() {
    use clap::Parser;
    let cli = Cli::try_parse_from(["hubble", "status"]).unwrap();
    if std::env::var_os("HUBBLE_SERVER").is_none() {
        assert_eq!(cli.server, "localhost:4245");
    }
    assert_eq!(cli.timeout, Duration::from_secs(5));
    let cli = Cli::try_parse_from([
        "hubble",
        "list",
        "nodes",
        "--server",
        "unix:///run/h.sock",
        "--timeout",
        "1500ms",
        "--tls",
        "--tls-ca-cert-files",
        "a.pem,b.pem",
        "--tls-client-cert-file",
        "c.pem",
        "--tls-client-key-file",
        "k.pem",
        "--tls-server-name",
        "relay.example",
        "--tls-allow-insecure",
    ])
    .unwrap();
    assert_eq!(cli.server, "unix:///run/h.sock");
    assert_eq!(cli.timeout, Duration::from_millis(1500));
    let t = cli.tls();
    assert!(t.enabled && t.allow_insecure);
    assert_eq!(
        t.ca_cert_files,
        vec![std::path::PathBuf::from("a.pem"), "b.pem".into()]
    );
    assert_eq!(t.server_name.as_deref(), Some("relay.example"));
    assert!(Cli::try_parse_from(["hubble", "status", "--timeout", "soon"]).is_err());
}
