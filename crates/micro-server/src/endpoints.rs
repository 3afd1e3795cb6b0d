//! Registry endpoints from protobuf descriptors.
//!
//! go-micro registers each handler method as `Handler.Method` with the shape of
//! its request and response: a [`Value`] tree named after the message, one
//! child per field (named as the field's JSON tag, which for protobuf-go is the
//! proto field name; typed with the Go type name), at most three levels deep.

use micro_registry::{Endpoint, Metadata, Value};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, ServiceDescriptor};

/// go-micro describes values at most this deep (the root is depth 0).
const MAX_DEPTH: usize = 3;

/// Decodes one or more encoded `FileDescriptorSet`s into a pool.
pub(crate) fn pool(sets: &[Vec<u8>]) -> Result<DescriptorPool, String> {
    let mut pool = DescriptorPool::new();
    for set in sets {
        pool.decode_file_descriptor_set(set.as_slice())
            .map_err(|e| format!("bad file descriptor set: {e}"))?;
    }
    Ok(pool)
}

/// The handler name go-micro uses for a proto service: its name without package.
pub(crate) fn handler_name(full_service_name: &str) -> &str {
    full_service_name
        .rsplit_once('.')
        .map_or(full_service_name, |(_, name)| name)
}

/// The endpoints of one proto service, `Handler.Method` each.
pub(crate) fn endpoints(service: &ServiceDescriptor) -> Vec<Endpoint> {
    let handler = service.name();
    service
        .methods()
        .map(|method| {
            let mut metadata = Metadata::new();
            if method.is_client_streaming() || method.is_server_streaming() {
                metadata.insert("stream".into(), "true".into());
            }
            Endpoint {
                name: format!("{handler}.{}", method.name()),
                request: Some(message_value(&method.input(), 0)),
                response: Some(message_value(&method.output(), 0)),
                metadata,
            }
        })
        .collect()
}

fn message_value(message: &MessageDescriptor, depth: usize) -> Value {
    let mut value = Value::new(message.name(), message.name());
    if depth + 1 < MAX_DEPTH {
        value.values = message
            .fields()
            .map(|field| field_value(&field, depth + 1))
            .collect();
    }
    value
}

fn field_value(field: &FieldDescriptor, depth: usize) -> Value {
    let name = field.name().to_string();
    if field.is_map() {
        let kind = match field.kind() {
            Kind::Message(entry) => format!(
                "map[{}]{}",
                type_name(&entry.map_entry_key_field().kind()),
                type_name(&entry.map_entry_value_field().kind())
            ),
            other => type_name(&other),
        };
        return Value::new(name, kind);
    }
    if field.is_list() {
        return Value::new(name, format!("[]{}", type_name(&field.kind())));
    }
    match field.kind() {
        Kind::Message(message) => {
            let mut value = message_value(&message, depth);
            value.name = name;
            value
        }
        other => Value::new(name, type_name(&other)),
    }
}

/// The Go type protobuf-go generates for a field kind.
fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "float64".into(),
        Kind::Float => "float32".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "int32".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "int64".into(),
        Kind::Uint32 | Kind::Fixed32 => "uint32".into(),
        Kind::Uint64 | Kind::Fixed64 => "uint64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "[]uint8".into(),
        Kind::Message(message) => message.name().into(),
        Kind::Enum(e) => e.name().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_names_drop_the_package() {
        assert_eq!(handler_name("go.micro.srv.user.User"), "User");
        assert_eq!(handler_name("Greeter"), "Greeter");
    }
}
