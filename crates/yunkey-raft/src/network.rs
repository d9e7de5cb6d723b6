//! [`GrpcNetworkFactory`]: openraft's network factory over tonic channels supplied by the caller.

use std::collections::HashMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, RaftNetworkFactory};
use tonic::transport::Channel;

use crate::network_client::GrpcNetwork;
use crate::TypeConfig;

/// Builds a gRPC channel to a node (the caller's TLS setup lives here, not in this crate).
///
/// Called at most once per node address while the channel stays cached; it should not block
/// (use `Endpoint::connect_lazy`). An `Err` is reported to Raft as the node being unreachable.
pub type Connector = Arc<dyn Fn(&BasicNode) -> Result<Channel, String> + Send + Sync>;

/// openraft's [`RaftNetworkFactory`] over `yunkey.v1.RaftService`.
///
/// Caches one multiplexed [`Channel`] per target address; clones share the cache.
pub struct GrpcNetworkFactory<C: TypeConfig> {
    id: u64,
    connector: Connector,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    _c: PhantomData<fn() -> C>,
}

impl<C: TypeConfig> Clone for GrpcNetworkFactory<C> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            connector: self.connector.clone(),
            channels: self.channels.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: TypeConfig> Debug for GrpcNetworkFactory<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetworkFactory")
            .field("id", &self.id)
            .finish()
    }
}

impl<C: TypeConfig> GrpcNetworkFactory<C> {
    /// A factory for node `id` (used in timeout errors) that dials peers with `connector`.
    pub fn new(id: u64, connector: Connector) -> Self {
        Self {
            id,
            connector,
            channels: Arc::new(Mutex::new(HashMap::new())),
            _c: PhantomData,
        }
    }

    /// The id of the local node.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The cached channel to `node`'s address, built with the connector on first use.
    pub fn channel(&self, node: &BasicNode) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(&node.addr) {
            return Ok(ch.clone());
        }
        let ch = (self.connector)(node)?;
        channels.insert(node.addr.clone(), ch.clone());
        Ok(ch)
    }
}

impl<C: TypeConfig> RaftNetworkFactory<C> for GrpcNetworkFactory<C> {
    type Network = GrpcNetwork<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        GrpcNetwork::new(self.clone(), target, node.clone())
    }
}
