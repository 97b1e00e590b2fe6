//! The example app packs into a valid release archive and serves what its
//! Procfile promises.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use slipway_core::archive::{Limits, inspect};
use slipway_tests::workspace_root;

#[test]
fn the_example_app_is_a_valid_release_archive() {
    let dir = workspace_root().join("examples/hello");
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &dir).unwrap();
    let bytes = slipway_core::testing::gzip(&tar.into_inner().unwrap());
    let inspection = inspect(&bytes[..], &Limits::default()).unwrap();
    assert_eq!(inspection.procfile.web(), "python3 app.py");
}

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_example_app_serves_its_release_and_health_on_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("python3")
        .arg("app.py")
        .current_dir(workspace_root().join("examples/hello"))
        .env("PORT", port.to_string())
        .env("SLIPWAY_RELEASE", "r7")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep the pipe open while the app runs: it logs each request to it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");

    let root = get(port, "/");
    let health = get(port, "/health");
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(
        root.starts_with("HTTP/1.0 200") && root.contains("release r7"),
        "{root}"
    );
    assert!(
        health.starts_with("HTTP/1.0 200") && health.contains(r#""release": "r7""#),
        "{health}"
    );
}
