//! The node's side of `warren ctl`'s rabbitmqctl-style commands (issue 10,
//! item 1): users, vhosts, permissions, and listings of exchanges,
//! bindings, consumers and this node's connections. Changes are commands
//! through Raft, submitted as a short-lived connection of this node
//! ([`Frontend::execute`]) and answered once applied here; listings read
//! this node's replica.

use std::sync::{Arc, OnceLock};

use warren_amqp::{ExecuteError, Frontend};
use warren_core::access::Pattern;
use warren_core::exchange::Destination;
use warren_core::{Broker, Command, UserName, VHost};
use warren_rpc::{AdminError, AdminHandler, AdminTable};

/// Answers `Admin` requests for this node, once its front end is up
/// (the cluster port serves before: other nodes need it to elect).
#[derive(Default)]
pub struct Admin {
    frontend: OnceLock<Arc<Frontend>>,
}

impl Admin {
    /// Starts answering, with `frontend`.
    pub fn start(&self, frontend: Arc<Frontend>) {
        let _ = self.frontend.set(frontend);
    }

    fn read<R>(&self, f: impl FnOnce(&Broker) -> R) -> R {
        self.frontend().node.read(f)
    }

    /// Set before any request reaches the verbs (checked in `admin`).
    fn frontend(&self) -> &Arc<Frontend> {
        self.frontend
            .get()
            .unwrap_or_else(|| unreachable!("admin commands wait for the front end"))
    }

    /// Submits `command` and says `done` once it is applied.
    async fn change(&self, command: Command, done: String) -> Result<AdminTable, AdminError> {
        self.frontend().execute(command).await.map_err(|e| match e {
            ExecuteError::Refused(refused) if refused.reply_code() == warren_core::reply_code::NOT_FOUND => {
                AdminError::NotFound(refused.to_string())
            }
            ExecuteError::Refused(refused) => AdminError::BadRequest(refused.to_string()),
            ExecuteError::Unavailable(reason) => AdminError::Failed(reason),
        })?;
        Ok(AdminTable {
            message: done,
            ..AdminTable::default()
        })
    }

    fn require_user(&self, name: &UserName) -> Result<warren_core::User, AdminError> {
        self.read(|broker| broker.user(name).cloned())
            .ok_or_else(|| AdminError::NotFound(format!("no user '{name}'")))
    }

    fn require_vhost(&self, vhost: &VHost) -> Result<(), AdminError> {
        if self.read(|broker| broker.has_vhost(vhost)) {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("no vhost '{vhost}'")))
        }
    }

    async fn put_user(&self, user: warren_core::User, done: String) -> Result<AdminTable, AdminError> {
        let command = Command::PutUser {
            name: user.name,
            password_hash: user.password_hash,
            tags: user.tags,
        };
        self.change(command, done).await
    }
}

/// `args` as exactly `N` values.
fn exactly<const N: usize>(verb: &str, args: &[String], usage: &str) -> Result<[String; N], AdminError> {
    <[String; N]>::try_from(args.to_vec()).map_err(|_| AdminError::BadRequest(format!("usage: {verb} {usage}")))
}

fn table(columns: &[&str], rows: Vec<Vec<String>>) -> AdminTable {
    AdminTable {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
        message: String::new(),
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "true" } else { "false" }.to_owned()
}

#[warren_rpc::async_trait]
impl AdminHandler for Admin {
    async fn admin(&self, verb: &str, args: &[String]) -> Result<AdminTable, AdminError> {
        if self.frontend.get().is_none() {
            return Err(AdminError::Failed("the node is still starting".to_owned()));
        }
        match verb {
            "add-user" => {
                let [name, password] = exactly(verb, args, "NAME PASSWORD")?;
                let name = UserName::new(name);
                if name.as_str().is_empty() {
                    return Err(AdminError::BadRequest("a user needs a name".to_owned()));
                }
                if self.read(|broker| broker.user(&name).is_some()) {
                    return Err(AdminError::BadRequest(format!("user '{name}' already exists")));
                }
                let user = warren_core::User {
                    name: name.clone(),
                    password_hash: warren_amqp::password::hash_password(&password),
                    tags: Vec::new(),
                };
                self.put_user(user, format!("user '{name}' added")).await
            }
            "delete-user" => {
                let [name] = exactly(verb, args, "NAME")?;
                let name = UserName::new(name);
                self.require_user(&name)?;
                let done = format!("user '{name}' deleted");
                self.change(Command::DeleteUser { name }, done).await
            }
            "change-password" => {
                let [name, password] = exactly(verb, args, "NAME PASSWORD")?;
                let mut user = self.require_user(&UserName::new(name))?;
                user.password_hash = warren_amqp::password::hash_password(&password);
                let done = format!("password of user '{}' changed", user.name);
                self.put_user(user, done).await
            }
            "set-user-tags" => {
                let Some((name, tags)) = args.split_first() else {
                    return Err(AdminError::BadRequest(format!("usage: {verb} NAME [TAG...]")));
                };
                let mut user = self.require_user(&UserName::new(name.clone()))?;
                user.tags = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
                let done = format!("tags of user '{}' set to [{}]", user.name, user.tags.join(", "));
                self.put_user(user, done).await
            }
            "list-users" => {
                exactly::<0>(verb, args, "")?;
                let rows = self.read(|broker| {
                    broker
                        .users()
                        .map(|u| vec![u.name.to_string(), format!("[{}]", u.tags.join(", "))])
                        .collect()
                });
                Ok(table(&["user", "tags"], rows))
            }
            "add-vhost" => {
                let [name] = exactly(verb, args, "NAME")?;
                let vhost = VHost::new(name);
                if vhost.as_str().is_empty() {
                    return Err(AdminError::BadRequest("a vhost needs a name".to_owned()));
                }
                let done = format!("vhost '{vhost}' added");
                self.change(Command::DeclareVHost { vhost }, done).await
            }
            "delete-vhost" => {
                let [name] = exactly(verb, args, "NAME")?;
                let vhost = VHost::new(name);
                self.require_vhost(&vhost)?;
                let done = format!("vhost '{vhost}' deleted");
                self.change(Command::DeleteVHost { vhost }, done).await
            }
            "list-vhosts" => {
                exactly::<0>(verb, args, "")?;
                let rows = self.read(|broker| broker.vhosts().keys().map(|v| vec![v.to_string()]).collect());
                Ok(table(&["name"], rows))
            }
            "set-permissions" => {
                let [vhost, user, configure, write, read] = exactly(verb, args, "VHOST USER CONFIGURE WRITE READ")?;
                let (vhost, user) = (VHost::new(vhost), UserName::new(user));
                self.require_user(&user)?;
                self.require_vhost(&vhost)?;
                for (what, pattern) in [("configure", &configure), ("write", &write), ("read", &read)] {
                    Pattern::parse(pattern).map_err(|e| {
                        AdminError::BadRequest(format!("{what}: '{pattern}' is not a regular expression: {e}"))
                    })?;
                }
                let done = format!("permissions of user '{user}' in vhost '{vhost}' set");
                let command = Command::SetPermissions {
                    user,
                    vhost,
                    configure,
                    write,
                    read,
                };
                self.change(command, done).await
            }
            "clear-permissions" => {
                let [vhost, user] = exactly(verb, args, "VHOST USER")?;
                let (vhost, user) = (VHost::new(vhost), UserName::new(user));
                if self.read(|broker| broker.access().permission(&user, &vhost).is_none()) {
                    return Err(AdminError::NotFound(format!(
                        "user '{user}' has no permissions in vhost '{vhost}'"
                    )));
                }
                let done = format!("permissions of user '{user}' in vhost '{vhost}' cleared");
                self.change(Command::ClearPermissions { user, vhost }, done).await
            }
            "list-permissions" | "list-user-permissions" => {
                let [name] = exactly(verb, args, if verb == "list-permissions" { "VHOST" } else { "USER" })?;
                let by_vhost = verb == "list-permissions";
                if by_vhost {
                    self.require_vhost(&VHost::new(name.clone()))?;
                } else {
                    self.require_user(&UserName::new(name.clone()))?;
                }
                let rows = self.read(|broker| {
                    broker
                        .access()
                        .permissions()
                        .filter(|(user, vhost, _)| {
                            if by_vhost {
                                vhost.as_str() == name
                            } else {
                                user.as_str() == name
                            }
                        })
                        .map(|(user, vhost, p)| {
                            let who = if by_vhost { user.to_string() } else { vhost.to_string() };
                            vec![
                                who,
                                p.configure.as_str().to_owned(),
                                p.write.as_str().to_owned(),
                                p.read.as_str().to_owned(),
                            ]
                        })
                        .collect()
                });
                let first = if by_vhost { "user" } else { "vhost" };
                Ok(table(&[first, "configure", "write", "read"], rows))
            }
            "list-exchanges" => {
                let [vhost] = exactly(verb, args, "VHOST")?;
                let vhost = VHost::new(vhost);
                let rows = self.read(|broker| {
                    let state = broker.vhosts().get(&vhost)?;
                    let default = vec![
                        String::new(),
                        "direct".to_owned(),
                        yes_no(true),
                        yes_no(false),
                        yes_no(false),
                    ];
                    let declared = state.exchanges.values().map(|x| {
                        vec![
                            x.name.to_string(),
                            x.kind.as_str().to_owned(),
                            yes_no(x.durable),
                            yes_no(x.auto_delete),
                            yes_no(x.internal),
                        ]
                    });
                    Some(std::iter::once(default).chain(declared).collect())
                });
                let rows = rows.ok_or_else(|| AdminError::NotFound(format!("no vhost '{vhost}'")))?;
                Ok(table(&["name", "type", "durable", "auto_delete", "internal"], rows))
            }
            "list-bindings" => {
                let [vhost] = exactly(verb, args, "VHOST")?;
                let vhost = VHost::new(vhost);
                let rows = self.read(|broker| {
                    let state = broker.vhosts().get(&vhost)?;
                    let implicit = state
                        .queues
                        .keys()
                        .map(|q| vec![String::new(), q.to_string(), "queue".to_owned(), q.to_string()]);
                    let declared = state.exchanges.values().flat_map(|x| {
                        x.bindings.iter().map(|b| {
                            let (destination, kind) = match &b.destination {
                                Destination::Queue(q) => (q.to_string(), "queue"),
                                Destination::Exchange(e) => (e.to_string(), "exchange"),
                            };
                            vec![x.name.to_string(), destination, kind.to_owned(), b.routing_key.clone()]
                        })
                    });
                    Some(implicit.chain(declared).collect())
                });
                let rows = rows.ok_or_else(|| AdminError::NotFound(format!("no vhost '{vhost}'")))?;
                Ok(table(
                    &["source_name", "destination_name", "destination_kind", "routing_key"],
                    rows,
                ))
            }
            "list-consumers" => {
                let [vhost] = exactly(verb, args, "VHOST")?;
                let vhost = VHost::new(vhost);
                self.require_vhost(&vhost)?;
                let rows = self.read(|broker| {
                    broker
                        .consumers()
                        .filter(|(_, _, c)| c.vhost == vhost)
                        .map(|(channel, tag, c)| {
                            vec![
                                c.queue.to_string(),
                                format!(
                                    "node {} connection {} channel {}",
                                    channel.conn.node.0, channel.conn.seq, channel.channel
                                ),
                                tag.to_string(),
                                yes_no(!c.no_ack),
                                c.prefetch.to_string(),
                                yes_no(c.exclusive),
                            ]
                        })
                        .collect()
                });
                Ok(table(
                    &[
                        "queue_name",
                        "channel",
                        "consumer_tag",
                        "ack_required",
                        "prefetch_count",
                        "exclusive",
                    ],
                    rows,
                ))
            }
            "list-connections" => {
                exactly::<0>(verb, args, "")?;
                let node = self.frontend().node_id.0;
                let rows = self
                    .frontend()
                    .registry
                    .clients()
                    .into_iter()
                    .map(|(id, info)| {
                        vec![
                            info.name,
                            node.to_string(),
                            id.seq.to_string(),
                            info.user,
                            info.vhost,
                            info.connected_at_ms.to_string(),
                        ]
                    })
                    .collect();
                Ok(table(
                    &["name", "node", "number", "user", "vhost", "connected_at"],
                    rows,
                ))
            }
            "connections" => {
                // Every field of this node's clients, for the HTTP API of
                // another node (`/api/connections`).
                exactly::<0>(verb, args, "")?;
                let rows = self
                    .frontend()
                    .registry
                    .clients()
                    .into_iter()
                    .map(|(id, info)| info.to_cells(id.seq))
                    .collect();
                Ok(table(&warren_amqp::ClientInfo::COLUMNS, rows))
            }
            "close-connection" => {
                let [name, reason] = exactly(verb, args, "NAME REASON")?;
                if self.frontend().registry.close_client(&name, &reason) {
                    Ok(AdminTable {
                        message: format!("connection '{name}' closed"),
                        ..AdminTable::default()
                    })
                } else {
                    Err(AdminError::NotFound(format!("no connection '{name}' on this node")))
                }
            }
            other => Err(AdminError::BadRequest(format!("unknown command '{other}'"))),
        }
    }
}
