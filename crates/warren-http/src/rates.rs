//! Message rates for the management API (issue 10, item 3): every
//! [`SAMPLE_EVERY`] the API's node samples the counters the apply function
//! keeps ([`warren_core::stats`]) and the queues' depths, and the rate of
//! each is its change over the last interval, per second. The counters are
//! replicated state computed alike on every node, so any node's rates are
//! the cluster's (no gathering); they count from the node's start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use warren_core::stats::QueueStats;
use warren_core::{Broker, ExchangeName, QueueName, VHost};

/// How often counters are sampled (RabbitMQ's default is 5 s too).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One queue's counts and depths at a sample.
#[derive(Clone, Copy, Debug, Default)]
struct QueueSample {
    uid: u64,
    stats: QueueStats,
    ready: u64,
    unacked: u64,
}

/// Every counter at one moment.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    queues: HashMap<(VHost, QueueName), QueueSample>,
    /// `(publish_in, publish_out)` of each exchange.
    exchanges: HashMap<(VHost, ExchangeName), (u64, u64)>,
    global: GlobalCounts,
}

/// The broker-wide counts of a sample.
#[derive(Clone, Copy, Debug, Default)]
struct GlobalCounts {
    queues: QueueStats,
    publish: u64,
    drop_unroutable: u64,
    return_unroutable: u64,
    ready: u64,
    unacked: u64,
}

/// Per-second rates of one queue (or of all, for the overview).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub publish: f64,
    pub deliver: f64,
    pub deliver_no_ack: f64,
    pub get: f64,
    pub get_no_ack: f64,
    pub redeliver: f64,
    pub ack: f64,
    pub messages_ready: f64,
    pub messages_unacknowledged: f64,
    pub drop_unroutable: f64,
    pub return_unroutable: f64,
}

impl Rates {
    /// The sum of two rates, field by field.
    pub fn plus(self, other: &Rates) -> Rates {
        Rates {
            publish: self.publish + other.publish,
            deliver: self.deliver + other.deliver,
            deliver_no_ack: self.deliver_no_ack + other.deliver_no_ack,
            get: self.get + other.get,
            get_no_ack: self.get_no_ack + other.get_no_ack,
            redeliver: self.redeliver + other.redeliver,
            ack: self.ack + other.ack,
            messages_ready: self.messages_ready + other.messages_ready,
            messages_unacknowledged: self.messages_unacknowledged + other.messages_unacknowledged,
            drop_unroutable: self.drop_unroutable + other.drop_unroutable,
            return_unroutable: self.return_unroutable + other.return_unroutable,
        }
    }

    fn deliver_get(&self) -> f64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// The latest rates, and the sample they were measured from.
#[derive(Default)]
pub struct RateBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    last: Option<Sample>,
    /// By vhost, then queue: looked up without building a key.
    queues: HashMap<VHost, HashMap<QueueName, Rates>>,
    /// `(publish_in, publish_out)` per second, by vhost then exchange.
    exchanges: HashMap<VHost, HashMap<ExchangeName, (f64, f64)>>,
    global: Rates,
    /// The churn counters at the last sample, and their rates.
    churn_last: Option<(Instant, [u64; CHURN.len()])>,
    churn: [f64; CHURN.len()],
}

/// RabbitMQ's `churn_rates` keys in `/api/overview`, in the order of
/// [`churn_counts`].
pub const CHURN: [&str; 7] = [
    "connection_created",
    "connection_closed",
    "channel_created",
    "channel_closed",
    "queue_declared",
    "queue_created",
    "queue_deleted",
];

/// This node's churn counters (its own clients'), in [`CHURN`]'s order.
pub fn churn_counts(m: &warren_amqp::counters::MessageCounts) -> [u64; CHURN.len()] {
    [
        m.connections_opened,
        m.connections_closed,
        m.channels_opened,
        m.channels_closed,
        m.queues_declared,
        m.queues_created,
        m.queues_deleted,
    ]
}

fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    // Depths fall as well as rise; counters only rise (a new queue of the
    // same name starts over from zero).
    (now as f64 - before as f64) / seconds
}

/// Counter rates: never below zero (counters start over when a node
/// installs a snapshot).
fn stats_rates(now: &QueueStats, before: &QueueStats, seconds: f64) -> Rates {
    let counter = |now: u64, before: u64| rate(now, before, seconds).max(0.0);
    Rates {
        publish: counter(now.publish, before.publish),
        deliver: counter(now.deliver, before.deliver),
        deliver_no_ack: counter(now.deliver_no_ack, before.deliver_no_ack),
        get: counter(now.get, before.get),
        get_no_ack: counter(now.get_no_ack, before.get_no_ack),
        redeliver: counter(now.redeliver, before.redeliver),
        ack: counter(now.ack, before.ack),
        ..Rates::default()
    }
}

fn take_sample(broker: &Broker, at: Instant) -> Sample {
    let mut queues = HashMap::new();
    let mut exchanges = HashMap::new();
    let mut global = GlobalCounts::default();
    for (vhost, state) in broker.vhosts() {
        for exchange in state.exchanges.values() {
            let counts = (exchange.stats.publish_in, exchange.stats.publish_out);
            exchanges.insert((vhost.clone(), exchange.name.clone()), counts);
        }
        for queue in state.queues.values() {
            let sample = QueueSample {
                uid: queue.uid,
                stats: queue.stats,
                ready: queue.ready.len() as u64,
                unacked: queue.unacked,
            };
            global.queues = global.queues.plus(queue.stats);
            global.ready += sample.ready;
            global.unacked += sample.unacked;
            queues.insert((vhost.clone(), queue.name.clone()), sample);
        }
    }
    let stats = broker.stats();
    global.publish = stats.publish;
    global.drop_unroutable = stats.drop_unroutable;
    global.return_unroutable = stats.return_unroutable;
    Sample {
        at,
        queues,
        exchanges,
        global,
    }
}

impl RateBook {
    /// Samples `broker` now and updates the rates from the last sample.
    pub fn sample(&self, broker: &Broker) {
        let sample = take_sample(broker, Instant::now());
        let mut book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(last) = &book.last {
            let seconds = sample.at.duration_since(last.at).as_secs_f64().max(0.001);
            let mut queues: HashMap<VHost, HashMap<QueueName, Rates>> = HashMap::new();
            for (key, now) in &sample.queues {
                // A queue new since the last sample counts from zero.
                let before = last
                    .queues
                    .get(key)
                    .filter(|b| b.uid == now.uid)
                    .copied()
                    .unwrap_or_default();
                let mut rates = stats_rates(&now.stats, &before.stats, seconds);
                rates.messages_ready = rate(now.ready, before.ready, seconds);
                rates.messages_unacknowledged = rate(now.unacked, before.unacked, seconds);
                queues.entry(key.0.clone()).or_default().insert(key.1.clone(), rates);
            }
            // Global counters: sums over the queues that exist now; a
            // queue deleted in between takes its counts with it, which
            // would read as a negative rate: clamped at zero.
            let (now, before) = (&sample.global, &last.global);
            let mut global = stats_rates(&now.queues, &before.queues, seconds);
            global.publish = rate(now.publish, before.publish, seconds).max(0.0);
            global.drop_unroutable = rate(now.drop_unroutable, before.drop_unroutable, seconds).max(0.0);
            global.return_unroutable = rate(now.return_unroutable, before.return_unroutable, seconds).max(0.0);
            global.messages_ready = rate(now.ready, before.ready, seconds);
            global.messages_unacknowledged = rate(now.unacked, before.unacked, seconds);
            let mut exchanges: HashMap<VHost, HashMap<ExchangeName, (f64, f64)>> = HashMap::new();
            for (key, now) in &sample.exchanges {
                let before = last.exchanges.get(key).copied().unwrap_or_default();
                let rates = (
                    rate(now.0, before.0, seconds).max(0.0),
                    rate(now.1, before.1, seconds).max(0.0),
                );
                exchanges.entry(key.0.clone()).or_default().insert(key.1.clone(), rates);
            }
            book.queues = queues;
            book.exchanges = exchanges;
            book.global = global;
        }
        book.last = Some(sample);
    }

    /// The rates of queue `name` in `vhost` (zero before two samples).
    pub fn queue(&self, vhost: &VHost, name: &QueueName) -> Rates {
        let book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lookup(&book, vhost, name)
    }

    /// The rates of many queues, under one lock: `set` is called with each
    /// item whose `(vhost, name)` `key` gives, and its rates.
    pub fn fill<T>(&self, items: &mut [T], key: impl Fn(&T) -> (&VHost, &QueueName), set: impl Fn(&mut T, Rates)) {
        let book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for item in items {
            let rates = {
                let (vhost, name) = key(item);
                lookup(&book, vhost, name)
            };
            set(item, rates);
        }
    }

    /// The rates of a vhost: its queues' summed (zero before two samples).
    pub fn vhost(&self, vhost: &VHost) -> Rates {
        let book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.queues
            .get(vhost)
            .map(|queues| queues.values().fold(Rates::default(), |sum, r| sum.plus(r)))
            .unwrap_or_default()
    }

    /// `(publish_in, publish_out)` per second of an exchange.
    pub fn exchange(&self, vhost: &VHost, name: &ExchangeName) -> (f64, f64) {
        let book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.exchanges
            .get(vhost)
            .and_then(|exchanges| exchanges.get(name))
            .copied()
            .unwrap_or_default()
    }

    /// Updates the churn rates from `counts` (taken now).
    pub fn sample_churn(&self, counts: [u64; CHURN.len()]) {
        let now = Instant::now();
        let mut book = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((then, before)) = book.churn_last {
            let seconds = now.duration_since(then).as_secs_f64().max(0.001);
            book.churn = std::array::from_fn(|i| rate(counts[i], before[i], seconds).max(0.0));
        }
        book.churn_last = Some((now, counts));
    }

    /// `churn_rates` as RabbitMQ's overview shows it: each count and its
    /// `_details.rate`.
    pub fn churn_json(&self, counts: [u64; CHURN.len()]) -> Value {
        let rates = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .churn;
        let mut object = Map::new();
        for (i, key) in CHURN.iter().enumerate() {
            // rabbitmq_http_client reads these counts as u32.
            put(&mut object, key, counts[i].min(u64::from(u32::MAX)), rates[i]);
        }
        Value::Object(object)
    }

    /// The broker-wide rates (zero before two samples).
    pub fn global(&self) -> Rates {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .global
    }
}

fn lookup(book: &Book, vhost: &VHost, name: &QueueName) -> Rates {
    book.queues
        .get(vhost)
        .and_then(|queues| queues.get(name))
        .copied()
        .unwrap_or_default()
}

/// Rounds a rate as RabbitMQ shows it (one decimal).
fn shown(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

fn put(object: &mut Map<String, Value>, key: &str, count: u64, rate: f64) {
    object.insert(key.to_owned(), json!(count));
    object.insert(format!("{key}_details"), json!({"rate": shown(rate)}));
}

/// A queue's `message_stats`, RabbitMQ's names.
pub fn message_stats(stats: &QueueStats, rates: &Rates) -> Value {
    let mut out = Map::new();
    put(&mut out, "publish", stats.publish, rates.publish);
    put(&mut out, "deliver", stats.deliver, rates.deliver);
    put(&mut out, "deliver_no_ack", stats.deliver_no_ack, rates.deliver_no_ack);
    put(&mut out, "get", stats.get, rates.get);
    put(&mut out, "get_no_ack", stats.get_no_ack, rates.get_no_ack);
    put(&mut out, "deliver_get", stats.deliver_get(), rates.deliver_get());
    put(&mut out, "redeliver", stats.redeliver, rates.redeliver);
    put(&mut out, "ack", stats.ack, rates.ack);
    Value::Object(out)
}

/// The overview's `message_stats`: the queues' counts plus the broker's.
pub fn overview_stats(broker: &Broker, rates: &Rates) -> Value {
    let totals = broker
        .vhosts()
        .values()
        .flat_map(|v| v.queues.values())
        .fold(QueueStats::default(), |sum, q| sum.plus(q.stats));
    let mut out = match message_stats(&totals, rates) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let stats = broker.stats();
    put(&mut out, "publish", stats.publish, rates.publish);
    put(
        &mut out,
        "drop_unroutable",
        stats.drop_unroutable,
        rates.drop_unroutable,
    );
    put(
        &mut out,
        "return_unroutable",
        stats.return_unroutable,
        rates.return_unroutable,
    );
    Value::Object(out)
}

/// An exchange's `message_stats`: `publish_in` and `publish_out`.
pub fn exchange_stats(stats: &warren_core::stats::ExchangeStats, rates: (f64, f64)) -> Value {
    let mut out = Map::new();
    put(&mut out, "publish_in", stats.publish_in, rates.0);
    put(&mut out, "publish_out", stats.publish_out, rates.1);
    Value::Object(out)
}

/// `{"rate": r}` for a depth's `_details`.
pub fn details(rate: f64) -> Value {
    json!({"rate": shown(rate)})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_change_per_second_and_a_new_queue_starts_over() {
        let before = QueueStats {
            publish: 10,
            ack: 4,
            ..QueueStats::default()
        };
        let now = QueueStats {
            publish: 60,
            ack: 29,
            ..QueueStats::default()
        };
        let rates = stats_rates(&now, &before, 5.0);
        assert_eq!((rates.publish, rates.ack), (10.0, 5.0));
        assert_eq!(rate(3, 8, 5.0), -1.0, "a depth can fall");
        assert_eq!(shown(0.123_4), 0.1);
        let stats = message_stats(&now, &rates);
        assert_eq!(stats["publish"], 60);
        assert_eq!(stats["publish_details"]["rate"], 10.0);
        assert_eq!(stats["deliver_get"], 0);
    }
}
