//! A minimal HTTP/1.0 client for health and leader probes and the
//! membership fault: the runner asks a node a few questions a second and
//! needs no HTTP client crate for it.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take in all.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of an answer that is read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// `http://[user:pass@]host:port` taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    pub authority: String,
    pub credentials: Option<String>,
}

impl BaseUrl {
    /// Parses `base` (no path; a trailing `/` is ignored).
    ///
    /// # Errors
    /// Not `http://`, or no host.
    pub fn parse(base: &str) -> anyhow::Result<Self> {
        let Some(rest) = base.strip_prefix("http://") else {
            bail!("`{base}` is not an http:// URL (https is not supported by the probes)");
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            bail!("`{base}` has a path; give the management base URL only");
        }
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((creds, host)) => (Some(creds.to_owned()), host.to_owned()),
            None => (None, rest.to_owned()),
        };
        if authority.is_empty() {
            bail!("`{base}` names no host");
        }
        Ok(Self { authority, credentials })
    }
}

/// GETs `path` from `base`; returns the status code and the body.
///
/// # Errors
/// Connecting, writing or reading failed or took longer than
/// [`PROBE_TIMEOUT`], or the answer is not HTTP.
pub async fn get(base: &BaseUrl, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(PROBE_TIMEOUT, get_unbounded(base, path))
        .await
        .with_context(|| format!("GET {path} from {}: no answer within {PROBE_TIMEOUT:?}", base.authority))?
}

/// Sends `method path` to `base` with a JSON `body` if given (the
/// membership fault's DELETE and POST); returns the status code and the
/// body of the answer.
///
/// # Errors
/// As for [`get`].
pub async fn send(base: &BaseUrl, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(PROBE_TIMEOUT, request_unbounded(base, method, path, body))
        .await
        .with_context(|| {
            format!(
                "{method} {path} to {}: no answer within {PROBE_TIMEOUT:?}",
                base.authority
            )
        })?
}

async fn get_unbounded(base: &BaseUrl, path: &str) -> anyhow::Result<(u16, String)> {
    request_unbounded(base, "GET", path, None).await
}

async fn request_unbounded(
    base: &BaseUrl,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(&base.authority)
        .await
        .with_context(|| format!("connect to {}", base.authority))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", base.authority);
    if let Some(credentials) = &base.credentials {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer).await?;
    parse_answer(&answer)
}

/// The status code and body of an HTTP/1.x answer.
fn parse_answer(answer: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("not an HTTP answer: {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 answer: {status_line:?}");
    }
    let code = code.parse().with_context(|| format!("status in {status_line:?}"))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::{parse_answer, BaseUrl};

    #[test]
    fn a_base_url_keeps_its_credentials_apart() -> anyhow::Result<()> {
        let url = BaseUrl::parse("http://guest:p@ss@127.0.0.1:15672/")?;
        assert_eq!(url.authority, "127.0.0.1:15672");
        assert_eq!(url.credentials.as_deref(), Some("guest:p@ss"));
        assert!(BaseUrl::parse("https://h:1").is_err());
        assert!(BaseUrl::parse("http://").is_err());
        assert!(BaseUrl::parse("http://h:1/api").is_err());
        Ok(())
    }

    #[test]
    fn an_answer_gives_its_status_and_body() -> anyhow::Result<()> {
        let (code, body) = parse_answer(b"HTTP/1.0 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")?;
        assert_eq!((code, body.as_str()), (503, "{}"));
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        Ok(())
    }
}
