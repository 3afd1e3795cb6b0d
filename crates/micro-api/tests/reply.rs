//! The api handler reads a service's `go.api.Response` straight from its
//! bytes (`ApiReply`). For any bytes, it must accept exactly what prost
//! accepts and answer exactly what `from_api_response` answers for prost's
//! message: status, headers in order, body.

use std::collections::HashMap;

use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use micro_api::convert::{ApiReply, from_api_response};
use micro_api_proto::{Pair, Response as ApiResponse};
use proptest::prelude::*;
use prost::Message;

type Seen = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

fn seen(response: Response) -> Seen {
    let (parts, body) = response.into_parts();
    // The body is in memory: it is ready at once.
    let body = futures::FutureExt::now_or_never(body.collect())
        .expect("a body in memory")
        .expect("a body without errors")
        .to_bytes()
        .to_vec();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    (parts.status.as_u16(), headers, body)
}

/// What one path answers: `None` if it refused the bytes, else the response
/// (or the gateway's error for a bad status code, as its code).
type Answer = Option<Result<Seen, u16>>;

/// What each path answers for `bytes`.
fn both(bytes: &[u8]) -> (Answer, Answer) {
    let prost = ApiResponse::decode(bytes).ok().map(|message| {
        from_api_response(message, "go.micro.api.x")
            .map(seen)
            .map_err(|e| e.0.code as u16)
    });
    let direct = ApiReply::decode(Bytes::copy_from_slice(bytes))
        .ok()
        .map(|reply| {
            reply
                .into_response("go.micro.api.x")
                .map(seen)
                .map_err(|e| e.0.code as u16)
        });
    (prost, direct)
}

fn pair(key: &str, values: &[&str]) -> Pair {
    Pair {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn a_typical_reply_reads_the_same() {
    let reply = ApiResponse {
        status_code: 201,
        header: HashMap::from([
            ("Content-Type".into(), pair("Content-Type", &["text/plain"])),
            ("X-B".into(), pair("", &["1", "2"])),
            ("x-a".into(), pair("X-Renamed", &["v"])),
            ("Connection".into(), pair("Connection", &["close"])),
            ("Bad Name".into(), pair("", &["x"])),
        ]),
        body: "héllo".into(),
    };
    let (prost, direct) = both(&reply.encode_to_vec());
    let expected = prost.expect("prost decodes").expect("a response");
    assert_eq!(expected.0, 201);
    assert_eq!(
        expected.1,
        [
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("x-b".to_string(), b"1".to_vec()),
            ("x-b".to_string(), b"2".to_vec()),
            ("x-renamed".to_string(), b"v".to_vec()),
        ]
    );
    assert_eq!(direct, Some(Ok(expected)));
}

#[test]
fn a_map_key_sent_twice_keeps_its_last_entry_and_a_pair_sent_twice_merges() {
    let first = ApiResponse {
        header: HashMap::from([("X-A".into(), pair("", &["old"]))]),
        ..Default::default()
    };
    let second = ApiResponse {
        header: HashMap::from([("X-A".into(), pair("", &["new"]))]),
        ..Default::default()
    };
    // Concatenated messages are one message: the second entry wins.
    let mut bytes = first.encode_to_vec();
    bytes.extend(second.encode_to_vec());
    let (prost, direct) = both(&bytes);
    assert_eq!(
        prost.clone().expect("decodes").expect("a response").1,
        [
            ("x-a".to_string(), b"new".to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ]
    );
    assert_eq!(direct, prost);

    // One map entry whose value (a Pair) comes twice: merged.
    let entry = |p: &Pair| {
        let mut e = Vec::new();
        prost::encoding::string::encode(1, &"X-M".to_string(), &mut e);
        prost::encoding::message::encode(2, p, &mut e);
        e
    };
    let mut entry_bytes = entry(&pair("X-Key", &["1"]));
    let second_pair = {
        let mut e = Vec::new();
        prost::encoding::message::encode(2, &pair("", &["2"]), &mut e);
        e
    };
    entry_bytes.extend(second_pair);
    let mut message = Vec::new();
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut message);
    prost::encoding::encode_varint(entry_bytes.len() as u64, &mut message);
    message.extend(entry_bytes);
    let (prost, direct) = both(&message);
    let seen = prost.clone().expect("decodes").expect("a response");
    assert!(seen.1.contains(&("x-key".to_string(), b"1".to_vec())));
    assert!(seen.1.contains(&("x-key".to_string(), b"2".to_vec())));
    assert_eq!(direct, prost);
}

#[test]
fn a_pair_key_sent_empty_after_a_name_falls_back_to_the_map_key() {
    // One map entry "X-M" whose Pair comes twice: first with key "X-Key",
    // then with the key field on the wire but empty (prost never writes
    // that, another encoder may). Merged, the last key wins: empty, so the
    // header is named by the map key.
    let mut entry = Vec::new();
    prost::encoding::string::encode(1, &"X-M".to_string(), &mut entry);
    prost::encoding::message::encode(2, &pair("X-Key", &["1"]), &mut entry);
    let empty_key = [0x0a, 0x00]; // Pair.key (1, length-delimited), 0 bytes
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut entry);
    prost::encoding::encode_varint(empty_key.len() as u64, &mut entry);
    entry.extend(empty_key);
    let mut message = Vec::new();
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut message);
    prost::encoding::encode_varint(entry.len() as u64, &mut message);
    message.extend(entry);
    let (prost, direct) = both(&message);
    let seen = prost.clone().expect("decodes").expect("a response");
    assert!(
        seen.1.contains(&("x-m".to_string(), b"1".to_vec())),
        "named by the map key: {:?}",
        seen.1
    );
    assert_eq!(direct, prost);
}

#[test]
fn bad_bytes_are_refused_as_prost_refuses_them() {
    for bytes in [
        &b"\x0a\x05abc"[..],     // status code with a length-delimited wire type
        b"\x1a\x05ab",           // body longer than what is left
        b"\x1a\x02\xff\xfe",     // body not UTF-8
        b"\x12\x04\x0a\x02\xc3", // map key truncated inside its entry
        b"\x08",                 // a varint cut short
    ] {
        let (prost, direct) = both(bytes);
        assert!(prost.is_none(), "prost accepted {bytes:?}");
        assert!(direct.is_none(), "ApiReply accepted {bytes:?}");
    }
    let (prost, direct) = both(b"\x08\xf4\x03"); // status 500
    assert_eq!(prost.clone().expect("decodes").expect("a response").0, 500);
    assert_eq!(direct, prost);
    let (prost, direct) = both(b"\x08\x64"); // status 100: the gateway's 502
    assert_eq!(prost, Some(Err(502)));
    assert_eq!(direct, prost);
}

fn any_pair() -> impl Strategy<Value = Pair> {
    (
        prop_oneof!["", "[A-Za-z-]{1,8}", "\\PC{0,4}"],
        proptest::collection::vec(prop_oneof!["[ -~]{0,8}", "\\PC{0,4}"], 0..3),
    )
        .prop_map(|(key, values)| Pair { key, values })
}

fn any_reply() -> impl Strategy<Value = ApiResponse> {
    (
        prop_oneof![Just(0), 100..700i32, any::<i32>()],
        proptest::collection::hash_map(
            prop_oneof!["[A-Za-z-]{1,8}", "\\PC{0,4}"],
            any_pair(),
            0..5,
        ),
        "\\PC{0,16}",
    )
        .prop_map(|(status_code, header, body)| ApiResponse {
            status_code,
            header,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_reply_reads_the_same(reply in any_reply()) {
        let (prost, direct) = both(&reply.encode_to_vec());
        prop_assert!(prost.is_some());
        prop_assert_eq!(direct, prost);
    }

    #[test]
    fn any_bytes_read_the_same(
        reply in any_reply(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        // A valid reply, cut short or with one bit flipped: both accept or
        // refuse it alike, and agree on what they accept.
        let bytes = reply.encode_to_vec();
        if bytes.is_empty() {
            return Ok(());
        }
        let cut_bytes = &bytes[..cut.index(bytes.len())];
        let (prost, direct) = both(cut_bytes);
        prop_assert_eq!(direct, prost);
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let (prost, direct) = both(&flipped);
        prop_assert_eq!(direct, prost);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (prost, direct) = both(&bytes);
        prop_assert_eq!(direct.is_some(), prost.is_some());
    }
}
