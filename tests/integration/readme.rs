//! The README's `bash` examples, run as written against a real server.

use std::process::Command;

use crate::common::{data_dir, Server};

/// The fenced ```bash blocks of README.md, in order.
fn readme_bash_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn readme_bash_examples_work_as_written() {
    let blocks = readme_bash_blocks();
    assert!(blocks.len() >= 8, "found {} bash blocks", blocks.len());
    let dir = data_dir();
    let server = Server::start(dir.path());
    // Every curl also reports its status on stderr, without touching what it prints.
    let preamble = "curl() { command curl --write-out '%{stderr}HTTP %{http_code}\\n' \"$@\"; }\n";
    let script = format!("{preamble}{}", blocks.join("\n"))
        .replace("localhost:5050", &format!("127.0.0.1:{}", server.port));
    // The CLI recipes run `bin/eventvault` from the repository root, with the server on
    // LISTEN_ADDR: here the binary under test, and the test server's address.
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(crate::common::bin(), dir.path().join("bin/eventvault")).unwrap();
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", server.port))
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README examples failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let statuses: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("HTTP ")).collect();
    assert!(statuses.len() >= 25, "{statuses:?}");
    let failures: Vec<&&str> = statuses.iter().filter(|s| !s.starts_with('2')).collect();
    // The Errors section shows two 400s on purpose; the If-Match example prints its 412.
    assert_eq!(failures, [&"400", &"400"], "unexpected statuses; stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.lines().any(|l| l == "412"), "{stdout}");
    assert!(stdout.contains("reminder.sent"), "the SSE example streams the published message: {stdout}");
}
