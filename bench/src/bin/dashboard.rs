//! The dashboard's costs, against a release `hkube server` (`cargo build --release` first):
//!
//! 1. A job page for a 10,000-task batch: the four answers the page waits for (the pipeline,
//!    the first `status` event of its stream, the first page of tasks, the log text), timed
//!    while the batch runs and after it ended. Target: ≤ 1 s.
//! 2. 100 running jobs: the server's CPU over 10 s with no UI, then with the UI open (the
//!    jobs stream and one job's stream), as a share of one core. Target: the UI's share < 5 %.
//!
//! Ray's dashboard does not do the same work through a comparable interface, so no Ray column.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hkube_bench::server::{request, start_server};

const BATCH: usize = 10_000;
const JOBS: usize = 100;
const WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let dir = std::env::temp_dir().join(format!("hkube-bench-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let algorithms = dir.join("algorithms");
    for (name, code, extra) in [
        (
            "quick",
            "def start(args, api):\n    return args['input'][0]\n",
            "",
        ),
        (
            "idle",
            "import time\ndef start(args, api):\n    time.sleep(600)\n",
            "maxWorkers: 1\n",
        ),
    ] {
        std::fs::create_dir_all(algorithms.join(name)).expect("a folder");
        std::fs::write(algorithms.join(name).join("main.py"), code).expect("code");
        std::fs::write(
            algorithms.join(name).join("algorithm.yml"),
            format!("name: {name}\nenv: python\n{extra}code:\n  path: .\n  entryPoint: main.py\n"),
        )
        .expect("algorithm.yml");
    }
    let state = dir.join("state");
    let folder = algorithms.display().to_string();
    let (mut server, address) = start_server(&state, &["--algorithms", &folder]);

    // ---- 1. a 10,000-task batch's page ----
    let items: Vec<usize> = (0..BATCH).collect();
    let body = serde_json::json!({"name": "big", "nodes": [
        {"nodeName": "A", "algorithmName": "quick", "input": [format!("#{}", serde_json::to_string(&items).unwrap_or_default())]},
    ]})
    .to_string();
    let job = request(&address, "POST", "/api/v1/exec/raw", &body)["jobId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    std::thread::sleep(Duration::from_millis(300));
    let running = page_load(&address, &job);
    loop {
        let status = request(&address, "GET", &format!("/api/v1/exec/status/{job}"), "");
        if status["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = page_load(&address, &job);

    // ---- 2. 100 running jobs, the UI closed then open ----
    let one = serde_json::json!({"name": "waiting", "nodes": [{"nodeName": "A", "algorithmName": "idle", "input": [1]}]}).to_string();
    let mut waiting = Vec::new();
    for _ in 0..JOBS {
        let id = request(&address, "POST", "/api/v1/exec/raw", &one)["jobId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        waiting.push(id);
    }
    std::thread::sleep(Duration::from_secs(3));
    let pid = server.id();
    let closed = cpu_share(pid);
    let streams = [
        "/api/v1/events/jobs".to_string(),
        format!("/api/v1/events/jobs/{}", waiting[0]),
    ];
    let readers: Vec<_> = streams
        .iter()
        .map(|path| {
            let mut stream = TcpStream::connect(&address).expect("a connection");
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).expect("a request");
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                let started = Instant::now();
                while started.elapsed() < WINDOW + Duration::from_secs(2) {
                    if stream.read(&mut sink).unwrap_or(0) == 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = cpu_share(pid);
    for reader in readers {
        let _ = reader.join();
    }
    request(
        &address,
        "POST",
        "/api/v1/exec/stop",
        &serde_json::json!({"pipelineName": "waiting"}).to_string(),
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!("dashboard (release hkube server, this machine)");
    println!("| measure | hkube | target |");
    println!("|---|---|---|");
    println!(
        "| 10,000-task batch page, while it runs: pipeline {} + first status event {} + tasks page {} + logs {} | {:.0} ms | ≤ 1000 ms |",
        ms(running[0]), ms(running[1]), ms(running[2]), ms(running[3]),
        running.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
    );
    println!(
        "| the same page after the end | {:.0} ms | ≤ 1000 ms |",
        ended.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
    );
    println!(
        "| server CPU, {JOBS} running jobs, UI closed | {:.2} % of a core | |",
        closed * 100.0
    );
    println!(
        "| server CPU, {JOBS} running jobs, UI open (jobs + one job stream) | {:.2} % of a core (UI's share {:.2} %) | UI < 5 % |",
        open * 100.0,
        (open - closed).max(0.0) * 100.0
    );
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// What the job page waits for, each timed on its own connection (the browser's parallel
/// fetches take the longest of them; the sum is the pessimistic figure printed).
fn page_load(address: &str, job: &str) -> [Duration; 4] {
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    let pipeline = time(&|| {
        request(address, "GET", &format!("/api/v1/exec/pipelines/{job}"), "");
    });
    let event = time(&|| {
        first_event(address, &format!("/api/v1/events/jobs/{job}"));
    });
    let tasks = time(&|| {
        request(
            address,
            "GET",
            &format!("/api/v1/exec/tasks/{job}?limit=200"),
            "",
        );
    });
    let logs = time(&|| {
        request(address, "GET", &format!("/api/v1/exec/logs/{job}"), "");
    });
    [pipeline, event, tasks, logs]
}

/// Reads an event stream until its first `data:` line.
fn first_event(address: &str, path: &str) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return;
    };
    let head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    for line in BufReader::new(stream).lines() {
        match line {
            Ok(line) if line.contains("data:") => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The server's CPU (user + system) over [`WINDOW`], as a share of one core.
fn cpu_share(pid: u32) -> f64 {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    };
    let before = ticks();
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    let used = ticks().saturating_sub(before);
    // Linux's USER_HZ is 100 on every platform it supports today.
    used as f64 / 100.0 / start.elapsed().as_secs_f64()
}
