//! The files under `examples/` for people who run streamhost elsewhere.

use streamhost_testkit as support;

use std::process::Command;

/// `docker compose config` (or the older `docker-compose config`) accepts
/// the compose file: the Docker client validates without an engine.
#[test]
fn docker_compose_file_is_valid() {
    let file = support::root().join("examples/docker-compose.yml");
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let out = if v2 {
        Command::new("docker").args(["compose", "-f"]).arg(&file).arg("config").output()
    } else {
        Command::new("docker-compose").arg("-f").arg(&file).arg("config").output()
    }
    .expect("neither `docker compose` nor `docker-compose` is installed; `cargo xtask test` installs docker-compose");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for service in ["kafka", "streamhost", "producer", "prometheus", "grafana"] {
        assert!(
            text.contains(&format!("  {service}:")),
            "service {service} missing:\n{text}"
        );
    }
    assert!(text.contains("/plugins/anomaly.wasm"));
}
