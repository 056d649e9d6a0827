//! The Kubernetes manifests, checked offline (issue 14): the base and every
//! kustomize overlay rendered with `kubectl kustomize`, each document
//! validated strictly against the oldest and newest Kubernetes the docs
//! name, a negative control, and a join list that names every replica with
//! the seed first (tests/python/k8s_manifests.py).

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use warren_e2e::{python, workspace_root};

/// `kubectl kustomize DIR`, written to `out`.
fn render(kustomization: &Path, out: &Path) -> anyhow::Result<()> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(kustomization)
        .output()
        .context(
            "running kubectl (kubectl with kustomize v3 or later renders the overlays; this machine kind has it)",
        )?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        kustomization.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(out, &output.stdout)?;
    Ok(())
}

#[test]
fn the_kubernetes_base_and_overlays_validate_and_list_every_replica_to_join() -> anyhow::Result<()> {
    let python = python::k8s_validate_python()?;
    let k8s = workspace_root().join("deploy/k8s");
    let rendered = tempfile::tempdir()?;
    let mut kustomizations = vec![k8s.join("base")];
    let mut overlays: Vec<_> = std::fs::read_dir(k8s.join("overlays"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    overlays.sort();
    anyhow::ensure!(overlays.len() >= 2, "overlays: {overlays:?}");
    kustomizations.extend(overlays);
    let mut files = vec![k8s.join("base/warren.yaml")];
    for dir in &kustomizations {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = rendered.path().join(format!("{name}.yaml"));
        render(dir, &out)?;
        files.push(out);
    }
    let output = Command::new(python)
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
    // The overlays did change what they say they change.
    let production = std::fs::read_to_string(rendered.path().join("production.yaml"))?;
    anyhow::ensure!(production.contains("replicas: 5"), "production is not five replicas");
    anyhow::ensure!(production.contains("storageClassName: fast-retain"));
    let small = std::fs::read_to_string(rendered.path().join("small.yaml"))?;
    anyhow::ensure!(small.contains("memory: 512Mi"), "small has not its memory limit");
    Ok(())
}
