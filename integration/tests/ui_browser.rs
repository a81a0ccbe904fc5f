//! The web UI in a real headless Chromium against a lab, its relay and `lumen-ui`: live rows
//! within 2 s, filter URLs, the service map's denied edge and its link, escaping of
//! hostile label text, and the relay-unreachable banner.
//!
//! Each test keeps a screenshot of its last page in `target/ui-screenshots/<test>.png`.
//! Without root, or without `chromium`/`chromedriver`, the tests are skipped, unless
//! `LUMEN_REQUIRE_PRIVILEGED=1`, where that is a failure.

mod common;

use common::{privileged, OneNode, ALLOW_CLIENT, TCP_PORT, UDP_PORT};
use lumen_integration::{
    browser::{self, Browser},
    policy, traffic_bin, AgentOptions, Pod, Relay, RelayOptions, Ui,
};
use serde_json::{json, Value};
use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Root, and a browser to drive.
fn ready() -> bool {
    if !privileged() {
        return false;
    }
    let missing: Vec<&str> = [
        ("chromedriver", browser::chromedriver_path().is_none()),
        ("chromium", browser::chromium_path().is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("LUMEN_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("LUMEN_REQUIRE_PRIVILEGED=1 but {missing:?} not found (apt-get install chromium chromium-driver)");
    }
    eprintln!("skipped: {missing:?} not found");
    false
}

fn screenshot_path(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(&manifest).join("target")
        });
    target.join("ui-screenshots").join(format!("{test}.png"))
}

/// A browser that leaves `target/ui-screenshots/<test>.png` behind.
fn browser(test: &str) -> Browser {
    let mut b = Browser::start().expect("chromedriver + chromium");
    b.screenshot_on_drop(screenshot_path(test));
    b
}

/// The lab's relay and UI (declared after the lab, so dropped before it).
fn relay_and_ui(t: &OneNode) -> (Relay, Ui) {
    let relay = Relay::start(&t.lab, RelayOptions::default()).expect("relay");
    let ui = Ui::start(&t.lab, &relay, None, "").expect("ui");
    (relay, ui)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Every row of the flows table: its cells' text without the identity spans, and whether it
/// was there when [`MARK_OLD`] ran.
const ROWS: &str = r#"
return Array.from(document.querySelectorAll('#rows tr:not(#empty)')).map(tr => {
  const c = Array.from(tr.cells).map(td => (td.childNodes[0] ? td.childNodes[0].textContent : '').trim());
  return {time: c[0], node: c[1], source: c[2], destination: c[3], port: c[4], summary: c[5],
          verdict: c[6], reason: c[7], policy: c[8], old: tr.dataset.old === '1'};
});"#;

/// Marks the rows present now, so live rows can be told apart.
const MARK_OLD: &str =
    "document.querySelectorAll('#rows tr').forEach(tr => tr.dataset.old = '1'); return true;";

/// Waits for the page's EventSource to be open ("Live: …"), then a moment for the relay's
/// follow request behind it.
fn wait_live(b: &Browser) {
    b.wait_for(
        "return document.getElementById('live-status').textContent.startsWith('Live')",
        Duration::from_secs(10),
        "the live stream to open",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

fn rows(b: &Browser) -> Vec<Value> {
    b.eval(ROWS, vec![])
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn s<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or_default()
}

fn tcp(from: &Pod, to: &Pod) {
    from.exec_ok(
        traffic_bin().unwrap(),
        ["tcp", "--to", &format!("{}:{TCP_PORT}", to.ip())],
    )
    .expect("tcp");
}

fn udp(from: &Pod, to: &Pod) {
    from.exec_ok(
        traffic_bin().unwrap(),
        [
            "udp",
            "--to",
            &format!("{}:{UDP_PORT}", to.ip()),
            "--count",
            "2",
        ],
    )
    .expect("udp");
}

/// Loads `url` until `script` is truthy (the relay needs a moment to have the flows).
fn load_until(b: &Browser, url: &str, script: &str, what: &str) {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        b.goto(url).unwrap();
        let v = b.eval(script, vec![]).unwrap();
        if v.as_bool() == Some(true) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what} at {url}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn flows_page_shows_a_new_connection_live_within_2s() {
    if !ready() {
        return;
    }
    let t = OneNode::new("ui-live", AgentOptions::default());
    let (_relay, ui) = relay_and_ui(&t);
    let b = browser("flows_page_shows_a_new_connection_live_within_2s");
    b.goto(&format!("{}/", ui.url())).unwrap();
    wait_live(&b);
    // A MutationObserver stamps the first live client → server row with the browser's clock
    // (the same wall clock as ours), so polling adds no latency to the figure.
    b.eval(
        &(MARK_OLD.replace("return true;", "")
            + r#"
            window.__seen = null;
            new MutationObserver(() => {
              if (window.__seen) return;
              for (const tr of document.querySelectorAll('#rows tr:not([data-old])')) {
                const c = tr.cells;
                if (c.length > 4 && c[2].textContent.includes('demo/client')
                    && c[3].textContent.includes('demo/server') && c[4].textContent.trim() === '8080') {
                  window.__seen = Date.now(); return;
                }
              }
            }).observe(document.getElementById('rows'), {childList: true});
            return true;"#),
        vec![],
    )
    .unwrap();
    let before = rows(&b)
        .iter()
        .filter(|r| s(r, "source") == "demo/client")
        .count();
    assert_eq!(before, 0, "no client rows before the connection");

    let started = now_ms();
    tcp(&t.client, &t.server);
    let seen = b
        .wait_for(
            "return window.__seen",
            Duration::from_secs(10),
            "the live client → server row",
        )
        .unwrap()
        .as_f64()
        .unwrap();
    let elapsed = seen - started;
    eprintln!("live row {elapsed:.0} ms after the connection started");
    let live: Vec<Value> = rows(&b)
        .into_iter()
        .filter(|r| !r["old"].as_bool().unwrap())
        .collect();
    assert!(
        live.iter().any(|r| s(r, "source") == "demo/client"
            && s(r, "destination") == "demo/server"
            && s(r, "port") == "8080"
            && s(r, "summary").starts_with("TCP")),
        "{live:#?}"
    );
    assert!(elapsed <= 2000.0, "live row after {elapsed:.0} ms (> 2 s)");
}

#[test]
fn filter_url_shows_only_matching_flows() {
    if !ready() {
        return;
    }
    let t = OneNode::new("ui-filter", AgentOptions::default());
    let other = t
        .node
        .add_pod("demo", "other", &[("app", "other")])
        .unwrap();
    let (_relay, ui) = relay_and_ui(&t);
    let b = browser("filter_url_shows_only_matching_flows");
    tcp(&t.client, &t.server);
    udp(&t.client, &t.server);
    tcp(&other, &t.server);
    // Unfiltered, the page has what the filter must leave out.
    load_until(
        &b,
        &format!("{}/?namespace=demo", ui.url()),
        &(ROWS.replace("return Array", "const rows = Array")
            + "; return rows.some(r => r.source === 'demo/other') \
               && rows.some(r => r.source === 'demo/client' && r.summary.startsWith('UDP')) \
               && rows.some(r => r.source === 'demo/client' && r.summary.startsWith('TCP'));"),
        "other pods' and UDP flows unfiltered",
    );

    let url = format!("{}/?from_pod=demo/client&protocol=tcp", ui.url());
    load_until(
        &b,
        &url,
        "return document.querySelectorAll('#rows tr:not(#empty)').length > 0",
        "the client's TCP flows",
    );
    let check = |rows: &[Value]| {
        for r in rows {
            assert_eq!(s(r, "source"), "demo/client", "only from demo/client: {r}");
            assert!(s(r, "summary").starts_with("TCP"), "only TCP: {r}");
        }
    };
    let first = rows(&b);
    eprintln!("{} server-rendered rows", first.len());
    check(&first);
    // The form shows the filter it applied.
    let form = b
        .eval(
            "return [document.querySelector('input[name=protocol]').value, \
             document.querySelector('.cli').textContent]",
            vec![],
        )
        .unwrap();
    assert_eq!(form[0], "tcp");
    assert!(
        form[1]
            .as_str()
            .unwrap()
            .contains("--from-pod demo/client --protocol tcp"),
        "{form}"
    );

    // Live rows go through the same filter.
    wait_live(&b);
    b.eval(MARK_OLD, vec![]).unwrap();
    tcp(&other, &t.server);
    udp(&t.client, &t.server);
    tcp(&t.client, &t.server);
    b.wait_for(
        "return document.querySelectorAll('#rows tr:not([data-old]):not(#empty)').length > 0",
        Duration::from_secs(5),
        "live rows",
    )
    .unwrap();
    // Time for the non-matching flows to arrive, had they passed the filter.
    std::thread::sleep(Duration::from_secs(2));
    let all = rows(&b);
    let live = all.iter().filter(|r| !r["old"].as_bool().unwrap()).count();
    eprintln!("{live} live rows");
    assert!(live > 0);
    check(&all);
}

#[test]
fn service_map_shows_a_denied_edge_linking_to_its_flows() {
    if !ready() {
        return;
    }
    let t = OneNode::new("ui-map", AgentOptions::default());
    let intruder = t
        .node
        .add_pod("demo", "intruder", &[("app", "intruder")])
        .unwrap();
    policy::apply(&t.lab, "allow.yaml", ALLOW_CLIENT, "demo", "allow-client").unwrap();
    let (_relay, ui) = relay_and_ui(&t);
    let b = browser("service_map_shows_a_denied_edge_linking_to_its_flows");
    assert!(
        policy::tcp_connects(&t.client, t.server.ip(), TCP_PORT),
        "allowed"
    );
    assert!(
        !policy::tcp_connects(&intruder, t.server.ip(), TCP_PORT),
        "default deny"
    );

    let denied_edge = r#"
      const edges = Array.from(document.querySelectorAll('svg a.edge.dropped'));
      const e = edges.find(a => { const t = a.querySelector('title'); return t && /intruder/.test(t.textContent) && /server/.test(t.textContent); });
      if (!e) return false;
      e.setAttribute('data-test', 'denied');
      return true;"#;
    load_until(
        &b,
        &format!("{}/map?namespace=demo", ui.url()),
        denied_edge,
        "a dropped intruder → server edge",
    );
    let map = b
        .eval(
            r#"const svg = document.querySelector('svg');
            const e = document.querySelector('a[data-test=denied]');
            return {
              text: svg.textContent,
              nodes: Array.from(svg.querySelectorAll('g.node text:first-of-type')).map(t => t.textContent),
              title: e.querySelector('title').textContent,
              strokes: Array.from(e.querySelectorAll('path')).map(p => p.getAttribute('stroke')),
              colour: getComputedStyle(e.querySelector('path')).stroke,
              href: e.getAttribute('href'),
              allowed: Array.from(svg.querySelectorAll('a.edge:not(.dropped) title')).map(t => t.textContent),
            };"#,
            vec![],
        )
        .unwrap();
    eprintln!("map: {map:#}");
    let nodes: Vec<&str> = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for w in ["client", "server", "intruder"] {
        assert!(nodes.contains(&w), "workload {w} drawn: {nodes:?}");
    }
    assert!(
        map["strokes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "#d62728"),
        "{map}"
    );
    assert_eq!(
        map["colour"], "rgb(214, 39, 40)",
        "denied edges are red: {map}"
    );
    assert!(
        map["title"].as_str().unwrap().contains("denied by policy"),
        "{map}"
    );
    assert!(
        map["allowed"].as_array().unwrap().iter().any(|t| {
            let t = t.as_str().unwrap_or_default();
            t.contains("client") && t.contains("server")
        }),
        "the allowed client → server edge is not styled as denied: {map}"
    );

    // Click the edge as a user would (its label text is inside the link).
    let href = map["href"].as_str().unwrap().to_string();
    let label = b.find("a[data-test=denied] text").unwrap();
    if let Err(e) = b.click(&label) {
        eprintln!("WebDriver click on the edge label failed ({e:#}); following its href");
        b.goto(&format!("{}{href}", ui.url())).unwrap();
    }
    b.wait_for(
        "return location.pathname === '/' && document.readyState === 'complete'",
        Duration::from_secs(10),
        "the flows page after clicking the edge",
    )
    .unwrap();
    let url = b.url().unwrap();
    eprintln!("edge link: {url}");
    assert!(
        url.contains("intruder") && url.contains("server") && url.contains("from_"),
        "{url}"
    );
    let flows = rows(&b);
    assert!(!flows.is_empty(), "the edge's flows are listed");
    for r in &flows {
        assert_eq!(s(r, "source"), "demo/intruder", "{r}");
        assert_eq!(s(r, "destination"), "demo/server", "{r}");
    }
    assert!(
        flows.iter().any(|r| s(r, "verdict") == "DROPPED"
            && s(r, "reason").to_lowercase().contains("policy")
            && s(r, "policy").contains("allow-client")),
        "{flows:#?}"
    );
}

#[test]
fn hostile_label_text_is_shown_as_text() {
    if !ready() {
        return;
    }
    const SCRIPT: &str = "<script>alert(1)</script>";
    const IMG: &str = "\"><img src=x onerror=alert(2)>";
    let t = OneNode::new("ui-xss", AgentOptions::default());
    // The lab writes label values into the manifest verbatim, and the agent takes them as
    // they are (Kubernetes would refuse them; a compromised or odd state source would not).
    let xss = t
        .node
        .add_pod(
            "demo",
            "xss",
            &[("app", "xss"), ("note", SCRIPT), ("quote", IMG)],
        )
        .unwrap();
    let (_relay, ui) = relay_and_ui(&t);
    let b = browser("hostile_label_text_is_shown_as_text");
    tcp(&xss, &t.server);
    load_until(
        &b,
        &format!("{}/?from_pod=demo/xss", ui.url()),
        "return !!document.querySelector('#rows td.time a')",
        "a flow of the xss pod",
    );
    b.click(&b.find("#rows td.time a").unwrap()).unwrap();
    b.wait_for(
        "return location.pathname.startsWith('/flow/') && document.readyState === 'complete'",
        Duration::from_secs(10),
        "the flow's detail page",
    )
    .unwrap();
    let detail = b.url().unwrap();
    let check = |page: &str, shown: bool| {
        assert_eq!(b.dialog_text().unwrap(), None, "{page}: no dialog opened");
        let v = b
            .eval(
                r#"return {
                  text: document.body.textContent,
                  labels: Array.from(document.querySelectorAll('td.mono')).map(td => td.textContent),
                  imgs: document.querySelectorAll('img').length,
                  injected: Array.from(document.querySelectorAll('script')).filter(s => s.textContent.includes('alert(')).length,
                  onerror: document.querySelectorAll('[onerror]').length,
                };"#,
                vec![],
            )
            .unwrap();
        assert_eq!(v["imgs"], 0, "{page}: no injected <img>");
        assert_eq!(v["injected"], 0, "{page}: no injected <script>");
        assert_eq!(v["onerror"], 0, "{page}: no injected handler");
        if shown {
            let text = v["text"].as_str().unwrap();
            assert!(
                text.contains(&format!("k8s:note={SCRIPT}")),
                "{page}: literal text: {:#}",
                v["labels"]
            );
            assert!(
                text.contains(&format!("k8s:quote={IMG}")),
                "{page}: literal text: {:#}",
                v["labels"]
            );
        }
    };
    check("detail page", true);
    // The map and the flows page, where the same endpoint appears.
    b.goto(&format!("{}/map?namespace=demo", ui.url())).unwrap();
    check("map", false);
    b.goto(&format!("{}/?namespace=demo", ui.url())).unwrap();
    check("flows page", false);
    // A hostile filter value is echoed as text too.
    b.goto(&format!(
        "{}/?pod=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        ui.url()
    ))
    .unwrap();
    check("flows page with a hostile filter", false);
    let echoed = b
        .eval(
            "return [document.querySelector('input[name=pod]').value, document.querySelector('.cli').textContent]",
            vec![],
        )
        .unwrap();
    assert_eq!(echoed[0], SCRIPT);
    assert!(echoed[1].as_str().unwrap().contains(SCRIPT), "{echoed}");
    // Back to the detail page for the screenshot.
    b.goto(&detail).unwrap();
    b.eval(
        "Array.from(document.querySelectorAll('h2')).find(h => h.textContent.includes('labels')).scrollIntoView(); return true;",
        vec![],
    )
    .unwrap();
}

#[test]
fn relay_unavailable_shows_the_banner() {
    if !ready() {
        return;
    }
    let t = OneNode::new("ui-norelay", AgentOptions::default());
    let (mut relay, ui) = relay_and_ui(&t);
    let relay_addr = relay.addr().to_string();
    let b = browser("relay_unavailable_shows_the_banner");
    b.goto(&format!("{}/", ui.url())).unwrap();
    wait_live(&b);
    let banner =
        "const b = document.getElementById('banner'); return b && !b.hidden ? b.textContent : '';";
    assert_eq!(
        b.eval(banner, vec![]).unwrap(),
        "",
        "no banner while the relay runs"
    );

    relay.stop().unwrap();
    // An open page learns it from its stream.
    let live = b
        .wait_for(banner, Duration::from_secs(10), "the live page's banner")
        .unwrap();
    eprintln!("live page: {live}");
    assert!(live.as_str().unwrap().contains("lumen-relay"), "{live}");

    for path in ["/", "/map", "/denied", "/status"] {
        let url = format!("{}{path}", ui.url());
        let r = browser::get(&url).unwrap();
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        b.goto(&url).unwrap();
        let page = b
            .eval(
                "return {url: location.href, title: document.title, nav: !!document.querySelector('header nav'), \
                 banner: (b => b && !b.hidden ? b.textContent : '')(document.getElementById('banner'))}",
                vec![],
            )
            .unwrap();
        eprintln!("{path}: {page}");
        assert_eq!(page["url"], json!(url), "not a browser error page: {page}");
        assert!(page["title"].as_str().unwrap().contains("Lumen"), "{page}");
        assert_eq!(page["nav"], true, "in the layout: {page}");
        let text = page["banner"].as_str().unwrap();
        assert!(
            text.contains(&format!("relay unreachable at {relay_addr}"))
                && text.contains("is lumen-relay running?"),
            "{path}: {page}"
        );
    }
    b.goto(&format!("{}/", ui.url())).unwrap();
}
