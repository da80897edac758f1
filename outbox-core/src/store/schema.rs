//! [`Schema`]: what a store creates in its database, as one trait, so tools (the `outbox` CLI,
//! deploy scripts) migrate, verify and print any backend's schema the same way (contract C10).

use async_trait::async_trait;

use crate::model::StoreError;

/// A store's schema: the tables, indexes, functions or collections it needs.
///
/// `migrate` is idempotent and safe to run from many processes at once (C10); `verify` changes
/// nothing, so a role without DDL rights can run it at start-up. Stores that create what they
/// need as they go (Redis) keep the defaults: nothing to verify, no version, no DDL.
///
/// ```
/// use outbox_core::StoreError;
/// use outbox_core::store::Schema;
///
/// async fn deploy(schema: &dyn Schema, dry_run: bool) -> Result<(), StoreError> {
///     if dry_run {
///         for statement in schema.ddl().unwrap_or_default() {
///             println!("{statement};");
///         }
///         return Ok(());
///     }
///     schema.migrate().await?;
///     schema.verify().await?;
///     println!("schema version {:?}", schema.schema_version().await?);
///     Ok(())
/// }
/// ```
#[async_trait]
pub trait Schema: Send + Sync + 'static {
    /// Creates or upgrades what the store needs; idempotent, and a no-op when it is current.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks the schema without changing it: [`StoreError::Schema`] names each missing or
    /// outdated part. The default checks nothing.
    async fn verify(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The schema version recorded in the database, `None` before the first `migrate` or on a
    /// backend that records none (the default).
    async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// The statements `migrate` runs on an empty database, for a person to read or apply by
    /// hand; `None` for a backend without DDL (the default).
    fn ddl(&self) -> Option<Vec<String>> {
        None
    }
}
