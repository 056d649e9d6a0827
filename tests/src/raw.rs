//! A deliberately tiny AMQP 0-9-1 frame builder and client over a raw
//! `TcpStream`, for tests that must send what no client library would.
//!
//! A frame on the wire is `type: u8, channel: u16 BE, size: u32 BE, payload,
//! 0xCE`; a method payload is `class: u16, method: u16, arguments`.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The protocol header an AMQP 0-9-1 client sends and a server echoes back.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Frame types.
pub const FRAME_METHOD: u8 = 1;
/// Content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// Every frame ends with this octet.
pub const FRAME_END: u8 = 0xCE;

/// `(class, method)` ids used by the tests.
pub mod ids {
    /// connection.start
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    /// connection.start-ok
    pub const CONNECTION_START_OK: (u16, u16) = (10, 11);
    /// connection.tune
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    /// connection.tune-ok
    pub const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    /// connection.open
    pub const CONNECTION_OPEN: (u16, u16) = (10, 40);
    /// connection.open-ok
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    /// connection.close
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    /// connection.close-ok
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    /// channel.open
    pub const CHANNEL_OPEN: (u16, u16) = (20, 10);
    /// channel.open-ok
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    /// channel.close
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    /// channel.close-ok
    pub const CHANNEL_CLOSE_OK: (u16, u16) = (20, 41);
    /// queue.declare
    pub const QUEUE_DECLARE: (u16, u16) = (50, 10);
    /// queue.declare-ok
    pub const QUEUE_DECLARE_OK: (u16, u16) = (50, 11);
    /// basic.publish
    pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
    /// basic.deliver
    pub const BASIC_DELIVER: (u16, u16) = (60, 60);
    /// basic.get
    pub const BASIC_GET: (u16, u16) = (60, 70);
    /// basic.get-ok
    pub const BASIC_GET_OK: (u16, u16) = (60, 71);
    /// basic.get-empty
    pub const BASIC_GET_EMPTY: (u16, u16) = (60, 72);
}

/// Builder for method arguments and field tables, big-endian as the spec says.
#[derive(Debug, Default, Clone)]
pub struct Args(pub Vec<u8>);

impl Args {
    /// Empty argument list.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends an octet.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    /// Appends a short.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a long.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a long long.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a short string (panics past 255 bytes: use [`Args::bytes`] to lie).
    pub fn shortstr(mut self, s: &str) -> Self {
        let len = u8::try_from(s.len()).unwrap_or_else(|_| panic!("short string over 255 bytes: {}", s.len()));
        self.0.push(len);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// Appends a long string.
    pub fn longstr(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    /// Appends an encoded field table (`table` is the entries, without the length).
    pub fn table(mut self, table: &[u8]) -> Self {
        self.0.extend_from_slice(&(table.len() as u32).to_be_bytes());
        self.0.extend_from_slice(table);
        self
    }
    /// Appends an empty field table.
    pub fn empty_table(self) -> Self {
        self.table(&[])
    }
    /// Appends raw bytes, for lies.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Packs up to 8 bits, first flag in the lowest bit.
    pub fn bits(self, flags: &[bool]) -> Self {
        let octet = flags
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &f)| acc | (u8::from(f) << i));
        self.u8(octet)
    }
    /// The encoded bytes.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// One field-table entry whose value is a long string (`S`).
pub fn table_entry_longstr(key: &str, value: &[u8]) -> Vec<u8> {
    Args::new().shortstr(key).u8(b'S').longstr(value).build()
}

/// A whole frame: header, payload, frame-end.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_with_end(kind, channel, payload, FRAME_END)
}

/// A frame with a chosen frame-end octet.
pub fn frame_with_end(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(end);
    out
}

/// A frame header that announces `size` payload bytes (and nothing else).
pub fn frame_header(kind: u8, channel: u16, size: u32) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out
}

/// A method frame payload: class, method, arguments.
pub fn method_payload((class, method): (u16, u16), args: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.len() + 4);
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out.extend_from_slice(args);
    out
}

/// A whole method frame.
pub fn method_frame(channel: u16, id: (u16, u16), args: &[u8]) -> Vec<u8> {
    frame(FRAME_METHOD, channel, &method_payload(id, args))
}

/// A content header frame for class `basic` with no properties.
pub fn content_header_frame(channel: u16, body_size: u64) -> Vec<u8> {
    let payload = Args::new().u16(60).u16(0).u64(body_size).u16(0).build();
    frame(FRAME_HEADER, channel, &payload)
}

/// The frames of one `basic.publish` to the default exchange with routing
/// key `routing_key` and `body` (method, content header, one body frame).
pub fn publish_frames(channel: u16, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut frames = method_frame(channel, ids::BASIC_PUBLISH, &basic_publish_args("", routing_key, false));
    frames.extend(content_header_frame(channel, body.len() as u64));
    frames.extend(frame(FRAME_BODY, channel, body));
    frames
}

/// The frames of one `basic.publish` to the default exchange whose content
/// header carries `headers` (an encoded field table; empty: no properties)
/// and whose body is cut into frames that fit `frame_max`.
pub fn publish_frames_with_headers(
    channel: u16,
    routing_key: &str,
    headers: &[u8],
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    let mut frames = method_frame(channel, ids::BASIC_PUBLISH, &basic_publish_args("", routing_key, false));
    let header = Args::new().u16(60).u16(0).u64(body.len() as u64);
    let header = if headers.is_empty() {
        header.u16(0)
    } else {
        header.u16(0x2000).table(headers)
    };
    frames.extend(frame(FRAME_HEADER, channel, &header.build()));
    for chunk in body.chunks(frame_max as usize - 8) {
        frames.extend(frame(FRAME_BODY, channel, chunk));
    }
    frames
}

/// basic.publish arguments.
pub fn basic_publish_args(exchange: &str, routing_key: &str, mandatory: bool) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(exchange)
        .shortstr(routing_key)
        .bits(&[mandatory, false])
        .build()
}

/// queue.declare arguments (passive, durable, exclusive, auto-delete, no-wait).
pub fn queue_declare_args(queue: &str, durable: bool) -> Vec<u8> {
    Args::new()
        .u16(0)
        .shortstr(queue)
        .bits(&[false, durable, false, false, false])
        .empty_table()
        .build()
}

/// A frame read back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload without header and frame-end.
    pub payload: Vec<u8>,
}

impl Frame {
    /// `(class, method)` if this is a method frame.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let class = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let method = u16::from_be_bytes([self.payload[2], self.payload[3]]);
        Some((class, method))
    }

    /// The arguments of a method frame.
    pub fn method_args(&self) -> &[u8] {
        self.payload.get(4..).unwrap_or(&[])
    }

    /// Size of the frame on the wire (header + payload + frame-end).
    pub fn wire_size(&self) -> usize {
        self.payload.len() + 8
    }
}

/// The arguments of a `connection.close` or `channel.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// `true` for connection.close, `false` for channel.close.
    pub connection: bool,
    /// Channel the close came on.
    pub channel: u16,
    /// AMQP reply code.
    pub code: u16,
    /// Reply text.
    pub text: String,
    /// Class id of the failing method (0 if none).
    pub class_id: u16,
    /// Method id of the failing method (0 if none).
    pub method_id: u16,
}

/// Parses a close method's arguments: reply-code, reply-text, class-id, method-id.
pub fn parse_close(frame: &Frame) -> Option<Close> {
    let connection = match frame.method_id()? {
        ids::CONNECTION_CLOSE => true,
        ids::CHANNEL_CLOSE => false,
        _ => return None,
    };
    let args = frame.method_args();
    let code = u16::from_be_bytes([*args.first()?, *args.get(1)?]);
    let len = usize::from(*args.get(2)?);
    let text = String::from_utf8_lossy(args.get(3..3 + len)?).to_string();
    let rest = args.get(3 + len..)?;
    let class_id = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    let method_id = u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]);
    Some(Close {
        connection,
        channel: frame.channel,
        code,
        text,
        class_id,
        method_id,
    })
}

/// What the server ended a bad exchange with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It sent `connection.close` or `channel.close`.
    Closed(Close),
    /// It closed the socket without a close method.
    Eof,
}

/// The mechanisms a `connection.start` frame offers.
///
/// # Panics
/// On a frame too short for its lengths (a test failure).
pub fn start_mechanisms(start: &Frame) -> Vec<String> {
    let args = start.method_args();
    let table_len = u32::from_be_bytes([args[2], args[3], args[4], args[5]]) as usize;
    let rest = &args[6 + table_len..];
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    String::from_utf8_lossy(&rest[4..4 + len])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A `connection.start-ok` choosing `mechanism` with `response`.
pub fn start_ok_frame(mechanism: &str, response: &[u8]) -> Vec<u8> {
    let start_ok = Args::new()
        .table(&[])
        .shortstr(mechanism)
        .longstr(response)
        .shortstr("en_US")
        .build();
    method_frame(0, ids::CONNECTION_START_OK, &start_ok)
}

/// Negotiated connection parameters for [`RawClient::handshake`].
#[derive(Debug, Clone, Copy)]
pub struct Tune {
    /// 0 = take the server's value.
    pub channel_max: u16,
    /// 0 = take the server's value.
    pub frame_max: u32,
    /// Seconds; 0 disables.
    pub heartbeat: u16,
}

impl Default for Tune {
    fn default() -> Self {
        Self {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        }
    }
}

/// What the server proposed in `connection.tune`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTune {
    /// Server channel_max.
    pub channel_max: u16,
    /// Server frame_max.
    pub frame_max: u32,
    /// Server heartbeat.
    pub heartbeat: u16,
}

/// A raw AMQP client: one socket, frames in and out, no cleverness.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// What the server proposed at tune time (after [`RawClient::handshake`]).
    pub server_tune: Option<ServerTune>,
    /// Everything read that was not asked for yet (heartbeats are skipped).
    pub read_timeout: Duration,
}

impl RawClient {
    /// Opens the TCP connection (nothing is sent).
    ///
    /// # Errors
    /// The connection was refused.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(crate::STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("TCP connect timed out")?
            .context("TCP connect failed")?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::new(),
            server_tune: None,
            read_timeout: crate::STEP_TIMEOUT,
        })
    }

    /// Connects and performs the handshake up to `connection.open-ok` as
    /// `guest`/`guest` on vhost `/` with PLAIN.
    ///
    /// # Errors
    /// The server deviated from the handshake.
    pub async fn open(addr: SocketAddr, tune: Tune) -> anyhow::Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.handshake(tune).await?;
        Ok(client)
    }

    /// Sends bytes as they are. A write error (the server already closed) is
    /// not an error here: the tests look at what came back.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Half-closes our side (the server sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads exactly `n` raw bytes (used for the protocol header reply).
    ///
    /// # Errors
    /// EOF or timeout before `n` bytes.
    pub async fn read_exact_raw(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buffer.len() < n {
            if self.fill().await? == 0 {
                bail!("EOF after {} of {n} bytes: {:?}", self.buffer.len(), self.buffer);
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// Whether the server closes the socket (EOF or reset) within the read timeout,
    /// discarding anything it sends first.
    pub async fn closes_socket(&mut self) -> bool {
        loop {
            match self.fill().await {
                Ok(0) => return true,
                Ok(_) => self.buffer.clear(),
                Err(e) => return e.downcast_ref::<std::io::Error>().is_some(),
            }
        }
    }

    async fn fill(&mut self) -> anyhow::Result<usize> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(self.read_timeout, self.stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow::anyhow!("no data from the server within {:?}", self.read_timeout))??;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the next frame, including heartbeats. `Ok(None)` on a clean EOF.
    ///
    /// # Errors
    /// Timeout, I/O error, or a malformed frame from the server.
    pub async fn read_any_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if self.buffer.len() >= 7 {
                let size =
                    u32::from_be_bytes([self.buffer[3], self.buffer[4], self.buffer[5], self.buffer[6]]) as usize;
                if self.buffer.len() >= size + 8 {
                    let bytes: Vec<u8> = self.buffer.drain(..size + 8).collect();
                    if bytes[size + 7] != FRAME_END {
                        bail!("server sent a frame with end octet {:#x}", bytes[size + 7]);
                    }
                    return Ok(Some(Frame {
                        kind: bytes[0],
                        channel: u16::from_be_bytes([bytes[1], bytes[2]]),
                        payload: bytes[7..size + 7].to_vec(),
                    }));
                }
            }
            match self.fill().await {
                Ok(0) => {
                    if self.buffer.is_empty() {
                        return Ok(None);
                    }
                    bail!("EOF inside a frame ({} bytes pending)", self.buffer.len());
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(io) = e.downcast_ref::<std::io::Error>() {
                        if matches!(
                            io.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        ) {
                            return Ok(None);
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Reads the next non-heartbeat frame; `Ok(None)` on EOF.
    ///
    /// # Errors
    /// See [`RawClient::read_any_frame`].
    pub async fn read_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            match self.read_any_frame().await? {
                Some(f) if f.kind == FRAME_HEARTBEAT => continue,
                other => return Ok(other),
            }
        }
    }

    /// Reads frames until a method with id `id` arrives.
    ///
    /// # Errors
    /// EOF, timeout, or a close method first (its code is in the error).
    pub async fn expect_method(&mut self, id: (u16, u16)) -> anyhow::Result<Frame> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                bail!("EOF while waiting for method {id:?}");
            };
            if frame.method_id() == Some(id) {
                return Ok(frame);
            }
            if let Some(close) = parse_close(&frame) {
                bail!("server closed while waiting for {id:?}: {close:?}");
            }
        }
    }

    /// The handshake: header, start/start-ok (PLAIN guest/guest), tune/tune-ok, open/open-ok.
    ///
    /// # Errors
    /// Unexpected frames or EOF.
    pub async fn handshake(&mut self, tune: Tune) -> anyhow::Result<()> {
        self.send(PROTOCOL_HEADER).await;
        self.expect_method(ids::CONNECTION_START).await?;
        self.send(&start_ok_frame("PLAIN", b"\0guest\0guest")).await;
        let tune_frame = self.expect_method(ids::CONNECTION_TUNE).await?;
        let a = tune_frame.method_args();
        if a.len() < 8 {
            bail!("short connection.tune: {a:?}");
        }
        self.server_tune = Some(ServerTune {
            channel_max: u16::from_be_bytes([a[0], a[1]]),
            frame_max: u32::from_be_bytes([a[2], a[3], a[4], a[5]]),
            heartbeat: u16::from_be_bytes([a[6], a[7]]),
        });
        let tune_ok = Args::new()
            .u16(tune.channel_max)
            .u32(tune.frame_max)
            .u16(tune.heartbeat)
            .build();
        self.send(&method_frame(0, ids::CONNECTION_TUNE_OK, &tune_ok)).await;
        let open = Args::new().shortstr("/").shortstr("").u8(0).build();
        self.send(&method_frame(0, ids::CONNECTION_OPEN, &open)).await;
        self.expect_method(ids::CONNECTION_OPEN_OK).await?;
        Ok(())
    }

    /// Opens channel `channel` and waits for open-ok.
    ///
    /// # Errors
    /// See [`RawClient::expect_method`].
    pub async fn open_channel(&mut self, channel: u16) -> anyhow::Result<()> {
        self.send(&method_frame(
            channel,
            ids::CHANNEL_OPEN,
            &Args::new().shortstr("").build(),
        ))
        .await;
        self.expect_method(ids::CHANNEL_OPEN_OK).await?;
        Ok(())
    }

    /// Reads until the server sends a close method (which it answers with
    /// close-ok, as a client must) or closes the socket.
    ///
    /// # Errors
    /// Timeout or a malformed frame.
    pub async fn expect_close(&mut self) -> anyhow::Result<Outcome> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                return Ok(Outcome::Eof);
            };
            if let Some(close) = parse_close(&frame) {
                let ok = if close.connection {
                    ids::CONNECTION_CLOSE_OK
                } else {
                    ids::CHANNEL_CLOSE_OK
                };
                self.send(&method_frame(frame.channel, ok, &[])).await;
                return Ok(Outcome::Closed(close));
            }
        }
    }
}
