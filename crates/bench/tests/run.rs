//! `run()` end to end: against a real memcached, and against fake servers that misbehave in
//! the ways the bench must catch (a wrong value, silence, a closed connection).

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::Parser;
use murakumo_bench::{BenchArgs, BenchError, Report, run};
use murakumo_protocol::ascii::{Request, decode_request};
use murakumo_protocol::{Decoded, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(server: &str, flags: &[&str]) -> BenchArgs {
    let argv = ["bench", "--server", server, "--quiet"];
    Cli::try_parse_from(argv.iter().chain(flags))
        .expect("valid bench flags")
        .args
}

/// A memcached process on a free loopback port, killed when dropped.
struct Memcached {
    child: Child,
    addr: String,
}

impl Memcached {
    fn start() -> Self {
        let binary = find_on_path("memcached").unwrap_or_else(|| {
            panic!(
                "memcached is not on PATH. This test needs a real memcached: install it with \
                 `apt-get install -y memcached` (the project's test command does this)."
            )
        });
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        // -u is only used when running as root, where memcached refuses to start without it.
        let child = Command::new(binary)
            .args([
                "-u",
                "nobody",
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-m",
                "64",
                "-t",
                "2",
            ])
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("memcached starts");
        let mut server = Self { child, addr };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if let Some(status) = self.child.try_wait().expect("memcached's status") {
                panic!(
                    "memcached exited before listening on {}: {status}",
                    self.addr
                );
            }
            assert!(
                Instant::now() < deadline,
                "memcached never listened on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn load(report: &Report) -> &murakumo_bench::PhaseReport {
    report.load.as_ref().expect("a load phase")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_second_against_memcached_is_clean() {
    let server = Memcached::start();
    let report = run(args(
        &server.addr,
        &[
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--keys",
            "2000",
            "--prefill",
            "--duration",
            "1",
        ],
    ))
    .await
    .unwrap();

    assert_eq!(report.errors(), 0, "{report}");
    assert!(report.error_samples.is_empty(), "{report}");
    let prefill = report.prefill.as_ref().expect("a prefill phase");
    assert_eq!((prefill.sets, prefill.gets, prefill.errors), (2000, 0, 0));

    let load = load(&report);
    assert!(load.elapsed >= Duration::from_secs(1), "{report}");
    assert!(load.elapsed < Duration::from_secs(3), "{report}");
    assert!(load.gets > 0 && load.sets > 0, "{report}");
    // Everything was prefilled into a cache far larger than 2000 small items.
    assert_eq!(load.hits, load.gets, "{report}");
    assert_eq!(load.misses, 0);
    // 1:10 set:get, over thousands of requests.
    let set_percent = load.sets * 100 / load.ops();
    assert!((5..14).contains(&set_percent), "{set_percent}% sets");
    for lat in [load.get, load.set, load.all] {
        assert!(
            lat.p50_us <= lat.p99_us && lat.p99_us <= lat.p999_us,
            "{lat:?}"
        );
        assert!(lat.p999_us <= lat.max_us && lat.max_us > 0, "{lat:?}");
    }
    assert_eq!(load.all.count, load.ops());
    assert!(load.ops_per_sec() > 0.0);

    let json = report.to_json();
    assert!(
        json.contains(r#""errors":0,"error_samples":[],"aborted":null}"#),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_protocol_against_memcached_is_clean() {
    let server = Memcached::start();
    let report = run(args(
        &server.addr,
        &[
            "--protocol",
            "meta",
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--keys",
            "2000",
            "--prefill",
            "--duration",
            "1",
        ],
    ))
    .await
    .unwrap();

    assert_eq!(report.errors(), 0, "{report}");
    let prefill = report.prefill.as_ref().expect("a prefill phase");
    assert_eq!((prefill.sets, prefill.errors), (2000, 0));
    let load = load(&report);
    assert!(load.gets > 0 && load.sets > 0, "{report}");
    assert_eq!(load.hits, load.gets, "{report}");
    assert!(report.to_json().contains(r#""protocol":"meta""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ops_bounds_the_run_exactly() {
    let server = Memcached::start();
    let report = run(args(
        &server.addr,
        &[
            "--connections",
            "3",
            "--pipeline",
            "7",
            "--keys",
            "50",
            "--duration",
            "0",
            "--max-ops",
            "1000",
            "--ratio",
            "1:1",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(report.errors(), 0, "{report}");
    assert!(report.prefill.is_none());
    let load = load(&report);
    assert_eq!(load.ops(), 1000, "{report}");
    // Without prefill, gets of keys never set miss; some keys are set early in the run.
    assert_eq!(load.hits + load.misses, load.gets);
    assert!(load.hits > 0 && load.misses > 0, "{report}");
}

/// 400 gets of random keys among the 200 the last prefill loaded.
async fn gets_of_loaded_keys(addr: &str, protocol: &str) -> Report {
    run(args(
        addr,
        &[
            "--connections",
            "2",
            "--keys",
            "200",
            "--ratio",
            "0:1",
            "--duration",
            "0",
            "--max-ops",
            "400",
            "--protocol",
            protocol,
        ],
    ))
    .await
    .expect("a gets-only run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_makes_the_items_expire() {
    let server = Memcached::start();
    for protocol in ["text", "meta"] {
        let prefill = run(args(
            &server.addr,
            &[
                "--connections",
                "2",
                "--keys",
                "200",
                "--prefill",
                "--duration",
                "0",
                "--ttl",
                "3",
                "--protocol",
                protocol,
            ],
        ))
        .await
        .unwrap();
        assert_eq!(prefill.errors(), 0, "{prefill}");
        assert!(prefill.to_json().contains(r#""ttl_secs":3"#), "{prefill}");
        let fresh = gets_of_loaded_keys(&server.addr, protocol).await;
        assert_eq!(load(&fresh).misses, 0, "{protocol}: {fresh}");
        // memcached's clock ticks once a second, so an item set with exptime 3 is gone
        // between 2 and 3 seconds later.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let expired = gets_of_loaded_keys(&server.addr, protocol).await;
        assert_eq!(expired.errors(), 0, "{expired}");
        assert_eq!(load(&expired).hits, 0, "{protocol}: {expired}");
    }
}

#[test]
fn ttl_past_thirty_days_is_refused() {
    let argv = ["bench", "--ttl", "2592001"];
    assert!(Cli::try_parse_from(argv).is_err());
    let argv = ["bench", "--ttl", "2592000"];
    assert!(Cli::try_parse_from(argv).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_never_offers_more_than_asked() {
    let server = Memcached::start();
    // 4 connections at 400 requests/s in all: each sends one every 10 ms, so at most 100
    // each fall due in the second. Unpaced, memcached would answer thousands.
    let report = run(args(
        &server.addr,
        &[
            "--connections",
            "4",
            "--rate",
            "400",
            "--duration",
            "1",
            "--keys",
            "50",
            "--json",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.settings.rate, Some(400));
    let ops = load(&report).ops();
    assert!(ops > 0 && ops <= 400, "{ops} requests offered: {report}");
    assert!(
        report.to_json().contains(r#""rate":400"#),
        "{}",
        report.to_json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_alone_loads_every_key() {
    let server = Memcached::start();
    let report = run(args(
        &server.addr,
        &[
            "--connections",
            "5",
            "--keys",
            "1234",
            "--value-size",
            "300",
            "--prefill",
            "--duration",
            "0",
        ],
    ))
    .await
    .unwrap();
    assert!(report.load.is_none());
    let prefill = report.prefill.as_ref().unwrap();
    assert_eq!((prefill.sets, prefill.errors), (1234, 0));

    // memcached agrees: it now holds exactly those items.
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    stream.write_all(b"stats\r\n").await.unwrap();
    let mut stats = Vec::new();
    while !stats.ends_with(b"END\r\n") {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        stats.extend_from_slice(&chunk[..n]);
    }
    let stats = String::from_utf8(stats).unwrap();
    assert!(stats.contains("STAT curr_items 1234\r\n"), "{stats}");
}

/// How a fake server answers; it only ever sees `get <key>` and `set`.
#[derive(Clone, Copy)]
enum Fake {
    /// `get` returns a five-byte value that is not the key's; `set` is stored.
    WrongValue,
    /// Reads requests and never answers.
    Silent,
    /// Answers the first few requests correctly (as misses or STORED), then closes.
    CloseAfter(usize),
}

async fn fake_server(kind: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let addr = listener.local_addr().expect("its address").to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_fake(socket, kind));
        }
    });
    addr
}

async fn serve_fake(mut socket: TcpStream, kind: Fake) {
    // One write per reply: without this, Nagle holds each one for the client's delayed ACK.
    socket.set_nodelay(true).expect("TCP_NODELAY");
    let mut buf = BytesMut::new();
    let mut answered = 0;
    loop {
        match decode_request(&buf, &Limits::default()) {
            Decoded::Done { item, consumed } => {
                buf.advance(consumed);
                let reply = match (kind, item) {
                    (Fake::Silent, _) => continue,
                    (Fake::CloseAfter(n), _) if answered == n => return,
                    (Fake::WrongValue, Ok(Request::Get { keys, .. })) => {
                        let mut reply = Vec::new();
                        for key in keys.iter() {
                            reply.extend_from_slice(b"VALUE ");
                            reply.extend_from_slice(key);
                            reply.extend_from_slice(b" 0 5\r\nWRONG\r\n");
                        }
                        reply.extend_from_slice(b"END\r\n");
                        reply
                    }
                    (Fake::WrongValue, Ok(Request::MetaGet(get))) => {
                        let mut reply = b"VA 5 k".to_vec();
                        reply.extend_from_slice(&get.key);
                        reply.extend_from_slice(b" f0\r\nWRONG\r\n");
                        reply
                    }
                    (_, Ok(Request::Get { .. })) => b"END\r\n".to_vec(),
                    (_, Ok(Request::Store { .. })) => b"STORED\r\n".to_vec(),
                    (_, Ok(Request::MetaGet(_))) => b"EN\r\n".to_vec(),
                    (_, Ok(Request::MetaSet(_))) => b"HD\r\n".to_vec(),
                    (_, other) => panic!("the bench sent {other:?}"),
                };
                answered += 1;
                if socket.write_all(&reply).await.is_err() {
                    return;
                }
            }
            Decoded::Incomplete => match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_value_is_counted_as_an_error() {
    let addr = fake_server(Fake::WrongValue).await;
    let report = run(args(
        &addr,
        &[
            "--connections",
            "2",
            "--pipeline",
            "4",
            "--ratio",
            "1:1",
            "--keys",
            "10",
            "--duration",
            "0",
            "--max-ops",
            "200",
        ],
    ))
    .await
    .expect("verification errors do not abort the run");

    let load = load(&report);
    assert_eq!(load.ops(), 200);
    assert!(load.gets > 0 && load.sets > 0, "{report}");
    // Every get came back with a value that is not its key's; every set was fine.
    assert_eq!(load.errors, load.gets, "{report}");
    assert_eq!(report.errors(), load.gets);
    assert_eq!((load.hits, load.misses), (0, 0));
    assert!(report.aborted.is_none());
    assert_eq!(report.error_samples.len(), 10, "{report}");
    assert!(
        report.error_samples[0].contains(r#": wrong value (5 bytes: "WRONG")"#),
        "{:?}",
        report.error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_meta_value_is_counted_as_an_error() {
    let addr = fake_server(Fake::WrongValue).await;
    let report = run(args(
        &addr,
        &[
            "--protocol",
            "meta",
            "--connections",
            "2",
            "--ratio",
            "1:1",
            "--keys",
            "10",
            "--duration",
            "0",
            "--max-ops",
            "100",
        ],
    ))
    .await
    .expect("verification errors do not abort the run");

    let load = load(&report);
    assert_eq!(load.ops(), 100);
    assert!(load.gets > 0 && load.sets > 0, "{report}");
    assert_eq!(load.errors, load.gets, "{report}");
    assert_eq!((load.hits, load.misses), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_aborts_the_run_at_the_timeout() {
    let addr = fake_server(Fake::Silent).await;
    let started = Instant::now();
    let result = run(args(
        &addr,
        &[
            "--connections",
            "2",
            "--pipeline",
            "3",
            "--duration",
            "30",
            "--timeout-ms",
            "300",
        ],
    ))
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let Err(BenchError::Aborted { reason, report }) = result else {
        panic!("expected an aborted run, got {result:?}");
    };
    assert!(reason.contains("no reply within 300ms"), "{reason}");
    assert!(reason.starts_with("connection "), "{reason}");
    // The batches in flight got no reply: at least one connection's worth.
    assert!(report.errors() >= 3, "{report}");
    assert_eq!(load(&report).ops(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_aborts_the_run() {
    let addr = fake_server(Fake::CloseAfter(5)).await;
    let result = run(args(
        &addr,
        &["--connections", "1", "--pipeline", "2", "--duration", "30"],
    ))
    .await;
    let Err(BenchError::Aborted { reason, report }) = result else {
        panic!("expected an aborted run, got {result:?}");
    };
    assert!(reason.contains("server closed the connection"), "{reason}");
    let load = load(&report);
    // Two full batches were answered, then one reply of the third, then the close.
    assert_eq!(load.ops(), 5, "{report}");
    assert_eq!(load.errors, 1, "{report}");
    assert_eq!(report.aborted.as_deref(), Some(reason.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_a_connect_error() {
    let port = free_port();
    let result = run(args(&format!("127.0.0.1:{port}"), &["--connections", "3"])).await;
    match result {
        Err(BenchError::Connect { server, source }) => {
            assert_eq!(server, format!("127.0.0.1:{port}"));
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
