//! The codec of every Puente service (the server stubs are generated with it, see build.rs):
//! prost's encoding, and a decoder whose errors are INVALID_ARGUMENT (`ApiError::Malformed`),
//! not tonic's INTERNAL. Requests reach it only through the wire guard (`wire`), which has
//! already bounded every repeated field.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstEncoder;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = MessageEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(ProstEncoder::new(BufferSettings::default()))
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// prost's encoder, as tonic's default codec has it.
#[derive(Debug)]
pub struct MessageEncoder<T>(ProstEncoder<T>);

impl<T: prost::Message> Encoder for MessageEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.0.encode(item, buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[derive(Debug)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| ApiError::Malformed(e.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_decode_error_is_invalid_argument_with_error_info() {
        use tonic_types::StatusExt;
        let error = puente_proto::v1::CreateTransfersRequest::decode(&[0x0a, 0x01, 0xff][..]).unwrap_err();
        let status: Status = ApiError::Malformed(error.to_string()).into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("MALFORMED_MESSAGE", crate::ERROR_DOMAIN));
    }

    use prost::Message as _;
}
