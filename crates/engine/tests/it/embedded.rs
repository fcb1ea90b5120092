//! Runs `examples/embedded.rs` (built by `cargo test`) and checks what it printed.

use std::process::Command;

#[test]
fn the_embedded_example_runs_an_approval_to_completion() {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-… → target/<profile>/examples/embedded
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join("embedded");
    assert!(example.exists(), "{} was not built", example.display());
    let output = Command::new(&example).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("is paused at `manager`: Order ord-42 is large"),
        "{stdout}"
    );
    assert!(
        stdout.contains("is completed with result Some(\"allowed\")"),
        "{stdout}"
    );
}
