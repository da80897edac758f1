//! The Lua scripts, each with the shared prelude, called by hash (`EVALSHA`) and reloaded
//! transparently when the server lost them (restart, `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, ErrorKind, FromRedisValue, RedisResult, ToRedisArgs};

/// A Lua script: its source and the SHA-1 the server knows it by.
pub(crate) struct Script {
    source: String,
    hash: String,
}

impl Script {
    fn new(source: &str) -> Self {
        Self {
            hash: redis::Script::new(source).get_hash().to_owned(),
            source: source.to_owned(),
        }
    }

    /// A call of the script with `KEYS[1] = key` (every script takes one key, a partition's
    /// prefix). Arguments go straight into the command's buffer: `redis::ScriptInvocation` keeps
    /// each in a vector of its own and copies it again when sending, which cost about 6 % of the
    /// client's instructions in a drain (a completion sends six arguments per event).
    pub(crate) fn key(&self, key: impl ToRedisArgs) -> Invocation<'_> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(1).arg(key);
        Invocation { script: self, cmd }
    }
}

/// A call of a [`Script`] being built.
pub(crate) struct Invocation<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl Invocation<'_> {
    /// Appends an argument (`ARGV[n]`).
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the call; when the server does not know the script (restart, `SCRIPT FLUSH`), runs it
    /// again as `EVAL` with its source, which also caches it there. On a cluster that goes to the
    /// key's node only (`SCRIPT LOAD` would go to every primary, and fail while one is down).
    pub(crate) async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        match self.cmd.query_async(con).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(&self.script.source);
                // Everything after `EVALSHA <hash>`: the key count, the key and the arguments.
                for arg in self.cmd.args_iter().skip(2) {
                    if let Arg::Simple(bytes) = arg {
                        eval.arg(bytes);
                    }
                }
                eval.query_async(con).await
            }
            result => result,
        }
    }
}

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
