//! nova-bench: the load program behind the figures in the README.
//!
//! It starts the release server (`target/release/nova-realtime`) pinned to
//! one CPU, pins itself to another, and drives the server over loopback with
//! real WebSocket clients and a real HTTP publisher.
//!
//! - `memory`: opens N authenticated connections, each subscribed to one of
//!   100 channels, lets presence traffic settle, and reports the server's RSS
//!   growth per connection.
//! - `fanout`: N subscribers on one channel, one publisher posting events at
//!   a fixed rate (open loop: it does not wait for deliveries); reports
//!   deliveries per second, loss, and publish→receive latency percentiles.
//!
//! ```sh
//! cargo build --release
//! cargo bench --bench nova-bench -- memory --connections 10000
//! cargo bench --bench nova-bench -- fanout --subscribers 1000 --rate 100 --seconds 10
//! ```

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Load program for nova-realtime")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Server binary to start
    #[arg(long, global = true, default_value = "target/release/nova-realtime")]
    server_bin: PathBuf,
    /// CPU the server is pinned to
    #[arg(long, global = true, default_value_t = 0)]
    server_cpu: usize,
    /// CPU this program is pinned to
    #[arg(long, global = true, default_value_t = 1)]
    client_cpu: usize,
    /// Passed by `cargo bench`; ignored
    #[arg(long, global = true, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Server memory per idle, authenticated, subscribed connection
    Memory {
        /// Connections measured
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections opened before the baseline is taken
        #[arg(long, default_value_t = 500)]
        warmup: usize,
    },
    /// Deliveries per second through one channel
    Fanout {
        /// Subscribers of the channel
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events published per second (comma-separated for a sweep)
        #[arg(long, value_delimiter = ',', default_value = "100")]
        rate: Vec<u64>,
        /// Seconds of publishing per rate
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Size of each event's `data`, bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Events per publish request (`/api/publish/batch` when > 1)
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
}

const ADMIN: &str = "bench-admin-token";

fn main() {
    let args = Args::parse();
    pin(std::process::id(), args.client_cpu);
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {e}");
    }
    let server = Server::start(&args);
    let result = actix_rt::System::new().block_on(async {
        match args.cmd {
            Cmd::Memory { connections, warmup } => memory(&server, connections, warmup).await,
            Cmd::Fanout { subscribers, ref rate, seconds, size, batch } => {
                fanout(&server, subscribers, rate, seconds, size, batch).await
            }
        }
    });
    drop(server);
    if let Err(e) = result {
        eprintln!("nova-bench: {e}");
        std::process::exit(1);
    }
}

fn pin(pid: u32, cpu: usize) {
    let ok = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: could not pin pid {pid} to CPU {cpu} (is taskset installed?)");
    }
}

/// The server under test, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &Args) -> Server {
        assert!(args.server_bin.exists(), "{} not found: run `cargo build --release` first", args.server_bin.display());
        let bin = args.server_bin.canonicalize().expect("server binary path");
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(args.server_cpu.to_string())
            .arg(bin)
            .args(["--bind", "127.0.0.1:0"])
            .env_clear()
            .env("RUST_LOG", "warn,nova_realtime=info")
            .env("NOVA_ADMIN_TOKEN", ADMIN)
            // The load program authenticates with the development key.
            .env("NOVA_DEVELOPMENT", "true")
            .env("NOVA_MAX_OUTBOUND_BYTES", (4 * 1024 * 1024).to_string())
            .current_dir(std::env::temp_dir())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stderr = child.stderr.take().expect("server stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("server exited before listening").expect("read server log");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap_or_default().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Server { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU seconds (user + system) the server has used.
    fn cpu_secs(&self) -> f64 {
        cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }

    /// System (kernel) CPU seconds the server has used.
    fn sys_secs(&self) -> f64 {
        cpu_field(&format!("/proc/{}/stat", self.child.id()), 12)
    }

    async fn metrics(&self) -> Result<Value, String> {
        let mut res = awc::Client::default()
            .get(format!("http://{}/ws/metrics", self.addr))
            .insert_header(("Authorization", format!("Bearer {ADMIN}")))
            .send()
            .await
            .map_err(|e| format!("metrics: {e}"))?;
        res.json().await.map_err(|e| format!("metrics body: {e}"))
    }
}

impl Drop for Server {
    /// SIGTERM first, so the server (or a profiler wrapping it) exits
    /// cleanly; SIGKILL if it has not after a few seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal WebSocket client: just what the benchmark needs, so the load
/// program spends its core on reading frames, not on a general library.
/// Server frames are unmasked and never fragmented; pings are answered.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    async fn open(addr: &str) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut conn = Conn { stream, buf: vec![0; 16 * 1024], start: 0, end: 0 };
        loop {
            let n = conn.stream.read(&mut conn.buf[conn.end..]).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed during handshake"));
            }
            conn.end += n;
            if let Some(i) = conn.buf[..conn.end].windows(4).position(|w| w == b"\r\n\r\n") {
                if !conn.buf.starts_with(b"HTTP/1.1 101") {
                    return Err(std::io::Error::other("upgrade refused"));
                }
                conn.start = i + 4;
                return Ok(conn);
            }
        }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(0x80 | opcode);
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream.write_all(&frame).await
    }

    async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// The byte range of the next text frame in `self.buf`, `None` on close.
    async fn next_text(&mut self) -> std::io::Result<Option<std::ops::Range<usize>>> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() >= 2 {
                let opcode = avail[0] & 0x0f;
                let (len, header) = match avail[1] & 0x7f {
                    126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
                    127 if avail.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&avail[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && avail.len() >= header + len {
                    let payload = self.start + header..self.start + header + len;
                    self.start = payload.end;
                    match opcode {
                        0x1 => return Ok(Some(payload)),
                        0x8 => return Ok(None),
                        0x9 => {
                            let ping = self.buf[payload].to_vec();
                            self.send_frame(0xA, &ping).await?;
                        }
                        _ => {}
                    }
                    continue;
                }
                if header + len.min(usize::MAX - header) > self.buf.len() && len != usize::MAX {
                    self.buf.resize(header + len, 0);
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// The next text frame as a string (setup only).
    async fn next_string(&mut self) -> Result<String, String> {
        match self.next_text().await.map_err(|e| e.to_string())? {
            Some(r) => Ok(String::from_utf8_lossy(&self.buf[r]).into_owned()),
            None => Err("connection closed".into()),
        }
    }
}

/// Connects, authenticates as `user` and subscribes to `channel`.
async fn subscriber(addr: &str, user: &str, channel: &str) -> Result<Conn, String> {
    let mut ws = Conn::open(addr).await.map_err(|e| format!("connect: {e}"))?;
    let init = json!({"id":"1","type":"connection.init","data":{"api_key":"development","user_id":user}});
    ws.send_text(&init.to_string()).await.map_err(|e| e.to_string())?;
    let ack = ws.next_string().await?;
    if !ack.contains("connection.ack") {
        return Err(format!("no ack: {ack}"));
    }
    let sub = json!({"id":"2","type":"channel.subscribe","data":{"channels":[channel]}});
    ws.send_text(&sub.to_string()).await.map_err(|e| e.to_string())?;
    loop {
        let frame = ws.next_string().await?;
        if frame.contains("channel.subscribed") {
            return Ok(ws);
        }
        if frame.contains("\"error\"") {
            return Err(format!("subscribe failed: {frame}"));
        }
    }
}

async fn memory(server: &Server, connections: usize, warmup: usize) -> Result<(), String> {
    println!("memory: {connections} idle connections (after {warmup} warm-up), each authenticated and subscribed");
    let held: Rc<RefCell<usize>> = Rc::new(RefCell::new(0));
    let open = |from: usize, to: usize| {
        let held = held.clone();
        async move {
            // Open in waves so the listen backlog never overflows.
            for wave in (from..to).collect::<Vec<_>>().chunks(250) {
                let mut tasks = Vec::new();
                for &i in wave {
                    let addr = server.addr.clone();
                    let held = held.clone();
                    tasks.push(actix_rt::spawn(async move {
                        let mut ws = subscriber(&addr, &format!("user{i}"), &format!("team:t{}", i % 100)).await?;
                        *held.borrow_mut() += 1;
                        // Stay connected and keep reading (presence frames).
                        while let Ok(Some(_)) = ws.next_text().await {}
                        Ok::<(), String>(())
                    }));
                }
                let target = wave[wave.len() - 1] + 1;
                let until = Instant::now() + Duration::from_secs(60);
                while *held.borrow() < target {
                    if Instant::now() > until {
                        return Err(format!("only {} of {target} connections came up", held.borrow()));
                    }
                    actix_rt::time::sleep(Duration::from_millis(5)).await;
                }
                drop(tasks);
            }
            Ok::<(), String>(())
        }
    };
    open(0, warmup).await?;
    settle(server).await?;
    let before = server.rss_kib();
    let started = Instant::now();
    open(warmup, warmup + connections).await?;
    let opened_in = started.elapsed();
    settle(server).await?;
    let after = server.rss_kib();
    let m = server.metrics().await?;
    let per_conn = (after.saturating_sub(before)) as f64 / connections as f64;
    println!("  connections open: {} (server metrics: {})", held.borrow(), m["connections"]);
    println!("  opened {connections} in {:.1} s", opened_in.as_secs_f64());
    println!("  server RSS: {before} KiB before, {after} KiB after");
    println!("  => {per_conn:.2} KiB per idle connection");
    Ok(())
}

/// Waits until the server has written nothing for a while (presence traffic
/// done), so RSS is measured at rest.
async fn settle(server: &Server) -> Result<(), String> {
    let mut last = u64::MAX;
    let mut quiet = 0;
    for _ in 0..600 {
        let out = server.metrics().await?["messages_out"].as_u64().unwrap_or(0);
        quiet = if out == last { quiet + 1 } else { 0 };
        if quiet >= 5 {
            return Ok(());
        }
        last = out;
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the server never went quiet".into())
}

#[derive(Default)]
struct Received {
    latencies_us: Vec<u32>,
    /// (sent at µs since start, latency µs) of the worst deliveries seen.
    worst: Vec<(u64, u32)>,
}

async fn fanout(
    server: &Server,
    subscribers: usize,
    rates: &[u64],
    seconds: u64,
    size: usize,
    batch: usize,
) -> Result<(), String> {
    let channel = "team:bench";
    let base = Instant::now();
    let received: Rc<RefCell<Received>> = Rc::new(RefCell::new(Received::default()));
    let mut ready = 0;
    let mut tasks = Vec::new();
    for wave in (0..subscribers).collect::<Vec<_>>().chunks(250) {
        let mut pending = Vec::new();
        for _ in wave {
            pending.push(subscriber(&server.addr, "bench", channel));
        }
        for ws in futures_util::future::join_all(pending).await {
            let mut ws = ws?;
            ready += 1;
            let received = received.clone();
            tasks.push(actix_rt::spawn(async move {
                while let Ok(Some(frame)) = ws.next_text().await {
                    if let Some(sent) = field_u64(&ws.buf[frame], b"\"t\":") {
                        let now = base.elapsed().as_micros() as u64;
                        let latency = now.saturating_sub(sent) as u32;
                        let mut r = received.borrow_mut();
                        r.latencies_us.push(latency);
                        if latency > 50_000 && r.worst.len() < 100_000 {
                            r.worst.push((sent, latency));
                        }
                    }
                }
            }));
        }
    }
    println!(
        "fanout: {ready} subscribers on '{channel}', events with {size}-byte data, {} per request, {seconds} s per rate",
        batch
    );
    let http =
        awc::Client::builder().timeout(Duration::from_secs(30)).connector(awc::Connector::new().limit(64)).finish();
    let pad = "x".repeat(size.saturating_sub(40));
    for &rate in rates {
        received.borrow_mut().latencies_us.clear();
        let before = server.metrics().await?;
        let (server_cpu0, server_sys0, client_cpu0) =
            (server.cpu_secs(), server.sys_secs(), cpu_secs("/proc/self/stat"));
        let total = rate * seconds;
        let requests = total.div_ceil(batch as u64);
        let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
        let start = Instant::now();
        let mut late = Duration::ZERO;
        let failures: Rc<RefCell<Vec<String>>> = Rc::default();
        let in_flight: Rc<RefCell<usize>> = Rc::default();
        for r in 0..requests {
            let due = start + interval * r as u32;
            let now = Instant::now();
            if due > now {
                actix_rt::time::sleep(due - now).await;
            } else {
                late = late.max(now - due);
            }
            let events: Vec<Value> = (0..batch)
                .map(|_| {
                    let t = base.elapsed().as_micros() as u64;
                    json!({"channel": channel, "type": "bench.event", "data": {"t": t, "p": pad}})
                })
                .collect();
            let (path, body) = if batch == 1 {
                ("/api/publish", events.into_iter().next().unwrap_or_default())
            } else {
                ("/api/publish/batch", json!({ "events": events }))
            };
            // Open loop: each publish runs on its own, so a slow answer does
            // not delay the next one.
            let request = http
                .post(format!("http://{}{path}", server.addr))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")));
            let (failures, in_flight) = (failures.clone(), in_flight.clone());
            *in_flight.borrow_mut() += 1;
            actix_rt::spawn(async move {
                match request.send_json(&body).await {
                    Ok(res) if res.status().as_u16() == 202 => {}
                    Ok(res) => failures.borrow_mut().push(format!("publish answered {}", res.status())),
                    Err(e) => failures.borrow_mut().push(format!("publish: {e}")),
                }
                *in_flight.borrow_mut() -= 1;
            });
        }
        while *in_flight.borrow() > 0 {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(failure) = failures.borrow().first() {
            return Err(failure.clone());
        }
        let published_in = start.elapsed();
        let expected = requests as usize * batch * ready;
        let until = Instant::now() + Duration::from_secs(30);
        while received.borrow().latencies_us.len() < expected && Instant::now() < until {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let delivered_in = start.elapsed();
        let server_cpu = (server.cpu_secs() - server_cpu0) / delivered_in.as_secs_f64();
        let server_sys = (server.sys_secs() - server_sys0) / delivered_in.as_secs_f64();
        let client_cpu = (cpu_secs("/proc/self/stat") - client_cpu0) / delivered_in.as_secs_f64();
        let after = server.metrics().await?;
        let mut lat = std::mem::take(&mut received.borrow_mut().latencies_us);
        let worst = std::mem::take(&mut received.borrow_mut().worst);
        if std::env::var_os("NOVA_BENCH_TRACE").is_some() {
            let mut by_event: std::collections::BTreeMap<u64, (u32, usize)> = Default::default();
            for (sent, l) in worst {
                let e = by_event.entry(sent).or_default();
                e.0 = e.0.max(l);
                e.1 += 1;
            }
            let offset = start.duration_since(base).as_micros() as u64;
            for (sent, (max, n)) in by_event.iter().take(20) {
                println!(
                    "    slow event sent at +{:.3} s: {n} deliveries over 50 ms, worst {:.1} ms",
                    (sent.saturating_sub(offset)) as f64 / 1e6,
                    *max as f64 / 1000.0
                );
            }
        }
        let got = lat.len();
        lat.sort_unstable();
        let pct = |q: f64| lat.get(((q * got as f64) as usize).min(got.saturating_sub(1))).copied().unwrap_or(0);
        let dropped = after["dropped_slow_consumers"].as_u64().unwrap_or(0)
            - before["dropped_slow_consumers"].as_u64().unwrap_or(0);
        println!(
            "  rate {rate:>6} ev/s: delivered {got}/{expected} ({} lost) in {:.2} s => {:.0} deliveries/s; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; publisher late by up to {:.1} ms; slow consumers {dropped}",
            expected - got.min(expected),
            delivered_in.as_secs_f64(),
            got as f64 / delivered_in.as_secs_f64().max(published_in.as_secs_f64()),
            pct(0.50) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0,
            lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            late.as_secs_f64() * 1000.0,
        );
        println!(
            "    server: p50 {} us, p99 {} us publish->write; rss {} KiB; CPU busy: server {:.0} % ({:.0} % kernel), \
             load program {:.0} %",
            after["latency"]["p50_us"],
            after["latency"]["p99_us"],
            server.rss_kib(),
            server_cpu * 100.0,
            server_sys * 100.0,
            client_cpu * 100.0,
        );
    }
    drop(tasks);
    Ok(())
}

/// User + system CPU seconds from a `/proc/.../stat` file (clock ticks are
/// 100 per second on Linux).
fn cpu_secs(path: &str) -> f64 {
    cpu_field(path, 11) + cpu_field(path, 12)
}

/// One time field of `/proc/.../stat` in seconds: 11 is user, 12 system,
/// counted after the parenthesised command name.
fn cpu_field(path: &str, field: usize) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    rest.split_whitespace().nth(field).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0
}

/// The number after `key` in a frame, without parsing the whole JSON.
fn field_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let mut digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    digits.try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add((d - b'0') as u64))
}
