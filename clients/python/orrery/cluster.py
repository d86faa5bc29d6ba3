"""`client.cluster` (status, members, shards, version) and `client.auth`
(bearer tokens; admins only)."""

from typing import List, Optional, Sequence

from ._core import Group, Op, op
from ._proto.orrery.v1 import auth_pb2, cluster_pb2 as pb
from .types import (ClusterStatus, ClusterVersion, GroupStatus, Member, Members, NewToken, Rebalance,
                    Shard, TokenInfo)


def _status(r) -> ClusterStatus:
    return ClusterStatus(
        r.cluster_id, r.node_id, [GroupStatus.from_pb(g) for g in r.groups], list(r.unreachable),
        ClusterVersion.from_pb(r.cluster_version) if r.HasField("cluster_version") else None,
        r.insecure)


class ClusterOps(Group):
    @op
    def status(self) -> ClusterStatus:
        """Per-group Raft status gathered from every member."""
        return Op("Cluster", "Status", pb.StatusRequest(), _status)

    @op
    def members(self) -> Members:
        return Op("Cluster", "ListMembers", pb.ListMembersRequest(),
                  lambda r: Members(r.cluster_id, [Member.from_pb(m) for m in r.members], r.placement_leader))

    @op
    def shards(self) -> List[Shard]:
        return Op("Cluster", "ListShards", pb.ListShardsRequest(),
                  lambda r: [Shard(s.id, s.group_id, list(s.replicas), s.epoch, s.leader) for s in r.shards])

    @op
    def version(self) -> ClusterVersion:
        return Op("Cluster", "GetVersion", pb.GetVersionRequest(), ClusterVersion.from_pb)

    @op
    def set_version(self, hold: Optional[bool] = None, finalize: bool = False) -> ClusterVersion:
        """hold=True holds the active version, hold=False releases the
        hold; finalize=True releases it and advances now."""
        if finalize == (hold is not None):
            raise ValueError("give exactly one of hold=True/False or finalize=True")
        req = pb.SetVersionRequest(finalize=True) if finalize else pb.SetVersionRequest(hold=hold)
        return Op("Cluster", "SetVersion", req, ClusterVersion.from_pb)

    @op
    def rebalance(self) -> Rebalance:
        """Whether rebalancing is paused, whether replica counts are
        balanced, and the shards moving."""
        return Op("Cluster", "GetRebalance", pb.GetRebalanceRequest(), Rebalance.from_pb)

    @op
    def set_rebalance(self, paused: bool) -> Rebalance:
        """Pauses (True) or resumes (False) rebalancing, cluster-wide."""
        return Op("Cluster", "SetRebalance", pb.SetRebalanceRequest(paused=paused), Rebalance.from_pb)


class AuthOps(Group):
    @op
    def create_token(self, name: str, role: str, queues: Sequence[str] = (), ttl_s: int = 0) -> NewToken:
        """A new token: role admin, writer, reader or worker (`queues`: the
        queues a worker token may claim from; empty: all). `ttl_s` 0: until revoked."""
        req = auth_pb2.CreateTokenRequest(name=name, role=role, queues=list(queues), ttl_s=ttl_s)
        return Op("Auth", "CreateToken", req, lambda r: NewToken(TokenInfo.from_pb(r.info), r.token),
                  idempotent=False)

    @op
    def list_tokens(self) -> List[TokenInfo]:
        return Op("Auth", "ListTokens", auth_pb2.ListTokensRequest(),
                  lambda r: [TokenInfo.from_pb(t) for t in r.tokens])

    @op
    def revoke_token(self, id: str) -> TokenInfo:
        return Op("Auth", "RevokeToken", auth_pb2.RevokeTokenRequest(id=id), TokenInfo.from_pb)
