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

#[cfg(test)]
mod tests {
    use prost::Message;

    /// Issue 22, item 6: a search's query vector crosses gRPC as packed
    /// little-endian floats (proto3 packs `repeated float`): one tag, one
    /// length, then 4 bytes a component, not a tag per element nor text.
    #[test]
    fn search_vectors_travel_packed() {
        let vector: Vec<f32> = (0..50).map(|i| i as f32 * 0.25 - 3.0).collect();
        let req = super::v1::VectorSearchRequest {
            vector: vector.clone(),
            k: 10,
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        // Field 2, wire type 2 (length-delimited), length 200 (varint).
        let packed: Vec<u8> = [0x12, 0xc8, 0x01]
            .into_iter()
            .chain(vector.iter().flat_map(|x| x.to_le_bytes()))
            .collect();
        assert!(
            bytes.windows(packed.len()).any(|w| w == packed.as_slice()),
            "the vector is not one packed block"
        );
        // The vector, its 3 bytes of framing and k's 2 bytes: nothing else.
        assert_eq!(bytes.len(), 200 + 3 + 2);
        let back = super::v1::VectorSearchRequest::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.vector, vector);
    }
}
