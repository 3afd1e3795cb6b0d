//! JSON ↔ protobuf messages, given their descriptors.
//!
//! Input is proto3 JSON as both go-micro's jsonpb and the canonical mapping
//! read it: fields by their JSON name (`userName`) or their proto name
//! (`user_name`), 64-bit integers as numbers or strings, enums by name or
//! number. Unknown fields are an error that names the message.
//!
//! Output comes in two forms ([`JsonForm`]): the canonical proto3 mapping
//! (JSON names), which the gateway's rpc handler and `micro call` print, and
//! go-micro's (proto names, as its json codec's `jsonpb.Marshaler{OrigName:
//! true}` writes them), which a server answering `application/grpc+json`
//! sends. Both write 64-bit integers as strings, enums by name, and leave out
//! fields at their default value, as jsonpb does without `EmitDefaults`.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

use crate::error::Error;

/// Deepest nesting of a dotted query key (`a.b.c`).
const MAX_QUERY_DEPTH: usize = 16;

/// Which field names JSON output uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonForm {
    /// The canonical proto3 JSON mapping: lowerCamelCase JSON names.
    #[default]
    Canonical,
    /// go-micro's json codec: proto field names as written.
    GoMicro,
}

impl JsonForm {
    fn options(self) -> SerializeOptions {
        SerializeOptions::new().use_proto_field_name(self == JsonForm::GoMicro)
    }
}

/// A JSON object → the message `descriptor` describes; an empty (or
/// all-whitespace) body is the empty message.
pub fn json_to_message(
    descriptor: MessageDescriptor,
    body: &[u8],
) -> Result<DynamicMessage, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(descriptor));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|m| deserializer.end().map(|()| m))
    .map_err(|e| {
        Error::bad_input(format!(
            "malformed JSON for {}: {e}",
            descriptor.full_name()
        ))
    })
}

/// A message as canonical proto3 JSON.
pub fn message_to_json(message: &DynamicMessage) -> Result<Vec<u8>, Error> {
    message_to_json_in(message, JsonForm::Canonical)
}

/// A message → JSON in `form`.
pub fn message_to_json_in(message: &DynamicMessage, form: JsonForm) -> Result<Vec<u8>, Error> {
    // Most replies fit: no regrowth (and copy) while writing.
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &form.options())
        .map_err(|e| {
            Error::new(
                crate::ErrorKind::BadReply,
                format!("cannot render the reply as JSON: {e}"),
            )
        })?;
    Ok(out)
}

/// JSON → the encoded protobuf message `descriptor` describes.
pub fn json_to_protobuf(descriptor: MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(json_to_message(descriptor, json)?.encode_to_vec())
}

/// An encoded protobuf message → JSON in `form`.
pub fn protobuf_to_json(
    descriptor: MessageDescriptor,
    protobuf: &[u8],
    form: JsonForm,
) -> Result<Vec<u8>, Error> {
    let message = DynamicMessage::decode(descriptor.clone(), protobuf).map_err(|e| {
        Error::new(
            crate::ErrorKind::BadReply,
            format!("cannot decode {}: {e}", descriptor.full_name()),
        )
    })?;
    message_to_json_in(&message, form)
}

/// A query string → the message `descriptor` describes (see [`query_to_json`]).
pub fn query_to_message(
    descriptor: MessageDescriptor,
    query: &str,
) -> Result<DynamicMessage, Error> {
    let json = query_to_json(&descriptor, query)?;
    let bytes =
        serde_json::to_vec(&json).map_err(|e| Error::bad_input(format!("bad query: {e}")))?;
    json_to_message(descriptor, &bytes)
}

/// The JSON a query string stands for when no schema is known (a go-micro
/// service): every value a string (go-micro's jsonpb reads numbers from
/// strings), repeated keys as arrays, dotted keys as nested objects.
pub fn query_to_untyped_json(query: &str) -> Result<Value, Error> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let path: Vec<&str> = key.split('.').collect();
        if path.len() > MAX_QUERY_DEPTH || path.iter().any(|p| p.is_empty()) {
            return Err(Error::bad_input(format!("bad query parameter {key:?}")));
        }
        insert(&mut root, None, &path, &value)?;
    }
    Ok(Value::Object(root))
}

/// The JSON a query string stands for, typed by the message's fields: bools
/// and numbers parsed, repeated fields as arrays, dotted keys as nested
/// objects (`a=1&b=x&list=1&list=2&nested.field=y`). Unknown keys are kept
/// as strings (so the message rejects them).
pub fn query_to_json(descriptor: &MessageDescriptor, query: &str) -> Result<Value, Error> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let path: Vec<&str> = key.split('.').collect();
        if path.len() > MAX_QUERY_DEPTH || path.iter().any(|p| p.is_empty()) {
            return Err(Error::bad_input(format!("bad query parameter {key:?}")));
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
) -> Result<(), Error> {
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
            return Err(Error::bad_input(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, FileDescriptorSet,
    };

    fn field(name: &str, number: i32, kind: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            type_name: type_name.map(Into::into),
            label: Some(Label::Optional as i32),
            ..Default::default()
        }
    }

    /// `message User { int64 user_id = 1; string display_name = 2; Role role = 3; uint64 created_time = 4; bool active = 5; }`
    fn user() -> MessageDescriptor {
        let file = FileDescriptorProto {
            name: Some("u.proto".into()),
            package: Some("u".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("User".into()),
                field: vec![
                    field("user_id", 1, Type::Int64, None),
                    field("display_name", 2, Type::String, None),
                    field("role", 3, Type::Enum, Some(".u.Role")),
                    field("created_time", 4, Type::Uint64, None),
                    field("active", 5, Type::Bool, None),
                ],
                ..Default::default()
            }],
            enum_type: vec![EnumDescriptorProto {
                name: Some("Role".into()),
                value: ["GUEST", "ADMIN"]
                    .iter()
                    .enumerate()
                    .map(|(i, n)| EnumValueDescriptorProto {
                        name: Some((*n).into()),
                        number: Some(i as i32),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: vec![file] })
            .expect("pool")
            .get_message_by_name("u.User")
            .expect("User")
    }

    #[test]
    fn go_micro_form_is_jsonpb_with_orig_names() {
        let message = json_to_message(
            user(),
            br#"{"userId": 42, "display_name": "huo", "role": "ADMIN", "createdTime": "7"}"#,
        )
        .expect("JSON and proto names both accepted");
        let go = message_to_json_in(&message, JsonForm::GoMicro).expect("JSON");
        assert_eq!(
            String::from_utf8(go).expect("UTF-8"),
            r#"{"user_id":"42","display_name":"huo","role":"ADMIN","created_time":"7"}"#
        );
        let canonical = message_to_json(&message).expect("JSON");
        assert_eq!(
            String::from_utf8(canonical).expect("UTF-8"),
            r#"{"userId":"42","displayName":"huo","role":"ADMIN","createdTime":"7"}"#
        );
        // Defaults are left out, as jsonpb without EmitDefaults does.
        let empty = json_to_message(user(), br#"{"role": 0, "active": false}"#).expect("JSON");
        assert_eq!(
            message_to_json_in(&empty, JsonForm::GoMicro).expect("JSON"),
            b"{}"
        );
    }

    #[test]
    fn protobuf_and_json_round_trip() {
        let protobuf =
            json_to_protobuf(user(), br#"{"user_id": "-5", "role": 1}"#).expect("encode");
        let json = protobuf_to_json(user(), &protobuf, JsonForm::GoMicro).expect("decode");
        assert_eq!(json, br#"{"user_id":"-5","role":"ADMIN"}"#);
        let err = protobuf_to_json(user(), b"\xff", JsonForm::GoMicro).expect_err("bad bytes");
        assert_eq!(err.kind(), crate::ErrorKind::BadReply);
        let err = json_to_protobuf(user(), br#"{"nope": 1}"#).expect_err("unknown field");
        assert_eq!(err.kind(), crate::ErrorKind::BadInput);
        assert!(err.detail().contains("nope"), "{err}");
    }

    #[test]
    fn untyped_queries_are_strings() {
        let json = query_to_untyped_json("a=1&b.c=x&a=2").expect("query");
        assert_eq!(json, serde_json::json!({"a": "1", "b": {"c": "x"}}));
        assert!(query_to_untyped_json("a..b=1").is_err());
    }
}
