//! pika 1.x, kombu 5.x and aio-pika in a virtualenv, for the RabbitMQ
//! tutorial flows and the kombu and aio-pika checks in `tests/python/`.
//!
//! The virtualenv lives at `<target dir>/pyvenv` and is created once for all
//! test processes: creation runs under `flock` on `<target dir>/pyvenv.lock`
//! and ends by writing a marker file, so parallel tests neither collide nor
//! redo the work, and a half-made venv (no marker) is rebuilt.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};

/// The pika version the tutorial scripts are written against.
pub const PIKA_VERSION: &str = "1.3.2";

/// The kombu version `kombu_cluster.py` is written against (Celery 5.4's).
pub const KOMBU_VERSION: &str = "5.4.2";

/// The aio-pika version `aio_pika_rpc.py` is written against.
pub const AIO_PIKA_VERSION: &str = "10.2.1";

/// How long creating the virtualenv and installing pika may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one tutorial script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Directory holding the pika scripts.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The virtualenv's python, creating the venv (with pika) on first use.
///
/// # Errors
/// python3, venv or pip failed; the error carries their output.
pub fn venv_python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| create_venv().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn create_venv() -> anyhow::Result<PathBuf> {
    create_venv_with(
        "pyvenv",
        &format!("pika-{PIKA_VERSION}-kombu-{KOMBU_VERSION}-aio-pika-{AIO_PIKA_VERSION}"),
        &format!(r#""pika=={PIKA_VERSION}" "kombu=={KOMBU_VERSION}" "aio-pika=={AIO_PIKA_VERSION}""#),
        &format!(
            "import pika, kombu, aio_pika; assert pika.__version__ == '{PIKA_VERSION}', pika.__version__; \
             assert kombu.__version__ == '{KOMBU_VERSION}', kombu.__version__; \
             assert aio_pika.__version__ == '{AIO_PIKA_VERSION}', aio_pika.__version__"
        ),
    )
}

/// The kubernetes-validate version the manifest check runs (its schemas
/// go up to Kubernetes 1.37).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// A virtualenv's python with kubernetes-validate (the Kubernetes schemas,
/// offline), apart from the pika one.
///
/// # Errors
/// python3, venv or pip failed.
pub fn k8s_validate_python() -> anyhow::Result<PathBuf> {
    create_venv_with(
        "k8s-venv",
        &format!("kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"),
        &format!(r#""kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}""#),
        "import kubernetes_validate, yaml",
    )
}

/// Creates `target/<dir>` with `packages` (pip arguments) once, checked
/// by `check` (python code); later calls find its `.<tag>-ready` marker.
fn create_venv_with(dir: &str, tag: &str, packages: &str, check: &str) -> anyhow::Result<PathBuf> {
    let target = crate::target_dir();
    std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
    let venv = target.join(dir);
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!(".{tag}-ready"));
    if marker.exists() {
        return Ok(python);
    }
    let lock = target.join(format!("{dir}.lock"));
    // Everything under one flock: the first process builds, the others wait
    // and then find the marker.
    let script = format!(
        r#"set -e
if [ ! -f "{marker}" ]; then
  rm -rf "{venv}"
  python3 -m venv "{venv}"
  "{python}" -m pip install --disable-pip-version-check --no-input --quiet {packages}
  "{python}" -c "{check}"
  touch "{marker}"
fi
"#,
        marker = marker.display(),
        venv = venv.display(),
        python = python.display(),
    );
    let mut child = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `flock` (util-linux) to create the virtualenv {dir}"))?;
    let deadline = std::time::Instant::now() + VENV_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("creating the virtualenv {dir} took longer than {VENV_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "creating the virtualenv at {} failed ({}):\n{}\n{}",
            venv.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(python)
}

/// Runs `tests/python/<script>` with the broker's port (and `extra` args) and
/// fails with its output unless it exits 0 within [`SCRIPT_TIMEOUT`].
///
/// # Errors
/// The script failed or timed out.
pub async fn run_script(script: &str, port: u16, extra: &[&str]) -> anyhow::Result<String> {
    run_script_for(script, port, extra, SCRIPT_TIMEOUT).await
}

/// [`run_script`] with a limit of its own, for a script that runs long by
/// design (the differential harness).
///
/// # Errors
/// The script failed or did not finish within `limit`.
pub async fn run_script_for(script: &str, port: u16, extra: &[&str], limit: Duration) -> anyhow::Result<String> {
    let python = venv_python()?;
    let path = scripts_dir().join(script);
    run_python(&python, &path, port, extra, limit).await
}

async fn run_python(
    python: &Path,
    script: &Path,
    port: u16,
    extra: &[&str],
    limit: Duration,
) -> anyhow::Result<String> {
    let child = tokio::process::Command::new(python)
        .arg("-u")
        .arg(script)
        .arg(port.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output?,
        Err(_) => bail!("{} did not finish within {limit:?}", script.display()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            script.display(),
            output.status
        );
    }
    Ok(stdout)
}
