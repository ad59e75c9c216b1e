//! The simulator as the demo and the benchmarks run it: its own binary, `pbx-sim`.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Started on a free port, it says where it listens, logs an AMI user in as Asterisk 22 does,
/// and on SIGTERM tells the connected session `Shutdown: Cleanly` before it exits successfully.
#[tokio::test]
async fn the_binary_serves_ami_and_says_goodbye_on_sigterm() {
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_pbx-sim"))
        .args(["--listen", "127.0.0.1:0", "--user", "demo:demo-secret"])
        .env("DIALBACK_LOG_FORMAT", "json")
        .env("DIALBACK_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("pbx-sim starts");
    let mut log = BufReader::new(sim.stdout.take().expect("piped stdout")).lines();
    let addr = loop {
        let line = log.next_line().await.expect("reading its log").expect("pbx-sim logs that it is ready");
        if let Some((_, rest)) = line.split_once(r#""addr":""#) {
            break rest.split('"').next().expect("a quoted address").to_owned();
        }
    };

    let mut ami = BufReader::new(TcpStream::connect(&addr).await.expect("AMI accepts"));
    let mut banner = String::new();
    ami.read_line(&mut banner).await.expect("a banner");
    assert!(banner.starts_with("Asterisk Call Manager/"), "{banner:?}");
    ami.get_mut()
        .write_all(b"Action: Login\r\nActionID: 1\r\nUsername: demo\r\nSecret: demo-secret\r\n\r\n")
        .await
        .expect("login sent");
    let mut reply = String::new();
    while !reply.ends_with("\r\n\r\n") {
        ami.read_line(&mut reply).await.expect("a login reply");
    }
    assert!(reply.contains("Response: Success"), "{reply}");

    let pid = sim.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    assert!(killed.success());
    let mut rest = String::new();
    ami.read_to_string(&mut rest).await.expect("the session closes");
    assert!(rest.contains("Event: Shutdown\r\n") && rest.contains("Shutdown: Cleanly\r\n"), "{rest}");
    assert!(sim.wait().await.expect("it exits").success());
}
