//! tonic codecs for messages known only at run time.
//!
//! - [`DynamicCodec`]: protobuf [`DynamicMessage`]s, typed by a descriptor.
//! - [`RawJsonCodec`]: a message that is JSON text already, as go-micro's
//!   json codec frames it (`application/grpc+json`): the bytes go out and
//!   come back untouched.

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A tonic codec for [`DynamicMessage`]s: encodes any, decodes one type.
#[derive(Clone, Debug)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec that decodes replies as `response`.
    pub fn new(response: MessageDescriptor) -> Self {
        DynamicCodec { response }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.response.clone())
    }
}

/// Encodes [`DynamicMessage`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

/// Decodes [`DynamicMessage`]s of one type.
#[derive(Clone, Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decode: {e}")))
    }
}

/// A tonic codec whose messages are raw bytes (JSON text, for
/// `application/grpc+json`). The content-type itself is set on the request
/// (see [`crate::client`]); tonic always writes `application/grpc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawJsonCodec;

impl Codec for RawJsonCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawJsonCodec;
    type Decoder = RawJsonCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawJsonCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawJsonCodec
    }
}

impl Encoder for RawJsonCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawJsonCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len).to_vec()))
    }
}
