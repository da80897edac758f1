//! The whole conformance suite against a MongoDB-compatible server, one database per clause.

mod support;

outbox_testkit::conformance_suite!(support::MongoFactory::default());
outbox_testkit::transactional_suite!(support::MongoFactory::default());
