use crate::reply_to::reply_address;
use crate::test_support::*;
use crate::{CoreError, Effect, Outcome};

#[test]
fn direct_reply_to_round_trip() {
    let mut h = Harness::new();
    let client = chan(1, 1);
    let server = chan(2, 1);
    h.ok(server, declare_queue("rpc"));
    h.ok(server, consume("rpc", "srv", true));
    assert_eq!(
        h.call(client, consume("amq.rabbitmq.reply-to", "replies", false)),
        Err(CoreError::PreconditionFailed(
            "reply consumer cannot acknowledge".into()
        ))
    );
    h.ok(client, consume("amq.rabbitmq.reply-to", "replies", true));
    let mut request = message("", "rpc", "ping");
    std::sync::Arc::make_mut(&mut request.properties).reply_to = Some("amq.rabbitmq.reply-to".into());
    let effects = h.run(Some(client), publish_message(request));
    let Some(Effect::Deliver { message, .. }) = effects.iter().find(|e| matches!(e, Effect::Deliver { .. })) else {
        panic!("request not delivered: {effects:?}");
    };
    let address = message.properties.reply_to.clone().unwrap();
    assert_eq!(address, reply_address(client));
    let effects = h.run(Some(server), publish("", &address, "pong"));
    assert!(
        matches!(effects[0], Effect::Reply { .. }),
        "the publisher's reply comes first"
    );
    assert_eq!(
        deliveries(&effects),
        vec![(client, "replies".to_owned(), 1, false, "pong".to_owned())]
    );
    // After the requester's channel closes, replies are unroutable.
    h.run(Some(client), crate::Command::CloseChannel);
    assert_eq!(
        h.ok(server, publish("", &address, "late")),
        Outcome::Published {
            routed: false,
            rejected: false,
            returned: None
        }
    );
}

#[test]
fn reply_to_request_without_reply_consumer_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("rpc"));
    let mut request = message("", "rpc", "ping");
    std::sync::Arc::make_mut(&mut request.properties).reply_to = Some("amq.rabbitmq.reply-to".into());
    assert_eq!(
        h.call(c, publish_message(request)),
        Err(CoreError::PreconditionFailed(
            "fast reply consumer does not exist".into()
        ))
    );
}
