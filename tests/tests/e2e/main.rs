//! The end-to-end tests, one module per capability, in one test binary:
//! each drives the real `warren` binary with real AMQP clients (lapin,
//! pika) over TCP. One binary rather than 43, each compiled and linked on
//! its own: after a change to the e2e library the 43 took 87 s to build
//! with CI's settings, the one 13 s. A clean CI build gained only ~8 s
//! (why, not measured). nextest still runs every test in a process of its
//! own; `cargo nextest run -p warren-e2e durability::`
//! runs one module.

mod allocator;
mod bad_input;
mod basic;
mod bodies;
mod channel_reuse;
mod channels;
mod chaos;
mod cluster;
mod cluster_clients;
mod cluster_ops;
mod cluster_tls;
mod confirms_and_errors;
mod connection;
mod consumer_credit;
mod consumer_timeout;
mod cut_off;
mod differential;
mod disk;
mod durability;
mod empty_keys;
mod exchanges;
mod extensions;
mod external_auth;
mod health;
mod http_api;
mod http_writes;
mod lapin_tutorials;
mod large_messages;
mod manifests;
mod metrics;
mod node_identity;
mod permissions;
mod pika_tutorials;
mod policies;
mod queue_arguments;
mod queues;
mod rabbitmqadmin;
mod shutdown;
mod streams;
mod tls;
mod tool_requests;
mod transactions;
mod ui_browser;
mod vhosts;
