//! GetFlows responses kept in their wire encoding, for servers that forward or pre-encode
//! them (the relay passes each node's responses on as they came; decoding and re-encoding
//! every flow would cost more than everything else it does).
//!
//! - [`PreEncodedCodec`]: a server codec whose responses are bytes already encoded as the
//!   method's response message, written to the wire unchanged;
//! - [`GetFlowsClientCodec`]: a client codec for `observer.Observer/GetFlows` that keeps
//!   each response's bytes and reads only its event time ([`response_time_ns`]);
//! - [`ObserverRoutes`]: serves `observer.Observer` with GetFlows answered from
//!   [`EncodedFlows`] through [`PreEncodedCodec`], the other methods by the generated
//!   server; [`BatchStream`] turns batches sent on a channel into the response stream.
//!
//! Both are wire-compatible with the generated prost codecs: a peer cannot tell them apart.

use crate::observer::{
    observer_server::{Observer, ObserverServer},
    GetFlowsRequest,
};
use prost::{bytes::Buf, Message};
use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{http, Body, BoxFuture, Bytes, Service, StdError},
    server::NamedService,
    Request, Response, Status,
};

/// The GetFlows method's path.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";

/// Why an encoded response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// The bytes are not a well-formed protobuf message.
    #[error("malformed GetFlowsResponse: {0}")]
    Malformed(&'static str),
}

/// One GetFlows response, still encoded, with the time the merge orders it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedResponse {
    /// Event time in ns since the epoch: the envelope's `time`, else the flow's, else 0.
    pub time_ns: i64,
    /// The `GetFlowsResponse` message as received.
    pub bytes: Bytes,
}

fn varint(buf: &mut &[u8]) -> Result<u64, ScanError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf
            .split_first()
            .ok_or(ScanError::Malformed("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(ScanError::Malformed("varint longer than 10 bytes"))
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], ScanError> {
    let n = usize::try_from(n).map_err(|_| ScanError::Malformed("length out of range"))?;
    if n > buf.len() {
        return Err(ScanError::Malformed("field runs past the message"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// One field's value, as far as the scan needs it.
enum Value<'a> {
    Varint(u64),
    /// Length-delimited or fixed-size.
    Bytes(&'a [u8]),
}

/// Calls `each(field number, value)` for every field of one message level.
fn fields<'a>(mut buf: &'a [u8], mut each: impl FnMut(u64, Value<'a>)) -> Result<(), ScanError> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut buf)?),
            1 => Value::Bytes(take(&mut buf, 8)?),
            2 => {
                let n = varint(&mut buf)?;
                Value::Bytes(take(&mut buf, n)?)
            }
            5 => Value::Bytes(take(&mut buf, 4)?),
            // Groups (3, 4) are not used by these messages.
            _ => return Err(ScanError::Malformed("unsupported wire type")),
        };
        each(key >> 3, value);
    }
    Ok(())
}

/// A `google.protobuf.Timestamp` in ns since the epoch (`seconds·10⁹ + nanos`,
/// saturating, as the relay has always computed it).
fn timestamp_ns(msg: &[u8]) -> Result<i64, ScanError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    fields(msg, |field, value| match (field, value) {
        (1, Value::Varint(v)) => seconds = v as i64,
        (2, Value::Varint(v)) => nanos = v as i32,
        _ => {}
    })?;
    Ok(seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(nanos)))
}

/// The event time of an encoded `GetFlowsResponse`, as the relay orders by it: `time`
/// (field 1001) when present, else the flow's own `time`, else 0. The rest of the message
/// is only walked over, not checked.
pub fn response_time_ns(msg: &[u8]) -> Result<i64, ScanError> {
    let (mut envelope, mut flow) = (None, None);
    fields(msg, |field, value| match (field, value) {
        (1001, Value::Bytes(b)) => envelope = Some(b),
        (1, Value::Bytes(b)) => flow = Some(b),
        _ => {}
    })?;
    if let Some(t) = envelope {
        return timestamp_ns(t);
    }
    let Some(flow) = flow else { return Ok(0) };
    let mut time = None;
    fields(flow, |field, value| {
        if let (1, Value::Bytes(b)) = (field, value) {
            time = Some(b);
        }
    })?;
    time.map_or(Ok(0), timestamp_ns)
}

/// Server codec for a method whose responses are handed over already encoded: requests
/// (`Req`) are decoded as usual, responses written as they are.
pub struct PreEncodedCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for PreEncodedCodec<Req> {
    fn default() -> Self {
        PreEncodedCodec(PhantomData)
    }
}

/// Writes pre-encoded messages.
#[derive(Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

/// Decodes prost messages (as the generated codec does).
pub struct MessageDecoder<M>(PhantomData<fn() -> M>);

impl<M: Message + Default> Decoder for MessageDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<Req: Message + Default + Send + 'static> Codec for PreEncodedCodec<Req> {
    type Encode = Bytes;
    type Decode = Req;
    type Encoder = BytesEncoder;
    type Decoder = MessageDecoder<Req>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> MessageDecoder<Req> {
        MessageDecoder(PhantomData)
    }
}

/// Client codec for `observer.Observer/GetFlows` that keeps responses encoded.
#[derive(Debug, Default, Clone, Copy)]
pub struct GetFlowsClientCodec;

/// Encodes the request as the generated codec does.
#[derive(Debug, Default)]
pub struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = GetFlowsRequest;
    type Error = Status;

    fn encode(&mut self, item: GetFlowsRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

/// Keeps each response's bytes and reads its time.
#[derive(Debug, Default)]
pub struct EncodedResponseDecoder;

impl Decoder for EncodedResponseDecoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<EncodedResponse>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let time_ns = response_time_ns(&bytes).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(EncodedResponse { time_ns, bytes }))
    }
}

impl Codec for GetFlowsClientCodec {
    type Encode = GetFlowsRequest;
    type Decode = EncodedResponse;
    type Encoder = RequestEncoder;
    type Decoder = EncodedResponseDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> EncodedResponseDecoder {
        EncodedResponseDecoder
    }
}

/// Encoded responses sent in batches on a channel, as a response stream.
pub struct BatchStream {
    rx: mpsc::Receiver<Vec<Bytes>>,
    batch: std::vec::IntoIter<Bytes>,
}

impl BatchStream {
    /// The stream of what is sent on the other end of `rx`; it ends when that is dropped.
    pub fn new(rx: mpsc::Receiver<Vec<Bytes>>) -> Self {
        BatchStream {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    /// The same responses decoded, for callers of the generated `Observer` trait (the
    /// served route writes the bytes unchanged and never needs this).
    pub fn decoded(self) -> tonic::codegen::BoxStream<crate::observer::GetFlowsResponse> {
        use tokio_stream::StreamExt;
        Box::pin(self.map(|b| {
            b.and_then(|b| {
                crate::observer::GetFlowsResponse::decode(b)
                    .map_err(|e| Status::internal(e.to_string()))
            })
        }))
    }
}

impl Stream for BatchStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(b) = self.batch.next() {
                return Poll::Ready(Some(Ok(b)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A GetFlows implementation that answers with encoded `GetFlowsResponse`s.
pub trait EncodedFlows: Send + Sync + 'static {
    /// The responses, each an encoded `GetFlowsResponse`.
    type Stream: Stream<Item = Result<Bytes, Status>> + Send + 'static;

    /// Answers a GetFlows request.
    fn encoded_flows(
        &self,
        req: GetFlowsRequest,
    ) -> impl Future<Output = Result<Self::Stream, Status>> + Send;
}

/// `observer.Observer` as served: GetFlows answered by [`EncodedFlows`] with its bytes
/// written unchanged, every other method by the generated server (whose GetFlows is then
/// never called).
pub struct ObserverRoutes<T: Observer> {
    inner: Arc<T>,
    generated: ObserverServer<T>,
    max_request: usize,
}

impl<T: Observer> Clone for ObserverRoutes<T> {
    fn clone(&self) -> Self {
        ObserverRoutes {
            inner: self.inner.clone(),
            generated: self.generated.clone(),
            max_request: self.max_request,
        }
    }
}

impl<T: Observer + EncodedFlows> ObserverRoutes<T> {
    /// Serves `inner`, refusing requests larger than `max_request` bytes.
    pub fn new(inner: T, max_request: usize) -> Self {
        let inner = Arc::new(inner);
        ObserverRoutes {
            generated: ObserverServer::from_arc(inner.clone())
                .max_decoding_message_size(max_request),
            inner,
            max_request,
        }
    }
}

impl<T: Observer> NamedService for ObserverRoutes<T> {
    const NAME: &'static str = crate::observer::observer_server::SERVICE_NAME;
}

impl<T, B> Service<http::Request<B>> for ObserverRoutes<T>
where
    T: Observer + EncodedFlows,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != GET_FLOWS_PATH {
            return self.generated.call(req);
        }
        let inner = self.inner.clone();
        let max_request = self.max_request;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PreEncodedCodec::<GetFlowsRequest>::default())
                .apply_max_message_size_config(Some(max_request), None);
            Ok(grpc.server_streaming(GetFlowsMethod(inner), req).await)
        })
    }
}

struct GetFlowsMethod<T>(Arc<T>);

impl<T: EncodedFlows> tonic::server::ServerStreamingService<GetFlowsRequest> for GetFlowsMethod<T> {
    type Response = Bytes;
    type ResponseStream = T::Stream;
    type Future = BoxFuture<Response<T::Stream>, Status>;

    fn call(&mut self, req: Request<GetFlowsRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { Ok(Response::new(inner.encoded_flows(req.into_inner()).await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flow::{Flow, LostEvent},
        observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
        wkt::Timestamp,
    };

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn reads_the_time_the_relay_orders_by() {
        let flow = |t| {
            Some(ResponseTypes::Flow(Flow {
                time: t,
                node_name: "c/n1".into(),
                source_names: vec!["a.example".into()],
                ..Default::default()
            }))
        };
        let cases = [
            (
                ts(1_700_000_000, 5),
                flow(ts(1, 0)),
                1_700_000_000_000_000_005,
            ),
            (None, flow(ts(2, 7)), 2_000_000_007),
            (None, flow(None), 0),
            (
                ts(3, 0),
                Some(ResponseTypes::LostEvents(LostEvent {
                    num_events_lost: 9,
                    ..Default::default()
                })),
                3_000_000_000,
            ),
            (ts(-2, 500_000_000), None, -1_500_000_000),
            (None, None, 0),
        ];
        for (time, response_types, want) in cases {
            let r = GetFlowsResponse {
                node_name: "c/n1".into(),
                time,
                response_types,
            };
            assert_eq!(response_time_ns(&r.encode_to_vec()), Ok(want), "{r:?}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = GetFlowsResponse {
            time: ts(1, 2),
            ..Default::default()
        }
        .encode_to_vec();
        for cut in 1..good.len() {
            assert!(response_time_ns(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(response_time_ns(&[0x0b]).is_err(), "group wire type");
        assert!(response_time_ns(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ])
        .is_err());
    }
}
