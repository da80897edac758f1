//! One module per backend: how to make a fresh outbox and the raw baseline of the same shape.

pub(crate) mod mongo;
pub(crate) mod postgres;
pub(crate) mod redis;
pub(crate) mod sqlite;

use futures::StreamExt;

/// A short unique suffix for names of one run.
pub(crate) fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

/// Runs `f` on every item, at most `concurrency` at once; the first error wins.
pub(crate) async fn for_each_concurrent<T, F, Fut, E>(
    items: Vec<T>,
    concurrency: usize,
    f: F,
) -> Result<(), E>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut stream = futures::stream::iter(items)
        .map(f)
        .buffer_unordered(concurrency);
    while let Some(result) = stream.next().await {
        result?;
    }
    Ok(())
}

/// How many completions one raw drain loop sends at once (the library's worker completes its
/// in-flight events concurrently too).
pub(crate) const COMPLETE_CONCURRENCY: usize = 16;
