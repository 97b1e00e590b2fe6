//! The instances' rsyslog settings, run by a real rsyslogd (Debian's, which
//! `scripts/test` installs with its TLS driver): the base image's
//! `rsyslog-slipway.conf` turns journal lines into the lines log search
//! splits, and an environment's `syslog` setting forwards its app's lines
//! over TLS to a receiver whose certificate is checked by name.
//!
//! On an instance the lines come from the journal (imjournal); here they
//! come in over TCP with the same tags (`hello/web.1[42]:`), since there is
//! no journald to read. Everything after the input is the shipped file.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slipway_core::names::AppName;
use slipway_core::syslog::SyslogDestination;

const BASE: &str = include_str!("../../../infra/base-image/rsyslog-slipway.conf");
const IMJOURNAL: &str =
    r#"module(load="imjournal" StateFile="imjournal.state" IgnorePreviousMessages="on")"#;
const SHIPPED_FILE: &str = "/var/log/slipway/journal.log";

fn rsyslogd() -> PathBuf {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("rsyslogd is not installed: scripts/test installs it (rsyslog, rsyslog-gnutls)")
}

/// A running rsyslogd, stopped when dropped.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// rsyslog's own check of a file (`rsyslogd -N1`): what it said if it
/// refuses it.
fn checked(path: &Path) -> Result<(), String> {
    let check = Command::new(rsyslogd())
        .args(["-N1", "-f"])
        .arg(path)
        .output()
        .unwrap();
    if check.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&check.stderr).into_owned())
    }
}

/// Checks `conf` with `rsyslogd -N1`, then runs it until it listens on
/// `port`.
fn start(dir: &Path, name: &str, conf: &str, port: u16) -> Rsyslogd {
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let conf = format!("global(workDirectory=\"{}\")\n{conf}", work.display());
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).unwrap();
    if let Err(said) = checked(&path) {
        panic!("{name}.conf: {said}");
    }
    let child = Command::new(rsyslogd())
        .args(["-n", "-f"])
        .arg(&path)
        .arg("-i")
        .arg(dir.join(format!("{name}.pid")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Rsyslogd(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// Plain TCP syslog input on `port`, as imjournal's lines would arrive.
fn tcp_input(port: u16) -> String {
    format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n")
}

/// The base image's file with its journal input taken out and its output
/// moved to `out`.
fn base(out: &Path) -> String {
    assert!(BASE.contains(IMJOURNAL) && BASE.contains(SHIPPED_FILE));
    BASE.replace(IMJOURNAL, "")
        .replace(SHIPPED_FILE, &out.display().to_string())
}

/// Sends RFC 3164 lines `(tag, message)` to `port`.
fn send(port: u16, lines: &[(&str, &str)]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for (tag, message) in lines {
        writeln!(stream, "<14>Nov 29 10:00:00 i-0abc {tag}: {message}").unwrap();
    }
}

/// The lines of `path` once it has `n` of them (or after 10 s).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn journal_lines_of_apps_and_the_agent_become_the_lines_log_search_splits() {
    let dir = tempfile::tempdir().unwrap();
    let (port, out, rest) = (
        free_port(),
        dir.path().join("journal.log"),
        dir.path().join("rest.log"),
    );
    let conf = format!(
        "{}{}action(type=\"omfile\" file=\"{}\")\n",
        tcp_input(port),
        base(&out),
        rest.display()
    );
    let _rsyslogd = start(dir.path(), "base", &conf, port);

    send(
        port,
        &[
            ("hello/web.1[4242]", "GET /orders 200"),
            ("hello/clock_2-x.12", "tick"),
            ("postfix/smtpd[7]", "connect from somewhere"),
            ("slipway-agent[99]", "at=health release=r7"),
            ("sshd[8]", "Accepted publickey"),
        ],
    );

    assert_eq!(
        lines(&out, 3),
        [
            "web.1 GET /orders 200",
            "clock_2-x.12 tick",
            "agent at=health release=r7"
        ]
    );
    let rest = lines(&rest, 2);
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(
        rest[0].contains("postfix/smtpd") && rest[1].contains("sshd"),
        "{rest:?}"
    );
    let split: Vec<(String, String)> = lines(&out, 3)
        .iter()
        .map(|l| {
            let (process, message) = slipway_control::logs::split_line(l);
            (process.to_owned(), message.to_owned())
        })
        .collect();
    assert_eq!(split[0], ("web.1".into(), "GET /orders 200".into()));
    assert_eq!(split[2], ("agent".into(), "at=health release=r7".into()));
}

#[test]
fn a_papertrail_forwarding_with_its_two_permitted_names_passes_rsyslogs_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let forward = SyslogDestination::parse("logs5.papertrailapp.com:12345")
        .unwrap()
        .rsyslog_config(
            &AppName::parse("hello").unwrap(),
            "/etc/ssl/certs/ca-certificates.crt",
        )
        .unwrap();
    let path = dir.path().join("05-slipway-forward-hello.conf");
    std::fs::write(&path, &forward).unwrap();

    let check = checked(&path);

    assert!(check.is_ok(), "{check:?}");
}

/// A self-signed certificate for `localhost` and its key.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the receiver's certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// A syslog-over-TLS receiver on `port` writing `<app-name> <message>`.
fn receiver(dir: &Path, port: u16, cert: &Path, key: &Path, out: &Path) -> Rsyslogd {
    let conf = format!(
        "global(DefaultNetstreamDriverCAFile=\"{cert}\" DefaultNetstreamDriverCertFile=\"{cert}\" DefaultNetstreamDriverKeyFile=\"{key}\")\n\
         module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
         input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
         template(name=\"Got\" type=\"string\" string=\"%app-name% %msg%\\n\")\n\
         action(type=\"omfile\" file=\"{out}\" template=\"Got\")\n",
        cert = cert.display(),
        key = key.display(),
        out = out.display(),
    );
    start(dir, "receiver", &conf, port)
}

/// A TLS receiver with a `localhost` certificate, and an instance's
/// rsyslog (the forwarding before the base file, as their names order them
/// in `/etc/rsyslog.d`) forwarding hello's lines to it as `host`.
struct Forwarding {
    _instance: Rsyslogd,
    _receiver: Rsyslogd,
    /// Dropped last, once both have stopped.
    _dir: tempfile::TempDir,
    /// Where the instance takes lines in.
    port: u16,
    /// What the receiver got.
    received: PathBuf,
    /// What the CloudWatch agent would ship.
    shipped: PathBuf,
}

fn forwarding(host: &str) -> Forwarding {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let (tls_port, port) = (free_port(), free_port());
    let (received, shipped) = (
        dir.path().join("received.log"),
        dir.path().join("journal.log"),
    );
    let receiver = receiver(dir.path(), tls_port, &cert, &key, &received);
    let forward = SyslogDestination::parse(&format!("{host}:{tls_port}"))
        .unwrap()
        .rsyslog_config(
            &AppName::parse("hello").unwrap(),
            &cert.display().to_string(),
        )
        .unwrap();
    let conf = format!("{}{forward}{}", tcp_input(port), base(&shipped));
    let instance = start(dir.path(), "instance", &conf, port);
    Forwarding {
        _instance: instance,
        _receiver: receiver,
        _dir: dir,
        port,
        received,
        shipped,
    }
}

#[test]
fn the_syslog_setting_forwards_the_apps_lines_over_tls_to_a_server_with_the_right_name() {
    let f = forwarding("localhost");

    send(
        f.port,
        &[
            ("hello/web.1[4242]", "GET /orders 200"),
            ("shop/web.1[5]", "another app's line"),
            ("slipway-agent[99]", "at=health release=r7"),
            ("sshd[8]", "Accepted publickey"),
        ],
    );

    assert_eq!(
        lines(&f.received, 2),
        [
            "hello/web.1 GET /orders 200",
            "slipway-agent at=health release=r7"
        ]
    );
    assert_eq!(
        lines(&f.shipped, 3),
        [
            "web.1 GET /orders 200",
            "web.1 another app's line",
            "agent at=health release=r7"
        ],
        "forwarding takes nothing away from what the CloudWatch agent ships"
    );
}

#[test]
fn a_server_whose_certificate_has_another_name_gets_nothing() {
    // The same server, reached by address: its certificate says localhost.
    let f = forwarding("127.0.0.1");

    send(f.port, &[("hello/web.1[4242]", "GET /orders 200")]);

    assert_eq!(lines(&f.shipped, 1), ["web.1 GET /orders 200"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        std::fs::read_to_string(&f.received)
            .unwrap_or_default()
            .is_empty(),
        "nothing reaches a server that cannot prove its name"
    );
}
