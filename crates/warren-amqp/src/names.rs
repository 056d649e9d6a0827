//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags).
//! Generated here, at the edge, and stamped into the command: apply never
//! draws random numbers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn random_suffix() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh server-named queue name, as RabbitMQ makes them.
pub fn generated_queue_name() -> String {
    format!("amq.gen-{}", random_suffix())
}

/// A fresh consumer tag for a `basic.consume` with an empty tag.
pub fn generated_consumer_tag() -> String {
    format!("amq.ctag-{}", random_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_carry_rabbitmq_prefixes_and_differ() {
        let a = generated_queue_name();
        assert!(a.starts_with("amq.gen-") && a.len() == "amq.gen-".len() + 22);
        assert_ne!(a, generated_queue_name());
        assert!(generated_consumer_tag().starts_with("amq.ctag-"));
    }
}
