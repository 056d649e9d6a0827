//! A bare HTTP/1.1 client for the management API tests: every byte of the
//! request is the test's, so malformed and unusual requests can be sent.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::within;

/// A response: status code, lower-cased head, body.
pub struct Reply {
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    /// The same as sent.
    pub raw_head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (any case), as sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.raw_head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// It is not JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// `GET path` with `Authorization: Basic auth` (none if empty).
///
/// # Errors
/// The connection failed, or no whole response came in time.
pub async fn get(addr: SocketAddr, path: &str, auth: &str) -> anyhow::Result<Reply> {
    request(addr, "GET", path, auth, "").await
}

/// `METHOD path` with `Authorization: Basic auth` (none if empty) and a
/// JSON `body` (none if empty).
///
/// # Errors
/// The connection failed, or no whole response came in time.
pub async fn request(addr: SocketAddr, method: &str, path: &str, auth: &str, body: &str) -> anyhow::Result<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let authorization = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: Basic {auth}\r\n")
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    within("HTTP response", stream.read_to_end(&mut response)).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no status")?;
    Ok(Reply {
        status,
        head: head.to_ascii_lowercase(),
        raw_head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Decodes `%XX` escapes (nothing else), as Go's `url.PathUnescape`.
///
/// # Errors
/// A short or non-hex escape, or bytes that are not UTF-8.
pub fn path_unescape(text: &str) -> anyhow::Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).context("short escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}
