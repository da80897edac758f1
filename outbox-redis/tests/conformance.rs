//! The whole conformance suite against a real Redis server, one key prefix per clause.

mod support;

outbox_testkit::conformance_suite!(support::RedisFactory::default());
