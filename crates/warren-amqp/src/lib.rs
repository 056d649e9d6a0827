//! warren-amqp
