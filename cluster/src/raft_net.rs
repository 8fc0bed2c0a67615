//! openraft's network for one group: every RPC goes through the node's shared [`Peers`].

use crate::transport::{PeerError, PeerReq, PeerResp, Peers};
use crate::types::{GroupId, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use std::sync::Arc;

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

#[derive(Clone, Debug)]
pub struct GroupNetwork {
    pub group: GroupId,
    pub peers: Arc<Peers>,
}

#[derive(Debug)]
pub struct GroupClient {
    group: GroupId,
    target: NodeId,
    peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupClient {
        if crate::transport::check_peer_addr(&node.addr).is_ok() {
            self.peers.set_addr(target, node.addr.clone());
        }
        GroupClient { group: self.group, target, peers: Arc::clone(&self.peers) }
    }
}

fn transport_error<E: std::error::Error>(e: PeerError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        PeerError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, BasicNode, E> {
    let e = PeerError::Io(target, "unexpected answer".into());
    RPCError::Network(NetworkError::new(&e))
}

impl GroupClient {
    async fn call(&self, req: PeerReq, option: &RPCOption) -> Result<PeerResp, PeerError> {
        self.peers.call(self.target, &req, option.hard_ttl()).await
    }
}

impl RaftNetwork<TypeConfig> for GroupClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.call(PeerReq::Append { group: self.group, req }, &option).await {
            Ok(PeerResp::Append(Ok(resp))) => Ok(resp),
            Ok(PeerResp::Append(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(unexpected(self.target)),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.call(PeerReq::Snapshot { group: self.group, req }, &option).await {
            Ok(PeerResp::Snapshot(Ok(resp))) => Ok(resp),
            Ok(PeerResp::Snapshot(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(unexpected(self.target)),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(PeerReq::Vote { group: self.group, req }, &option).await {
            Ok(PeerResp::Vote(Ok(resp))) => Ok(resp),
            Ok(PeerResp::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(unexpected(self.target)),
            Err(e) => Err(transport_error(e)),
        }
    }
}
