//! The Lua scripts, each with the shared prelude. `redis::Script` calls them by hash and reloads a
//! script transparently when the server lost it (restart, `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// The fenced completion of one event, used by `complete_many` for each of its events.
const COMPLETE_ONE: &str = include_str!("lua/complete_one.lua");

fn with_prelude(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

/// The source of the enqueue script (also sent with `EVAL` inside callers' `MULTI` blocks).
pub(crate) static ENQUEUE_SOURCE: LazyLock<String> =
    LazyLock::new(|| with_prelude(include_str!("lua/enqueue.lua")));

pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) peek: Script,
    pub(crate) renew: Script,
    pub(crate) complete_many: Script,
    pub(crate) requeue: Script,
    pub(crate) set_aside: Script,
    pub(crate) purge: Script,
    pub(crate) stats: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(&ENQUEUE_SOURCE),
    claim: Script::new(&with_prelude(&format!(
        "{}\n{}",
        crate::row::fields_lua(),
        include_str!("lua/claim.lua")
    ))),
    peek: Script::new(&with_prelude(include_str!("lua/peek.lua"))),
    renew: Script::new(&with_prelude(include_str!("lua/renew.lua"))),
    complete_many: Script::new(&with_prelude(&format!(
        "{COMPLETE_ONE}\n{}",
        include_str!("lua/complete_many.lua")
    ))),
    requeue: Script::new(&with_prelude(include_str!("lua/requeue.lua"))),
    set_aside: Script::new(&with_prelude(include_str!("lua/set_aside.lua"))),
    purge: Script::new(&with_prelude(include_str!("lua/purge.lua"))),
    stats: Script::new(&with_prelude(include_str!("lua/stats.lua"))),
});
