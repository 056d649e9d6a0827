//! The Kubernetes manifests, checked offline (issue 14): strict schema
//! validation against the oldest and newest Kubernetes the docs name, a
//! negative control, and a join list that names every replica with the
//! seed first (tests/python/k8s_manifests.py).

use warren_e2e::{python, workspace_root};

#[test]
fn the_kubernetes_manifests_validate_and_list_every_replica_to_join() -> anyhow::Result<()> {
    let python = python::k8s_validate_python()?;
    let manifests = workspace_root().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&manifests)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no manifests in {}", manifests.display());
    let output = std::process::Command::new(python)
        .arg(python::scripts_dir().join("k8s_manifests.py"))
        .args(&files)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    anyhow::ensure!(
        output.status.success() && stdout.contains("manifests: ok"),
        "{stdout}{stderr}"
    );
    Ok(())
}
