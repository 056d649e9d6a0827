//! The `warren` binary: parses the command line and hands over to
//! [`warren_server::run`].

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use warren_server::ctl::CtlCommand;
use warren_server::{Config, ServerArgs};

/// jemalloc, not glibc's malloc (ADR 0036): after a burst of transient
/// messages glibc's arenas kept 160-185 MiB of freed memory for good, and
/// jemalloc's background thread gives it back (options in
/// `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "warren", version, about = "A Raft-replicated AMQP 0-9-1 message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Flags of `server`, for when no subcommand is given.
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (the default).
    Server(Box<ServerArgs>),
    /// Operate a running cluster over its gRPC port.
    Ctl(Box<CtlArgs>),
    /// Failover test of a running cluster (Warren or RabbitMQ): a confirmed
    /// workload on every node, faults on a seeded schedule, the history
    /// checked; exits 1 when a check fails (docs/failover.md).
    Chaos(Box<warren_chaos::ChaosArgs>),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The cluster (gRPC) address of any member.
    #[arg(long, default_value = "127.0.0.1:25672")]
    server: String,
    /// The cluster secret (as the nodes were started with).
    #[arg(long, env = "WARREN_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// With cluster TLS (ADR 0024): the cluster CA, and a certificate of it
    /// with its key, PEM (a node's own will do).
    #[arg(long, env = "WARREN_CLUSTER_TLS_CA_FILE")]
    cluster_tls_ca_file: Option<std::path::PathBuf>,
    #[arg(long, env = "WARREN_CLUSTER_TLS_CERT_FILE")]
    cluster_tls_cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "WARREN_CLUSTER_TLS_KEY_FILE")]
    cluster_tls_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Members, leader, term, log and applied index of each reachable node.
    ClusterStatus,
    /// Adds a running node as a voter: asks the member at --server, which
    /// passes it on to the leader. Returns once the node caught up and is a
    /// voter. A node started with `--join` asks by itself; use this to add
    /// back a node removed with `remove-node` that kept its data.
    AddNode {
        /// The new node's id (as given to its `--node-id`).
        #[arg(long)]
        id: u64,
        /// The new node's cluster (gRPC) address, as it advertises it.
        #[arg(long)]
        addr: String,
    },
    /// Removes a node from the cluster (sent to the leader).
    RemoveNode {
        #[arg(required_unless_present = "id")]
        node_id: Option<u64>,
        /// The same as the positional NODE_ID.
        #[arg(long, conflicts_with = "node_id")]
        id: Option<u64>,
    },
    /// Queues of the asked node's replica: vhost, name, flags, ready,
    /// unacked, consumers; with the leader and the replica set (voters).
    ListQueues {
        /// Only this vhost's queues.
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Adds a user (no tags, no permissions: grant them with
    /// set-user-tags and set-permissions).
    AddUser {
        name: String,
        password: String,
    },
    /// Deletes a user and its permissions.
    DeleteUser {
        name: String,
    },
    ChangePassword {
        name: String,
        password: String,
    },
    /// Replaces a user's tags (administrator, monitoring, policymaker,
    /// management); none clears them.
    SetUserTags {
        name: String,
        tags: Vec<String>,
    },
    ListUsers,
    AddVhost {
        name: String,
    },
    /// Deletes a vhost with everything in it.
    DeleteVhost {
        name: String,
    },
    ListVhosts,
    /// Grants a user permissions in a vhost: regular expressions over the
    /// names of the exchanges and queues it may configure, write and read
    /// ("" for none, ".*" for all).
    SetPermissions {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
        user: String,
    },
    /// Every user's permissions in a vhost.
    ListPermissions {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// A user's permissions in every vhost.
    ListUserPermissions {
        user: String,
    },
    ListExchanges {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    ListBindings {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    ListConsumers {
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// AMQP connections of every reachable member.
    ListConnections,
    /// Closes a connection (named as list-connections shows it) with 320
    /// CONNECTION_FORCED and the reason.
    CloseConnection {
        name: String,
        reason: String,
    },
}

impl CtlCmd {
    /// The admin verb and arguments a node answers for this command, if it
    /// is one of those.
    fn admin_call(self) -> Result<(&'static str, Vec<String>), Self> {
        Ok(match self {
            Self::AddUser { name, password } => ("add-user", vec![name, password]),
            Self::DeleteUser { name } => ("delete-user", vec![name]),
            Self::ChangePassword { name, password } => ("change-password", vec![name, password]),
            Self::SetUserTags { name, tags } => ("set-user-tags", std::iter::once(name).chain(tags).collect()),
            Self::ListUsers => ("list-users", Vec::new()),
            Self::AddVhost { name } => ("add-vhost", vec![name]),
            Self::DeleteVhost { name } => ("delete-vhost", vec![name]),
            Self::ListVhosts => ("list-vhosts", Vec::new()),
            Self::SetPermissions {
                vhost,
                user,
                configure,
                write,
                read,
            } => ("set-permissions", vec![vhost, user, configure, write, read]),
            Self::ClearPermissions { vhost, user } => ("clear-permissions", vec![vhost, user]),
            Self::ListPermissions { vhost } => ("list-permissions", vec![vhost]),
            Self::ListUserPermissions { user } => ("list-user-permissions", vec![user]),
            Self::ListExchanges { vhost } => ("list-exchanges", vec![vhost]),
            Self::ListBindings { vhost } => ("list-bindings", vec![vhost]),
            Self::ListConsumers { vhost } => ("list-consumers", vec![vhost]),
            Self::ListConnections => ("list-connections", Vec::new()),
            Self::CloseConnection { name, reason } => ("close-connection", vec![name, reason]),
            other => return Err(other),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The one TLS provider (ADR 0023): tonic's server side takes the
    // process default. ring's provider is deprecated for lacking
    // post-quantum key exchange; kept for the build (see the ADR).
    #[allow(deprecated)]
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    // The chaos runner reports client errors itself; lapin's own logging
    // of each broken connection would drown its progress line.
    let default_filter = match cli.command {
        Some(Cmd::Chaos(_)) => "warn,lapin=off",
        _ => "info,openraft=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        None => cli.server,
        Some(Cmd::Server(args)) => *args,
        Some(Cmd::Chaos(chaos)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let summary = runtime.block_on(warren_chaos::run(*chaos))?;
            std::process::exit(if summary.passed() { 0 } else { 1 });
        }
        Some(Cmd::Ctl(ctl)) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let command = match ctl.command.admin_call() {
                Ok((verb, args)) => CtlCommand::Admin {
                    verb: verb.to_owned(),
                    args,
                },
                Err(CtlCmd::ClusterStatus) => CtlCommand::ClusterStatus,
                Err(CtlCmd::AddNode { id, addr }) => CtlCommand::AddNode { node_id: id, addr },
                Err(CtlCmd::RemoveNode { node_id, id }) => CtlCommand::RemoveNode {
                    node_id: node_id.or(id).context("remove-node needs a node id")?,
                },
                Err(CtlCmd::ListQueues { vhost }) => CtlCommand::ListQueues { vhost },
                Err(_) => anyhow::bail!("a ctl command was mapped to nothing (a bug)"),
            };
            let tls = warren_server::config::cluster_tls(
                ctl.cluster_tls_ca_file,
                ctl.cluster_tls_cert_file,
                ctl.cluster_tls_key_file,
            )?;
            return runtime.block_on(warren_server::ctl::run(&ctl.server, ctl.cluster_secret, tls, command));
        }
    };
    let config = Config::resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        let listener = TcpListener::bind(config.amqp_listen)
            .await
            .with_context(|| format!("binding AMQP listener on {}", config.amqp_listen))?;
        warren_server::run(config, listener, shutdown_signal()).await
    });
    if let Err(e) = result {
        // Exit now: a blocking task stuck on a failed disk must not hold
        // the process up as it drops the runtime.
        eprintln!("warren: error: {e:#}");
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        std::process::exit(1);
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
