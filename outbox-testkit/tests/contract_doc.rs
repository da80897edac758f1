//! The contract page (`CONTRACT.md`, rendered as `outbox_testkit::contract`) and the suite agree:
//! every clause the suite runs is named under its rule, and every check the page names exists.

use outbox_testkit::suite::CLAUSES;

const CONTRACT: &str = include_str!("../CONTRACT.md");

#[test]
fn every_clause_of_the_suite_is_on_the_contract_page() {
    for clause in CLAUSES
        .iter()
        .chain(&["x1_transactional_handlers", "x1_inbox"])
    {
        let link = format!("(crate::suite::{clause})");
        assert!(
            CONTRACT.contains(&link),
            "CONTRACT.md does not link {clause} under its rule"
        );
    }
}

#[test]
fn every_check_the_page_names_is_a_clause() {
    for (n, _) in CONTRACT.match_indices("(crate::suite::") {
        let name: String = CONTRACT[n + "(crate::suite::".len()..]
            .chars()
            .take_while(|c| *c != ')')
            .collect();
        assert!(
            CLAUSES.contains(&name.as_str()) || name.starts_with("x1_"),
            "CONTRACT.md names {name}, which is not a clause of the suite"
        );
    }
}
