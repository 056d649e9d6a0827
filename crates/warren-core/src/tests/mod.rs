//! Behaviour tests of `Broker::apply`, by area. Each drives the broker
//! through `test_support::Harness`, which checks the invariants after
//! every batch.

mod access;
mod basics;
mod bodies;
mod consumers;
mod dead_lettering;
mod empty_keys;
mod exchanges;
mod policies;
mod properties;
mod queues;
mod reply_to;
mod routing_properties;
mod staged;
mod stats;
mod streams;
mod transactions;
mod unsent;
