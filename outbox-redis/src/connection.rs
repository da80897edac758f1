//! [`RedisConnection`]: one server (a self-reconnecting multiplexed connection) or a Redis
//! Cluster (a cluster connection that follows the slots), behind one `ConnectionLike`.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr, get_slot};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// The store's connection: to one Redis server, or to a Redis Cluster. Cheap to clone; use it for
/// your own commands (`query_async(&mut con)`), e.g. the `MULTI` block an event is enqueued in.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = outbox_redis::RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let mut con = store.connection();
/// let pong: String = redis::cmd("PING").query_async(&mut con).await?;
/// assert_eq!(pong, "PONG");
/// # Ok(()) }
/// ```
#[derive(Clone)]
// Cloned for every command: boxing the larger variant would allocate on each clone instead.
#[allow(clippy::large_enum_variant)]
pub enum RedisConnection {
    /// One server.
    Server(ConnectionManager),
    /// A Redis Cluster: each command goes to the shard that holds its keys' slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "RedisConnection::Server",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl RedisConnection {
    /// Runs a keyless command (such as `SCAN`) on the server holding the slot of `key`: the one
    /// server, or that slot's master in a cluster.
    pub(crate) async fn query_at<T: FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self {
            Self::Server(con) => cmd.query_async(con).await,
            Self::Cluster(con) => {
                let route = Route::new(get_slot(key.as_bytes()), SlotAddr::Master);
                let value = con
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                T::from_redis_value(&value)
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(con) => con.req_packed_command(cmd),
            Self::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(con) => con.req_packed_commands(cmd, offset, count),
            Self::Cluster(con) => con.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(con) => con.get_db(),
            Self::Cluster(con) => con.get_db(),
        }
    }
}
