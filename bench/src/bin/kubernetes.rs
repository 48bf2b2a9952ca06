//! The Kubernetes executor at rest, against the API double (`testkit::kube_double`; no cluster
//! can run on this machine) and a release `hkube server --executor kubernetes`
//! (`cargo build --release` first):
//!
//! 1. 1,000 pods in the cluster (other workloads' pods, Pending: the double runs no kubelet
//!    here), which the server's inventory watches to subtract what they request from its nodes.
//! 2. The server's CPU over a window with nothing to do, as a share of one core, and the
//!    requests it made to the API server in that window: a reflector lists once and then only
//!    watches, so the window should hold no list (`GET …/pods` without `watch`). Target: near
//!    idle.
//! 3. The same after 100 of those pods change (labels patched), to show the watch carries the
//!    changes without a relist.
//!
//! Ray has no Kubernetes launcher to compare in the same run (KubeRay needs a cluster), so no
//! Ray column.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hkube_bench::server::{hkube, request};
use testkit::kube_double::{FakeNode, KubeDouble, KubeletMode, Options};

const PODS: usize = 1_000;
const WINDOW: Duration = Duration::from_secs(30);

fn main() {
    let double = KubeDouble::start(Options {
        nodes: vec![FakeNode::new("double-node", "4000", "16000Gi")],
        kubelet: KubeletMode::Off,
        ..Options::default()
    })
    .expect("the API double starts");
    let api = double.url().trim_start_matches("http://").to_string();
    let pods_path = format!("/api/v1/namespaces/{}/pods", double.namespace());
    let made = Instant::now();
    for n in 0..PODS {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("other-{n}"), "labels": {"app": "other"}},
            "spec": {"containers": [{"name": "main", "image": "example/other:1",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
        });
        let created = request(&api, "POST", &pods_path, &pod.to_string());
        assert_eq!(
            created["kind"], "Pod",
            "the double refused pod {n}: {created}"
        );
    }
    println!(
        "{PODS} pods created in the double in {:.1} s",
        made.elapsed().as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("hkube-bench-kubernetes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    // Pods would dial this address; none start here (no kubelet), but the flag is required.
    let link = "127.0.0.1:39999";
    let mut child = Command::new(hkube())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--executor",
            "kubernetes",
        ])
        .args(["--namespace", double.namespace()])
        .args(["--link-address", link, "--link-listen", link])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("KUBECONFIG", double.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hkube server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("hkube: listening on http://") => break,
            Some(Ok(_)) => {}
            _ => panic!("the server did not start"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // Settle: the reflectors' first lists, the orphan sweep.
    std::thread::sleep(Duration::from_secs(3));

    let pid = child.id();
    let idle = measure(&double, pid, || {});
    report("idle, 1,000 pods watched", &idle);
    let changed = measure(&double, pid, || {
        for n in 0..100 {
            let patch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
            let _ = request_patch(&api, &format!("{pods_path}/other-{n}"), &patch.to_string());
        }
    });
    report("100 of them changed", &changed);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

struct Window {
    cpu_share: f64,
    lists: usize,
    watches: usize,
    other: usize,
}

/// The server's CPU share and its requests to the double during `WINDOW`, `during` run at its
/// start.
fn measure(double: &KubeDouble, pid: u32, during: impl FnOnce()) -> Window {
    let before = double.requests().len();
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now();
    during();
    std::thread::sleep(WINDOW.saturating_sub(start.elapsed()));
    let ticks = cpu_ticks(pid) - cpu_before;
    let elapsed = start.elapsed().as_secs_f64();
    let requests: Vec<_> = double.requests().into_iter().skip(before).collect();
    let is_watch = |r: &testkit::kube_double::Recorded| r.param("watch") == Some("true");
    let lists = requests
        .iter()
        .filter(|r| r.method == "GET" && !is_watch(r) && r.path.ends_with("/pods"))
        .count();
    let watches = requests.iter().filter(|r| is_watch(r)).count();
    Window {
        cpu_share: ticks as f64 / clock_ticks_per_second() / elapsed,
        lists,
        watches,
        other: requests.len() - lists - watches,
    }
}

fn report(what: &str, window: &Window) {
    println!(
        "{what}: server CPU {:.2} % of one core over {} s; requests in the window: {} pod lists, {} watch (re)opens, {} other (the patches come from this bench, not the server)",
        window.cpu_share * 100.0,
        WINDOW.as_secs(),
        window.lists,
        window.watches,
        window.other
    );
}

/// utime + stime of the process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A merge patch over a fresh connection.
fn request_patch(address: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
