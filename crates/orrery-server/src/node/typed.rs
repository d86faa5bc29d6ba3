//! Typed calls into the node: each domain's command knows the response it
//! gets back, and each read knows its answer, so services call
//! `node.write(group, KvCommand::Put {..})` and get a `KvResponse` without
//! matching on the untyped [`Response`] / [`QueryResult`] enums.
//!
//! The wire types ([`Command`], [`Query`]) are unchanged: forwarded requests
//! between nodes of different builds keep decoding.

use crate::node::ops::{Query, QueryResult};
use orrery_dataset::{DatasetCommand, DatasetQuery, DatasetQueryResult, DatasetResponse};
use orrery_kv::{KvCommand, KvItem, KvResponse, Versioned};
use orrery_placement::{PlacementCommand, PlacementResponse, PlacementState};
use orrery_policy::store::{PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse};
use orrery_queue::{JobsQuery, JobsQueryResult, QueueCommand, QueueResponse};
use orrery_raft::{Command, Response};
use orrery_vector::{
    CollectionConfig, Hit, PointId, SearchRequest, ShardInfo, StoredPoint, VectorCommand,
    VectorError, VectorResponse,
};
use std::collections::BTreeMap;

/// A replicated command and the response its state machine gives.
pub trait DomainCommand: Send + 'static {
    type Reply: Send;
    fn into_command(self) -> Command;
    /// The typed response, or the response as it came when it is of another
    /// domain (a bug: the caller reports it as an internal error).
    fn reply(r: Response) -> Result<Self::Reply, Response>;
}

/// A read of one group's applied state and its answer.
pub trait DomainQuery: Send + 'static {
    type Answer: Send;
    fn into_query(self) -> Query;
    fn answer(r: QueryResult) -> Result<Self::Answer, Box<QueryResult>>;
}

macro_rules! domain_command {
    ($cmd:ty, $variant:ident, $reply:ty) => {
        impl DomainCommand for $cmd {
            type Reply = $reply;
            fn into_command(self) -> Command {
                Command::$variant(self)
            }
            fn reply(r: Response) -> Result<$reply, Response> {
                match r {
                    Response::$variant(x) => Ok(x),
                    other => Err(other),
                }
            }
        }
    };
}

domain_command!(PlacementCommand, Placement, PlacementResponse);
domain_command!(KvCommand, Kv, KvResponse);
domain_command!(QueueCommand, Queue, QueueResponse);
domain_command!(VectorCommand, Vector, VectorResponse);
domain_command!(PolicyCommand, Policy, PolicyResponse);
domain_command!(DatasetCommand, Dataset, DatasetResponse);

/// Reads whose wire form is a [`Query`] variant wrapping the query value.
macro_rules! domain_query {
    ($q:ty, $variant:ident, $answer:ty) => {
        impl DomainQuery for $q {
            type Answer = $answer;
            fn into_query(self) -> Query {
                Query::$variant(self)
            }
            fn answer(r: QueryResult) -> Result<$answer, Box<QueryResult>> {
                match r {
                    QueryResult::$variant(x) => Ok(x),
                    other => Err(Box::new(other)),
                }
            }
        }
    };
}

domain_query!(JobsQuery, Jobs, JobsQueryResult);
domain_query!(PolicyQuery, Policy, PolicyQueryResult);
domain_query!(DatasetQuery, Dataset, DatasetQueryResult);

/// Reads whose wire form is a [`Query`] variant with inline fields: a small
/// struct per read, converted to that variant.
macro_rules! inline_query {
    ($name:ident { $($f:ident : $t:ty),* } => $variant:ident, $answer:ty) => {
        #[derive(Clone, Debug)]
        pub struct $name { $(pub $f: $t),* }
        impl DomainQuery for $name {
            type Answer = $answer;
            fn into_query(self) -> Query {
                let $name { $($f),* } = self;
                Query::$variant { $($f),* }
            }
            fn answer(r: QueryResult) -> Result<$answer, Box<QueryResult>> {
                match r {
                    QueryResult::$variant(x) => Ok(x),
                    other => Err(Box::new(other)),
                }
            }
        }
    };
}

inline_query!(KvGet { key: Vec<u8> } => KvGet, Option<Versioned>);
inline_query!(KvList { prefix: Vec<u8>, limit: usize } => KvList, Vec<KvItem>);
inline_query!(VectorGet { collection: String, uid: u64, id: PointId } => VectorGet, Option<StoredPoint>);
inline_query!(VectorInfo { collection: String, uid: u64 } => VectorInfo, ShardInfo);

/// The placement group's whole state (membership, shard map).
#[derive(Clone, Debug)]
pub struct PlacementRead;

impl DomainQuery for PlacementRead {
    type Answer = PlacementState;
    fn into_query(self) -> Query {
        Query::Placement
    }
    fn answer(r: QueryResult) -> Result<PlacementState, Box<QueryResult>> {
        match r {
            QueryResult::Placement(p) => Ok(*p),
            other => Err(Box::new(other)),
        }
    }
}

/// The vector collections' catalog (placement group).
#[derive(Clone, Debug)]
pub struct VectorCatalog;

impl DomainQuery for VectorCatalog {
    type Answer = BTreeMap<String, CollectionConfig>;
    fn into_query(self) -> Query {
        Query::VectorCatalog
    }
    fn answer(r: QueryResult) -> Result<Self::Answer, Box<QueryResult>> {
        match r {
            QueryResult::VectorCatalog(c) => Ok(c),
            other => Err(Box::new(other)),
        }
    }
}

/// One shard's part of a vector search.
#[derive(Clone, Debug)]
pub struct VectorSearch(pub Box<SearchRequest>);

impl DomainQuery for VectorSearch {
    type Answer = Result<Vec<Hit>, VectorError>;
    fn into_query(self) -> Query {
        Query::VectorSearch(self.0)
    }
    fn answer(r: QueryResult) -> Result<Self::Answer, Box<QueryResult>> {
        match r {
            QueryResult::VectorSearch(h) => Ok(h),
            other => Err(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_another_domain_are_handed_back() {
        let r = Response::Kv(KvResponse::Put { revision: 3 });
        assert_eq!(
            <KvCommand as DomainCommand>::reply(r.clone()),
            Ok(KvResponse::Put { revision: 3 })
        );
        assert_eq!(<QueueCommand as DomainCommand>::reply(r.clone()), Err(r));
    }

    #[test]
    fn inline_queries_keep_their_wire_form() {
        let q = KvList {
            prefix: b"a".to_vec(),
            limit: 7,
        }
        .into_query();
        assert!(matches!(q, Query::KvList { ref prefix, limit: 7 } if prefix == b"a"));
        let a = <KvGet as DomainQuery>::answer(QueryResult::KvGet(None));
        assert!(matches!(a, Ok(None)));
        assert!(<VectorCatalog as DomainQuery>::answer(QueryResult::KvGet(None)).is_err());
    }
}
