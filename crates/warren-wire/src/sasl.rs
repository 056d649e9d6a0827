//! SASL responses of `connection.start-ok`: PLAIN and AMQPLAIN.

use std::fmt;

use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::WireError;

/// The SASL mechanisms [`parse_sasl_response`] understands, in the order the
/// server should offer them in `connection.start` (space separated).
pub const SASL_MECHANISMS: &str = "PLAIN AMQPLAIN";

/// A username and password taken from a SASL response.
///
/// `Debug` hides the password so credentials can sit in traced structs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity (PLAIN `authcid`, AMQPLAIN `LOGIN`).
    pub username: String,
    /// The password, as sent.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses the `response` field of `connection.start-ok` for `mechanism`.
///
/// - `PLAIN` (RFC 4616): `[authzid] NUL authcid NUL passwd`. The
///   authorization identity is ignored (RabbitMQ ignores it too); the
///   username must be non-empty; neither part may contain NUL.
/// - `AMQPLAIN` (RabbitMQ): the body of a field table — without its 4-byte
///   length prefix, as pika, Java and lapin send it — holding `LOGIN` and
///   `PASSWORD` as long (or short) strings. A response that does carry a
///   correct length prefix is accepted too.
///
/// Mechanism names are matched exactly (they are upper case on the wire).
///
/// # Errors
/// - [`WireError::UnsupportedMechanism`] for any other mechanism;
/// - [`WireError::BadCredentials`] when the response does not parse, lacks a
///   field, or is not UTF-8.
pub fn parse_sasl_response(mechanism: &str, response: &[u8]) -> Result<Credentials, WireError> {
    match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        other => Err(WireError::UnsupportedMechanism(other.to_owned())),
    }
}

fn parse_plain(response: &[u8]) -> Result<Credentials, WireError> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(_authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::BadCredentials(
            "PLAIN response must be [authzid] NUL username NUL password".to_owned(),
        ));
    };
    if username.is_empty() {
        return Err(WireError::BadCredentials(
            "PLAIN response has an empty username".to_owned(),
        ));
    }
    Ok(Credentials {
        username: utf8(username, "username")?,
        password: utf8(password, "password")?,
    })
}

fn parse_amqplain(response: &[u8]) -> Result<Credentials, WireError> {
    let table = amqplain_table(response)?;
    Ok(Credentials {
        username: amqplain_field(&table, "LOGIN")?,
        password: amqplain_field(&table, "PASSWORD")?,
    })
}

/// The field table of an AMQPLAIN response, with or without length prefix.
fn amqplain_table(response: &[u8]) -> Result<FieldTable, WireError> {
    let bad = || WireError::BadCredentials("AMQPLAIN response is not a field table".to_owned());
    let has_prefix = match response {
        [a, b, c, d, rest @ ..] => u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len(),
        _ => false,
    };
    let framed;
    let table_bytes = if has_prefix {
        response
    } else {
        let len = u32::try_from(response.len()).map_err(|_| bad())?;
        framed = [&len.to_be_bytes()[..], response].concat();
        &framed[..]
    };
    match parse_field_table(table_bytes) {
        Ok((&[], table)) => Ok(table),
        _ => Err(bad()),
    }
}

fn amqplain_field(table: &FieldTable, key: &str) -> Result<String, WireError> {
    match table.inner().get(key) {
        Some(AMQPValue::LongString(value)) => utf8(value.as_bytes(), key),
        Some(AMQPValue::ShortString(value)) => Ok(value.as_str().to_owned()),
        Some(other) => Err(WireError::BadCredentials(format!(
            "AMQPLAIN {key} is a {:?}, not a string",
            other.get_type()
        ))),
        None => Err(WireError::BadCredentials(format!("AMQPLAIN response has no {key}"))),
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, WireError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadCredentials(format!("{what} is not valid UTF-8")))
}
