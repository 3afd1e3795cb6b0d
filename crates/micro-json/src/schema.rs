//! Service schemas: descriptors as a service's gRPC reflection describes them,
//! fetched once per service and cached.
//!
//! The cache holds at most `capacity` services for at most `ttl` each, so a
//! redeployed service with a new schema is seen again, and no sequence of
//! requests grows it further. A service that serves no reflection (every
//! go-micro v2 service) is remembered as such for the same time, so calls to
//! it go straight out as JSON; other failed fetches are not cached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use micro_client::Idempotent;
use prost::Message;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use crate::error::{Error, ErrorKind};
use crate::target::Target;

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

/// A service's descriptors.
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
    /// When several packages have a service of that name, the first by full
    /// name that has the method (found without collecting or sorting: this
    /// runs on every call).
    pub fn method(&self, handler: &str, method: &str) -> Option<MethodDescriptor> {
        self.pool
            .services()
            .filter(|s| s.name() == handler)
            .filter_map(|s| s.methods().find(|m| m.name() == method))
            .min_by(|a, b| {
                a.parent_service()
                    .full_name()
                    .cmp(b.parent_service().full_name())
            })
    }

    /// `Handler.Method` of every method.
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

/// What a service's reflection told us.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// Its descriptors.
    Schema(Arc<Schema>),
    /// It serves no reflection (a go-micro service): call it with JSON as is.
    NoReflection,
}

struct Slot {
    created: Instant,
    lookup: OnceCell<Lookup>,
}

/// A bounded, expiring cache of service schemas, fetched on first use.
pub struct SchemaCache {
    target: Target,
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
    pub(crate) fn new(target: Target, capacity: usize, ttl: Duration) -> Self {
        SchemaCache {
            target,
            capacity: capacity.max(1),
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The schema of `service`, fetched within `timeout` if not cached; an
    /// [`ErrorKind::NoReflection`] error if it serves no reflection.
    pub async fn get(&self, service: &str, timeout: Duration) -> Result<Arc<Schema>, Error> {
        match self.lookup(service, timeout).await? {
            Lookup::Schema(schema) => Ok(schema),
            Lookup::NoReflection => Err(no_reflection(service, "")),
        }
    }

    /// What `service`'s reflection says, fetched within `timeout` if not cached.
    pub async fn lookup(&self, service: &str, timeout: Duration) -> Result<Lookup, Error> {
        let slot = self.slot(service);
        let result = slot
            .lookup
            .get_or_try_init(|| async {
                tokio::time::timeout(timeout, fetch(&self.target, service, timeout))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::of_service(
                            ErrorKind::Timeout,
                            service,
                            format!(
                                "service {service}: no schema through reflection within {timeout:?}"
                            ),
                        ))
                    })
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
            lookup: OnceCell::new(),
        });
        slots.insert(service.to_string(), slot.clone());
        slot
    }
}

fn no_reflection(service: &str, detail: &str) -> Error {
    Error::of_service(
        ErrorKind::NoReflection,
        service,
        format!(
            "service {service} does not serve gRPC reflection, which calling it with JSON needs{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ),
    )
}

/// Fetches every file a service's reflection lists, with their dependencies.
async fn fetch(target: &Target, service: &str, timeout: Duration) -> Result<Lookup, Error> {
    for path in REFLECTION_PATHS {
        match fetch_over(target, service, path, timeout).await {
            Ok(schema) => return Ok(Lookup::Schema(Arc::new(schema))),
            Err(FetchError::Unimplemented) => {}
            Err(FetchError::Failed(err)) => return Err(err),
        }
    }
    Ok(Lookup::NoReflection)
}

enum FetchError {
    Unimplemented,
    Failed(Error),
}

fn bad(service: &str, detail: String) -> FetchError {
    FetchError::Failed(Error::new(
        ErrorKind::BadReply,
        format!("service {service}: {detail}"),
    ))
}

async fn fetch_over(
    target: &Target,
    service: &str,
    path: &'static str,
    timeout: Duration,
) -> Result<Schema, FetchError> {
    let failed = |status: Status| FetchError::Failed(Error::call(status, service, path));
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(4);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    // Queued before the call starts, so the first message is in the body.
    let _ = tx.try_send(ask(MessageRequest::ListServices(String::new())));

    let mut grpc = tonic::client::Grpc::new(target.channel(service, false));
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.set_timeout(timeout);
    request.extensions_mut().insert(Idempotent);
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    grpc.ready().await.map_err(|e| {
        FetchError::Failed(Error::new(
            ErrorKind::Unavailable,
            format!("service {service}: {e}"),
        ))
    })?;
    let response = grpc
        .streaming(request, PathAndQuery::from_static(path), codec)
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Unimplemented => {
            return Err(FetchError::Unimplemented);
        }
        Err(status) => return Err(failed(status)),
    };
    let mut next = async || -> Result<MessageResponse, FetchError> {
        match stream.message().await {
            Ok(Some(ServerReflectionResponse {
                message_response: Some(MessageResponse::ErrorResponse(e)),
                ..
            })) => Err(FetchError::Failed(Error::of_service(
                ErrorKind::BadReply,
                service,
                format!(
                    "service {service}: reflection error {}: {}",
                    e.error_code, e.error_message
                ),
            ))),
            Ok(Some(ServerReflectionResponse {
                message_response: Some(m),
                ..
            })) => Ok(m),
            Ok(_) => Err(bad(service, "reflection stream ended early".into())),
            Err(status) if status.code() == Code::Unimplemented => Err(FetchError::Unimplemented),
            Err(status) => Err(failed(status)),
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
                return Err(bad(
                    service,
                    "schema larger than the gateway accepts".into(),
                ));
            }
            let file = prost_types::FileDescriptorProto::decode(raw.as_slice())
                .map_err(|e| bad(service, format!("bad descriptor from reflection: {e}")))?;
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
        bad(
            service,
            format!("unusable descriptors from reflection: {e}"),
        )
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
