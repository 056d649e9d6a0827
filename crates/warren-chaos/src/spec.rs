//! What `--node` says about one node of the cluster under test.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};

/// One node: where its clients connect, where its health is read, and
/// how the platform names it (a container, a pod, or a local process).
///
/// Written `key=value,key=value`: `amqp=` (required), `name=`, `id=`
/// (the node id the cluster reports as leader: Warren's number, or
/// RabbitMQ's `rabbit@host`), `http=` (management base URL, credentials
/// in it), `container=`, `pod=`, `pid-file=`, and `start=` last (a shell
/// command that starts a local node again; it takes the rest of the text,
/// commas included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub id: Option<String>,
    pub amqp: String,
    pub http: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub start: Option<String>,
}

impl FromStr for NodeSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut spec = NodeSpec {
            name: String::new(),
            id: None,
            amqp: String::new(),
            http: None,
            container: None,
            pod: None,
            pid_file: None,
            start: None,
        };
        let mut rest = text;
        while !rest.is_empty() {
            let (key, after_key) = rest
                .split_once('=')
                .with_context(|| format!("`{rest}` in --node `{text}` is not key=value"))?;
            let (value, next) = if key == "start" {
                (after_key, "")
            } else {
                after_key.split_once(',').unwrap_or((after_key, ""))
            };
            rest = next;
            if value.is_empty() {
                bail!("`{key}=` in --node `{text}` has no value");
            }
            let value = value.to_owned();
            match key.trim() {
                "name" => spec.name = value,
                "id" => spec.id = Some(value),
                "amqp" => spec.amqp = value,
                "http" => spec.http = Some(value.trim_end_matches('/').to_owned()),
                "container" => spec.container = Some(value),
                "pod" => spec.pod = Some(value),
                "pid-file" => spec.pid_file = Some(PathBuf::from(value)),
                "start" => spec.start = Some(value),
                other => bail!(
                    "unknown key `{other}` in --node `{text}` \
                     (known: name, id, amqp, http, container, pod, pid-file, start)"
                ),
            }
        }
        if spec.amqp.is_empty() {
            bail!("--node `{text}` has no amqp=URL");
        }
        if spec.name.is_empty() {
            spec.name = spec
                .container
                .clone()
                .or_else(|| spec.pod.clone())
                .or_else(|| spec.id.clone())
                .unwrap_or_else(|| spec.amqp.clone());
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeSpec;

    #[test]
    fn a_node_spec_reads_its_keys_and_start_takes_the_rest() -> anyhow::Result<()> {
        let spec: NodeSpec =
            "amqp=amqp://u:p@127.0.0.1:5672/%2f,id=2,http=http://u:p@127.0.0.1:15672/,pid-file=/tmp/n2.pid,start=warren server --join a,b"
                .parse()?;
        assert_eq!(spec.amqp, "amqp://u:p@127.0.0.1:5672/%2f");
        assert_eq!(spec.id.as_deref(), Some("2"));
        assert_eq!(spec.http.as_deref(), Some("http://u:p@127.0.0.1:15672"));
        assert_eq!(spec.start.as_deref(), Some("warren server --join a,b"));
        assert_eq!(spec.name, "2", "the name defaults to the id");
        Ok(())
    }

    #[test]
    fn a_node_spec_without_amqp_or_with_an_empty_or_unknown_key_is_refused() {
        for bad in [
            "",
            "name=a",
            "amqp=",
            "amqp=x,colour=red",
            "amqp=x,novalue",
            "amqp=x,id=",
        ] {
            assert!(bad.parse::<NodeSpec>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_container_names_the_node_when_no_name_is_given() -> anyhow::Result<()> {
        let spec: NodeSpec = "container=wchaos-warren-1-1,amqp=amqp://h/".parse()?;
        assert_eq!(spec.name, "wchaos-warren-1-1");
        let named: NodeSpec = "name=ünï,amqp=amqp://h/".parse()?;
        assert_eq!(named.name, "ünï");
        Ok(())
    }
}
