//! Carrying faults out on the platform the cluster runs on: Docker
//! containers, Kubernetes pods (through `kubectl`), or local processes.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Command;

use crate::spec::NodeSpec;

/// What a fault does to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL; started again when the fault ends.
    Kill,
    /// SIGSTOP (`docker pause`); resumed when the fault ends.
    Pause,
    /// Cut off from the cluster network; reconnected when the fault ends.
    Partition,
    /// A graceful stop (SIGTERM, the node drains) and a start, at once.
    Restart,
    /// A membership change: stopped (SIGTERM) and removed from the cluster
    /// through another node; started and added back when the fault ends
    /// (Warren only; each node needs `id=` and `http=`).
    Member,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::Restart => "restart",
            Self::Member => "member",
        }
    }

    /// The fault lasts a while before it is undone (a restart is one step).
    pub fn holds(self) -> bool {
        self != Self::Restart
    }
}

/// Where the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Containers (`container=` per node); partitions need `--network`.
    Docker,
    /// Pods of a StatefulSet (`pod=` per node): kill and restart only.
    Kubectl,
    /// Processes on this machine (`pid-file=` and `start=` per node): kill,
    /// pause and restart.
    Local,
    /// No faults: the workload and the checks only.
    None,
}

/// How long a stopped local process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Carries faults out and undoes them.
#[derive(Debug)]
pub struct Injector {
    platform: Platform,
    /// The Docker network a partition cuts (compose's project prefix may
    /// be left out).
    network: Option<String>,
    namespace: Option<String>,
    /// Per container: the network it was cut from and its aliases there.
    cut: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// Every node of the run: a membership change goes through the others.
    nodes: Vec<NodeSpec>,
    /// Per node removed by a membership fault: its id and cluster address.
    removed: Mutex<HashMap<String, (u64, String)>>,
}

impl Injector {
    pub fn new(platform: Platform, network: Option<String>, namespace: Option<String>, nodes: Vec<NodeSpec>) -> Self {
        Self {
            platform,
            network,
            namespace,
            cut: Mutex::default(),
            nodes,
            removed: Mutex::default(),
        }
    }

    /// Checks up front that every node can take every fault of `kinds`.
    ///
    /// # Errors
    /// Says which key a node lacks or which fault the platform cannot do.
    pub fn validate(&self, nodes: &[NodeSpec], kinds: &[FaultKind]) -> anyhow::Result<()> {
        for kind in kinds {
            let supported = match self.platform {
                Platform::Docker => *kind != FaultKind::Partition || self.network.is_some(),
                // (Removing a pod's ordinal from the cluster is a scale-down:
                // the StatefulSet would start it again at once.)
                Platform::Kubectl => matches!(kind, FaultKind::Kill | FaultKind::Restart),
                Platform::Local => *kind != FaultKind::Partition,
                Platform::None => false,
            };
            if !supported {
                bail!(
                    "--platform {:?} cannot {} a node{}",
                    self.platform,
                    kind.name(),
                    match (self.platform, kind) {
                        (Platform::Docker, FaultKind::Partition) => " without --network",
                        (Platform::None, _) => " (give --platform, or --faults 0)",
                        _ => "",
                    }
                );
            }
        }
        if kinds.is_empty() {
            return Ok(());
        }
        for node in nodes {
            let missing = match self.platform {
                Platform::Docker => node.container.is_none().then_some("container="),
                Platform::Kubectl => node.pod.is_none().then_some("pod="),
                Platform::Local if node.pid_file.is_none() => Some("pid-file="),
                // Only a kill, restart or membership change starts the node again.
                Platform::Local => (node.start.is_none()
                    && kinds
                        .iter()
                        .any(|kind| matches!(kind, FaultKind::Kill | FaultKind::Restart | FaultKind::Member)))
                .then_some("start="),
                Platform::None => None,
            };
            if let Some(key) = missing {
                bail!(
                    "node {} has no {key}, which --platform {:?} needs",
                    node.name,
                    self.platform
                );
            }
            if kinds.contains(&FaultKind::Member) {
                if node.http.is_none() || node.id.as_deref().and_then(|id| id.parse::<u64>().ok()).is_none() {
                    bail!(
                        "node {} needs http= and a numeric id= for the membership fault",
                        node.name
                    );
                }
                if nodes.len() < 2 {
                    bail!("the membership fault needs another node to remove a node through");
                }
            }
        }
        Ok(())
    }

    /// Starts `kind` on `node`.
    ///
    /// # Errors
    /// The platform's command failed.
    pub async fn inject(&self, node: &NodeSpec, kind: FaultKind) -> anyhow::Result<()> {
        match (self.platform, kind) {
            (Platform::Docker, _) => self.docker_inject(node, kind).await,
            (Platform::Kubectl, FaultKind::Kill) => {
                self.kubectl(&[
                    "delete",
                    "pod",
                    pod_name(node)?,
                    "--grace-period=0",
                    "--force",
                    "--wait=false",
                ])
                .await
            }
            (Platform::Kubectl, FaultKind::Restart) => {
                self.kubectl(&["delete", "pod", pod_name(node)?, "--wait=true"]).await
            }
            (Platform::Local, FaultKind::Kill) => self.signal_and_wait(node, "KILL").await,
            (Platform::Local, FaultKind::Pause) => signal(self.pid(node)?, "STOP").await,
            (Platform::Local, FaultKind::Restart) => {
                self.signal_and_wait(node, "TERM").await?;
                self.start_local(node).await
            }
            (Platform::Local, FaultKind::Member) => self.leave(node).await,
            (platform, kind) => bail!("--platform {platform:?} cannot {}", kind.name()),
        }
    }

    /// The membership fault's first half: the node's cluster address
    /// noted, the node stopped gracefully, then removed through the others.
    /// Once stopped it is noted as such, so that the second half starts it
    /// again even if the removal failed.
    async fn leave(&self, node: &NodeSpec) -> anyhow::Result<()> {
        let (id, peers) = self.member_and_peers(node)?;
        let addr = crate::member::cluster_address(&peers, id).await?;
        match self.platform {
            Platform::Docker => run("docker", &["stop", "--time", "30", docker_name(node)?]).await?,
            _ => self.signal_and_wait(node, "TERM").await?,
        }
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.name.clone(), (id, addr));
        crate::member::remove(&peers, id).await
    }

    /// The membership fault's second half: started again and added back
    /// (adding a node that is a voter already changes nothing).
    async fn join_again(&self, node: &NodeSpec) -> anyhow::Result<()> {
        let (_, peers) = self.member_and_peers(node)?;
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node.name);
        let (id, addr) = removed.context("adding back a node that was not removed")?;
        match self.platform {
            Platform::Docker => run("docker", &["start", docker_name(node)?]).await?,
            _ => self.start_local(node).await?,
        }
        crate::member::add(&peers, id, &addr).await
    }

    /// `node`'s Warren id and the management URLs of the other nodes.
    fn member_and_peers(&self, node: &NodeSpec) -> anyhow::Result<(u64, Vec<crate::http::BaseUrl>)> {
        let id = node
            .id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("node {} has no numeric id=", node.name))?;
        let peers = self
            .nodes
            .iter()
            .filter(|other| other.name != node.name)
            .filter_map(|other| other.http.as_deref())
            .map(crate::http::BaseUrl::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((id, peers))
    }

    /// Undoes `kind` on `node` (nothing to undo for a restart, or for a pod
    /// its StatefulSet brings back).
    ///
    /// # Errors
    /// The platform's command failed.
    pub async fn heal(&self, node: &NodeSpec, kind: FaultKind) -> anyhow::Result<()> {
        match (self.platform, kind) {
            (_, FaultKind::Restart) | (Platform::Kubectl, _) | (Platform::None, _) => Ok(()),
            (Platform::Docker, _) => self.docker_heal(node, kind).await,
            (Platform::Local, FaultKind::Member) => self.join_again(node).await,
            (Platform::Local, FaultKind::Kill) => self.start_local(node).await,
            (Platform::Local, FaultKind::Pause) => signal(self.pid(node)?, "CONT").await,
            (Platform::Local, FaultKind::Partition) => bail!("--platform local cannot partition"),
        }
    }

    async fn docker_inject(&self, node: &NodeSpec, kind: FaultKind) -> anyhow::Result<()> {
        let container = docker_name(node)?;
        match kind {
            FaultKind::Member => self.leave(node).await,
            FaultKind::Kill => run("docker", &["kill", "--signal", "KILL", container]).await,
            FaultKind::Pause => run("docker", &["pause", container]).await,
            FaultKind::Restart => run("docker", &["restart", "--time", "30", container]).await,
            FaultKind::Partition => {
                let wanted = self.network.as_deref().context("a partition needs --network")?;
                let (network, aliases) = docker_network_of(container, wanted).await?;
                run("docker", &["network", "disconnect", &network, container]).await?;
                self.cut
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(container.to_owned(), (network, aliases));
                Ok(())
            }
        }
    }

    async fn docker_heal(&self, node: &NodeSpec, kind: FaultKind) -> anyhow::Result<()> {
        let container = docker_name(node)?;
        match kind {
            FaultKind::Member => self.join_again(node).await,
            FaultKind::Kill => run("docker", &["start", container]).await,
            FaultKind::Pause => run("docker", &["unpause", container]).await,
            FaultKind::Restart => Ok(()),
            FaultKind::Partition => {
                let cut = self
                    .cut
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(container);
                let (network, aliases) = cut.context("reconnecting a container that was not cut off")?;
                let mut args = vec!["network".to_owned(), "connect".to_owned()];
                for alias in aliases {
                    args.extend(["--alias".to_owned(), alias]);
                }
                args.extend([network, container.to_owned()]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run("docker", &args).await
            }
        }
    }

    async fn kubectl(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all: Vec<&str> = Vec::new();
        if let Some(namespace) = &self.namespace {
            all.extend(["--namespace", namespace]);
        }
        all.extend(args);
        run("kubectl", &all).await
    }

    /// The pid of a local node, from its pid file: the runner writes the
    /// pid of what it starts there, and a server that writes its own (as
    /// RabbitMQ does once booted, when its start command is a script that
    /// daemonises it) overwrites it.
    fn pid(&self, node: &NodeSpec) -> anyhow::Result<u32> {
        let path = node.pid_file.as_ref().context("a local node needs pid-file=")?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} does not hold a pid: {text:?}", path.display()))
    }

    async fn signal_and_wait(&self, node: &NodeSpec, name: &str) -> anyhow::Result<()> {
        let pid = self.pid(node)?;
        signal(pid, name).await?;
        let deadline = tokio::time::Instant::now() + EXIT_WAIT;
        while process_runs(pid) {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "process {pid} of {} still runs {EXIT_WAIT:?} after SIG{name}",
                    node.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Starts a local node with its `start=` command (`sh -c 'exec …'`),
    /// its output appended to `<pid-file>.out`, and writes the new pid.
    async fn start_local(&self, node: &NodeSpec) -> anyhow::Result<()> {
        let command = node.start.as_deref().context("a local node needs start=")?;
        let mut process = Command::new("sh");
        process.arg("-c").arg(format!("exec {command}")).stdin(Stdio::null());
        match &node.pid_file {
            Some(pid_file) => {
                let mut log_path = pid_file.clone().into_os_string();
                log_path.push(".out");
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
                process.stdout(log.try_clone()?).stderr(log);
            }
            None => {
                process.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut child = process
            .spawn()
            .with_context(|| format!("starting {}: {command}", node.name))?;
        let pid = child.id().context("the started process has no pid")?;
        if let Some(pid_file) = &node.pid_file {
            std::fs::write(pid_file, format!("{pid}\n"))?;
        }
        // Reaped when it exits, so a killed node is not left a zombie that
        // `process_runs` would still see.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }
}

fn docker_name(node: &NodeSpec) -> anyhow::Result<&str> {
    node.container
        .as_deref()
        .with_context(|| format!("node {} has no container=", node.name))
}

fn pod_name(node: &NodeSpec) -> anyhow::Result<&str> {
    node.pod
        .as_deref()
        .with_context(|| format!("node {} has no pod=", node.name))
}

/// The full name of the network `wanted` (or `<project>_wanted`) that
/// `container` is on, and its aliases there.
async fn docker_network_of(container: &str, wanted: &str) -> anyhow::Result<(String, Vec<String>)> {
    let output = run_output(
        "docker",
        &["inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
    )
    .await?;
    let networks: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(output.trim()).context("reading docker inspect's networks")?;
    let suffix = format!("_{wanted}");
    let (name, settings) = networks
        .iter()
        .find(|(name, _)| *name == wanted || name.ends_with(&suffix))
        .with_context(|| {
            format!(
                "{container} is not on a network named {wanted} (it is on {:?})",
                networks.keys()
            )
        })?;
    let aliases = settings
        .get("Aliases")
        .and_then(serde_json::Value::as_array)
        .map(|aliases| aliases.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok((name.clone(), aliases))
}

/// Whether process `pid` exists and is not a zombie.
fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    run("kill", &[&format!("-{name}"), &pid.to_string()]).await
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_output(program, args).await.map(drop)
}

/// Runs `program args`, bounded to a minute; returns its stdout.
async fn run_output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(program).args(args).stdin(Stdio::null()).output(),
    )
    .await
    .with_context(|| format!("`{program} {}` took over a minute", args.join(" ")))?
    .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{FaultKind, Injector, Platform};
    use crate::spec::NodeSpec;

    fn node(text: &str) -> NodeSpec {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn each_platform_refuses_the_faults_it_cannot_do() {
        let docker = Injector::new(Platform::Docker, None, None, Vec::new());
        let nodes = [node("amqp=a,container=c1")];
        assert!(docker.validate(&nodes, &[FaultKind::Kill, FaultKind::Pause]).is_ok());
        assert!(
            docker.validate(&nodes, &[FaultKind::Partition]).is_err(),
            "no network given"
        );
        let kubectl = Injector::new(Platform::Kubectl, None, None, Vec::new());
        assert!(kubectl.validate(&[node("amqp=a,pod=p")], &[FaultKind::Pause]).is_err());
        assert!(
            kubectl.validate(&[node("amqp=a")], &[FaultKind::Kill]).is_err(),
            "no pod="
        );
        let local = Injector::new(Platform::Local, None, None, Vec::new());
        assert!(local
            .validate(&[node("amqp=a,pid-file=/p,start=x")], &[FaultKind::Restart])
            .is_ok());
        assert!(
            local
                .validate(&[node("amqp=a,pid-file=/p")], &[FaultKind::Kill])
                .is_err(),
            "no start="
        );
        assert!(
            local
                .validate(&[node("amqp=a,pid-file=/p")], &[FaultKind::Pause])
                .is_ok(),
            "a pause needs none"
        );
        assert!(
            local.validate(&[node("amqp=a,start=x")], &[FaultKind::Pause]).is_err(),
            "no pid-file="
        );
        let none = Injector::new(Platform::None, None, None, Vec::new());
        assert!(none.validate(&nodes, &[]).is_ok());
        assert!(none.validate(&nodes, &[FaultKind::Kill]).is_err());
    }

    #[test]
    fn the_membership_fault_needs_ids_http_and_another_node() {
        let local = Injector::new(Platform::Local, None, None, Vec::new());
        let good = |n: u32| node(&format!("amqp=a,id={n},http=http://h:{n},pid-file=/p{n},start=x"));
        assert!(local.validate(&[good(1), good(2)], &[FaultKind::Member]).is_ok());
        assert!(
            local.validate(&[good(1)], &[FaultKind::Member]).is_err(),
            "no other node to go through"
        );
        for bad in [
            "amqp=a,http=http://h:1,pid-file=/p,start=x",
            "amqp=a,id=rabbit@h,http=http://h:1,pid-file=/p,start=x",
            "amqp=a,id=1,pid-file=/p,start=x",
            "amqp=a,id=1,http=http://h:1,pid-file=/p",
        ] {
            assert!(
                local.validate(&[node(bad), good(2)], &[FaultKind::Member]).is_err(),
                "{bad} was accepted"
            );
        }
        let kubectl = Injector::new(Platform::Kubectl, None, None, Vec::new());
        assert!(kubectl
            .validate(&[node("amqp=a,id=1,http=http://h:1,pod=p")], &[FaultKind::Member])
            .is_err());
    }

    #[test]
    fn our_own_process_runs_and_a_made_up_one_does_not() {
        assert!(super::process_runs(std::process::id()));
        assert!(!super::process_runs(u32::MAX));
    }
}
