//! Generated protobuf and gRPC code. See `proto/` for the definitions.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("orrery.v1");
}

pub mod peer {
    tonic::include_proto!("orrery.peer.v1");
}

impl peer::RaftStreamReply {
    /// The frame answering request `id` with what a unary `Raft` call would
    /// have returned.
    pub fn new(id: u64, result: Result<peer::RaftReply, tonic::Status>) -> Self {
        match result {
            Ok(reply) => Self {
                id,
                reply: Some(reply),
                code: 0,
                message: String::new(),
            },
            Err(status) => Self {
                id,
                reply: None,
                code: status.code() as i32,
                message: status.message().to_string(),
            },
        }
    }

    /// What a unary `Raft` call would have returned.
    pub fn into_result(self) -> Result<peer::RaftReply, tonic::Status> {
        match self.reply {
            Some(reply) => Ok(reply),
            None => Err(tonic::Status::new(
                tonic::Code::from_i32(self.code),
                self.message,
            )),
        }
    }
}
