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
//!   The channel is `conversation:bench`; `--history off` (the default)
//!   starts the server with `--history conversation=off`, `--history on`
//!   with the default history, so history is the only difference. With
//!   `on` every subscriber checks that each event's `offset` is one more
//!   than the last; a gap, a repeat or an event missing at the end counts
//!   as lost, and any makes the run exit non-zero.
//! - `reconnect`: a reconnect storm with recovery. N clients (one user each,
//!   the development key) each subscribe to one of C channels
//!   `conversation:storm-<i % C>` and read a few live events; then all drop
//!   at once, M events per channel are published while they are away, and
//!   all reconnect at once, each sending `connection.reconnect` (its
//!   channel, last offset and epoch) as its first frame. Reports the time
//!   from the first connect to the last missed event received, each
//!   client's connect start → last missed event percentiles, how many were
//!   `recovered`, and checks that every client got exactly its M missed
//!   events, offsets in order, nothing twice (any failure: exit non-zero);
//!   with the server's RSS before and after the storm.
//! - `history-memory`: the server's RSS growth with C conversation channels
//!   each holding H events of history (nobody subscribed), per 1,000
//!   channels and per event kept.
//! - `cluster`: scaling out through Redis. Starts its own `redis-server` (on
//!   a free port, pinned to the server CPU, killed at the end) and two nodes,
//!   `node-a` and `node-b`, both on the server CPU and connected to it. The
//!   subscribers of one channel are split evenly between the nodes; the
//!   publisher posts to node A only, so node A's subscribers are local and
//!   node B's are reached through Redis pub/sub. Reports, per rate,
//!   deliveries per second, loss and duplicates counted per event, and the
//!   latency percentiles of local and remote subscribers apart, with what
//!   the cross-node hop adds (remote minus local p50 and p99). Any loss makes
//!   it exit non-zero. Needs `redis-server` on the PATH.
//! - `settings`: latency from a file write to the event arriving at N
//!   connected clients. Starts the server on a private temporary config
//!   directory (`mcp_servers.yaml`) and prompts directory
//!   (`NOVA_SYSTEM_PROMPT.md`), with health polling made rare so it adds no
//!   load, and connects N clients subscribed to `system:settings`. Then it
//!   edits the prompt in place K times, one at a time: each write carries a
//!   unique marker, and the run waits until every client has received the
//!   `prompt_updated` whose content holds it (up to a timeout; what is
//!   missing then counts as lost), and pauses for the debounce window plus
//!   100 ms so writes are not merged. Reports deliveries, loss, write→receive
//!   latency percentiles over every (write, client) pair, the same minus the
//!   debounce window (what the server adds to the wait it is configured
//!   for), the server's own publish→write percentiles (from its metrics),
//!   the CPU time a hypervisor stole from either CPU meanwhile (a noisy
//!   virtual machine shows up there), and checks that p99 stays within the
//!   window plus 50 ms. Any loss, or any wrong `prompt_updated` (duplicated,
//!   unknown content, or fields that do not match the content), makes it
//!   exit non-zero; a failed latency check alone does not.
//! - `gateway`: the agent gateway (docs/gateway.md), with one agent `chat`
//!   receiving `chat.message` (its own `agents.yaml` in a private config
//!   directory). `throughput`: one node; N clients (one user each, each
//!   sending on a channel of its own that nobody subscribes to, so there is
//!   no fan-out) keep W `chat.message` requests outstanding for S seconds;
//!   reports `message.received` per second (records accepted), errors,
//!   request → receipt latency, and checks that the agent got exactly one
//!   record per receipt. With `stream` delivery the run has its own
//!   `redis-server` (as `cluster`) and a consumer in this program drains
//!   `nova:inbound:chat` (XREADGROUP COUNT 1000 BLOCK 100 + XACK); with
//!   `webhook` there is no Redis and this program's own HTTP server answers
//!   every POST 200 over kept-alive connections. A webhook receipt means
//!   "queued", so clients can outrun delivery: the agent's queue (1,000)
//!   fills and requests are refused 4007 "try again later"; each refusal
//!   holds its client's sending back 10 ms more (it reads on meanwhile),
//!   and what was accepted is what was delivered. `roundtrip`: one client
//!   subscribed to `conversation:rt` sends `chat.message` requests one at a
//!   time; an agent in this program answers each record at once with
//!   `assistant.token {stream_id: <record id>}` through `POST /api/publish`
//!   (kept-alive HTTP), and the client times send → that token. Variants:
//!   stream on one node; stream across two nodes on one Redis (client on
//!   node B, the agent publishing to node A); webhook on one node. The
//!   nodes run without per-user and per-type limits (`chat.message=off`)
//!   and with the per-connection frame limit raised, so the gateway, not a
//!   limit, is measured. Needs `redis-server` for `stream`.
//!
//! ```sh
//! cargo build --release
//! cargo bench --bench nova-bench -- memory --connections 10000
//! cargo bench --bench nova-bench -- fanout --subscribers 1000 --rate 100 --seconds 10
//! cargo bench --bench nova-bench -- fanout --subscribers 1000 --rate 1000 --seconds 10 --history on
//! cargo bench --bench nova-bench -- reconnect --clients 5000 --channels 100 --missed 50
//! cargo bench --bench nova-bench -- history-memory --channels 1000 --events 300
//! cargo bench --bench nova-bench -- cluster --subscribers 1000 --rate 100,200,500 --seconds 10
//! cargo bench --bench nova-bench -- settings --clients 1000 --writes 20
//! cargo bench --bench nova-bench -- gateway --run throughput --clients 100 --window 16 --seconds 10
//! cargo bench --bench nova-bench -- gateway --run roundtrip --requests 2000
//! ```

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
        /// Then close them all and report the RSS the server keeps
        #[arg(long)]
        close: bool,
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
        /// History on `conversation:bench`: `on` the server's default (offsets checked per subscriber), `off` the
        /// server started with `--history conversation=off`
        #[arg(long, default_value = "off")]
        history: History,
    },
    /// Reconnect storm: every client drops, events are published, every client reconnects and recovers.
    ///
    /// The server runs with `--max-connections` and `--max-pending-connections` at clients + 1,000 each. With
    /// the defaults (100,000 + 10,000) over an open-file limit below that, the server cuts the pending budget
    /// (sockets before `connection.init`/`connection.reconnect`) to an eighth of the limit (about 2,450 with
    /// 20,000 files), and past it sheds the oldest unauthenticated socket: half of 5,000 clients reconnecting at
    /// once were closed during their handshake. Also `--auth-failure-limit 0` (all clients share one address;
    /// the development key does not fail, so this only keeps a failure from spreading) and, as every mode, no
    /// per-user rate limit; each client sends one frame per connection, under the per-connection limit.
    Reconnect {
        /// Clients, one user each (`storm-<i>`)
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        /// Channels `conversation:storm-<i % channels>`
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Events published per channel while the clients are away
        #[arg(long, default_value_t = 50)]
        missed: usize,
        /// Events published per channel and read live before the clients drop
        #[arg(long, default_value_t = 5)]
        live: usize,
        /// Size of each event's `data`, bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds every client has to recover; later counts as a failure
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Server RSS growth with C conversation channels each holding H events of history
    HistoryMemory {
        /// Channels `conversation:hist-<i>`, nobody subscribed
        #[arg(long, default_value_t = 1000)]
        channels: usize,
        /// Events published to each (the default history keeps 300 per channel; more raises it)
        #[arg(long, default_value_t = 300)]
        events: usize,
        /// Size of each event's `data`, bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Two nodes through a private Redis: local and cross-node delivery
    Cluster {
        /// Subscribers of the channel, half on each node
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events published per second to node A (comma-separated for a sweep)
        #[arg(long, value_delimiter = ',', default_value = "100,200,500")]
        rate: Vec<u64>,
        /// Seconds of publishing per rate
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Size of each event's `data`, bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Latency from a prompt file write to `prompt_updated` at N clients
    Settings {
        /// Clients connected, each subscribed to `system:settings`
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Prompt edits, one at a time
        #[arg(long, default_value_t = 20)]
        writes: usize,
        /// The server's settings debounce window, ms
        #[arg(long, default_value_t = 200)]
        debounce_ms: u64,
        /// Seconds a write's event may take to reach every client; later counts as lost
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// The agent gateway: records accepted per second, and client -> agent -> first token
    Gateway {
        /// What to measure (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "throughput,roundtrip")]
        run: Vec<GatewayPart>,
        /// How the agent is reached (comma-separated)
        #[arg(long, value_delimiter = ',', default_value = "stream,webhook")]
        delivery: Vec<AgentDelivery>,
        /// Throughput: clients, one user each, each on a channel of its own that nobody subscribes to
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Throughput: requests each client keeps outstanding
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Throughput: seconds of sending
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Size of each chat.message's content, bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Round trip: requests, one at a time, per variant (after 20 not counted)
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
}

/// What `gateway` measures.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GatewayPart {
    /// Records accepted per second
    Throughput,
    /// Client -> agent -> first token, one request at a time
    Roundtrip,
}

/// Whether `fanout`'s channel keeps history.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum History {
    /// The server's default history (`conversation=300/10m`): events carry offsets, checked
    On,
    /// `--history conversation=off`: no history, no offsets
    Off,
}

/// How the bench's agent is reached.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AgentDelivery {
    /// A Redis stream read with a consumer group
    Stream,
    /// An HTTP POST to this program's webhook server
    Webhook,
}

impl AgentDelivery {
    fn name(self) -> &'static str {
        match self {
            AgentDelivery::Stream => "stream",
            AgentDelivery::Webhook => "webhook",
        }
    }
}

const ADMIN: &str = "bench-admin-token";

fn main() {
    let args = Args::parse();
    pin(std::process::id(), args.client_cpu);
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {e}");
    }
    // Each run ends its runtime (and so its connections) before it stops
    // the processes it started.
    let result = match args.cmd {
        Cmd::Memory { connections, warmup, close } => {
            let server = Server::start(&args, &[]);
            let result = actix_rt::System::new().block_on(memory(&server, connections, warmup, close));
            drop(server);
            result
        }
        Cmd::Fanout { subscribers, ref rate, seconds, size, batch, history } => {
            let flags: &[&str] = match history {
                History::On => &[],
                History::Off => &["--history", "conversation=off"],
            };
            let server = Server::start(&args, flags);
            let on = history == History::On;
            let result = actix_rt::System::new().block_on(fanout(&server, subscribers, rate, seconds, size, batch, on));
            drop(server);
            result
        }
        Cmd::Reconnect { clients, channels, missed, live, size, timeout } => {
            let opts = StormOpts {
                clients,
                channels: channels.clamp(1, clients.max(1)),
                missed,
                live: live.max(1),
                size,
                timeout: Duration::from_secs(timeout),
            };
            reconnect(&args, &opts)
        }
        Cmd::HistoryMemory { channels, events, size } => history_memory(&args, channels.max(1), events.max(1), size),
        Cmd::Cluster { subscribers, ref rate, seconds, size } => cluster(&args, subscribers, rate, seconds, size),
        Cmd::Settings { clients, writes, debounce_ms, timeout } => {
            settings(&args, clients, writes, debounce_ms, Duration::from_secs(timeout))
        }
        Cmd::Gateway { ref run, ref delivery, clients, window, seconds, size, requests } => {
            let opts = GatewayOpts { clients, window: window.max(1), seconds: seconds.max(1), size, requests };
            gateway(&args, run, delivery, &opts)
        }
    };
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
    /// Starts the server pinned to the server CPU, with `extra` flags after
    /// the common ones, and waits until it listens.
    fn start(args: &Args, extra: &[&str]) -> Server {
        assert!(args.server_bin.exists(), "{} not found: run `cargo build --release` first", args.server_bin.display());
        let bin = args.server_bin.canonicalize().expect("server binary path");
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(args.server_cpu.to_string())
            .arg(bin)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .env_clear()
            .env("RUST_LOG", "warn,nova_realtime=info")
            .env("NOVA_ADMIN_TOKEN", ADMIN)
            // The load program authenticates with the development key.
            .env("NOVA_DEVELOPMENT", "true")
            .env("NOVA_MAX_OUTBOUND_BYTES", (4 * 1024 * 1024).to_string())
            // The subscribers are one user: the per-user rate limit (bursts
            // of 200 requests over a user's connections) would refuse the
            // thousandth subscribe. Fan-out is measured, not that limit.
            .env("NOVA_USER_RATE_LIMIT", "0")
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

    /// Waits until `GET /api/health/redis` answers 200 with status `up`.
    async fn wait_redis_up(&self) -> Result<(), String> {
        let http = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match http.get(format!("http://{}/api/health/redis", self.addr)).send().await {
                Ok(mut res) => {
                    let status = res.status().as_u16();
                    let body = res.body().await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                    if status == 200 && body.contains("\"status\":\"up\"") {
                        return Ok(());
                    }
                    format!("{status} {body}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > until {
                return Err(format!("node at {} never reported Redis up: {last}", self.addr));
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
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

/// A private `redis-server` for the cluster run, on a free port, killed on
/// drop (error paths and panics included).
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts `redis-server` pinned to `cpu`, without persistence, and waits
    /// until it answers `PING`.
    fn start(cpu: usize) -> Result<Redis, String> {
        // Never the default port: a shared Redis may run there.
        let port = loop {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
            let port = listener.local_addr().map_err(|e| format!("free port: {e}"))?.port();
            if port != 6379 {
                break port;
            }
        };
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start redis-server (is it on the PATH?): {e}"))?;
        // From here on, an early return kills it.
        let mut redis = Redis { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while !redis.ping() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if Instant::now() > until {
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Whether it answers `PING` with `+PONG` on a raw socket.
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let mut answer = [0u8; 16];
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read(&mut answer).is_ok_and(|n| answer[..n].starts_with(b"+PONG"))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// CPU seconds (user + system) redis-server has used.
    fn cpu_secs(&self) -> f64 {
        cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
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

/// Connects and authenticates as `user`.
async fn login(addr: &str, user: &str) -> Result<Conn, String> {
    let mut ws = Conn::open(addr).await.map_err(|e| format!("connect: {e}"))?;
    let init = json!({"id":"1","type":"connection.init","data":{"api_key":"development","user_id":user}});
    ws.send_text(&init.to_string()).await.map_err(|e| e.to_string())?;
    let ack = ws.next_string().await?;
    if !ack.contains("connection.ack") {
        return Err(format!("no ack: {ack}"));
    }
    Ok(ws)
}

/// Connects, authenticates as `user` and subscribes to `channel`.
async fn subscriber(addr: &str, user: &str, channel: &str) -> Result<Conn, String> {
    subscribe(addr, user, channel).await.map(|(ws, _)| ws)
}

/// Connects, authenticates as `user` and subscribes to `channel`; returns
/// the connection and its `channel.subscribed` (with the position the
/// subscription starts at, in a channel with history).
async fn subscribe(addr: &str, user: &str, channel: &str) -> Result<(Conn, Value), String> {
    let mut ws = login(addr, user).await?;
    let sub = json!({"id":"2","type":"channel.subscribe","data":{"channels":[channel]}});
    ws.send_text(&sub.to_string()).await.map_err(|e| e.to_string())?;
    loop {
        let frame = ws.next_string().await?;
        if frame.contains("channel.subscribed") {
            let reply = serde_json::from_str(&frame).map_err(|e| format!("channel.subscribed: {e}: {frame}"))?;
            return Ok((ws, reply));
        }
        if frame.contains("\"error\"") {
            return Err(format!("subscribe failed: {frame}"));
        }
    }
}

/// The task holding one idle connection open.
type Holder = actix_rt::task::JoinHandle<Result<(), String>>;

async fn memory(server: &Server, connections: usize, warmup: usize, close: bool) -> Result<(), String> {
    println!("memory: {connections} idle connections (after {warmup} warm-up), each authenticated and subscribed");
    let started_rss = server.rss_kib();
    let held: Rc<RefCell<usize>> = Rc::new(RefCell::new(0));
    let handles: Rc<RefCell<Vec<Holder>>> = Rc::default();
    let open = |from: usize, to: usize| {
        let held = held.clone();
        let handles = handles.clone();
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
                handles.borrow_mut().extend(tasks);
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
    if close {
        let open_before = m["sockets"].as_u64().unwrap_or(0);
        for task in handles.borrow_mut().drain(..) {
            task.abort();
        }
        if let Err(sockets) = sockets_closed(server, Duration::from_millis(50)).await? {
            return Err(format!("{sockets} of {open_before} connections still open after closing"));
        }
        settle(server).await?;
        // What the allocator gives back takes a moment (decay, purge).
        actix_rt::time::sleep(Duration::from_secs(5)).await;
        let closed = server.rss_kib();
        println!("  closed all {open_before}: server RSS {closed} KiB (at start {started_rss} KiB, open {after} KiB)");
    }
    Ok(())
}

/// Polls the server's metrics every `every` until it has no socket open;
/// `Err(n)` with the number still open after 60 s.
async fn sockets_closed(server: &Server, every: Duration) -> Result<Result<(), u64>, String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let sockets = server.metrics().await?["sockets"].as_u64().unwrap_or(u64::MAX);
        if sockets == 0 {
            return Ok(Ok(()));
        }
        if Instant::now() > until {
            return Ok(Err(sockets));
        }
        actix_rt::time::sleep(every).await;
    }
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
    /// When each delivered event was sent (µs since start), recorded only
    /// with `keep_sent`: the cluster run counts deliveries per event.
    sent_us: Vec<u64>,
    keep_sent: bool,
    /// On a channel with history, every subscriber's offsets, checked as
    /// they come (`fanout --history on`).
    offsets: Option<Offsets>,
}

/// The offsets the subscribers of a channel with history receive, checked
/// as they come: each event must be the one after the subscriber's last.
#[derive(Default)]
struct Offsets {
    /// The last offset each subscriber got; at first, where its
    /// subscription started.
    last: Vec<u64>,
    /// The channel's offset before this rate's first event: what a gap
    /// skips below it was counted in an earlier rate.
    floor: u64,
    /// Events skipped over (an offset more than one past the last).
    skipped: usize,
    /// Events at or before the last offset: duplicated or out of order.
    repeated: usize,
    /// Events without an offset.
    unnumbered: usize,
}

impl Offsets {
    /// Files subscriber `who`'s next event, whose offset is `offset`.
    fn check(&mut self, who: usize, offset: Option<u64>) {
        let Some(offset) = offset else {
            self.unnumbered += 1;
            return;
        };
        let last = &mut self.last[who];
        if offset > *last + 1 {
            self.skipped += offset.saturating_sub((*last).max(self.floor) + 1) as usize;
        } else if offset <= *last {
            self.repeated += 1;
            return;
        }
        *last = offset;
    }

    /// Events of this rate (after [`Offsets::floor`], up to `top`) that
    /// have not reached their subscriber at all, summed over subscribers.
    fn missing_at_end(&self, top: u64) -> usize {
        self.last.iter().map(|&last| top.saturating_sub(last.max(self.floor)) as usize).sum()
    }
}

/// Opens `count` subscribers of `channel` on `addr`, in waves so the listen
/// backlog never overflows, each with a task that records the latency of
/// every bench event it receives into `received`. Returns the tasks.
async fn open_subscribers(
    addr: &str,
    count: usize,
    channel: &str,
    base: Instant,
    received: &Rc<RefCell<Received>>,
) -> Result<Vec<actix_rt::task::JoinHandle<()>>, String> {
    connect_in_waves(addr, count, channel, |mut ws, subscribed| {
        let received = received.clone();
        // This subscriber's place among those whose offsets are checked.
        let who = match received.borrow_mut().offsets.as_mut() {
            Some(offsets) => {
                let start = subscribed["data"]["offset"].as_u64();
                offsets.last.push(start.ok_or(format!("no offset in a channel with history: {subscribed}"))?);
                offsets.last.len() - 1
            }
            None => 0,
        };
        Ok(actix_rt::spawn(async move {
            while let Ok(Some(frame)) = ws.next_text().await {
                let frame = &ws.buf[frame];
                if let Some(sent) = field_u64(frame, b"\"t\":") {
                    let now = base.elapsed().as_micros() as u64;
                    let latency = now.saturating_sub(sent) as u32;
                    let mut r = received.borrow_mut();
                    r.latencies_us.push(latency);
                    if r.keep_sent {
                        r.sent_us.push(sent);
                    }
                    if latency > 50_000 && r.worst.len() < 100_000 {
                        r.worst.push((sent, latency));
                    }
                    if let Some(offsets) = r.offsets.as_mut() {
                        offsets.check(who, trailing_offset(frame));
                    }
                }
            }
        }))
    })
    .await
}

/// Connects `count` clients (all as user `bench`, so presence changes once)
/// subscribed to `channel` on `addr`, in waves so the listen backlog never
/// overflows, and hands each with its `channel.subscribed` to `spawn`
/// (which starts its reading task) as soon as its wave is up. Returns the
/// tasks.
async fn connect_in_waves(
    addr: &str,
    count: usize,
    channel: &str,
    mut spawn: impl FnMut(Conn, &Value) -> Result<actix_rt::task::JoinHandle<()>, String>,
) -> Result<Vec<actix_rt::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for wave in (0..count).collect::<Vec<_>>().chunks(250) {
        let pending: Vec<_> = wave.iter().map(|_| subscribe(addr, "bench", channel)).collect();
        for subscribed in futures_util::future::join_all(pending).await {
            let (ws, reply) = subscribed?;
            tasks.push(spawn(ws, &reply)?);
        }
    }
    Ok(tasks)
}

/// What one open-loop publishing run did.
struct Published {
    /// Publish requests made (`batch` events each).
    requests: u64,
    /// When publishing began.
    start: Instant,
    /// From `start` until the last request was answered.
    published_in: Duration,
    /// How far behind its schedule the publisher fell at worst.
    late: Duration,
    /// The `t` (µs since start) of every event published.
    sent_us: Vec<u64>,
}

/// Publishes `rate` events per second for `seconds` to `channel` on `addr`,
/// `batch` per request, open loop: each request runs on its own, so a slow
/// answer does not delay the next one. Each event's data carries `t`, when
/// it was made (µs since `base`), and `pad` to reach the requested size.
#[allow(clippy::too_many_arguments)]
async fn publish_open_loop(
    http: &awc::Client,
    addr: &str,
    channel: &str,
    rate: u64,
    seconds: u64,
    batch: usize,
    pad: &str,
    base: Instant,
) -> Result<Published, String> {
    let total = rate * seconds;
    let requests = total.div_ceil(batch as u64);
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let mut sent_us = Vec::with_capacity(requests as usize * batch);
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
                sent_us.push(t);
                json!({"channel": channel, "type": "assistant.token", "data": {"stream_id": "bench", "chunk": pad, "t": t}})
            })
            .collect();
        let (path, body) = if batch == 1 {
            ("/api/publish", events.into_iter().next().unwrap_or_default())
        } else {
            ("/api/publish/batch", json!({ "events": events }))
        };
        let request =
            http.post(format!("http://{addr}{path}")).insert_header(("Authorization", format!("Bearer {ADMIN}")));
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
    Ok(Published { requests, start, published_in: start.elapsed(), late, sent_us })
}

/// Waits until each `(received, expected)` pair has at least `expected`
/// deliveries, or `timeout` has passed.
async fn wait_for_deliveries(groups: &[(&Rc<RefCell<Received>>, usize)], timeout: Duration) {
    let until = Instant::now() + timeout;
    while groups.iter().any(|(r, expected)| r.borrow().latencies_us.len() < *expected) && Instant::now() < until {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With `NOVA_BENCH_TRACE` set, prints the events that had deliveries over
/// 50 ms: when each was sent (relative to `start`), how many, the worst.
fn trace_slow_events(label: &str, worst: Vec<(u64, u32)>, start: Instant, base: Instant) {
    if std::env::var_os("NOVA_BENCH_TRACE").is_none() {
        return;
    }
    let mut by_event: std::collections::BTreeMap<u64, (u32, usize)> = Default::default();
    for (sent, l) in worst {
        let e = by_event.entry(sent).or_default();
        e.0 = e.0.max(l);
        e.1 += 1;
    }
    let offset = start.duration_since(base).as_micros() as u64;
    for (sent, (max, n)) in by_event.iter().take(20) {
        println!(
            "    {label}slow event sent at +{:.3} s: {n} deliveries over 50 ms, worst {:.1} ms",
            (sent.saturating_sub(offset)) as f64 / 1e6,
            *max as f64 / 1000.0
        );
    }
}

/// Count and publish→receive percentiles of a set of deliveries, µs.
struct Latency {
    got: usize,
    p50: u32,
    p99: u32,
    max: u32,
}

impl Latency {
    fn of(mut lat: Vec<u32>) -> Latency {
        let got = lat.len();
        lat.sort_unstable();
        let pct = |q: f64| lat.get(((q * got as f64) as usize).min(got.saturating_sub(1))).copied().unwrap_or(0);
        Latency { got, p50: pct(0.50), p99: pct(0.99), max: lat.last().copied().unwrap_or(0) }
    }
}

/// Microseconds as milliseconds, for printing.
fn ms(us: u32) -> f64 {
    us as f64 / 1000.0
}

/// What the remote figure adds to the local one, ms (negative if less).
fn added_ms(remote: u32, local: u32) -> f64 {
    (remote as f64 - local as f64) / 1000.0
}

/// The channel `fanout` publishes on: a namespace that keeps history by
/// default, so `--history on|off` changes only that.
const FANOUT_CHANNEL: &str = "conversation:bench";

async fn fanout(
    server: &Server,
    subscribers: usize,
    rates: &[u64],
    seconds: u64,
    size: usize,
    batch: usize,
    history: bool,
) -> Result<(), String> {
    let channel = FANOUT_CHANNEL;
    let base = Instant::now();
    let offsets = history.then(Offsets::default);
    let received: Rc<RefCell<Received>> = Rc::new(RefCell::new(Received { offsets, ..Received::default() }));
    let tasks = open_subscribers(&server.addr, subscribers, channel, base, &received).await?;
    let ready = tasks.len();
    // Where the channel is: every subscription starts there.
    let mut top = received.borrow().offsets.as_ref().and_then(|o| o.last.iter().copied().max()).unwrap_or(0);
    println!(
        "fanout: {ready} subscribers on '{channel}' ({}), events with {size}-byte data, {} per request, {seconds} s \
         per rate",
        if history {
            format!("history on: the server's default, offsets checked per subscriber from {top}")
        } else {
            "history off: --history conversation=off".to_owned()
        },
        batch
    );
    let mut offset_failures = 0;
    let http =
        awc::Client::builder().timeout(Duration::from_secs(30)).connector(awc::Connector::new().limit(64)).finish();
    let pad = "x".repeat(size.saturating_sub(64));
    for &rate in rates {
        {
            let mut r = received.borrow_mut();
            r.latencies_us.clear();
            if let Some(o) = r.offsets.as_mut() {
                *o = Offsets { last: std::mem::take(&mut o.last), floor: top, ..Offsets::default() };
            }
        }
        let before = server.metrics().await?;
        let (server_cpu0, server_sys0, client_cpu0) =
            (server.cpu_secs(), server.sys_secs(), cpu_secs("/proc/self/stat"));
        let published = publish_open_loop(&http, &server.addr, channel, rate, seconds, batch, &pad, base).await?;
        let start = published.start;
        let expected = published.requests as usize * batch * ready;
        wait_for_deliveries(&[(&received, expected)], Duration::from_secs(30)).await;
        let delivered_in = start.elapsed();
        let server_cpu = (server.cpu_secs() - server_cpu0) / delivered_in.as_secs_f64();
        let server_sys = (server.sys_secs() - server_sys0) / delivered_in.as_secs_f64();
        let client_cpu = (cpu_secs("/proc/self/stat") - client_cpu0) / delivered_in.as_secs_f64();
        let after = server.metrics().await?;
        let lat = std::mem::take(&mut received.borrow_mut().latencies_us);
        let worst = std::mem::take(&mut received.borrow_mut().worst);
        trace_slow_events("", worst, start, base);
        let lat = Latency::of(lat);
        let got = lat.got;
        let dropped = after["dropped_slow_consumers"].as_u64().unwrap_or(0)
            - before["dropped_slow_consumers"].as_u64().unwrap_or(0);
        let mut lost = expected - got.min(expected);
        // With history, every delivery is checked by its offset: what was
        // skipped, repeated or never came counts as lost.
        let checked = received.borrow().offsets.as_ref().map(|o| {
            let new_top = top + published.sent_us.len() as u64;
            let missing = o.missing_at_end(new_top);
            let line = if o.skipped + o.repeated + o.unnumbered + missing == 0 {
                format!("every subscriber got offsets {}..={new_top}, each one more than the last", top + 1)
            } else {
                format!(
                    "FAILED: {} events skipped, {} repeated or out of order, {} missing at the end, {} without an \
                     offset (expected {}..={new_top} at every subscriber)",
                    o.skipped,
                    o.repeated,
                    missing,
                    o.unnumbered,
                    top + 1
                )
            };
            (o.skipped + o.repeated + o.unnumbered + missing, line, new_top)
        });
        if let Some((failures, _, new_top)) = &checked {
            lost = lost.max(*failures);
            offset_failures += failures;
            top = *new_top;
        }
        println!(
            "  rate {rate:>6} ev/s: delivered {got}/{expected} ({lost} lost) in {:.2} s => {:.0} deliveries/s; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; publisher late by up to {:.1} ms; slow consumers {dropped}",
            delivered_in.as_secs_f64(),
            got as f64 / delivered_in.as_secs_f64().max(published.published_in.as_secs_f64()),
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.max),
            published.late.as_secs_f64() * 1000.0,
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
        if let Some((_, line, _)) = checked {
            println!("    offsets: {line}");
        }
    }
    drop(tasks);
    if offset_failures > 0 {
        return Err(format!("{offset_failures} deliveries out of offset order (skipped, repeated or missing)"));
    }
    Ok(())
}

/// `reconnect`: the sizes of one storm.
struct StormOpts {
    clients: usize,
    channels: usize,
    missed: usize,
    live: usize,
    size: usize,
    timeout: Duration,
}

/// The history `reconnect` and `history-memory` need to keep `events` per
/// channel: the server's default (`conversation=300/10m`) when it does,
/// else a larger size, as server flags.
fn history_flags(events: usize) -> Vec<String> {
    if events <= 300 {
        Vec::new()
    } else {
        vec!["--history".into(), format!("conversation={events}/10m")]
    }
}

/// Starts the server with the connection budgets lifted for the storm (see
/// `Cmd::Reconnect`), runs [`reconnect_run`], and stops the server (the
/// runtime, and with it every connection, first).
fn reconnect(args: &Args, opts: &StormOpts) -> Result<(), String> {
    let budget = (opts.clients + 1000).to_string();
    let mut flags: Vec<String> =
        ["--max-connections", &budget, "--max-pending-connections", &budget, "--auth-failure-limit", "0"]
            .map(str::to_owned)
            .into();
    flags.extend(history_flags(opts.live + opts.missed));
    // The server cuts its budgets to fit its open-file limit (this
    // program's, inherited), less a reserve: warn when it would.
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if 2 * (opts.clients as u64 + 1000) + 400 > soft {
            eprintln!(
                "warning: the open-file limit ({soft}) is too low for budgets of {budget} + {budget}: the server \
                 will lower them and may shed reconnecting clients"
            );
        }
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(args, &flags);
    let result = actix_rt::System::new().block_on(reconnect_run(&server, opts, &flags));
    drop(server);
    result
}

/// The channel client `i` of the storm subscribes to.
fn storm_channel(i: usize, channels: usize) -> String {
    format!("conversation:storm-{}", i % channels)
}

/// Where one storm client is in its channel.
#[derive(Clone)]
struct StormPosition {
    user: String,
    channel: String,
    epoch: String,
    /// The last offset it received.
    offset: u64,
}

/// Publishes `per_channel` `assistant.token` events to each of `channels`
/// through `POST /api/publish/batch`, at most 1,000 per request and one
/// request at a time, so each channel's events keep their order; each
/// event's `data.index` counts from `first`. Returns the requests made.
async fn publish_to_channels(
    http: &awc::Client,
    addr: &str,
    channels: &[String],
    per_channel: usize,
    first: usize,
    pad: &str,
) -> Result<usize, String> {
    let mut events = channels.iter().flat_map(|channel| (first..first + per_channel).map(move |n| (channel, n)));
    let mut requests = 0;
    loop {
        let batch: Vec<Value> = events
            .by_ref()
            .take(1000)
            .map(|(channel, n)| {
                json!({"channel": channel, "type": "assistant.token",
                       "data": {"stream_id": "bench", "chunk": pad, "index": n}})
            })
            .collect();
        if batch.is_empty() {
            return Ok(requests);
        }
        let res = http
            .post(format!("http://{addr}/api/publish/batch"))
            .insert_header(("Authorization", format!("Bearer {ADMIN}")))
            .send_json(&json!({ "events": batch }))
            .await
            .map_err(|e| format!("publish batch: {e}"))?;
        if res.status().as_u16() != 202 {
            return Err(format!("publish batch answered {}", res.status()));
        }
        requests += 1;
    }
}

/// `GET /api/channels/{channel}/history?since=&limit=`: the channel's
/// offset and epoch, the events kept after `since` (up to `limit`), and
/// whether they start right after it.
async fn channel_history(
    http: &awc::Client,
    addr: &str,
    channel: &str,
    since: u64,
    limit: usize,
) -> Result<Value, String> {
    let mut res = http
        .get(format!("http://{addr}/api/channels/{channel}/history?since={since}&limit={limit}"))
        .insert_header(("Authorization", format!("Bearer {ADMIN}")))
        .send()
        .await
        .map_err(|e| format!("history of {channel}: {e}"))?;
    let status = res.status().as_u16();
    let body: Value = res.json().limit(16 << 20).await.map_err(|e| format!("history of {channel}: {e}"))?;
    if status != 200 {
        return Err(format!("history of {channel} answered {status}: {body}"));
    }
    Ok(body)
}

/// Reads `conn`'s frames until it has the events of its channel up to
/// offset `until`, each one more than the last, from `from` (presence and
/// other frames are skipped). Returns the connection and the last offset.
async fn read_live(mut conn: Conn, from: u64, until: u64, timeout: Duration) -> Result<(Conn, u64), String> {
    let mut last = from;
    let deadline = Instant::now() + timeout;
    while last < until {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match actix_rt::time::timeout(left, conn.next_text()).await {
            Err(_) => return Err(format!("timed out at offset {last} of {until}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Err(format!("closed at offset {last} of {until}")),
            Ok(Ok(Some(frame))) => frame,
        };
        let frame = &conn.buf[frame];
        if !contains(frame, b"\"type\":\"assistant.token\"") {
            continue;
        }
        match trailing_offset(frame) {
            Some(offset) if offset == last + 1 => last = offset,
            _ => return Err(format!("after offset {last}: {}", String::from_utf8_lossy(frame))),
        }
    }
    Ok((conn, last))
}

/// What one client of the storm saw while it reconnected.
#[derive(Default)]
struct StormOutcome {
    /// From the start of its connect: the WebSocket open (101), µs.
    open_us: Option<u32>,
    /// From the start of its connect: `connection.ack`, µs.
    ack_us: Option<u32>,
    /// From the start of its connect: its last missed event, µs.
    done_us: Option<u32>,
    /// When its last missed event came.
    done_at: Option<Instant>,
    /// `channel.subscribed`'s `data.recovered` and `data.missed`.
    recovered: Option<bool>,
    missed: Option<u64>,
    /// Missed events received in order (offsets last+1, last+2, …).
    got: usize,
    /// Events skipped over (an offset more than one past the last).
    skipped: u64,
    /// Events at or before the last offset: duplicated or out of order
    /// (also those that come in the grace period after the last one).
    repeated: usize,
    /// Events of its channel before its `channel.subscribed`, or past the
    /// last one published.
    misplaced: usize,
    /// Why it stopped early: a failed connect, an error frame, a close, or
    /// the timeout.
    error: Option<String>,
}

impl StormOutcome {
    /// Whether it recovered every missed event, in order, once.
    fn ok(&self, missed: usize) -> bool {
        self.error.is_none()
            && self.recovered == Some(true)
            && self.got == missed
            && self.skipped == 0
            && self.repeated == 0
            && self.misplaced == 0
    }
}

/// One client of the storm: connects, sends `connection.reconnect` with its
/// position as its first frame, and reads until its `missed` events have
/// come (or `deadline`), then `grace` longer, so an event twice would show.
/// Counts itself out of `pending` when it is done (or has failed). Returns
/// what it saw, and its connection if it opened one.
async fn storm_client(
    addr: String,
    at: StormPosition,
    missed: usize,
    deadline: Instant,
    grace: Duration,
    pending: Rc<Cell<usize>>,
) -> (StormOutcome, Option<Conn>) {
    let (out, ws) = storm_client_reads(addr, at, missed, deadline, grace, &pending).await;
    if out.done_at.is_none() {
        pending.set(pending.get() - 1);
    }
    (out, ws)
}

/// [`storm_client`] until it ends; counts itself out of `pending` when its
/// last missed event comes.
async fn storm_client_reads(
    addr: String,
    at: StormPosition,
    missed: usize,
    deadline: Instant,
    grace: Duration,
    pending: &Cell<usize>,
) -> (StormOutcome, Option<Conn>) {
    let mut out = StormOutcome::default();
    let start = Instant::now();
    let mut ws = match Conn::open(&addr).await {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(format!("connect: {e}"));
            return (out, None);
        }
    };
    out.open_us = Some(us_since(start, Instant::now()));
    let reconnect = json!({"id": "1", "type": "connection.reconnect", "data": {
        "api_key": "development", "user_id": at.user,
        "channels": { at.channel.as_str(): {"offset": at.offset, "epoch": at.epoch} }}});
    if let Err(e) = ws.send_text(&reconnect.to_string()).await {
        out.error = Some(format!("send: {e}"));
        return (out, None);
    }
    let top = at.offset + missed as u64;
    let mut last = at.offset;
    let mut subscribed = false;
    let mut until = deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let frame = match actix_rt::time::timeout(left, ws.next_text()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                out.error = Some(format!("read: {e}"));
                break;
            }
            Ok(Ok(None)) => {
                out.error = Some(format!("closed by the server after offset {last}"));
                break;
            }
            Ok(Ok(Some(frame))) => frame,
        };
        let now = Instant::now();
        let frame = &ws.buf[frame];
        if contains(frame, b"\"type\":\"assistant.token\"") {
            match trailing_offset(frame) {
                _ if !subscribed => out.misplaced += 1,
                Some(offset) if offset > top => out.misplaced += 1,
                Some(offset) if offset <= last => out.repeated += 1,
                Some(offset) => {
                    out.skipped += offset - last - 1;
                    out.got += 1;
                    last = offset;
                    if last == top {
                        pending.set(pending.get() - 1);
                        out.done_at = Some(now);
                        out.done_us = Some(us_since(start, now));
                        until = now + grace;
                    }
                }
                None => out.misplaced += 1,
            }
            continue;
        }
        if contains(frame, b"\"type\":\"channel.presence\"") {
            continue;
        }
        let event: Value = serde_json::from_slice(frame).unwrap_or_default();
        match event["type"].as_str() {
            Some("connection.ack") => out.ack_us = Some(us_since(start, now)),
            Some("channel.subscribed") => {
                subscribed = true;
                out.recovered = event["data"]["recovered"].as_bool();
                out.missed = event["data"]["missed"].as_u64();
                // Not recovered: its missed events will not come (a
                // grace to see that none does). Nothing missed: done.
                if out.recovered != Some(true) {
                    until = until.min(now + grace);
                } else if missed == 0 {
                    pending.set(pending.get() - 1);
                    out.done_at = Some(now);
                    out.done_us = Some(us_since(start, now));
                    until = now + grace;
                }
            }
            Some("error") | Some("connection.error") => {
                out.error = Some(String::from_utf8_lossy(frame).into_owned());
                break;
            }
            _ => {}
        }
    }
    if out.error.is_none() && out.done_at.is_none() {
        out.error = Some(if !subscribed {
            format!("timed out with no channel.subscribed after {} s", (Instant::now() - start).as_secs())
        } else if out.recovered != Some(true) {
            format!("not recovered: got nothing after offset {last} of {top}")
        } else {
            format!("timed out after offset {last} of {top}")
        });
    }
    (out, Some(ws))
}

/// Sets up the storm's clients, drops them all, publishes what they miss,
/// reconnects them all at once and checks what each recovered.
async fn reconnect_run(server: &Server, o: &StormOpts, flags: &[&str]) -> Result<(), String> {
    let addr = server.addr.clone();
    let channels: Vec<String> = (0..o.channels).map(|c| storm_channel(c, o.channels)).collect();
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let pad = "x".repeat(o.size.saturating_sub(40));
    println!(
        "reconnect: {} clients (users storm-<i>, development key), each subscribed to one of {} channels \
         conversation:storm-<i % {}>; {} live events per channel, then all drop, {} missed events per channel, all \
         reconnect at once; server flags: {}",
        o.clients,
        o.channels,
        o.channels,
        o.live,
        o.missed,
        flags.join(" "),
    );
    let rss_start = server.rss_kib();

    // Connected and subscribed, in waves (this is set-up, not timed).
    let connecting = Instant::now();
    let mut conns = Vec::with_capacity(o.clients);
    let mut positions = Vec::with_capacity(o.clients);
    for wave in (0..o.clients).collect::<Vec<_>>().chunks(250) {
        let pending: Vec<_> = wave
            .iter()
            .map(|&i| {
                let (addr, user, channel) = (addr.clone(), format!("storm-{i}"), storm_channel(i, o.channels));
                async move {
                    let (ws, reply) = subscribe(&addr, &user, &channel).await?;
                    let (offset, epoch) = (reply["data"]["offset"].as_u64(), reply["data"]["epoch"].as_str());
                    let (Some(offset), Some(epoch)) = (offset, epoch) else {
                        return Err(format!("no position in {reply}"));
                    };
                    Ok::<_, String>((ws, StormPosition { user, channel, epoch: epoch.to_owned(), offset }))
                }
            })
            .collect();
        for subscribed in futures_util::future::join_all(pending).await {
            let (ws, at) = subscribed?;
            conns.push(ws);
            positions.push(at);
        }
    }
    let connected_in = connecting.elapsed();

    // A few live events, so every position is past 0.
    let requests = publish_to_channels(&http, &addr, &channels, o.live, 0, &pad).await?;
    let reading: Vec<_> = conns
        .into_iter()
        .zip(&positions)
        .map(|(ws, at)| read_live(ws, at.offset, at.offset + o.live as u64, Duration::from_secs(30)))
        .collect();
    let mut conns = Vec::with_capacity(o.clients);
    for (read, at) in futures_util::future::join_all(reading).await.into_iter().zip(positions.iter_mut()) {
        let (ws, last) = read.map_err(|e| format!("{} reading live events of {}: {e}", at.user, at.channel))?;
        conns.push(ws);
        at.offset = last;
    }
    let (low, high) = (positions.iter().map(|p| p.offset).min(), positions.iter().map(|p| p.offset).max());
    println!(
        "  set-up: {} clients connected and subscribed in {:.1} s (in waves of 250); each read the {} live events of \
         its channel ({requests} batch requests), offsets now {}..={}",
        conns.len(),
        connected_in.as_secs_f64(),
        o.live,
        low.unwrap_or(0),
        high.unwrap_or(0),
    );
    settle(server).await?;
    let rss_connected = server.rss_kib();

    // All drop at once: the sockets close without a WebSocket close frame,
    // as when a network goes away.
    let dropping = Instant::now();
    drop(conns);
    if let Err(sockets) = sockets_closed(server, Duration::from_millis(10)).await? {
        return Err(format!("{sockets} connections still open 60 s after all dropped"));
    }
    let closed_in = dropping.elapsed();

    // What they miss, then a check that every channel's history has it.
    let requests = publish_to_channels(&http, &addr, &channels, o.missed, o.live, &pad).await?;
    for channel in &channels {
        let top = positions.iter().find(|p| &p.channel == channel).map_or(0, |p| p.offset) + o.missed as u64;
        let body = channel_history(&http, &addr, channel, top.saturating_sub(1), 1).await?;
        if body["offset"].as_u64() != Some(top) {
            return Err(format!("{channel} is at offset {} after publishing, not {top}: {body}", body["offset"]));
        }
    }
    println!(
        "  all {} dropped at once (sockets closed): the server had closed every session {:.2} s later; then {} \
         events per channel published ({requests} batch requests) and each channel's history checked (its offset)",
        o.clients,
        closed_in.as_secs_f64(),
        o.missed,
    );
    settle(server).await?;
    let rss_away = server.rss_kib();

    // The storm.
    let before = server.metrics().await?;
    let cpu0 = (server.cpu_secs(), cpu_secs("/proc/self/stat"));
    let grace = Duration::from_millis(500);
    let storm = Instant::now();
    let deadline = storm + o.timeout;
    let pending = Rc::new(Cell::new(positions.len()));
    let tasks: Vec<_> = positions
        .iter()
        .map(|at| actix_rt::spawn(storm_client(addr.clone(), at.clone(), o.missed, deadline, grace, pending.clone())))
        .collect();
    // CPU until the last client is done, not through the grace after it.
    while pending.get() > 0 {
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    let cpu = (server.cpu_secs() - cpu0.0, cpu_secs("/proc/self/stat") - cpu0.1);
    let mut outcomes = Vec::with_capacity(tasks.len());
    // The clients back, held open until the RSS after the storm is read.
    let mut back = Vec::with_capacity(tasks.len());
    for task in futures_util::future::join_all(tasks).await {
        let (outcome, ws) = task.map_err(|e| format!("a storm client failed: {e}"))?;
        outcomes.push(outcome);
        back.extend(ws);
    }
    let after = server.metrics().await?;
    let last_done = outcomes.iter().filter_map(|o| o.done_at).max();
    let done = Latency::of(outcomes.iter().filter_map(|o| o.done_us).collect());
    let ack = Latency::of(outcomes.iter().filter_map(|o| o.ack_us).collect());
    let open = Latency::of(outcomes.iter().filter_map(|o| o.open_us).collect());
    let count = |f: &dyn Fn(&StormOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let ok = count(&|out| out.ok(o.missed));
    let recovered = count(&|out| out.recovered == Some(true));
    let told = count(&|out| out.missed == Some(o.missed as u64));
    let complete = count(&|out| out.got == o.missed);
    let (skipped, repeated, misplaced): (u64, usize, usize) =
        outcomes.iter().fold((0, 0, 0), |(s, r, m), out| (s + out.skipped, r + out.repeated, m + out.misplaced));
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let missing: usize = outcomes.iter().map(|out| o.missed.saturating_sub(out.got)).sum();
    // Busy until the last missed event: the grace after it is idle.
    let busy = last_done.map_or(storm.elapsed(), |at| at - storm).as_secs_f64().max(0.01);
    let all_in = match last_done {
        Some(at) if complete == o.clients => {
            format!("all {} recovered in {:.3} s", o.clients, (at - storm).as_secs_f64())
        }
        Some(at) => format!("NOT all recovered: the last of {complete} in {:.3} s", (at - storm).as_secs_f64()),
        None => "NONE recovered".to_owned(),
    };
    println!(
        "  storm: {} clients reconnected at once, each sending connection.reconnect (its channel, offset, epoch) as \
         its first frame: {all_in} (from the first connect's start to the last missed event)",
        o.clients,
    );
    println!(
        "    per client, from its connect's start: last missed event p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} \
         clients); WebSocket open (101) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; connection.ack p50 {:.1} ms, p99 \
         {:.1} ms, max {:.1} ms",
        ms(done.p50),
        ms(done.p99),
        ms(done.max),
        done.got,
        ms(open.p50),
        ms(open.p99),
        ms(open.max),
        ms(ack.p50),
        ms(ack.p99),
        ms(ack.max),
    );
    println!(
        "    recovered: true in {recovered}/{n}; data.missed = {m} in {told}/{n}; exactly the {m} missed events, \
         offsets in order, none twice, in {ok}/{n}",
        n = o.clients,
        m = o.missed,
    );
    println!(
        "    CPU: server {:.2} s, load program {:.2} s until the last client recovered ({busy:.3} s{}); server \
         counters over the storm: recoveries {} (failed {}), frames written {}, connections shed {}, \
         authentications throttled {}, requests rate-limited {}, slow consumers {}",
        cpu.0,
        cpu.1,
        // The kernel counts CPU time in 10 ms ticks: no share of a moment.
        if busy >= 0.25 {
            format!(": {:.0} % and {:.0} %", cpu.0 / busy * 100.0, cpu.1 / busy * 100.0)
        } else {
            String::new()
        },
        grown(&before, &after, "/recoveries"),
        grown(&before, &after, "/recoveries_failed"),
        grown(&before, &after, "/messages_out"),
        grown(&before, &after, "/shed_connections"),
        grown(&before, &after, "/auth_throttled"),
        grown(&before, &after, "/user_rate_limited") + grown(&before, &after, "/event_rate_limited"),
        grown(&before, &after, "/dropped_slow_consumers"),
    );
    settle(server).await?;
    let rss_after = server.rss_kib();
    // What the allocator gives back takes a moment (decay, purge).
    actix_rt::time::sleep(Duration::from_secs(5)).await;
    let rss_later = server.rss_kib();
    println!(
        "  server RSS: {:.1} MiB at start, {:.1} MiB with {} clients subscribed (before the storm), {:.1} MiB with \
         all away and their events kept, {:.1} MiB after the storm with all back ({:.1} MiB 5 s later)",
        rss_start as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        o.clients,
        rss_away as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_later as f64 / 1024.0,
    );
    drop(back);
    if ok == o.clients {
        println!("  check: every client recovered every missed event, in order, once");
        return Ok(());
    }
    println!(
        "  check: FAILED for {} clients: {} not recovered, {} events missing, {skipped} skipped, {repeated} repeated \
         or out of order, {misplaced} before channel.subscribed or unknown, {} errors",
        o.clients - ok,
        o.clients - recovered,
        missing,
        errors.len(),
    );
    for (at, out) in positions.iter().zip(&outcomes).filter(|(_, out)| !out.ok(o.missed)).take(10) {
        println!(
            "    {} on {} from offset {}: recovered {:?}, missed {:?}, got {}, skipped {}, repeated {}, misplaced {}{}",
            at.user,
            at.channel,
            at.offset,
            out.recovered,
            out.missed,
            out.got,
            out.skipped,
            out.repeated,
            out.misplaced,
            out.error.as_ref().map(|e| format!("; {}", e.chars().take(300).collect::<String>())).unwrap_or_default(),
        );
    }
    Err(format!("{} of {} clients did not recover every missed event once and in order", o.clients - ok, o.clients))
}

/// Starts the server with enough history for `events` per channel, runs
/// [`history_memory_run`], and stops it.
fn history_memory(args: &Args, channels: usize, events: usize, size: usize) -> Result<(), String> {
    let flags = history_flags(events);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(args, &flags);
    let result = actix_rt::System::new().block_on(history_memory_run(&server, channels, events, size, &flags));
    drop(server);
    result
}

/// Channels warmed up before the baseline, so what the first channels with
/// history cost once (the broker's shards, the allocator's first arenas)
/// is not counted.
const HISTORY_WARMUP: usize = 20;

async fn history_memory_run(
    server: &Server,
    channels: usize,
    events: usize,
    size: usize,
    flags: &[&str],
) -> Result<(), String> {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let pad = "x".repeat(size.saturating_sub(40));
    println!(
        "history-memory: {channels} channels conversation:hist-<i>, nobody subscribed, {events} assistant.token \
         events of {size}-byte data published to each (POST /api/publish/batch, 1,000 a request); server flags: {}",
        if flags.is_empty() {
            "(none: the default history conversation=300/10m, 256 MiB cap)".to_owned()
        } else {
            flags.join(" ")
        },
    );
    let warm: Vec<String> = (0..HISTORY_WARMUP).map(|c| format!("conversation:warm-{c}")).collect();
    publish_to_channels(&http, &server.addr, &warm, events, 0, &pad).await?;
    settle(server).await?;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let before = server.rss_kib();
    let names: Vec<String> = (0..channels).map(|c| format!("conversation:hist-{c}")).collect();
    let started = Instant::now();
    let requests = publish_to_channels(&http, &server.addr, &names, events, 0, &pad).await?;
    let published_in = started.elapsed();
    // Every channel's history holds them (spot checks: the first and the
    // last), and the size of the frames kept.
    let mut kept = 0;
    let mut frame_bytes = 0;
    for channel in [&names[0], &names[channels - 1]] {
        let body = channel_history(&http, &server.addr, channel, 0, events.min(1000)).await?;
        let got = body["events"].as_array().map_or(&[][..], Vec::as_slice);
        if body["offset"].as_u64() != Some(events as u64) || got.len() != events.min(1000) {
            return Err(format!(
                "{channel} is at offset {} with {} events kept, not {events}",
                body["offset"],
                got.len()
            ));
        }
        kept += got.len();
        frame_bytes += got.iter().map(|e| e.to_string().len()).sum::<usize>();
    }
    let frame = frame_bytes as f64 / kept.max(1) as f64;
    settle(server).await?;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let grown = after.saturating_sub(before) as f64;
    let held = (channels * events) as f64;
    println!(
        "  published {} events in {requests} requests in {:.1} s ({:.0} events/s, one request at a time)",
        channels * events,
        published_in.as_secs_f64(),
        held / published_in.as_secs_f64(),
    );
    println!(
        "  server RSS: {:.1} MiB before ({HISTORY_WARMUP} channels warmed up), {:.1} MiB after => {:.1} MiB for \
         {channels} channels, {:.1} MiB per 1,000 channels of {events} events, {:.0} bytes per event kept (each \
         frame {frame:.0} bytes as a subscriber gets it)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        grown / 1024.0,
        grown / 1024.0 / channels as f64 * 1000.0,
        grown * 1024.0 / held,
    );
    Ok(())
}

/// Starts a private Redis and two nodes on it, runs [`cluster_run`], and
/// stops them all (the runtime, and with it every connection, first).
fn cluster(args: &Args, subscribers: usize, rates: &[u64], seconds: u64, size: usize) -> Result<(), String> {
    let redis = Redis::start(args.server_cpu)?;
    let url = redis.url();
    let a = Server::start(args, &["--redis-url", &url, "--node-id", "node-a"]);
    let b = Server::start(args, &["--redis-url", &url, "--node-id", "node-b"]);
    let result = actix_rt::System::new().block_on(cluster_run(&redis, &a, &b, subscribers, rates, seconds, size));
    drop(b);
    drop(a);
    drop(redis);
    result
}

/// Deliveries of one group of subscribers checked event by event.
#[derive(Default)]
struct Tally {
    /// Deliveries missing: events that reached fewer subscribers than expected.
    lost: usize,
    /// Deliveries beyond one per subscriber and event.
    duplicated: usize,
    /// Deliveries of events this rate did not publish (late from an
    /// earlier one).
    unknown: usize,
}

/// Checks that each event in `published` was delivered `subscribers` times
/// in `delivered` (the `t` of each delivery).
fn tally(published: &[u64], delivered: &[u64], subscribers: usize) -> Tally {
    let mut counts: std::collections::HashMap<u64, (usize, usize)> = Default::default();
    for &t in published {
        counts.entry(t).or_default().0 += subscribers;
    }
    let mut tally = Tally::default();
    for t in delivered {
        match counts.get_mut(t) {
            Some(c) => c.1 += 1,
            None => tally.unknown += 1,
        }
    }
    for (expected, got) in counts.into_values() {
        tally.lost += expected.saturating_sub(got);
        tally.duplicated += got.saturating_sub(expected);
    }
    tally
}

/// Counter `key` (a JSON pointer) of a metrics snapshot, grown from
/// `before` to `after`.
fn grown(before: &Value, after: &Value, key: &str) -> u64 {
    let get = |m: &Value| m.pointer(key).and_then(Value::as_u64).unwrap_or(0);
    get(after).saturating_sub(get(before))
}

async fn cluster_run(
    redis: &Redis,
    a: &Server,
    b: &Server,
    subscribers: usize,
    rates: &[u64],
    seconds: u64,
    size: usize,
) -> Result<(), String> {
    a.wait_redis_up().await?;
    b.wait_redis_up().await?;
    let channel = "team:bench";
    let base = Instant::now();
    let group = || Rc::new(RefCell::new(Received { keep_sent: true, ..Received::default() }));
    let (local, remote) = (group(), group());
    let remote_count = subscribers / 2;
    let mut tasks = open_subscribers(&a.addr, subscribers - remote_count, channel, base, &local).await?;
    let on_a = tasks.len();
    tasks.extend(open_subscribers(&b.addr, remote_count, channel, base, &remote).await?);
    let on_b = tasks.len() - on_a;
    println!(
        "cluster: redis-server on port {}; node-a {} (publisher, {on_a} local subscribers), node-b {} ({on_b} remote \
         subscribers); all on '{channel}', events with {size}-byte data, {seconds} s per rate",
        redis.port, a.addr, b.addr
    );
    let http =
        awc::Client::builder().timeout(Duration::from_secs(30)).connector(awc::Connector::new().limit(64)).finish();
    let pad = "x".repeat(size.saturating_sub(64));
    let mut summary = Vec::new();
    let mut total_lost = 0;
    let mut total_duplicated = 0;
    for &rate in rates {
        for group in [&local, &remote] {
            let mut g = group.borrow_mut();
            g.latencies_us.clear();
            g.sent_us.clear();
            g.worst.clear();
        }
        let (before_a, before_b) = (a.metrics().await?, b.metrics().await?);
        let cpu0 =
            (a.cpu_secs(), a.sys_secs(), b.cpu_secs(), b.sys_secs(), redis.cpu_secs(), cpu_secs("/proc/self/stat"));
        let published = publish_open_loop(&http, &a.addr, channel, rate, seconds, 1, &pad, base).await?;
        let start = published.start;
        let events = published.sent_us.len();
        let (expected_local, expected_remote) = (events * on_a, events * on_b);
        wait_for_deliveries(&[(&local, expected_local), (&remote, expected_remote)], Duration::from_secs(30)).await;
        let delivered_in = start.elapsed();
        let busy = |now: f64, then: f64| (now - then) / delivered_in.as_secs_f64() * 100.0;
        let cpu = (
            busy(a.cpu_secs(), cpu0.0),
            busy(a.sys_secs(), cpu0.1),
            busy(b.cpu_secs(), cpu0.2),
            busy(b.sys_secs(), cpu0.3),
            busy(redis.cpu_secs(), cpu0.4),
            busy(cpu_secs("/proc/self/stat"), cpu0.5),
        );
        let (after_a, after_b) = (a.metrics().await?, b.metrics().await?);
        let check = |name: &str, group: &Rc<RefCell<Received>>, n: usize| {
            let (lat, sent, worst) = {
                let mut g = group.borrow_mut();
                (std::mem::take(&mut g.latencies_us), std::mem::take(&mut g.sent_us), std::mem::take(&mut g.worst))
            };
            trace_slow_events(name, worst, start, base);
            (tally(&published.sent_us, &sent, n), Latency::of(lat))
        };
        let (tl, ll) = check("local ", &local, on_a);
        let (tr, lr) = check("remote ", &remote, on_b);
        let got = ll.got + lr.got;
        let expected = expected_local + expected_remote;
        let lost = tl.lost + tr.lost;
        let duplicated = tl.duplicated + tr.duplicated;
        total_lost += lost;
        total_duplicated += duplicated;
        let per_sec = got as f64 / delivered_in.as_secs_f64().max(published.published_in.as_secs_f64());
        println!(
            "  rate {rate:>6} ev/s: delivered {got}/{expected} ({lost} lost) in {:.2} s => {per_sec:.0} deliveries/s; \
             publisher late by up to {:.1} ms",
            delivered_in.as_secs_f64(),
            published.late.as_secs_f64() * 1000.0,
        );
        for (name, node, n, t, l, expected) in [
            ("local ", "node-a", on_a, &tl, &ll, expected_local),
            ("remote", "node-b", on_b, &tr, &lr, expected_remote),
        ] {
            println!(
                "    {name} ({n} subscribers on {node}): delivered {}/{expected}, {} lost, {} duplicated; \
                 latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.got,
                t.lost,
                t.duplicated,
                ms(l.p50),
                ms(l.p99),
                ms(l.max),
            );
        }
        println!(
            "    cross-node delivery adds: p50 {:+.1} ms, p99 {:+.1} ms",
            added_ms(lr.p50, ll.p50),
            added_ms(lr.p99, ll.p99)
        );
        println!(
            "    redis bus: node-a published {}, node-b received {}, dropped {}/{} (a/b); slow consumers {}/{} (a/b); \
             server publish->write p99 {}/{} us (a/b, since start)",
            grown(&before_a, &after_a, "/redis/published"),
            grown(&before_b, &after_b, "/redis/received"),
            grown(&before_a, &after_a, "/redis/dropped"),
            grown(&before_b, &after_b, "/redis/dropped"),
            grown(&before_a, &after_a, "/dropped_slow_consumers"),
            grown(&before_b, &after_b, "/dropped_slow_consumers"),
            after_a["latency"]["p99_us"],
            after_b["latency"]["p99_us"],
        );
        println!(
            "    CPU busy: node-a {:.0} % ({:.0} % kernel), node-b {:.0} % ({:.0} % kernel), redis-server {:.0} % \
             (the three share the server CPU); load program {:.0} %",
            cpu.0, cpu.1, cpu.2, cpu.3, cpu.4, cpu.5,
        );
        if lost == 0 && duplicated == 0 {
            println!("    check: nothing lost, nothing duplicated ({events} events x {} subscribers)", on_a + on_b);
        } else {
            println!(
                "    check: FAILED: {lost} deliveries lost, {duplicated} duplicated (and {}/{} deliveries of events \
                 from an earlier rate, local/remote)",
                tl.unknown, tr.unknown
            );
        }
        summary.push((rate, per_sec, lost, ll.p50, ll.p99, lr.p50, lr.p99));
    }
    drop(tasks);
    println!("  summary (latencies in ms, publish->receive):");
    println!(
        "  {:>9}  {:>12}  {:>6}  {:>15}  {:>15}  {:>15}",
        "rate ev/s", "deliveries/s", "lost", "local p50/p99", "remote p50/p99", "added p50/p99"
    );
    for (rate, per_sec, lost, lp50, lp99, rp50, rp99) in summary {
        println!(
            "  {rate:>9}  {per_sec:>12.0}  {lost:>6}  {:>15}  {:>15}  {:>15}",
            format!("{:.1} / {:.1}", ms(lp50), ms(lp99)),
            format!("{:.1} / {:.1}", ms(rp50), ms(rp99)),
            format!("{:+.1} / {:+.1}", added_ms(rp50, lp50), added_ms(rp99, lp99)),
        );
    }
    if total_lost > 0 || total_duplicated > 0 {
        return Err(format!("{total_lost} deliveries lost, {total_duplicated} duplicated across the run"));
    }
    Ok(())
}

/// The channel settings events are published on.
const SETTINGS_CHANNEL: &str = "system:settings";

/// The prompt's file name, in the prompts directory.
const PROMPT_FILE: &str = "NOVA_SYSTEM_PROMPT.md";

/// A valid MCP config: one server. The run sets the health interval to ten
/// minutes, so it is polled about once, at start.
const MCP_YAML: &str = "gmail:\n  url: http://localhost:8002/mcp\n  health_url: http://localhost:8002/health\n  \
                        description: Gmail\n  enabled: true\n";

/// Writes a private settings directory, starts the server on it, runs
/// [`settings_run`], and stops the server (the runtime, and with it every
/// connection, first) before the directory is removed.
fn settings(args: &Args, clients: usize, writes: usize, debounce_ms: u64, timeout: Duration) -> Result<(), String> {
    // The server never debounces for less than 10 ms.
    let debounce_ms = debounce_ms.max(10);
    let dir = tempfile::Builder::new()
        .prefix("nova-bench-settings-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let configs = dir.path().join("configs");
    let prompts = dir.path().join("prompts");
    let prompt = prompts.join(PROMPT_FILE);
    let setup = || -> std::io::Result<()> {
        std::fs::create_dir_all(&configs)?;
        std::fs::create_dir_all(&prompts)?;
        std::fs::write(configs.join("mcp_servers.yaml"), MCP_YAML)?;
        std::fs::write(&prompt, "# Nova system prompt\n\nYou are Nova.\n")
    };
    setup().map_err(|e| format!("settings files in {}: {e}", dir.path().display()))?;
    let utf8 = |p: &std::path::Path| p.to_str().map(str::to_owned).ok_or(format!("{} is not UTF-8", p.display()));
    let (configs_arg, prompts_arg, debounce_arg) = (utf8(&configs)?, utf8(&prompts)?, debounce_ms.to_string());
    let server = Server::start(
        args,
        &[
            "--config-dir",
            &configs_arg,
            "--prompts-dir",
            &prompts_arg,
            "--settings-debounce-ms",
            &debounce_arg,
            "--mcp-health-interval-ms",
            "600000",
        ],
    );
    let debounce = Duration::from_millis(debounce_ms);
    let cpus = (args.server_cpu, args.client_cpu);
    let result =
        actix_rt::System::new().block_on(settings_run(&server, &prompt, clients, writes, debounce, timeout, cpus));
    drop(server);
    drop(dir);
    result
}

/// What the settings clients saw, shared by their reading tasks.
#[derive(Default)]
struct SettingsSeen {
    /// Per write, when each client received its `prompt_updated`, in order
    /// of arrival.
    arrivals: Vec<Vec<Instant>>,
    /// `prompt_updated` a client received again for a write it already had.
    duplicated: usize,
    /// `prompt_updated` whose content holds no marker of this run.
    unknown: usize,
    /// `prompt_updated` whose `file`, `bytes`, `truncated`, `version` or
    /// `channel` do not match its content (still counted as delivered).
    mismatched: usize,
    /// The first few wrong events, for the report.
    samples: Vec<String>,
    /// Other events on the channel, by type.
    others: std::collections::BTreeMap<String, usize>,
}

impl SettingsSeen {
    fn sample(&mut self, why: &str, frame: &[u8]) {
        if self.samples.len() < 5 {
            let text = String::from_utf8_lossy(frame);
            let cut: String = text.chars().take(400).collect();
            self.samples.push(format!("{why}: {cut}"));
        }
    }
}

/// The prompt text of write `k` of `run`: a plausible prompt carrying a
/// marker no other write has.
fn prompt_text(run: &str, k: usize) -> String {
    format!(
        "# Nova system prompt\n\nYou are Nova, an assistant that works through the tools its MCP servers \
         offer.\nAnswer briefly, cite what you used, and ask before acting on the user's behalf.\n\n\
         [bench write {k} of run {run}]\n"
    )
}

/// The write whose marker `content` holds, if it is one of `run`'s.
fn write_of(content: &str, run: &str) -> Option<usize> {
    let rest = content.split_once("[bench write ")?.1;
    let (k, rest) = rest.split_once(' ')?;
    rest.strip_prefix("of run ")?.strip_prefix(run)?.starts_with(']').then(|| k.parse().ok())?
}

/// The reading task of one settings client: timestamps every frame as it
/// arrives, then files it in `seen`.
fn settings_client(mut ws: Conn, run: Rc<str>, seen: Rc<RefCell<SettingsSeen>>) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut had: Vec<bool> = Vec::new();
        while let Ok(Some(frame)) = ws.next_text().await {
            let at = Instant::now();
            let frame = &ws.buf[frame];
            let event: Value = serde_json::from_slice(frame).unwrap_or_default();
            let mut seen = seen.borrow_mut();
            let kind = event["type"].as_str().unwrap_or("(no type)");
            if kind != "prompt_updated" {
                *seen.others.entry(kind.to_owned()).or_default() += 1;
                continue;
            }
            let data = &event["data"];
            let content = data["content"].as_str().unwrap_or_default();
            let Some(k) = write_of(content, &run).filter(|&k| k < seen.arrivals.len()) else {
                seen.unknown += 1;
                seen.sample("unknown content", frame);
                continue;
            };
            // The server counts the prompt it found at start as version 1.
            let consistent = event["channel"] == SETTINGS_CHANNEL
                && data["file"] == PROMPT_FILE
                && data["bytes"].as_u64() == Some(content.len() as u64)
                && data["truncated"] == false
                && data["version"].as_u64() == Some(k as u64 + 2);
            if !consistent {
                seen.mismatched += 1;
                seen.sample(&format!("write {k}, fields do not match"), frame);
            }
            if had.len() <= k {
                had.resize(k + 1, false);
            }
            if std::mem::replace(&mut had[k], true) {
                seen.duplicated += 1;
                seen.sample(&format!("write {k} again"), frame);
                continue;
            }
            seen.arrivals[k].push(at);
        }
    })
}

/// Microseconds from `from` to `to`, for [`Latency`].
fn us_since(from: Instant, to: Instant) -> u32 {
    to.saturating_duration_since(from).as_micros().min(u32::MAX as u128) as u32
}

/// Milliseconds `us` exceeds `window` by (negative if less).
fn over_ms(us: u32, window: Duration) -> f64 {
    (us as f64 - window.as_micros() as f64) / 1000.0
}

async fn settings_run(
    server: &Server,
    prompt: &std::path::Path,
    clients: usize,
    writes: usize,
    debounce: Duration,
    timeout: Duration,
    cpus: (usize, usize),
) -> Result<(), String> {
    let run: Rc<str> = Rc::from(format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
    ));
    let seen = Rc::new(RefCell::new(SettingsSeen { arrivals: vec![Vec::new(); writes], ..Default::default() }));
    let connecting = Instant::now();
    let tasks = connect_in_waves(&server.addr, clients, SETTINGS_CHANNEL, |ws, _| {
        Ok(settings_client(ws, run.clone(), seen.clone()))
    })
    .await?;
    let ready = tasks.len();
    println!(
        "settings: {ready} clients on '{SETTINGS_CHANNEL}' (connected in {:.1} s), {writes} in-place writes of \
         {PROMPT_FILE} ({} bytes each), debounce {} ms, {} s for each write's event to reach every client",
        connecting.elapsed().as_secs_f64(),
        prompt_text(&run, 0).len(),
        debounce.as_millis(),
        timeout.as_secs(),
    );
    // Let the start settle (the one health check, subscription replies).
    actix_rt::time::sleep(debounce + Duration::from_millis(500)).await;
    let pause = debounce + Duration::from_millis(100);
    let mut all = Vec::with_capacity(writes * ready);
    let (mut firsts, mut lasts) = (Vec::with_capacity(writes), Vec::with_capacity(writes));
    let mut counted = Vec::with_capacity(writes);
    let mut lost = 0;
    let (server_cpu0, client_cpu0) = (server.cpu_secs(), cpu_secs("/proc/self/stat"));
    let steal0 = (steal_secs(cpus.0), steal_secs(cpus.1));
    let writing = Instant::now();
    for k in 0..writes {
        let text = prompt_text(&run, k);
        let written_at = Instant::now();
        std::fs::write(prompt, &text).map_err(|e| format!("write {}: {e}", prompt.display()))?;
        let until = written_at + timeout;
        while seen.borrow().arrivals[k].len() < ready && Instant::now() < until {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        let lat: Vec<u32> = seen.borrow().arrivals[k].iter().map(|&at| us_since(written_at, at)).collect();
        counted.push(lat.len());
        let missing = ready.saturating_sub(lat.len());
        lost += missing;
        let first = lat.iter().copied().min().unwrap_or(0);
        all.extend_from_slice(&lat);
        let lat = Latency::of(lat);
        if lat.got > 0 {
            firsts.push(first);
            lasts.push(lat.max);
        }
        let lost_here = if missing > 0 { format!(" ({missing} LOST)") } else { String::new() };
        if lat.got == 0 {
            println!("  write {k:>3}: 0/{ready} clients{lost_here}");
        } else {
            println!(
                "  write {k:>3}: {}/{ready} clients{lost_here}; first {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
                lat.got,
                ms(first),
                ms(lat.p50),
                ms(lat.p99),
                ms(lat.max),
            );
        }
        actix_rt::time::sleep(pause).await;
    }
    let busy = writing.elapsed().as_secs_f64();
    let server_cpu = server.cpu_secs() - server_cpu0;
    let client_cpu = cpu_secs("/proc/self/stat") - client_cpu0;
    let steal = ((steal_secs(cpus.0) - steal0.0) / busy * 100.0, (steal_secs(cpus.1) - steal0.1) / busy * 100.0);
    let metrics = server.metrics().await?;
    drop(tasks);
    let seen = seen.borrow();
    let late: usize = seen.arrivals.iter().zip(&counted).map(|(a, &c)| a.len() - c).sum();
    let expected = writes * ready;
    let all = Latency::of(all);
    let (firsts, lasts) = (Latency::of(firsts), Latency::of(lasts));
    println!(
        "  deliveries: {}/{expected} received in time, {lost} lost ({late} of them arrived after the timeout); \
         wrong prompt_updated: {} duplicated, {} with unknown content, {} with fields not matching the content",
        all.got, seen.duplicated, seen.unknown, seen.mismatched,
    );
    if all.got > 0 {
        println!(
            "  write->receive latency over all (write, client) pairs: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(all.p50),
            ms(all.p99),
            ms(all.max),
        );
        println!(
            "  minus the {} ms debounce window (the server's own added time): p50 {:+.1} ms, p99 {:+.1} ms, \
             max {:+.1} ms",
            debounce.as_millis(),
            over_ms(all.p50, debounce),
            over_ms(all.p99, debounce),
            over_ms(all.max, debounce),
        );
        println!(
            "  per write, minus the window: first client p50 {:+.1} ms (max {:+.1}), last client p50 {:+.1} ms \
             (max {:+.1})",
            over_ms(firsts.p50, debounce),
            over_ms(firsts.max, debounce),
            over_ms(lasts.p50, debounce),
            over_ms(lasts.max, debounce),
        );
    }
    println!(
        "  CPU over the {busy:.1} s of writes: server {:.1} ms per write, load program {:.1} ms per write; \
         stolen by the hypervisor: {:.1} % of the server CPU, {:.1} % of the load CPU; other events on the \
         channel: {}",
        server_cpu * 1000.0 / writes.max(1) as f64,
        client_cpu * 1000.0 / writes.max(1) as f64,
        steal.0,
        steal.1,
        if seen.others.is_empty() {
            "none".to_owned()
        } else {
            seen.others.iter().map(|(kind, n)| format!("{kind} x{n}")).collect::<Vec<_>>().join(", ")
        },
    );
    let l = &metrics["latency"];
    println!(
        "  server's own publish->write (event encoded after the reload -> socket write): p50 {} us, p99 {} us, \
         max {} us over {} frames since start (setup replies included)",
        l["p50_us"], l["p99_us"], l["max_us"], l["count"],
    );
    for sample in &seen.samples {
        println!("    wrong event: {sample}");
    }
    let bound = debounce + Duration::from_millis(50);
    let pass = all.got > 0 && all.p99 as u128 <= bound.as_micros();
    if all.got > 0 {
        println!(
            "  check: p99 {:.1} ms <= debounce + 50 ms = {} ms: {}",
            ms(all.p99),
            bound.as_millis(),
            if pass { "PASS" } else { "FAIL" }
        );
    } else {
        println!("  check: p99 <= debounce + 50 ms = {} ms: FAIL (nothing delivered)", bound.as_millis());
    }
    let wrong = seen.duplicated + seen.unknown + seen.mismatched;
    if lost > 0 || wrong > 0 {
        return Err(format!("{lost} of {expected} deliveries lost, {wrong} wrong prompt_updated events"));
    }
    Ok(())
}

/// The bench's agent: its name, the stream it reads and its consumer group.
const AGENT: &str = "chat";
const AGENT_STREAM: &str = "nova:inbound:chat";
const AGENT_GROUP: &str = "bench";

/// The channel of the round trip.
const RT_CHANNEL: &str = "conversation:rt";

/// Round-trip requests made before the measured ones (connections warm).
const RT_WARMUP: usize = 20;

/// How long one round trip may take before it counts as lost.
const RT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer a throughput client sends nothing for each error (4007
/// "try again later": a webhook agent's queue is full), as a real client
/// backs off; without it, each refusal frees a place in the window at once
/// and the refusals, not the records, load the server.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How `gateway` is run.
struct GatewayOpts {
    clients: usize,
    window: usize,
    seconds: u64,
    size: usize,
    requests: usize,
}

/// What one throughput run came to, for the summary.
struct Throughput {
    delivery: AgentDelivery,
    per_sec: f64,
    errors: u64,
    receipt: Latency,
    checked: bool,
}

/// What one round-trip variant came to, for the summary.
struct RoundTrip {
    label: &'static str,
    token: Latency,
    receipt: Latency,
    lost: usize,
}

/// The round-trip variants.
#[derive(Clone, Copy)]
enum RtVariant {
    /// Stream delivery, the client and the agent's publishing on one node.
    StreamLocal,
    /// Stream delivery, two nodes on one Redis: the client on node B, the
    /// agent publishing to node A.
    StreamCross,
    /// Webhook delivery on one node.
    Webhook,
}

impl RtVariant {
    fn label(self) -> &'static str {
        match self {
            RtVariant::StreamLocal => "stream, one node",
            RtVariant::StreamCross => "stream, across nodes (client on B, agent publishes to A)",
            RtVariant::Webhook => "webhook, one node",
        }
    }
}

/// Runs the parts of `gateway` asked for, each on servers of its own, and
/// prints a summary.
fn gateway(args: &Args, parts: &[GatewayPart], deliveries: &[AgentDelivery], opts: &GatewayOpts) -> Result<(), String> {
    let mut throughputs = Vec::new();
    let mut trips = Vec::new();
    let mut failures = Vec::new();
    if parts.contains(&GatewayPart::Throughput) {
        for &delivery in deliveries {
            match gateway_throughput(args, delivery, opts) {
                Ok(t) => throughputs.push(t),
                Err(e) => failures.push(format!("throughput ({}): {e}", delivery.name())),
            }
        }
    }
    if parts.contains(&GatewayPart::Roundtrip) {
        let mut variants = Vec::new();
        if deliveries.contains(&AgentDelivery::Stream) {
            variants.extend([RtVariant::StreamLocal, RtVariant::StreamCross]);
        }
        if deliveries.contains(&AgentDelivery::Webhook) {
            variants.push(RtVariant::Webhook);
        }
        for variant in variants {
            match gateway_roundtrip(args, variant, opts) {
                Ok(t) => trips.push(t),
                Err(e) => failures.push(format!("round trip ({}): {e}", variant.label())),
            }
        }
    }
    println!("gateway summary:");
    for t in &throughputs {
        println!(
            "  throughput {:<8} {:>9.0} records/s accepted, {} errors, request->receipt p50 {:.1} ms, p99 {:.1} ms; \
             agent got one record per receipt: {}",
            t.delivery.name(),
            t.per_sec,
            t.errors,
            ms(t.receipt.p50),
            ms(t.receipt.p99),
            if t.checked { "yes" } else { "NO" },
        );
    }
    for t in &trips {
        println!(
            "  round trip {}: client -> agent -> first token p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} \
             (send -> receipt p50 {:.2} ms, p99 {:.2} ms); {} lost",
            t.label,
            ms(t.token.p50),
            ms(t.token.p99),
            ms(t.token.max),
            t.token.got,
            ms(t.receipt.p50),
            ms(t.receipt.p99),
            t.lost,
        );
    }
    if throughputs.iter().any(|t| !t.checked) {
        failures.push("records and receipts do not match".into());
    }
    if trips.iter().any(|t| t.lost > 0) {
        failures.push("round trips lost".into());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// A private config directory holding an `agents.yaml` with the one agent
/// [`AGENT`], receiving `chat.message`; with `webhook`, posted to that
/// port. Returns the directory and its path.
fn agent_config(webhook: Option<u16>) -> Result<(tempfile::TempDir, String), String> {
    let dir = tempfile::Builder::new()
        .prefix("nova-bench-gateway-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let delivery = match webhook {
        None => "  delivery: stream\n".to_owned(),
        Some(port) => format!("  delivery: webhook\n  url: http://127.0.0.1:{port}/nova/events\n"),
    };
    let yaml = format!("{AGENT}:\n  description: nova-bench agent\n  receives: [chat.message]\n{delivery}");
    std::fs::write(dir.path().join("agents.yaml"), yaml).map_err(|e| format!("agents.yaml: {e}"))?;
    let path = dir.path().to_str().map(str::to_owned).ok_or("the temporary directory is not UTF-8")?;
    Ok((dir, path))
}

/// A node for the gateway runs: the agents of `config_dir`, and no limit
/// on a client's frames or `chat.message` requests (the per-user limit is
/// off for every run, [`Server::start`]).
fn gateway_server(args: &Args, config_dir: &str, redis_url: Option<&str>, node: &str) -> Server {
    let mut flags = vec![
        "--config-dir",
        config_dir,
        "--node-id",
        node,
        "--messages-per-second",
        "1000000",
        "--message-burst",
        "1000000",
        "--event-rate-limits",
        "chat.message=off",
    ];
    if let Some(url) = redis_url {
        flags.extend(["--redis-url", url]);
    }
    Server::start(args, &flags)
}

impl Server {
    /// Waits until `GET /api/agents` shows agent [`AGENT`] available.
    async fn wait_agent_available(&self) -> Result<(), String> {
        let http = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let request = http
                .get(format!("http://{}/api/agents", self.addr))
                .insert_header(("Authorization", format!("Bearer {ADMIN}")));
            let last = match request.send().await {
                Ok(mut res) => {
                    let body: Value = res.json().await.unwrap_or_default();
                    let agents = body["agents"].as_array().cloned().unwrap_or_default();
                    match agents.iter().find(|a| a["name"] == AGENT) {
                        Some(a) if a["available"] == true => return Ok(()),
                        Some(a) => a["reason"].to_string(),
                        None => format!("no agent '{AGENT}': {body}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > until {
                return Err(format!("agent '{AGENT}' never became available on {}: {last}", self.addr));
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A synchronous connection to the bench's Redis.
fn redis_connection(url: &str) -> Result<redis::Connection, String> {
    redis::Client::open(url).and_then(|c| c.get_connection()).map_err(|e| format!("redis {url}: {e}"))
}

/// Creates the agent's consumer group (and stream), reading only what is
/// added from now on.
fn create_group(url: &str) -> Result<(), String> {
    let mut conn = redis_connection(url)?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(AGENT_STREAM)
        .arg(AGENT_GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query::<()>(&mut conn)
        .map_err(|e| format!("XGROUP CREATE: {e}"))
}

/// Keys in the bench's Redis, the memory it uses (`INFO memory`'s
/// `used_memory`, bytes), and its own figures for the gateway's script
/// (`INFO commandstats`' line for EVAL: calls, µs per call).
fn redis_footprint(url: &str) -> Result<(u64, u64, String), String> {
    let mut conn = redis_connection(url)?;
    let keys: u64 = redis::cmd("DBSIZE").query(&mut conn).map_err(|e| format!("DBSIZE: {e}"))?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).map_err(|e| format!("INFO: {e}"))?;
    let used = info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok());
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).map_err(|e| format!("INFO: {e}"))?;
    let eval = stats.lines().find_map(|l| l.strip_prefix("cmdstat_eval:")).unwrap_or("none").trim().to_owned();
    Ok((keys, used.unwrap_or(0), eval))
}

/// Records ever added to the agent's stream (`XINFO STREAM`'s
/// `entries-added`: trimming does not lower it).
fn entries_added(url: &str) -> Result<u64, String> {
    let mut conn = redis_connection(url)?;
    let info: redis::Value =
        redis::cmd("XINFO").arg("STREAM").arg(AGENT_STREAM).query(&mut conn).map_err(|e| format!("XINFO: {e}"))?;
    let fields: Vec<(redis::Value, redis::Value)> = match info {
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        redis::Value::Map(pairs) => pairs,
        other => return Err(format!("XINFO STREAM answered {other:?}")),
    };
    fields
        .into_iter()
        .find(|(k, _)| redis_text(k).as_deref() == Some("entries-added"))
        .and_then(|(_, v)| match v {
            redis::Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        })
        .ok_or_else(|| "XINFO STREAM has no entries-added (Redis before 7.0?)".into())
}

fn redis_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an XREADGROUP reply (`[[key, [[id, [field, value, …]],
/// …]]]`): each id with its `event` field.
fn stream_entries(reply: redis::Value) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let redis::Value::Array(streams) = reply else { return out };
    for stream in streams {
        let redis::Value::Array(parts) = stream else { continue };
        let Some(redis::Value::Array(items)) = parts.into_iter().nth(1) else { continue };
        for item in items {
            let redis::Value::Array(pair) = item else { continue };
            let Some(id) = pair.first().and_then(redis_text) else { continue };
            let event = match pair.get(1) {
                Some(redis::Value::Array(fields)) => fields
                    .chunks(2)
                    .find(|kv| redis_text(&kv[0]).as_deref() == Some("event"))
                    .and_then(|kv| kv.get(1))
                    .and_then(redis_text),
                _ => None,
            };
            out.push((id, event));
        }
    }
    out
}

/// A stream agent on a thread of its own: makes its consumer in the
/// bench's group, reads the agent's stream (XREADGROUP BLOCK 100), acknowledges what it
/// read, counts it in `got`, and hands each record to `answer`. Stops once
/// `stop` is set and a read comes back empty.
fn stream_agent(
    url: String,
    consumer: &'static str,
    count: usize,
    stop: Arc<AtomicBool>,
    got: Arc<AtomicU64>,
    mut answer: impl FnMut(&str) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let mut conn = redis_connection(&url)?;
        // As docs/gateway.md has an agent start: its consumer made at once,
        // not on its first read that returns something.
        redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(AGENT_STREAM)
            .arg(AGENT_GROUP)
            .arg(consumer)
            .query::<i64>(&mut conn)
            .map_err(|e| format!("XGROUP CREATECONSUMER: {e}"))?;
        loop {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(AGENT_GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(AGENT_STREAM)
                .arg(">")
                .query(&mut conn)
                .map_err(|e| format!("XREADGROUP: {e}"))?;
            let entries = stream_entries(reply);
            if entries.is_empty() {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
            for (_, event) in &entries {
                answer(event.as_deref().unwrap_or_default())?;
            }
            let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
            redis::cmd("XACK")
                .arg(AGENT_STREAM)
                .arg(AGENT_GROUP)
                .arg(&ids)
                .query::<i64>(&mut conn)
                .map_err(|e| format!("XACK: {e}"))?;
            got.fetch_add(entries.len() as u64, Ordering::Relaxed);
        }
    })
}

/// The body of the `assistant.token` answering record `record_id`.
fn token_event(record_id: &str) -> String {
    json!({"channel": RT_CHANNEL, "type": "assistant.token", "data": {"stream_id": record_id, "chunk": "x", "index": 0}})
        .to_string()
}

/// The `id` of a record's JSON.
fn record_id(record: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(record).ok()?["id"].as_str().map(str::to_owned)
}

/// A kept-alive HTTP/1.1 connection posting to a node's REST API with the
/// admin token, for the stream agent's thread.
struct HttpConn {
    addr: String,
    stream: Option<std::net::TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(addr: &str) -> HttpConn {
        HttpConn { addr: addr.to_owned(), stream: None, buf: Vec::with_capacity(4096) }
    }

    /// Posts `body` to `path`; the answer's status. A connection the
    /// server closed meanwhile is opened again, once.
    fn post(&mut self, path: &str, body: &str) -> Result<u16, String> {
        self.try_post(path, body).or_else(|_| {
            self.stream = None;
            self.try_post(path, body).map_err(|e| format!("POST {path} to {}: {e}", self.addr))
        })
    }

    fn try_post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(&self.addr)?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else { return Err(std::io::Error::other("not connected")) };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head)) => {
                    if self.buf.len() >= head + content_length(response.headers) {
                        return Ok(response.code.unwrap_or(0));
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The bench's webhook agent: counts the records POSTed to it and answers
/// each 200; for the round trip, also publishes each record's
/// `assistant.token` to a node.
#[derive(Default)]
struct Hook {
    posts: Cell<u64>,
    /// Connections the server opened to it.
    connections: Cell<u64>,
    /// Where each record's token is published, and with what client.
    publish: Option<(awc::Client, String)>,
    /// Publishes that failed.
    failures: Rc<RefCell<Vec<String>>>,
}

impl Hook {
    fn received(&self, body: &[u8]) {
        self.posts.set(self.posts.get() + 1);
        let Some((client, addr)) = &self.publish else { return };
        let Some(id) = record_id(body) else {
            return self.failures.borrow_mut().push("a POST whose body has no record id".into());
        };
        let request = client
            .post(format!("http://{addr}/api/publish"))
            .insert_header(("Authorization", format!("Bearer {ADMIN}")))
            .insert_header(("Content-Type", "application/json"));
        let (body, failures) = (token_event(&id), self.failures.clone());
        actix_rt::spawn(async move {
            match request.send_body(body).await {
                Ok(res) if res.status().as_u16() == 202 => {}
                Ok(res) => failures.borrow_mut().push(format!("publish answered {}", res.status())),
                Err(e) => failures.borrow_mut().push(format!("publish: {e}")),
            }
        });
    }
}

/// Serves the webhook on `listener` until the runtime ends.
async fn serve_webhook(listener: std::net::TcpListener, hook: Rc<Hook>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        hook.connections.set(hook.connections.get() + 1);
        actix_rt::spawn(webhook_conn(stream, hook.clone()));
    }
}

/// One kept-alive connection of the webhook: each complete request is
/// answered 200 with an empty body.
async fn webhook_conn(mut stream: TcpStream, hook: Rc<Hook>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let (head, len) = match request.parse(&buf) {
                Ok(httparse::Status::Complete(head)) => (head, content_length(request.headers)),
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            if buf.len() < head + len {
                break;
            }
            hook.received(&buf[head..head + len]);
            buf.drain(..head + len);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the throughput clients saw, shared by their tasks.
#[derive(Default)]
struct LoadSeen {
    /// Requests sent.
    sent: u64,
    /// Receipts (`message.received`), all of them.
    receipts: u64,
    /// Receipts that arrived before the deadline.
    in_time: u64,
    /// `error` answers.
    errors: u64,
    /// Request -> receipt, µs.
    latencies_us: Vec<u32>,
    /// The first few errors.
    samples: Vec<String>,
    /// Clients done: all they sent was answered (or their connection ended).
    done: usize,
}

/// Where a throughput run's records end up: how many the agent has got.
enum Sink {
    /// Read from the stream by the bench's consumer.
    Stream(Arc<AtomicU64>),
    /// POSTed to the bench's webhook.
    Webhook(Rc<Hook>),
}

impl Sink {
    fn got(&self) -> u64 {
        match self {
            Sink::Stream(got) => got.load(Ordering::Relaxed),
            Sink::Webhook(hook) => hook.posts.get(),
        }
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The request number `n` of a frame's `reply_to` (`{client}-{n}`).
fn reply_seq(frame: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"reply_to\":\"";
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &frame[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.rsplit_once('-')?.1.parse().ok()
}

/// One throughput client: keeps `window` `chat.message` requests (ids
/// `{i}-{n}`) outstanding on `conversation:bench-{i}` until `until`, then
/// waits for the answers still due. Each error holds its sending back
/// [`ERROR_PAUSE`] longer (16 errors in a row: 160 ms), but it goes on
/// reading, so a pause delays no receipt.
async fn load_client(
    mut ws: Conn,
    i: usize,
    window: usize,
    content: Rc<str>,
    until: Instant,
    seen: Rc<RefCell<LoadSeen>>,
) {
    let request = |n: usize| {
        format!(
            r#"{{"id":"{i}-{n}","type":"chat.message","channel":"conversation:bench-{i}","data":{{"content":"{content}"}}}}"#
        )
    };
    let mut sent_at: Vec<Instant> = Vec::with_capacity(4096);
    let mut outstanding = 0;
    // Requests to send, and when sending may go on after an error.
    let mut due = window;
    let mut resume_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= until {
            due = 0;
        }
        if now >= resume_at {
            let mut sent = 0;
            while due > 0 {
                sent_at.push(Instant::now());
                if ws.send_text(&request(sent_at.len() - 1)).await.is_err() {
                    seen.borrow_mut().done += 1;
                    return;
                }
                due -= 1;
                sent += 1;
            }
            outstanding += sent;
            seen.borrow_mut().sent += sent as u64;
        }
        if outstanding == 0 {
            if due == 0 {
                break;
            }
            actix_rt::time::sleep(resume_at.saturating_duration_since(Instant::now())).await;
            continue;
        }
        let next = if due > 0 {
            let wait = resume_at.saturating_duration_since(Instant::now());
            match actix_rt::time::timeout(wait, ws.next_text()).await {
                Ok(next) => next,
                Err(_) => continue,
            }
        } else {
            ws.next_text().await
        };
        let Ok(Some(range)) = next else { break };
        let now = Instant::now();
        let frame = &ws.buf[range];
        let receipt = if contains(frame, b"\"type\":\"message.received\"") {
            true
        } else if contains(frame, b"\"type\":\"error\"") {
            false
        } else {
            continue;
        };
        let mut s = seen.borrow_mut();
        if receipt {
            s.receipts += 1;
            if now <= until {
                s.in_time += 1;
            }
            if let Some(&at) = reply_seq(frame).and_then(|n| sent_at.get(n)) {
                s.latencies_us.push(us_since(at, now));
            }
        } else {
            s.errors += 1;
            if s.samples.len() < 5 {
                s.samples.push(String::from_utf8_lossy(frame).chars().take(300).collect());
            }
            resume_at = resume_at.max(now) + ERROR_PAUSE;
        }
        outstanding -= 1;
        due += 1;
    }
    seen.borrow_mut().done += 1;
}

/// One throughput run on servers of its own.
fn gateway_throughput(args: &Args, delivery: AgentDelivery, opts: &GatewayOpts) -> Result<Throughput, String> {
    match delivery {
        AgentDelivery::Stream => {
            let redis = Redis::start(args.server_cpu)?;
            let url = redis.url();
            create_group(&url)?;
            let (dir, config) = agent_config(None)?;
            let (stop, got) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
            let consumer = stream_agent(url.clone(), "drain", 1000, stop.clone(), got.clone(), |_| Ok(()));
            let server = gateway_server(args, &config, Some(&url), "node-a");
            let sink = Sink::Stream(got);
            let result = actix_rt::System::new().block_on(async {
                server.wait_redis_up().await?;
                server.wait_agent_available().await?;
                throughput_run(&server, Some(&redis), &sink, delivery, opts).await
            });
            stop.store(true, Ordering::Relaxed);
            let consumed = consumer.join().map_err(|_| "the stream consumer panicked".to_string());
            let added = entries_added(&url);
            let footprint = redis_footprint(&url);
            drop(server);
            drop(dir);
            drop(redis);
            let (mut t, receipts) = result?;
            consumed??;
            let added = added?;
            let ok = added == receipts;
            println!(
                "    redis: {added} records ever added to {AGENT_STREAM} (XINFO STREAM entries-added) for {receipts} \
                 receipts: {}",
                if ok { "match" } else { "MISMATCH" }
            );
            t.checked &= ok;
            let (keys, used, eval) = footprint?;
            println!(
                "    redis after the run: {keys} keys (the stream and one idempotency claim per request, kept \
                 NOVA_AGENT_IDEMPOTENCY_MS), used_memory {:.1} MiB; the gateway's script (EVAL): {eval}",
                used as f64 / 1048576.0
            );
            Ok(t)
        }
        AgentDelivery::Webhook => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("webhook port: {e}"))?;
            let port = listener.local_addr().map_err(|e| format!("webhook port: {e}"))?.port();
            let (dir, config) = agent_config(Some(port))?;
            let server = gateway_server(args, &config, None, "node-a");
            let result = actix_rt::System::new().block_on(async {
                let hook = Rc::new(Hook::default());
                let serving = actix_rt::spawn(serve_webhook(listener, hook.clone()));
                server.wait_agent_available().await?;
                let result = throughput_run(&server, None, &Sink::Webhook(hook), delivery, opts).await;
                serving.abort();
                result
            });
            drop(server);
            drop(dir);
            result.map(|(t, _)| t)
        }
    }
}

/// Connects the clients, drives them for the run's seconds, waits for
/// every answer and for the agent to get every record, and reports.
/// Returns the figures and the receipts counted.
async fn throughput_run(
    server: &Server,
    redis: Option<&Redis>,
    sink: &Sink,
    delivery: AgentDelivery,
    opts: &GatewayOpts,
) -> Result<(Throughput, u64), String> {
    let content: Rc<str> = Rc::from("x".repeat(opts.size));
    let mut conns = Vec::with_capacity(opts.clients);
    for wave in (0..opts.clients).collect::<Vec<_>>().chunks(250) {
        let pending: Vec<_> = wave
            .iter()
            .map(|i| {
                let (addr, user) = (&server.addr, format!("gw{i}"));
                async move { login(addr, &user).await }
            })
            .collect();
        for ws in futures_util::future::join_all(pending).await {
            conns.push(ws?);
        }
    }
    let agent = match (delivery, redis) {
        (AgentDelivery::Stream, Some(redis)) => format!(
            "stream agent '{AGENT}' (redis-server on port {}; this program's consumer reads {AGENT_STREAM}: \
             XREADGROUP COUNT 1000 BLOCK 100 + XACK)",
            redis.port
        ),
        _ => {
            format!("webhook agent '{AGENT}' (this program's HTTP server answers each POST 200, kept alive; no Redis)")
        }
    };
    println!(
        "gateway throughput ({}): node {} with {agent}; {} clients, one user each, each sending on a channel of its \
         own (conversation:bench-<i>, nobody subscribed: no fan-out), {} chat.message outstanding each, {}-byte \
         content, {} s",
        delivery.name(),
        server.addr,
        conns.len(),
        opts.window,
        opts.size,
        opts.seconds,
    );
    let seen = Rc::new(RefCell::new(LoadSeen::default()));
    let before = server.metrics().await?;
    let cpu0 = (server.cpu_secs(), server.sys_secs(), redis.map_or(0.0, Redis::cpu_secs), cpu_secs("/proc/self/stat"));
    let got0 = sink.got();
    let start = Instant::now();
    let until = start + Duration::from_secs(opts.seconds);
    let clients = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| actix_rt::spawn(load_client(ws, i, opts.window, content.clone(), until, seen.clone())))
        .collect();
    let mut per_second = Vec::new();
    let mut last = 0;
    for s in 1..=opts.seconds {
        let at = start + Duration::from_secs(s);
        actix_rt::time::sleep(at.saturating_duration_since(Instant::now())).await;
        let now = seen.borrow().in_time;
        per_second.push(now - last);
        last = now;
    }
    let busy = start.elapsed().as_secs_f64();
    let got_in_time = sink.got() - got0;
    let pct = |now: f64, then: f64| (now - then) / busy * 100.0;
    let cpu = (
        pct(server.cpu_secs(), cpu0.0),
        pct(server.sys_secs(), cpu0.1),
        redis.map_or(0.0, |r| pct(r.cpu_secs(), cpu0.2)),
        pct(cpu_secs("/proc/self/stat"), cpu0.3),
    );
    // Every request answered, then every record with the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.borrow().done < clients && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let receipts = seen.borrow().receipts;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.got() < receipts && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // A moment more, so a record too many would show.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let after = server.metrics().await?;
    let rss = server.rss_kib();
    for task in tasks {
        task.abort();
    }
    let mut seen = seen.take();
    let lat = Latency::of(std::mem::take(&mut seen.latencies_us));
    let per_sec = seen.in_time as f64 / opts.seconds as f64;
    let unanswered = seen.sent - seen.receipts - seen.errors;
    let series: Vec<String> = per_second.iter().map(u64::to_string).collect();
    println!("  receipts per second: {}", series.join(" "));
    println!(
        "  {} receipts in {} s => {per_sec:.0} records/s accepted; {} errors, {unanswered} unanswered (of {} sent); \
         request->receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        seen.in_time,
        opts.seconds,
        seen.errors,
        seen.sent,
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max),
    );
    for sample in seen.samples.iter().take(2) {
        println!("    error: {sample}");
    }
    println!(
        "  meanwhile the agent got {got_in_time} records => {:.0} records/s {}",
        got_in_time as f64 / busy,
        match delivery {
            AgentDelivery::Stream => "read from the stream",
            AgentDelivery::Webhook => "POSTed to it",
        }
    );
    if let Sink::Webhook(hook) = sink {
        println!("    the server posted over {} connections to the webhook", hook.connections.get());
    }
    let got = sink.got();
    let accepted = grown(&before, &after, "/gateway/accepted");
    let what = match delivery {
        AgentDelivery::Stream => "records read from the stream by the consumer",
        AgentDelivery::Webhook => "POSTs received by the webhook",
    };
    let checked = got == seen.receipts && accepted == seen.receipts && unanswered == 0;
    println!(
        "  check: {got} {what}, server gateway.accepted {accepted}, refused {}, delivered {}, failed_attempts {}, for \
         {} receipts in all (late ones included): {}",
        grown(&before, &after, "/gateway/refused"),
        grown(&before, &after, "/gateway/delivered"),
        grown(&before, &after, "/gateway/failed_attempts"),
        seen.receipts,
        if checked { "match" } else { "MISMATCH" },
    );
    println!(
        "  CPU busy over the {busy:.1} s: server {:.0} % ({:.0} % kernel){}, load program {:.0} % (with the agent); \
         server RSS after {:.1} MiB",
        cpu.0,
        cpu.1,
        if redis.is_some() { format!(", redis-server {:.0} % (on the server CPU)", cpu.2) } else { String::new() },
        cpu.3,
        rss as f64 / 1024.0,
    );
    Ok((Throughput { delivery, per_sec, errors: seen.errors, receipt: lat, checked }, seen.receipts))
}

/// One round-trip variant on servers of its own.
fn gateway_roundtrip(args: &Args, variant: RtVariant, opts: &GatewayOpts) -> Result<RoundTrip, String> {
    let requests = opts.requests;
    match variant {
        RtVariant::StreamLocal | RtVariant::StreamCross => {
            let redis = Redis::start(args.server_cpu)?;
            let url = redis.url();
            create_group(&url)?;
            let (dir_a, config_a) = agent_config(None)?;
            let (dir_b, config_b) = agent_config(None)?;
            let a = gateway_server(args, &config_a, Some(&url), "node-a");
            let b = matches!(variant, RtVariant::StreamCross)
                .then(|| gateway_server(args, &config_b, Some(&url), "node-b"));
            let (stop, got) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
            let mut http = HttpConn::new(&a.addr);
            let agent = stream_agent(url.clone(), "agent", 10, stop.clone(), got, move |event| {
                let id = record_id(event.as_bytes()).ok_or_else(|| format!("a record without an id: {event}"))?;
                match http.post("/api/publish", &token_event(&id))? {
                    202 => Ok(()),
                    status => Err(format!("publish answered {status}")),
                }
            });
            let client_node = b.as_ref().unwrap_or(&a);
            let result = actix_rt::System::new().block_on(async {
                for node in [Some(&a), b.as_ref()].into_iter().flatten() {
                    node.wait_redis_up().await?;
                    node.wait_agent_available().await?;
                }
                roundtrip_run(client_node, &a, variant, requests).await
            });
            stop.store(true, Ordering::Relaxed);
            let agent = agent.join().map_err(|_| "the stream agent panicked".to_string());
            drop(b);
            drop(a);
            drop((dir_a, dir_b));
            drop(redis);
            let trip = result?;
            agent?.map_err(|e| format!("stream agent: {e}"))?;
            Ok(trip)
        }
        RtVariant::Webhook => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("webhook port: {e}"))?;
            let port = listener.local_addr().map_err(|e| format!("webhook port: {e}"))?.port();
            let (dir, config) = agent_config(Some(port))?;
            let server = gateway_server(args, &config, None, "node-a");
            let result = actix_rt::System::new().block_on(async {
                let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
                let hook = Rc::new(Hook { publish: Some((client, server.addr.clone())), ..Hook::default() });
                let serving = actix_rt::spawn(serve_webhook(listener, hook.clone()));
                server.wait_agent_available().await?;
                let trip = roundtrip_run(&server, &server, variant, requests).await;
                serving.abort();
                if let Some(failure) = hook.failures.borrow().first() {
                    return Err(format!("webhook agent: {failure}"));
                }
                trip
            });
            drop(server);
            drop(dir);
            result
        }
    }
}

/// One client subscribed to [`RT_CHANNEL`] on `client_node` sends
/// `requests` `chat.message` one at a time (after [`RT_WARMUP`] not
/// counted), each timed from just before its send to the `assistant.token`
/// whose `stream_id` is its record's id (the receipt's `message_id`).
async fn roundtrip_run(
    client_node: &Server,
    agent_node: &Server,
    variant: RtVariant,
    requests: usize,
) -> Result<RoundTrip, String> {
    let mut ws = subscriber(&client_node.addr, "rt", RT_CHANNEL).await?;
    let agent = match variant {
        RtVariant::Webhook => "the webhook (this program) answers each POST 200 and publishes",
        _ => "the agent (this program, XREADGROUP BLOCK) publishes, for each record,",
    };
    println!(
        "gateway round trip ({}): one client on {} subscribed to '{RT_CHANNEL}' sends {requests} chat.message one at \
         a time (after {RT_WARMUP} not counted); {agent} assistant.token {{stream_id: <record id>}} with POST \
         /api/publish to {} (kept-alive connection)",
        variant.label(),
        client_node.addr,
        agent_node.addr,
    );
    let (mut tokens, mut receipts) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    let (mut lost, mut lost_in_a_row) = (0, 0);
    let mut errors = Vec::new();
    for k in 0..RT_WARMUP + requests {
        if lost_in_a_row >= 10 {
            return Err(format!("{lost_in_a_row} round trips in a row lost (did the agent stop?): {errors:?}"));
        }
        let request_id = format!("rt-{k}");
        let request = json!({"id": request_id, "type": "chat.message", "channel": RT_CHANNEL,
                             "data": {"content": format!("round trip {k}")}})
        .to_string();
        let sent = Instant::now();
        ws.send_text(&request).await.map_err(|e| e.to_string())?;
        let until = sent + RT_TIMEOUT;
        let mut receipt: Option<(String, Instant)> = None;
        // Tokens by stream id, in case one arrives before its receipt.
        let mut token_at: std::collections::HashMap<String, Instant> = Default::default();
        let token = loop {
            let left = until.saturating_duration_since(Instant::now());
            let range = match actix_rt::time::timeout(left, ws.next_text()).await {
                Err(_) => break None,
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Err("the round-trip client's connection closed".into()),
                Ok(Ok(Some(range))) => range,
            };
            let now = Instant::now();
            let event: Value = serde_json::from_slice(&ws.buf[range]).unwrap_or_default();
            match event["type"].as_str() {
                Some("message.received") if event["reply_to"] == request_id.as_str() => {
                    receipt = event["data"]["message_id"].as_str().map(|id| (id.to_owned(), now));
                }
                Some("assistant.token") => {
                    if let Some(id) = event["data"]["stream_id"].as_str() {
                        token_at.insert(id.to_owned(), now);
                    }
                }
                Some("error") if event["reply_to"] == request_id.as_str() => {
                    errors.push(event.to_string());
                    break None;
                }
                _ => {}
            }
            if let Some(at) = receipt.as_ref().and_then(|(id, _)| token_at.get(id)) {
                break Some(*at);
            }
        };
        let answered = match (token, &receipt) {
            (Some(at), Some((_, receipt_at))) => Some((us_since(sent, at), us_since(sent, *receipt_at))),
            _ => None,
        };
        lost_in_a_row = if answered.is_some() { 0 } else { lost_in_a_row + 1 };
        if k < RT_WARMUP {
            continue;
        }
        match answered {
            Some((token, receipt)) => {
                tokens.push(token);
                receipts.push(receipt);
            }
            None => lost += 1,
        }
    }
    let (token, receipt) = (Latency::of(tokens), Latency::of(receipts));
    println!(
        "  send -> first token: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests; send -> receipt: p50 \
         {:.2} ms, p99 {:.2} ms, max {:.2} ms; {lost} lost ({} answered with an error)",
        ms(token.p50),
        ms(token.p99),
        ms(token.max),
        token.got,
        ms(receipt.p50),
        ms(receipt.p99),
        ms(receipt.max),
        errors.len(),
    );
    for error in errors.iter().take(5) {
        println!("    error: {error}");
    }
    Ok(RoundTrip { label: variant.label(), token, receipt, lost })
}

/// Seconds the hypervisor has stolen from `cpu` (the `steal` column of its
/// line in `/proc/stat`; 0 when there is none, as on bare metal).
fn steal_secs(cpu: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str())).unwrap_or_default();
    line.split_whitespace().nth(8).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0
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
/// Inlined: with `key` known, the search compiles to a few comparisons per
/// byte instead of a call to `memcmp` per position, which halves what a
/// fan-out subscriber costs this program.
#[inline(always)]
fn field_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let mut digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    digits.try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// The `offset` of an event of a channel with history. The server appends
/// it as the frame's last field (`…,"offset":42}`), so it is read from the
/// end in a few bytes, whatever the frame's size.
#[inline]
fn trailing_offset(frame: &[u8]) -> Option<u64> {
    let body = frame.strip_suffix(b"}")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, number) = body.split_at(body.len() - digits);
    if digits == 0 || !head.ends_with(b"\"offset\":") {
        return None;
    }
    number.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add((d - b'0') as u64))
}
