//! The whole conformance suite against a real PostgreSQL server, one schema per clause.

mod support;

outbox_testkit::conformance_suite!(support::PgFactory);
outbox_testkit::transactional_suite!(support::PgFactory);
