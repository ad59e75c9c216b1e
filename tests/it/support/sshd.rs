//! A real OpenSSH sshd for the SFTP tests (Debian's openssh-server, installed by scripts/test):
//! its own host key, config and authorized keys in a directory of its own, `internal-sftp`, on a
//! port of its own. As root it logs in any local user (password or key); as another user, only
//! that user, by key (sshd cannot switch users).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The user a root sshd lets in by password (created, with a fresh password, when missing).
pub const PASSWORD_USER: &str = "dialbacksftp";

pub struct SshServer {
    pub port: u16,
    pub dir: PathBuf,
    /// Where the recordings are: a directory every local user may read.
    pub root: PathBuf,
    /// The host key's fingerprint as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    child: Child,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program} could not run ({e}): the SFTP tests need openssh-server, which scripts/test installs")
    });
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new key pair at `path` (and `path.pub`); its private key in OpenSSH form.
pub fn keygen(path: &Path, kind: &str) -> String {
    let mut args = vec!["-q", "-N", "", "-C", "dialback-test", "-t", kind, "-f"];
    let path_str = path.to_str().unwrap();
    args.push(path_str);
    if kind == "rsa" {
        args.extend(["-b", "3072"]);
    }
    run("ssh-keygen", &args);
    std::fs::read_to_string(path).unwrap()
}

pub fn is_root() -> bool {
    run("id", &["-u"]).trim() == "0"
}

impl SshServer {
    /// Starts sshd letting in the holders of `authorized` (public key lines).
    pub async fn start(authorized: &[String]) -> SshServer {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dialback-sshd-{}", uuid::Uuid::new_v4().simple()));
        let root = dir.join("recordings");
        std::fs::create_dir_all(&root).unwrap();
        // Readable by the users sshd logs in (a temp dir is 0700).
        for d in [&dir, &root] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let host_key = dir.join("host_ed25519");
        keygen(&host_key, "ed25519");
        let fingerprint = run("ssh-keygen", &["-l", "-E", "sha256", "-f", &format!("{}.pub", host_key.display())])
            .split_whitespace()
            .nth(1)
            .expect("ssh-keygen prints the fingerprint")
            .to_owned();
        std::fs::write(dir.join("authorized_keys"), authorized.join("\n") + "\n").unwrap();
        std::fs::set_permissions(dir.join("authorized_keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
        if is_root() {
            // sshd as root insists on its privilege separation directory.
            std::fs::create_dir_all("/run/sshd").unwrap();
            std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // A free port: sshd cannot be asked for port 0; a port taken meanwhile fails the start.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            host_key = host_key.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sshd runs: the SFTP tests need openssh-server, which scripts/test installs");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        super::wait::within_patience("sshd to listen", async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Server listening on") {
                    return;
                }
            }
            panic!("sshd exited before it listened");
        })
        .await;
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        SshServer { port, dir, root, fingerprint, child }
    }

    /// Puts a recording file in the served directory.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// The local user `PASSWORD_USER` with a new random password (root only).
    pub fn password_user() -> String {
        if run("getent", &["passwd"]).lines().all(|l| !l.starts_with(&format!("{PASSWORD_USER}:"))) {
            run("useradd", &["-M", "-s", "/usr/sbin/nologin", PASSWORD_USER]);
        }
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut chpasswd = std::process::Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        chpasswd.stdin.take().unwrap().write_all(format!("{PASSWORD_USER}:{password}\n").as_bytes()).unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd");
        password
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
