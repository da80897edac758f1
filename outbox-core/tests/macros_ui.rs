//! Compile-time behaviour of `#[handler]` and `#[derive(Event)]` (contract H4): accepted forms
//! compile, misuse fails with a spanned error (the `.stderr` files are reviewed).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
