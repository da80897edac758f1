//! Running the suite against a store with one [`Break`]: the factory of broken stores, and the
//! checks that the clauses of the broken rule catch it.

use crate::harness::{Failure, StoreFactory, TestTransaction};
use async_trait::async_trait;
use outbox_core::StoreError;
use uuid::Uuid;

use super::rules::{Break, Breaking};

/// A backend's [`StoreFactory`] whose stores have one [`Break`].
///
/// ```
/// use outbox_testkit::MemoryFactory;
/// use outbox_testkit::broken::{Break, BreakingFactory};
/// let factory = BreakingFactory::new(MemoryFactory::default(), Break::DeadNotCounted);
/// assert_eq!(factory.flaw(), Break::DeadNotCounted);
/// ```
#[derive(Debug)]
pub struct BreakingFactory<F> {
    inner: F,
    flaw: Break,
}

impl<F> BreakingFactory<F> {
    /// `inner`'s stores with `flaw`.
    pub fn new(inner: F, flaw: Break) -> Self {
        Self { inner, flaw }
    }

    /// Its flaw.
    pub fn flaw(&self) -> Break {
        self.flaw
    }
}

#[async_trait]
impl<F: StoreFactory> StoreFactory for BreakingFactory<F> {
    type Store = Breaking<F::Store>;

    async fn create(&self, namespace: &str) -> Result<Self::Store, StoreError> {
        Ok(Breaking::new(
            self.inner.create(namespace).await?,
            self.flaw,
        ))
    }

    async fn begin(
        &self,
        store: &Self::Store,
    ) -> Result<Option<Box<dyn TestTransaction>>, StoreError> {
        self.inner.begin(&store.inner).await
    }

    async fn damage(&self, store: &Self::Store, id: Uuid) -> Result<bool, StoreError> {
        self.inner.damage(&store.inner, id).await
    }

    async fn repair(&self, store: &Self::Store, id: Uuid) -> Result<bool, StoreError> {
        self.inner.repair(&store.inner, id).await
    }
}

/// Which clause caught a break, and how; or why none did.
type Caught = Result<(&'static str, Failure), String>;

/// Runs the suite's clauses for `flaw`'s rule (the functions named after it, e.g. `c6_…` for
/// C6) on `factory`'s stores broken by `flaw`, in the suite's order, and returns the first that
/// failed with its failure — or, when every one passed, a message saying so.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use outbox_testkit::MemoryFactory;
/// use outbox_testkit::broken::{Break, suite_catches};
/// let (clause, failure) = suite_catches(MemoryFactory::default(), Break::DeadNotCounted)
///     .await
///     .expect("the suite catches it");
/// assert!(clause.starts_with("c9_"), "{clause}: {failure}");
/// # });
/// ```
pub async fn suite_catches<F: StoreFactory>(factory: F, flaw: Break) -> Caught {
    let factory = BreakingFactory::new(factory, flaw);
    let prefix = format!("{}_", flaw.rule().to_lowercase());
    let clauses: Vec<&'static str> = crate::suite::CLAUSES
        .iter()
        .copied()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    for clause in &clauses {
        match crate::suite::run_named(clause, &factory).await {
            Some(Err(failure)) => return Ok((clause, failure)),
            Some(Ok(_)) => {}
            None => return Err(format!("the suite has no clause {clause}")),
        }
    }
    Err(format!(
        "a store with {flaw:?} ({}: {}) passed every {} clause: {clauses:?}",
        flaw.class(),
        flaw.rule(),
        flaw.rule()
    ))
}

/// [`suite_catches`] on a fresh runtime, panicking unless the suite catches `flaw`; prints the
/// clause and the failure that caught it. For a backend's `tests/`:
///
/// ```ignore
/// #[test]
/// fn ties_claimed_out_of_order_are_caught() {
///     outbox_testkit::broken::assert_suite_catches(MyFactory::new(), Break::TiesReversed);
/// }
/// ```
pub fn assert_suite_catches<F: StoreFactory>(factory: F, flaw: Break) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(suite_catches(factory, flaw)) {
        Ok((clause, failure)) => println!("{flaw:?} caught by {clause}: {failure}"),
        Err(passed) => panic!("{passed}"),
    }
}

/// Runs [`suite_catches`] for every [`Break`] (four at a time) on stores from `make`, prints which
/// clause caught each, by class, and panics listing every break the suite let through. One test
/// in a backend's `tests/` proves the suite catches them all on that database:
///
/// ```ignore
/// #[test]
/// fn the_suite_catches_every_broken_rule() {
///     outbox_testkit::broken::assert_suite_catches_every_break(MyFactory::from_env);
/// }
/// ```
pub fn assert_suite_catches_every_break<F: StoreFactory>(make: impl Fn() -> F) {
    use futures::StreamExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcomes: Vec<(Break, Caught)> = runtime.block_on(async {
        futures::stream::iter(Break::ALL.iter().map(|flaw| {
            let factory = make();
            async move { (*flaw, suite_catches(factory, *flaw).await) }
        }))
        .buffer_unordered(4)
        .collect()
        .await
    });
    let mut missed = Vec::new();
    for flaw in Break::ALL {
        let Some((_, outcome)) = outcomes.iter().find(|(f, _)| f == flaw) else {
            continue;
        };
        match outcome {
            Ok((clause, failure)) => {
                println!("[{}] {flaw:?} caught by {clause}: {failure}", flaw.class());
            }
            Err(passed) => missed.push(passed.clone()),
        }
    }
    assert!(
        missed.is_empty(),
        "the suite let {} of {} broken rules through:\n{}",
        missed.len(),
        Break::ALL.len(),
        missed.join("\n")
    );
}
