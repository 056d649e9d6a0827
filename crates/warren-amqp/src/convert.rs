//! Conversions between the wire's forms (amq-protocol) and the core's
//! domain forms, done once at the boundary.

use warren_core::Properties;
use warren_wire::protocol::basic::AMQPProperties;
use warren_wire::types::{LongString, ShortString};

/// A short string from text that came from the broker's own state. The text
/// originally arrived as a short string, so it fits; if it somehow does not,
/// it is cut at a character boundary rather than panicking.
pub fn short(text: &str) -> ShortString {
    warren_wire::short_string_lossy(text)
}

pub fn long(text: &str) -> LongString {
    LongString::from(text)
}

/// Wire properties to the core's.
pub fn properties_from_wire(p: &AMQPProperties) -> Properties {
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    Properties {
        content_type: s(p.content_type()),
        content_encoding: s(p.content_encoding()),
        headers: p.headers().clone(),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: s(p.correlation_id()),
        reply_to: s(p.reply_to()),
        expiration: s(p.expiration()),
        message_id: s(p.message_id()),
        timestamp: *p.timestamp(),
        kind: s(p.kind()),
        user_id: s(p.user_id()),
        app_id: s(p.app_id()),
        cluster_id: s(p.cluster_id()),
    }
}

/// The core's properties to the wire's.
/// The core's properties as the codec writes them, borrowed.
pub fn properties_ref(p: &Properties) -> warren_wire::PropertiesRef<'_> {
    warren_wire::PropertiesRef {
        content_type: p.content_type.as_deref(),
        content_encoding: p.content_encoding.as_deref(),
        headers: p.headers.as_ref(),
        delivery_mode: p.delivery_mode,
        priority: p.priority,
        correlation_id: p.correlation_id.as_deref(),
        reply_to: p.reply_to.as_deref(),
        expiration: p.expiration.as_deref(),
        message_id: p.message_id.as_deref(),
        timestamp: p.timestamp,
        kind: p.kind.as_deref(),
        user_id: p.user_id.as_deref(),
        app_id: p.app_id.as_deref(),
        cluster_id: p.cluster_id.as_deref(),
    }
}

pub fn properties_to_wire(p: &Properties) -> AMQPProperties {
    let mut w = AMQPProperties::default();
    if let Some(v) = &p.content_type {
        w = w.with_content_type(short(v));
    }
    if let Some(v) = &p.content_encoding {
        w = w.with_content_encoding(short(v));
    }
    if let Some(v) = &p.headers {
        w = w.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode {
        w = w.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        w = w.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        w = w.with_correlation_id(short(v));
    }
    if let Some(v) = &p.reply_to {
        w = w.with_reply_to(short(v));
    }
    if let Some(v) = &p.expiration {
        w = w.with_expiration(short(v));
    }
    if let Some(v) = &p.message_id {
        w = w.with_message_id(short(v));
    }
    if let Some(v) = p.timestamp {
        w = w.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        w = w.with_type(short(v));
    }
    if let Some(v) = &p.user_id {
        w = w.with_user_id(short(v));
    }
    if let Some(v) = &p.app_id {
        w = w.with_app_id(short(v));
    }
    if let Some(v) = &p.cluster_id {
        w = w.with_cluster_id(short(v));
    }
    w
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use warren_wire::types::{AMQPValue, FieldTable};

    #[test]
    fn all_fourteen_properties_survive_a_round_trip() {
        let mut headers = FieldTable::default();
        headers.insert(short("x"), AMQPValue::LongInt(7));
        let core = Properties {
            content_type: Some("text/plain".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(3),
            correlation_id: Some("c".into()),
            reply_to: Some("r".into()),
            expiration: Some("1000".into()),
            message_id: Some("m".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("t".into()),
            user_id: Some("guest".into()),
            app_id: Some("a".into()),
            cluster_id: Some("cl".into()),
        };
        assert_eq!(properties_from_wire(&properties_to_wire(&core)), core);
        // A delivery writes them from the core's, borrowed: the same bytes.
        let encoded = |p: &warren_wire::PropertiesRef<'_>| {
            let mut out = bytes::BytesMut::new();
            warren_wire::encode_content_ref(1, 60, p, b"body", 4096, &mut out).unwrap();
            out
        };
        let wire = properties_to_wire(&core);
        assert_eq!(
            encoded(&properties_ref(&core)),
            encoded(&warren_wire::PropertiesRef::from(&wire))
        );
        let mut overlong = core.clone();
        overlong.app_id = Some("é".repeat(200));
        let wire = properties_to_wire(&overlong);
        assert_eq!(
            encoded(&properties_ref(&overlong)),
            encoded(&warren_wire::PropertiesRef::from(&wire)),
            "cut as short() cuts it"
        );
        assert_eq!(
            properties_from_wire(&properties_to_wire(&Properties::default())),
            Properties::default()
        );
    }

    #[test]
    fn an_overlong_text_is_cut_at_a_character_boundary_not_panicked_on() {
        let text = "é".repeat(200);
        let s = short(&text);
        assert!(s.as_str().len() <= 255);
        assert!(text.starts_with(s.as_str()));
    }
}
