//! Generated protobuf and gRPC code. See `proto/` for the definitions.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("orrery.v1");
}

pub mod peer {
    tonic::include_proto!("orrery.peer.v1");
}
