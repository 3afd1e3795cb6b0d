//! Golden tests against go-micro v2.9.1's own mDNS messages
//! (`testdata/go-micro-v2/mdns`, captured from its code): we read what it
//! sends, and what we send has the shape it produces and its client accepts.
//! Records are compared decoded (zlib output differs between encoders).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use micro_registry::{Endpoint, Metadata, Node, Service};
use serde_json::{Value, json};

use crate::txt::TxtInfo;
use crate::wire::{self, LocalInstance};

const SERVICE: &str = "go.micro.srv.greeter";
const NODE: &str = "go.micro.srv.greeter-4b6e0b5e-6f7a-4c1d-9a2b-3c4d5e6f7a8b";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/go-micro-v2/mdns")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn message(name: &str) -> Message {
    let bytes = hex::decode(read(name).trim()).expect("hex");
    wire::decode(&bytes).unwrap_or_else(|e| panic!("parse {name}: {e}"))
}

fn golden_json(name: &str) -> Value {
    serde_json::from_str(&read(name)).expect("json")
}

/// go-micro's TXT JSON, decoded.
fn golden_txt() -> TxtInfo {
    let raw: Value = serde_json::from_str(&read("txt-decoded.json")).expect("json");
    TxtInfo {
        id: None,
        service: raw["Service"].as_str().expect("Service").into(),
        version: raw["Version"].as_str().expect("Version").into(),
        endpoints: serde_json::from_value::<Vec<Endpoint>>(raw["Endpoints"].clone())
            .expect("Endpoints"),
        metadata: serde_json::from_value::<Metadata>(raw["Metadata"].clone()).expect("Metadata"),
    }
}

/// The golden node as a registration of ours.
fn golden_service() -> Service {
    let txt = golden_txt();
    let mut node = Node::new(NODE, "127.0.0.1:4242");
    node.metadata = txt.metadata.clone();
    Service {
        name: SERVICE.into(),
        version: txt.version.clone(),
        endpoints: txt.endpoints.clone(),
        ..Service::default()
    }
    .with_node(node)
}

fn golden_instance() -> LocalInstance {
    let service = golden_service();
    let host = Name::from_ascii("gm-peer.").expect("host");
    LocalInstance::new(&service, &service.nodes[0], &host).expect("instance")
}

/// A record in the golden JSON's shape (without rdlength; TXT decoded).
fn record_json(record: &Record) -> Value {
    let mut out = json!({
        "name": record.name.to_ascii(),
        "type": record.record_type().to_string(),
        "ttl": record.ttl,
    });
    match &record.data {
        RData::SRV(srv) => {
            out["priority"] = json!(srv.priority);
            out["weight"] = json!(srv.weight);
            out["port"] = json!(srv.port);
            out["target"] = json!(srv.target.to_ascii());
        }
        RData::A(a) => out["a"] = json!(a.0.to_string()),
        RData::AAAA(a) => out["aaaa"] = json!(a.0.to_string()),
        RData::PTR(ptr) => out["ptr"] = json!(ptr.0.to_ascii()),
        RData::TXT(txt) => out["txt"] = txt_json(&txt.txt_data),
        RData::Update0(RecordType::TXT) => out["txt"] = json!([]),
        other => out["other"] = json!(other.to_string()),
    }
    out
}

fn txt_json<S: AsRef<[u8]>>(strings: &[S]) -> Value {
    if strings.is_empty() {
        return json!([]);
    }
    let info = TxtInfo::decode(strings).expect("TXT decodes");
    json!({
        "Service": info.service,
        "Version": info.version,
        "Endpoints": serde_json::to_value(&info.endpoints).expect("endpoints"),
        "Metadata": info.metadata,
    })
}

/// The golden JSON's records, normalised the same way.
fn golden_records(section: &Value) -> Vec<Value> {
    section
        .as_array()
        .expect("section")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let map = r.as_object_mut().expect("record");
            map.remove("rdlength");
            map.remove("class");
            if let Some(txt) = map.get("txt").cloned() {
                let strings: Vec<String> = serde_json::from_value(txt).expect("strings");
                map.insert("txt".into(), txt_json(&strings));
            }
            r
        })
        .collect()
}

fn questions_json(msg: &Message) -> Vec<Value> {
    msg.queries
        .iter()
        .map(|q| {
            let class = u16::from(q.query_class) | if q.mdns_unicast_response { 0x8000 } else { 0 };
            json!({
                "name": q.name.to_ascii(),
                "type": q.query_type.to_string(),
                "class": format!("0x{class:04x}"),
            })
        })
        .collect()
}

fn section(records: &[Record]) -> Vec<Value> {
    records.iter().map(record_json).collect()
}

#[test]
fn decodes_go_micro_txt() {
    let strings: Vec<String> = serde_json::from_str(&read("txt-strings.json")).expect("json");
    assert!(strings.iter().all(|s| s.len() <= 255));
    let info = TxtInfo::decode(&strings).expect("decode");
    assert_eq!(info, golden_txt());
    assert_eq!(
        info.metadata.get("registry").map(String::as_str),
        Some("mdns")
    );
    assert_eq!(info.endpoints[0].name, "Greeter.Hello");
}

#[test]
fn our_txt_json_is_byte_identical_to_go_micro() {
    use std::io::Read;
    let strings = golden_txt().encode().expect("encode");
    assert!(strings.iter().all(|s| s.len() <= 255));
    let compressed = hex::decode(strings.concat()).expect("hex");
    let mut json = String::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .read_to_string(&mut json)
        .expect("zlib");
    assert_eq!(json, read("txt-decoded.json").trim_end());
}

fn assert_golden_node(parsed: &wire::Parsed, ttl: u32) {
    assert_eq!(parsed.malformed, 0, "{parsed:?}");
    assert_eq!(parsed.foreign, 0);
    assert_eq!(parsed.instances.len(), 1, "{parsed:?}");
    let update = &parsed.instances[0];
    assert_eq!(update.node_id.as_deref(), Some(NODE));
    assert_eq!(update.srv, Some((4242, ttl)));
    assert_eq!(
        update.addr,
        Some(("127.0.0.1".parse::<IpAddr>().expect("ip"), ttl))
    );
    let (txt, txt_ttl) = update.txt.as_ref().expect("txt");
    assert_eq!(*txt, golden_txt());
    assert_eq!(*txt_ttl, ttl);
    assert!(!update.goodbye);
}

#[test]
fn reads_go_micro_answers_and_announcements() {
    for name in [
        "service-ptr.response.hex",
        "service-ptr-qu.response.hex",
        "instance-any.response.hex",
        "announce.hex",
    ] {
        let msg = message(name);
        assert_eq!(msg.metadata.message_type, MessageType::Response, "{name}");
        assert_golden_node(&wire::parse_response(&msg), 120);
    }
}

#[test]
fn reads_go_micro_goodbye() {
    let parsed = wire::parse_response(&message("goodbye.hex"));
    assert_eq!(parsed.instances.len(), 1);
    assert!(parsed.instances[0].goodbye);
    assert_eq!(parsed.malformed, 0);
}

#[test]
fn reads_go_micro_services_list_with_empty_txt() {
    let msg = message("services-ptr.response.hex");
    let empty_txt = msg
        .answers
        .iter()
        .any(|r| r.record_type() == RecordType::TXT);
    assert!(empty_txt, "the empty TXT record is parsed, not dropped");
    let parsed = wire::parse_response(&msg);
    assert_eq!(parsed.service_names, [(SERVICE.to_string(), 120)]);
    assert!(parsed.instances.is_empty());
    assert_eq!(parsed.malformed, 0);
}

#[test]
fn reads_go_micro_probe_and_queries() {
    let probe = message("probe.hex");
    assert_eq!(probe.metadata.message_type, MessageType::Query);
    let instance = golden_instance();
    assert_eq!(probe.queries[0].name, instance.instance);
    assert_eq!(probe.authorities.len(), 2);
    for name in [
        "gomicro-client-query-service.hex",
        "gomicro-client-query-services.hex",
        "service-ptr.query.hex",
        "service-ptr-qu.query.hex",
        "services-ptr.query.hex",
        "instance-any.query.hex",
    ] {
        let msg = message(name);
        assert_eq!(msg.metadata.message_type, MessageType::Query, "{name}");
        assert_eq!(msg.queries.len(), 1, "{name}");
    }
}

#[test]
fn our_probe_announcement_and_goodbye_match_go_micro() {
    let instance = golden_instance();

    let probe = instance.probe();
    let golden = golden_json("probe.json");
    assert_eq!(probe.metadata.message_type, MessageType::Query);
    assert_eq!(json!(questions_json(&probe)), golden["questions"]);
    assert!(probe.answers.is_empty());
    assert_eq!(
        section(&probe.authorities),
        golden_records(&golden["authority"])
    );

    for (ttl, file) in [(120, "announce.json"), (0, "goodbye.json")] {
        let msg = instance.announcement(ttl);
        let golden = golden_json(file);
        assert_eq!(msg.metadata.id, 0);
        assert_eq!(msg.metadata.message_type, MessageType::Response);
        assert!(msg.queries.is_empty());
        // Deliberate difference: we set AA, as RFC 6762 §18.4 requires;
        // go-micro's listener does not look at it.
        assert!(msg.metadata.authoritative);
        assert_eq!(
            section(&msg.answers),
            golden_records(&golden["answer"]),
            "{file}"
        );
        // And it round-trips through the wire.
        let bytes = msg.to_vec().expect("encode");
        let again = wire::decode(&bytes).expect("decode");
        assert_eq!(section(&again.answers), golden_records(&golden["answer"]));
    }
}

/// go-micro v2's client (`util/mdns/client.go`), reduced to what decides
/// whether it takes an answer: records are read in order into entries keyed
/// by name (an SRV aliases its target to the instance's entry); the response
/// is dropped unless its first question is the query's; the entry touched
/// last must be complete (address, port, TXT). Returns (instance name, TTL of
/// the last record, TXT strings).
fn go_micro_client_accepts(
    query: &Message,
    response: &Message,
) -> Option<(String, u32, Vec<String>)> {
    #[derive(Default)]
    struct Entry {
        name: String,
        addr: bool,
        port: u16,
        txt: Option<Vec<String>>,
        ttl: u32,
    }
    #[derive(Default)]
    struct InProgress {
        entries: Vec<Entry>,
        by_name: HashMap<String, usize>,
    }
    impl InProgress {
        fn ensure(&mut self, name: &str) -> usize {
            if let Some(i) = self.by_name.get(name) {
                return *i;
            }
            self.entries.push(Entry {
                name: name.to_string(),
                ..Entry::default()
            });
            let i = self.entries.len() - 1;
            self.by_name.insert(name.to_string(), i);
            i
        }
    }
    let mut inprogress = InProgress::default();
    let mut last = None;
    for record in response.answers.iter().chain(&response.additionals) {
        let name = record.name.to_ascii();
        let i = match &record.data {
            RData::PTR(ptr) => inprogress.ensure(&ptr.0.to_ascii()),
            RData::SRV(srv) => {
                let i = inprogress.ensure(&name);
                let target = srv.target.to_ascii();
                if target != name {
                    inprogress.by_name.insert(target, i);
                }
                inprogress.entries[i].port = srv.port;
                i
            }
            RData::TXT(txt) => {
                let i = inprogress.ensure(&name);
                inprogress.entries[i].txt = Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                );
                i
            }
            RData::Update0(RecordType::TXT) => {
                let i = inprogress.ensure(&name);
                inprogress.entries[i].txt = Some(Vec::new());
                i
            }
            RData::A(_) | RData::AAAA(_) => {
                let i = inprogress.ensure(&name);
                inprogress.entries[i].addr = true;
                i
            }
            _ => continue,
        };
        inprogress.entries[i].ttl = record.ttl;
        last = Some(i);
    }
    if response.queries.first().map(|q| &q.name) != query.queries.first().map(|q| &q.name) {
        return None;
    }
    let entry = inprogress.entries.get(last?)?;
    (entry.addr && entry.port != 0 && entry.txt.is_some()).then(|| {
        (
            entry.name.clone(),
            entry.ttl,
            entry.txt.clone().unwrap_or_default(),
        )
    })
}

#[test]
fn the_go_micro_client_sketch_accepts_go_micros_own_answers() {
    let query = message("service-ptr.query.hex");
    let (name, ttl, txt) =
        go_micro_client_accepts(&query, &message("service-ptr.response.hex")).expect("accepted");
    assert_eq!(name, format!("{NODE}.{SERVICE}.micro."));
    assert_eq!(ttl, 120);
    assert_eq!(TxtInfo::decode(&txt).expect("txt"), golden_txt());
    // A response to another question is dropped.
    assert!(
        go_micro_client_accepts(
            &message("services-ptr.query.hex"),
            &message("service-ptr.response.hex")
        )
        .is_none()
    );
}

#[test]
fn we_answer_go_micro_client_queries_as_go_micro_does() {
    let instance = golden_instance();
    let host = instance.host.clone();
    let cases = [
        (
            "gomicro-client-query-service.hex",
            "service-ptr.response.json",
        ),
        ("service-ptr.query.hex", "service-ptr.response.json"),
        ("service-ptr-qu.query.hex", "service-ptr-qu.response.json"),
        ("instance-any.query.hex", "instance-any.response.json"),
        (
            "gomicro-client-query-services.hex",
            "services-ptr.response.json",
        ),
        ("services-ptr.query.hex", "services-ptr.response.json"),
    ];
    for (query_file, response_file) in cases {
        let query = message(query_file);
        let golden = golden_json(response_file);
        let replies = wire::answers(&[&instance], &host, &query, 0);
        assert_eq!(replies.len(), 1, "{query_file}: one message");
        let reply = &replies[0];
        // Through the wire, as the client would read it.
        let reply = wire::decode(&reply.to_vec().expect("encode")).expect("decode");
        assert_eq!(reply.metadata.id, 0);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.authoritative, "{query_file}");
        assert_eq!(
            json!(questions_json(&reply)),
            golden["questions"],
            "{query_file}"
        );
        assert_eq!(
            section(&reply.answers),
            golden_records(&golden["answer"]),
            "{query_file}"
        );
        assert!(reply.authorities.is_empty() && reply.additionals.is_empty());

        let accepted = go_micro_client_accepts(&query, &reply);
        if response_file.starts_with("services") {
            let (name, ttl, _) = accepted.expect("list entry accepted");
            assert_eq!(name, format!("{SERVICE}._services.micro."));
            assert_ne!(ttl, 0);
        } else if query_file.starts_with("instance-any") {
            // go-micro's client never asks this; the records are what matter.
        } else {
            let (name, ttl, txt) = accepted.unwrap_or_else(|| panic!("{query_file}: dropped"));
            assert_eq!(name, format!("{NODE}.{SERVICE}.micro."));
            assert_ne!(ttl, 0, "go-micro ignores TTL-0 entries");
            assert_eq!(TxtInfo::decode(&txt).expect("txt").service, SERVICE);
        }
    }
    // Questions about other names get nothing.
    let other = wire::query(
        wire::service_name("other.svc").expect("name"),
        RecordType::PTR,
    );
    assert!(wire::answers(&[&instance], &host, &other, 0).is_empty());
}

#[test]
fn unreachable_addresses_are_refused() {
    let host = Name::from_ascii("h.").expect("host");
    for address in [
        "0.0.0.0:80",
        "[::]:80",
        "224.0.0.251:80",
        "localhost:80",
        "127.0.0.1:0",
    ] {
        let svc = Service::new("s", "1").with_node(Node::new("s-1", address));
        assert!(
            LocalInstance::new(&svc, &svc.nodes[0], &host).is_err(),
            "{address}"
        );
    }
}

#[test]
fn malformed_messages_never_panic() {
    let base = hex::decode(read("service-ptr.response.hex").trim()).expect("hex");
    // Every truncation and a spread of single-byte corruptions.
    for len in 0..base.len() {
        if let Ok(msg) = wire::decode(&base[..len]) {
            let _ = wire::parse_response(&msg);
        }
    }
    let mut rng = fastrand::Rng::with_seed(6);
    for _ in 0..2000 {
        let mut bytes = base.clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..bytes.len());
            bytes[at] = rng.u8(..);
        }
        if let Ok(msg) = wire::decode(&bytes) {
            let _ = wire::parse_response(&msg);
        }
    }
}

#[test]
fn bad_records_are_counted() {
    use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
    let instance = golden_instance();
    let mut msg = instance.announcement(120);
    // Port 0, a TXT that is not hex, a foreign record.
    msg.answers[0] = Record::from_rdata(
        instance.instance.clone(),
        120,
        RData::SRV(SRV::new(10, 1, 0, instance.host.clone())),
    );
    msg.answers[2] = Record::from_rdata(
        instance.instance.clone(),
        120,
        RData::TXT(TXT::new(vec!["not hex at all".into()])),
    );
    msg.add_answer(Record::from_rdata(
        Name::from_ascii("_ipp._tcp.local.").expect("name"),
        120,
        RData::PTR(PTR(
            Name::from_ascii("printer._ipp._tcp.local.").expect("name")
        )),
    ));
    // A host address outside `micro.` is normal (SRV targets), not foreign.
    msg.add_answer(Record::from_rdata(
        Name::from_ascii("printer.local.").expect("name"),
        120,
        RData::A(A("192.0.2.1".parse().expect("ip"))),
    ));
    let parsed = wire::parse_response(&msg);
    assert_eq!(parsed.malformed, 2);
    assert_eq!(parsed.foreign, 1);
    let update = &parsed.instances[0];
    assert!(update.srv.is_none() && update.txt.is_none());
}
