//! Calling any toolkit service with JSON, with no generated code: schemas
//! come from the service itself through gRPC server reflection.
//!
//! [`DynamicClient::call_json`] resolves `Handler.Method` in the service's
//! descriptors (fetched once per service over `grpc.reflection.v1`, or
//! `v1alpha` for older servers, and cached), turns the JSON into the request
//! message (canonical proto3 JSON; unknown fields are an error), calls
//! through the toolkit [`Client`] — round robin, failover, deadlines — and
//! returns the reply as canonical proto3 JSON.
//!
//! The cache holds at most `capacity` services for at most `ttl` each, so a
//! redeployed service with a new schema is seen again, and no sequence of
//! requests grows it further. Failed fetches are not cached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use micro_client::{Client, Idempotent};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use crate::error::ApiError;

/// Reflection paths, newest first. v1 and v1alpha messages are the same on
/// the wire, so the v1 types serve both.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];
/// At most this many files per service schema.
const MAX_FILES: usize = 256;
/// At most this many bytes of descriptors per service schema.
const MAX_SCHEMA_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of a dotted query key (`a.b.c`).
const MAX_QUERY_DEPTH: usize = 16;

/// What to send: a JSON body, or a query string read as JSON.
#[derive(Clone, Copy, Debug)]
pub enum JsonInput<'a> {
    /// A JSON object (an empty body is `{}`).
    Body(&'a [u8]),
    /// `a=1&b=x&list=1&list=2&nested.field=y`: each key a field (dots
    /// descend into message fields), repeated keys fill repeated fields.
    Query(&'a str),
}

/// How one dynamic call is made.
#[derive(Clone, Copy, Debug)]
pub struct CallOptions {
    /// The call's deadline (sent as `grpc-timeout`; the schema fetch, if
    /// needed, comes out of the same budget).
    pub timeout: Duration,
    /// Whether the call may run twice (retried after any server failure).
    pub idempotent: bool,
}

/// A service's descriptors, as its reflection service describes them.
#[derive(Clone, Debug)]
pub struct Schema {
    pool: DescriptorPool,
}

impl Schema {
    /// Builds a schema from file descriptors (any order).
    pub fn from_files(files: Vec<prost_types::FileDescriptorProto>) -> Result<Schema, String> {
        let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: files,
        })
        .map_err(|e| e.to_string())?;
        Ok(Schema { pool })
    }

    /// The method `handler.method`: `handler` is a proto service's name
    /// without its package, as go-micro's servers route.
    pub fn method(&self, handler: &str, method: &str) -> Option<MethodDescriptor> {
        let mut services: Vec<_> = self
            .pool
            .services()
            .filter(|s| s.name() == handler)
            .collect();
        services.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        services
            .into_iter()
            .find_map(|s| s.methods().find(|m| m.name() == method))
    }

    /// `Handler.Method` of every unary method.
    pub fn endpoints(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .pool
            .services()
            .filter(|s| !s.full_name().starts_with("grpc.reflection."))
            .flat_map(|s| {
                let handler = s.name().to_string();
                s.methods()
                    .map(move |m| format!("{handler}.{}", m.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }
}

struct Slot {
    created: Instant,
    schema: OnceCell<Arc<Schema>>,
}

/// A bounded, expiring cache of service schemas, fetched on first use.
pub struct SchemaCache {
    client: Client,
    capacity: usize,
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SchemaCache {
    pub fn new(client: Client, capacity: usize, ttl: Duration) -> Self {
        SchemaCache {
            client,
            capacity: capacity.max(1),
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The schema of `service`, fetched within `timeout` if not cached.
    pub async fn get(&self, service: &str, timeout: Duration) -> Result<Arc<Schema>, ApiError> {
        let slot = self.slot(service);
        let result = slot
            .schema
            .get_or_try_init(|| async {
                tokio::time::timeout(timeout, fetch(&self.client, service, timeout))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError(micro_errors::MicroError::new(
                            service,
                            504,
                            format!(
                                "service {service}: no schema through reflection within {timeout:?}"
                            ),
                        )))
                    })
                    .map(Arc::new)
            })
            .await
            .cloned();
        if result.is_err() {
            let mut slots = self.lock();
            if slots.get(service).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(service);
            }
        }
        result
    }

    /// Forgets `service`'s schema (e.g. after a call failed to decode).
    pub fn invalidate(&self, service: &str) {
        self.lock().remove(service);
    }

    /// How many services are cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, service: &str) -> Arc<Slot> {
        let mut slots = self.lock();
        if let Some(slot) = slots.get(service) {
            if slot.created.elapsed() < self.ttl {
                return slot.clone();
            }
            slots.remove(service);
        }
        if slots.len() >= self.capacity {
            slots.retain(|_, s| s.created.elapsed() < self.ttl);
        }
        while slots.len() >= self.capacity {
            let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            slots.remove(&oldest);
        }
        let slot = Arc::new(Slot {
            created: Instant::now(),
            schema: OnceCell::new(),
        });
        slots.insert(service.to_string(), slot.clone());
        slot
    }
}

/// Fetches every file a service's reflection lists, with their dependencies.
async fn fetch(client: &Client, service: &str, timeout: Duration) -> Result<Schema, ApiError> {
    let mut last = None;
    for path in REFLECTION_PATHS {
        match fetch_over(client, service, path, timeout).await {
            Ok(schema) => return Ok(schema),
            Err(FetchError::Unimplemented(status)) => last = Some(status),
            Err(FetchError::Api(err)) => return Err(err),
        }
    }
    let detail = last.map(|s| s.message().to_string()).unwrap_or_default();
    Err(ApiError(micro_errors::MicroError::new(
        service,
        501,
        format!(
            "service {service} does not serve gRPC reflection, which calling it with JSON needs{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ),
    )))
}

enum FetchError {
    Unimplemented(Status),
    Api(ApiError),
}

async fn fetch_over(
    client: &Client,
    service: &str,
    path: &'static str,
    timeout: Duration,
) -> Result<Schema, FetchError> {
    let api = |status: &Status| FetchError::Api(ApiError::from_call(status, service, path));
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(4);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    // Queued before the call starts, so the first message is in the body.
    let _ = tx.try_send(ask(MessageRequest::ListServices(String::new())));

    let mut grpc = tonic::client::Grpc::new(client.service(service));
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.set_timeout(timeout);
    request.extensions_mut().insert(Idempotent);
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    grpc.ready()
        .await
        .map_err(|e| FetchError::Api(ApiError::new(503, format!("service {service}: {e}"))))?;
    let response = grpc
        .streaming(request, PathAndQuery::from_static(path), codec)
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Unimplemented => {
            return Err(FetchError::Unimplemented(status));
        }
        Err(status) => return Err(api(&status)),
    };
    let mut next = async || -> Result<MessageResponse, FetchError> {
        match stream.message().await {
            Ok(Some(ServerReflectionResponse {
                message_response: Some(MessageResponse::ErrorResponse(e)),
                ..
            })) => Err(FetchError::Api(ApiError(micro_errors::MicroError::new(
                service,
                502,
                format!(
                    "service {service}: reflection error {}: {}",
                    e.error_code, e.error_message
                ),
            )))),
            Ok(Some(ServerReflectionResponse {
                message_response: Some(m),
                ..
            })) => Ok(m),
            Ok(_) => Err(FetchError::Api(ApiError::new(
                502,
                format!("service {service}: reflection stream ended early"),
            ))),
            Err(status) if status.code() == Code::Unimplemented => {
                Err(FetchError::Unimplemented(status))
            }
            Err(status) => Err(api(&status)),
        }
    };

    let services = match next().await? {
        MessageResponse::ListServicesResponse(list) => list.service,
        _ => Vec::new(),
    };

    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut wanted: VecDeque<MessageRequest> = services
        .into_iter()
        .map(|s| s.name)
        .filter(|name| !name.starts_with("grpc.reflection."))
        .map(MessageRequest::FileContainingSymbol)
        .collect();
    let mut bytes = 0usize;
    while let Some(request) = wanted.pop_front() {
        if let MessageRequest::FileContainingSymbol(symbol) = &request
            && files.iter().any(|f| declares(f, symbol))
        {
            continue;
        }
        if tx.send(ask(request)).await.is_err() {
            break;
        }
        let MessageResponse::FileDescriptorResponse(found) = next().await? else {
            continue;
        };
        for raw in found.file_descriptor_proto {
            bytes += raw.len();
            if bytes > MAX_SCHEMA_BYTES || files.len() >= MAX_FILES {
                return Err(FetchError::Api(ApiError::new(
                    502,
                    format!("service {service}: schema larger than the gateway accepts"),
                )));
            }
            let file = prost_types::FileDescriptorProto::decode(raw.as_slice()).map_err(|e| {
                FetchError::Api(ApiError::new(
                    502,
                    format!("service {service}: bad descriptor from reflection: {e}"),
                ))
            })?;
            if !seen.insert(file.name().to_string()) {
                continue;
            }
            for dependency in &file.dependency {
                if !seen.contains(dependency) {
                    wanted.push_back(MessageRequest::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
        }
    }
    drop(tx);
    Schema::from_files(files).map_err(|e| {
        FetchError::Api(ApiError::new(
            502,
            format!("service {service}: unusable descriptors from reflection: {e}"),
        ))
    })
}

/// Whether `file` declares the service `symbol`.
fn declares(file: &prost_types::FileDescriptorProto, symbol: &str) -> bool {
    let package = file.package();
    file.service.iter().any(|s| {
        let full = if package.is_empty() {
            s.name().to_string()
        } else {
            format!("{package}.{}", s.name())
        };
        full == symbol
    })
}

/// Calls services with JSON. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamicClient {
    client: Client,
    schemas: Arc<SchemaCache>,
}

impl DynamicClient {
    /// A client with a schema cache of `capacity` services, each kept `ttl`.
    pub fn new(client: Client, capacity: usize, ttl: Duration) -> Self {
        DynamicClient {
            schemas: Arc::new(SchemaCache::new(client.clone(), capacity, ttl)),
            client,
        }
    }

    pub fn schemas(&self) -> &SchemaCache {
        &self.schemas
    }

    /// Calls `service` endpoint `handler.method` with `input`; the reply as
    /// canonical proto3 JSON.
    pub async fn call_json(
        &self,
        service: &str,
        handler: &str,
        method: &str,
        input: JsonInput<'_>,
        options: CallOptions,
    ) -> Result<Vec<u8>, ApiError> {
        let started = Instant::now();
        let endpoint = format!("{handler}.{method}");
        let schema = self.schemas.get(service, options.timeout).await?;
        let Some(descriptor) = schema.method(handler, method) else {
            return Err(ApiError(micro_errors::MicroError::new(
                service,
                404,
                format!("service {service} has no endpoint {endpoint}"),
            )));
        };
        if descriptor.is_client_streaming() || descriptor.is_server_streaming() {
            return Err(ApiError(micro_errors::MicroError::new(
                service,
                501,
                format!("endpoint {endpoint} of {service} streams; only unary calls take JSON"),
            )));
        }
        let message = match input {
            JsonInput::Body(body) => json_to_message(descriptor.input(), body)?,
            JsonInput::Query(query) => query_to_message(descriptor.input(), query)?,
        };

        let remaining = options.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(ApiError(micro_errors::MicroError::new(
                service,
                504,
                format!(
                    "service {service}: deadline of {:?} exceeded",
                    options.timeout
                ),
            )));
        }
        let mut request = tonic::Request::new(message);
        request.set_timeout(remaining);
        if options.idempotent {
            request.extensions_mut().insert(Idempotent);
        }
        let path = PathAndQuery::try_from(format!("/{service}.{handler}/{method}"))
            .map_err(|_| ApiError::bad_request(format!("cannot call {service} {endpoint}")))?;
        let mut grpc = tonic::client::Grpc::new(self.client.service(service));
        grpc.ready()
            .await
            .map_err(|e| ApiError::new(503, format!("service {service}: {e}")))?;
        let reply = grpc
            .unary(request, path, DynamicCodec::new(descriptor.output()))
            .await
            .map_err(|status| {
                if status.code() == Code::Internal && status.message().starts_with("decode:") {
                    // Our schema may be stale.
                    self.schemas.invalidate(service);
                }
                ApiError::from_call(&status, service, &endpoint)
            })?;
        message_to_json(&reply.into_inner())
    }
}

/// A JSON object → the message `descriptor` describes; malformed or unknown
/// fields are a 400 naming the problem.
pub fn json_to_message(
    descriptor: MessageDescriptor,
    body: &[u8],
) -> Result<DynamicMessage, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(descriptor));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|m| deserializer.end().map(|()| m))
    .map_err(|e| {
        ApiError::bad_request(format!(
            "malformed JSON for {}: {e}",
            descriptor.full_name()
        ))
    })?;
    Ok(message)
}

/// A query string → the message `descriptor` describes (see [`JsonInput::Query`]).
pub fn query_to_message(
    descriptor: MessageDescriptor,
    query: &str,
) -> Result<DynamicMessage, ApiError> {
    let json = query_to_json(&descriptor, query)?;
    let bytes =
        serde_json::to_vec(&json).map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    json_to_message(descriptor, &bytes)
}

/// The JSON a query string stands for, typed by the message's fields: bools
/// and numbers parsed, repeated fields as arrays, dotted keys as nested
/// objects. Unknown keys are kept as strings (so the message rejects them).
pub fn query_to_json(descriptor: &MessageDescriptor, query: &str) -> Result<Value, ApiError> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let path: Vec<&str> = key.split('.').collect();
        if path.len() > MAX_QUERY_DEPTH || path.iter().any(|p| p.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "bad query parameter {key:?}"
            )));
        }
        insert(&mut root, Some(descriptor), &path, &value)?;
    }
    Ok(Value::Object(root))
}

fn insert(
    object: &mut Map<String, Value>,
    descriptor: Option<&MessageDescriptor>,
    path: &[&str],
    value: &str,
) -> Result<(), ApiError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    let field = descriptor.and_then(|d| {
        d.get_field_by_json_name(first)
            .or_else(|| d.get_field_by_name(first))
    });
    if !rest.is_empty() {
        let nested = match field.as_ref().map(|f| f.kind()) {
            Some(Kind::Message(m)) => Some(m),
            _ => None,
        };
        let entry = object
            .entry(first.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = entry else {
            return Err(ApiError::bad_request(format!(
                "query parameter {first:?} is both a value and an object"
            )));
        };
        return insert(inner, nested.as_ref(), rest, value);
    }
    let typed = match field.as_ref() {
        Some(f) => typed_value(&f.kind(), value),
        None => Value::String(value.to_string()),
    };
    match field {
        Some(f) if f.is_list() => {
            let entry = object
                .entry(first.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(typed);
            }
        }
        _ => {
            // The first value of a repeated key wins, as in go-micro.
            object.entry(first.to_string()).or_insert(typed);
        }
    }
    Ok(())
}

fn typed_value(kind: &Kind, value: &str) -> Value {
    match kind {
        Kind::Bool => match value {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        Kind::Message(_) => {
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()))
        }
        // Proto3 JSON takes numbers as strings too; enums by name or number.
        _ => Value::String(value.to_string()),
    }
}

/// A message as canonical proto3 JSON.
pub fn message_to_json(message: &DynamicMessage) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| ApiError::new(502, format!("cannot render the reply as JSON: {e}")))?;
    Ok(out)
}

/// A tonic codec for messages known only at run time.
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
