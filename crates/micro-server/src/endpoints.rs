//! Registry endpoints from protobuf descriptors.
//!
//! go-micro registers each handler method as `Handler.Method` with the shape of
//! its request and response: a [`Value`] tree named after the message, one
//! child per field (named as the field's JSON tag, which for protobuf-go is the
//! proto field name; typed with the Go type name), at most three levels deep,
//! exactly as go-micro's `server/grpc/extractor.go` writes them for the Go
//! types protoc-gen-go generates: nested messages by their Go name (`User`
//! for proto `user`, `Outer_Inner` for a nested one), repeated fields `[]T`,
//! maps `""` (an unnamed Go type), a oneof as one `isMsg_Name` value.

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

/// A subscriber's endpoint as go-micro registers it: named `Func` (a
/// function subscriber), the message's shape as its request, no response,
/// metadata exactly `{"subscriber":"true","topic":<topic>}`.
pub(crate) fn subscriber_endpoint(topic: &str, message: Option<&MessageDescriptor>) -> Endpoint {
    let mut metadata = Metadata::new();
    metadata.insert("subscriber".into(), "true".into());
    metadata.insert("topic".into(), topic.into());
    Endpoint {
        name: "Func".into(),
        request: message.map(|m| message_value(m, 0)),
        response: None,
        metadata,
    }
}

fn message_value(message: &MessageDescriptor, depth: usize) -> Value {
    let go_name = go_type_name(message.full_name(), message.package_name());
    let mut value = Value::new(go_name.clone(), go_name);
    if depth + 1 < MAX_DEPTH {
        let mut oneofs_seen = Vec::new();
        for field in message.fields() {
            // A oneof is one Go struct field of interface type `isMsg_Name`,
            // named after the oneof (no JSON tag), at its first member.
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                if oneofs_seen.contains(&oneof.name().to_string()) {
                    continue;
                }
                oneofs_seen.push(oneof.name().to_string());
                let field_name = go_camel_case(oneof.name());
                let kind = format!("is{}_{field_name}", value.kind);
                value.values.push(Value::new(field_name, kind));
                continue;
            }
            value.values.push(field_value(&field, depth + 1));
        }
    }
    value
}

fn field_value(field: &FieldDescriptor, depth: usize) -> Value {
    let name = field.name().to_string();
    if field.is_map() {
        // A Go map type has no name: go-micro's extractor writes "".
        return Value::new(name, "");
    }
    if field.is_list() {
        return Value::new(name, format!("[]{}", element_name(&field.kind())));
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

/// The Go type protobuf-go generates for a field kind, as `reflect` names it.
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
        Kind::Message(message) => go_type_name(message.full_name(), message.package_name()),
        Kind::Enum(e) => go_type_name(e.full_name(), e.package_name()),
    }
}

/// The element name after `[]` for a repeated field: `[]byte` elements are
/// an unnamed slice type, so `repeated bytes` reads `[]`.
fn element_name(kind: &Kind) -> String {
    match kind {
        Kind::Bytes => String::new(),
        other => type_name(other),
    }
}

/// The Go name protoc-gen-go gives a message or enum: its path inside the
/// package joined by `_`, camel-cased (`user` → `User`, `Outer.Inner` →
/// `Outer_Inner`).
fn go_type_name(full_name: &str, package: &str) -> String {
    let local = full_name
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(full_name);
    go_camel_case(&local.replace('.', "_"))
}

/// protoc-gen-go's `CamelCase`: an underscore followed by a lower-case letter
/// is dropped and the letter upper-cased; a leading underscore becomes `X`.
fn go_camel_case(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 1);
    let mut i = 0;
    if bytes.first() == Some(&b'_') {
        out.push('X');
        i = 1;
    }
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'_' && bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase) {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            out.push(c as char);
            i += 1;
            continue;
        }
        out.push(c.to_ascii_uppercase() as char);
        while let Some(next) = bytes.get(i + 1).filter(|b| b.is_ascii_lowercase()) {
            out.push(*next as char);
            i += 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_names_drop_the_package() {
        assert_eq!(handler_name("go.micro.srv.user.User"), "User");
        assert_eq!(handler_name("Greeter"), "Greeter");
    }

    #[test]
    fn go_names_are_protoc_gen_gos() {
        assert_eq!(go_camel_case("user"), "User");
        assert_eq!(go_camel_case("user_name"), "UserName");
        assert_eq!(go_camel_case("Outer_Inner"), "Outer_Inner");
        assert_eq!(go_camel_case("_x"), "XX");
        assert_eq!(go_camel_case("a1b"), "A1B");
        assert_eq!(go_camel_case("HTTPRequest"), "HTTPRequest");
        assert_eq!(
            go_type_name("go.micro.srv.user.user", "go.micro.srv.user"),
            "User"
        );
        assert_eq!(go_type_name("pkg.Outer.Inner", "pkg"), "Outer_Inner");
        assert_eq!(go_type_name("pkg.Outer.inner", "pkg"), "OuterInner");
        assert_eq!(go_type_name("Top", ""), "Top");
    }

    #[test]
    fn values_are_what_go_micros_extractor_writes() {
        let file = prost_types::FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("Request".into()),
                field: vec![
                    field("user_name", 1, Type::String, None, false),
                    field("owner", 2, Type::Message, Some(".t.Request.user"), false),
                    field("tags", 3, Type::String, None, true),
                    field(
                        "labels",
                        4,
                        Type::Message,
                        Some(".t.Request.LabelsEntry"),
                        true,
                    ),
                    field("blobs", 5, Type::Bytes, None, true),
                    field("id", 6, Type::Int64, None, false),
                    prost_types::FieldDescriptorProto {
                        oneof_index: Some(0),
                        ..field("email", 7, Type::String, None, false)
                    },
                    prost_types::FieldDescriptorProto {
                        oneof_index: Some(0),
                        ..field("phone", 8, Type::String, None, false)
                    },
                ],
                nested_type: vec![
                    prost_types::DescriptorProto {
                        name: Some("user".into()),
                        field: vec![field("id", 1, Type::Int64, None, false)],
                        ..Default::default()
                    },
                    prost_types::DescriptorProto {
                        name: Some("LabelsEntry".into()),
                        field: vec![
                            field("key", 1, Type::String, None, false),
                            field("value", 2, Type::String, None, false),
                        ],
                        options: Some(prost_types::MessageOptions {
                            map_entry: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                oneof_decl: vec![prost_types::OneofDescriptorProto {
                    name: Some("contact".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: vec![file],
        })
        .expect("pool");
        let value = message_value(&pool.get_message_by_name("t.Request").expect("Request"), 0);
        let shape: Vec<(String, String, usize)> = value
            .values
            .iter()
            .map(|v| (v.name.clone(), v.kind.clone(), v.values.len()))
            .collect();
        let expected = [
            ("user_name", "string", 0),
            ("owner", "RequestUser", 1),
            ("tags", "[]string", 0),
            ("labels", "", 0),
            ("blobs", "[]", 0),
            ("id", "int64", 0),
            ("Contact", "isRequest_Contact", 0),
        ];
        let expected: Vec<(String, String, usize)> = expected
            .iter()
            .map(|(n, k, c)| (n.to_string(), k.to_string(), *c))
            .collect();
        assert_eq!(
            (value.name.as_str(), value.kind.as_str()),
            ("Request", "Request")
        );
        assert_eq!(shape, expected);
    }

    use prost_types::field_descriptor_proto::{Label, Type};

    fn field(
        name: &str,
        number: i32,
        kind: Type,
        type_name: Option<&str>,
        repeated: bool,
    ) -> prost_types::FieldDescriptorProto {
        prost_types::FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            type_name: type_name.map(Into::into),
            label: Some(if repeated {
                Label::Repeated
            } else {
                Label::Optional
            } as i32),
            json_name: None,
            ..Default::default()
        }
    }
}
