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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials as ClientCredentials, SASLMechanism};

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    fn client_response(mechanism: SASLMechanism, username: &str, password: &str) -> Vec<u8> {
        ClientCredentials::new(username.into(), password.into())
            .sasl_auth_string(mechanism)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn plain_response_gives_username_and_password() {
        assert_eq!(
            parse_sasl_response("PLAIN", b"\0guest\0guest"),
            Ok(creds("guest", "guest"))
        );
        let from_client = client_response(SASLMechanism::Plain, "alice", "s3cr\u{e9}t");
        assert_eq!(
            parse_sasl_response("PLAIN", &from_client),
            Ok(creds("alice", "s3cr\u{e9}t"))
        );
    }

    #[test]
    fn plain_ignores_the_authorization_identity_and_allows_an_empty_password() {
        assert_eq!(parse_sasl_response("PLAIN", b"admin\0bob\0pw"), Ok(creds("bob", "pw")));
        assert_eq!(parse_sasl_response("PLAIN", b"\0bob\0"), Ok(creds("bob", "")));
    }

    #[test]
    fn malformed_plain_responses_are_bad_credentials() {
        for response in [
            &b""[..],
            b"guest",
            b"\0guest",
            b"\0\0guest",
            b"\0guest\0pass\0extra",
            b"\0gu\xFFest\0pass",
            b"\0guest\0pa\xC3",
        ] {
            let result = parse_sasl_response("PLAIN", response);
            assert!(
                matches!(result, Err(WireError::BadCredentials(_))),
                "{response:?}: {result:?}"
            );
        }
    }

    #[test]
    fn amqplain_response_without_length_prefix_as_clients_send_it() {
        let response = client_response(SASLMechanism::AMQPlain, "guest", "pw");
        assert_eq!(&response[..6], b"\x05LOGIN", "no length prefix");
        assert_eq!(parse_sasl_response("AMQPLAIN", &response), Ok(creds("guest", "pw")));
    }

    #[test]
    fn amqplain_response_with_length_prefix_is_accepted() {
        let body = client_response(SASLMechanism::AMQPlain, "guest", "pw");
        let mut prefixed = (body.len() as u32).to_be_bytes().to_vec();
        prefixed.extend_from_slice(&body);
        assert_eq!(parse_sasl_response("AMQPLAIN", &prefixed), Ok(creds("guest", "pw")));
    }

    #[test]
    fn amqplain_without_password_or_with_wrong_types_is_bad_credentials() {
        let only_login = b"\x05LOGINS\x00\x00\x00\x05guest";
        let err = parse_sasl_response("AMQPLAIN", only_login).unwrap_err();
        assert!(err.to_string().contains("no PASSWORD"), "{err}");
        let numeric = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDI\x00\x00\x00\x01";
        let err = parse_sasl_response("AMQPLAIN", numeric).unwrap_err();
        assert!(err.to_string().contains("not a string"), "{err}");
    }

    #[test]
    fn malformed_amqplain_responses_are_bad_credentials() {
        for response in [
            &b"\xFF\xFF"[..],
            b"\x05LOGINS\x00\x00\x00\x50guest",     // value claims 80 bytes
            b"\x05LOGINS\x00\x00\x00\x05guestjunk", // trailing bytes
            b"\x05LOGINz",                          // unknown type
            b"\x00\x00\x00\x09\x05LOGINS\x00\x00",  // prefixed, value cut short
        ] {
            let result = parse_sasl_response("AMQPLAIN", response);
            assert!(
                matches!(result, Err(WireError::BadCredentials(_))),
                "{response:?}: {result:?}"
            );
        }
        let empty = parse_sasl_response("AMQPLAIN", b"");
        assert!(matches!(empty, Err(WireError::BadCredentials(_))), "{empty:?}");
    }

    #[test]
    fn other_mechanisms_are_unsupported() {
        for mechanism in ["EXTERNAL", "ANONYMOUS", "RABBIT-CR-DEMO", "plain", ""] {
            assert_eq!(
                parse_sasl_response(mechanism, b"\0guest\0guest"),
                Err(WireError::UnsupportedMechanism(mechanism.to_owned()))
            );
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let shown = format!("{:?}", creds("guest", "hunter2"));
        assert!(shown.contains("guest"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
