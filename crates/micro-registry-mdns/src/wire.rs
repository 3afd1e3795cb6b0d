//! The DNS messages of go-micro v2's mDNS registry: what we send and how we
//! read what others send. Encoding and decoding are `hickory-proto`'s; this
//! module only decides which records go where.
//!
//! Names: a node is the instance `<node id>.<service>.micro.` with SRV (priority
//! 10, weight 1, port, target = host name), A/AAAA (on the host name, carrying
//! the node's address) and TXT (see [`crate::txt`]). Each service also answers
//! for `_services.micro.` (PTR → `<service>._services.micro.`, SRV port 9999,
//! A 0.0.0.0, empty TXT) so that listing works.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use micro_registry::{Error, Node, Service};

use crate::txt::TxtInfo;

/// The mDNS domain go-micro uses instead of `local.`.
pub(crate) const DOMAIN: &str = "micro";
/// The pseudo-service under which every service is listed.
pub(crate) const SERVICES: &str = "_services";
/// Record TTL go-micro uses, in seconds.
pub(crate) const TTL: u32 = 120;
/// SRV priority and weight go-micro writes.
const SRV_PRIORITY: u16 = 10;
const SRV_WEIGHT: u16 = 1;
/// The SRV port of a `_services` entry.
const SERVICES_PORT: u16 = 9999;

/// `<service>.micro.`
pub(crate) fn service_name(service: &str) -> Result<Name, String> {
    labels_name(service.split('.').chain([DOMAIN]))
}

/// `_services.micro.`
pub(crate) fn services_name() -> Name {
    // Two fixed, valid labels.
    Name::from_labels([SERVICES, DOMAIN]).unwrap_or_else(|_| Name::root())
}

/// `<node id>.<service>.micro.`, as go-micro names a node.
///
/// A DNS label holds at most 63 bytes, so `<service>-<uuid>` ids of services
/// whose last name part is longer than 26 bytes do not fit (go-micro cannot
/// announce them at all). Those get a compact, deterministic first label
/// (a prefix of the id and a hash of all of it) and the TXT carries the real
/// id; the second value says which happened.
pub(crate) fn instance_name(node_id: &str, service: &str) -> Result<(Name, bool), String> {
    let service_part = service_name(service)?;
    if let Ok(exact) = labels_name(node_id.split('.').chain(service.split('.')).chain([DOMAIN])) {
        return Ok((exact, true));
    }
    if node_id.is_empty() {
        return Err("empty node id".into());
    }
    let mut prefix: String = node_id.replace('.', "-");
    let mut cut = prefix.len().min(40);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    prefix.truncate(cut);
    let label = format!("{prefix}-{:016x}", fnv1a(node_id.as_bytes()));
    let compact = Name::from_labels([label.as_bytes()])
        .and_then(|first| first.append_name(&service_part))
        .map_err(|e| format!("not a DNS name: {e}"))?;
    Ok((compact, false))
}

/// FNV-1a, 64 bit: stable across processes and versions, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `<service>._services.micro.`
fn services_instance_name(service: &str) -> Result<Name, String> {
    labels_name(service.split('.').chain([SERVICES, DOMAIN]))
}

fn labels_name<'a>(labels: impl Iterator<Item = &'a str>) -> Result<Name, String> {
    let labels: Vec<&str> = labels.collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err("a name has an empty label (leading, trailing or double dot)".into());
    }
    let mut name = Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .map_err(|e| format!("not a DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// A map key for a name: lower case, dotted, fully qualified.
pub(crate) fn key(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

/// The labels of `name` before `suffix` (case-insensitive), joined with dots;
/// `None` when `name` is not strictly below `suffix`.
fn strip_suffix(name: &Name, suffix: &Name) -> Option<String> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let tail: Vec<&[u8]> = suffix.iter().collect();
    if labels.len() <= tail.len() {
        return None;
    }
    let split = labels.len() - tail.len();
    let matches = labels[split..]
        .iter()
        .zip(&tail)
        .all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !matches {
        return None;
    }
    let parts: Option<Vec<&str>> = labels[..split]
        .iter()
        .map(|l| std::str::from_utf8(l).ok())
        .collect();
    Some(parts?.join("."))
}

/// The host name we put in SRV targets: the system's, as go-micro does.
pub(crate) fn host_name() -> Name {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let trimmed = raw.trim().trim_end_matches('.');
    labels_name(trimmed.split('.'))
        .ok()
        .filter(|_| !trimmed.is_empty())
        .unwrap_or_else(|| labels_name(["micro-host"].into_iter()).unwrap_or_else(|_| Name::root()))
}

/// One node we announce: its records, built once.
#[derive(Clone, Debug)]
pub(crate) struct LocalInstance {
    /// The service with only this node, as registered.
    pub service: Service,
    pub instance: Name,
    pub service_name: Name,
    pub host: Name,
    pub ip: IpAddr,
    pub port: u16,
    pub txt: Vec<String>,
}

impl LocalInstance {
    pub(crate) fn new(service: &Service, node: &Node, host: &Name) -> Result<Self, Error> {
        let invalid = |what: String| Error::Invalid(format!("mdns: node {}: {what}", node.id));
        let (ip, port) = parse_address(&node.address).map_err(invalid)?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(invalid(format!(
                "address {} cannot be reached; register the IP clients should dial",
                node.address
            )));
        }
        let (instance, exact) = instance_name(&node.id, &service.name).map_err(invalid)?;
        let service_name = service_name(&service.name).map_err(invalid)?;
        let info = TxtInfo {
            id: (!exact).then(|| node.id.clone()),
            service: service.name.clone(),
            version: service.version.clone(),
            endpoints: service.endpoints.clone(),
            metadata: node.metadata.clone(),
        };
        let txt = info
            .encode()
            .map_err(|e| invalid(format!("cannot encode TXT: {e}")))?;
        Ok(LocalInstance {
            service: service.for_node(node),
            instance,
            service_name,
            host: host.clone(),
            ip,
            port,
            txt,
        })
    }

    pub(crate) fn key(&self) -> String {
        key(&self.instance)
    }

    /// The same records (what a refresh need not announce again).
    pub(crate) fn same_records(&self, other: &LocalInstance) -> bool {
        self.ip == other.ip
            && self.port == other.port
            && self.txt == other.txt
            && self.host == other.host
    }

    pub(crate) fn ptr(&self, ttl: u32) -> Record {
        Record::from_rdata(
            self.service_name.clone(),
            ttl,
            RData::PTR(PTR(self.instance.clone())),
        )
    }

    pub(crate) fn srv(&self, ttl: u32) -> Record {
        Record::from_rdata(
            self.instance.clone(),
            ttl,
            RData::SRV(SRV::new(
                SRV_PRIORITY,
                SRV_WEIGHT,
                self.port,
                self.host.clone(),
            )),
        )
    }

    pub(crate) fn addr(&self, ttl: u32) -> Record {
        let data = match self.ip {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        Record::from_rdata(self.host.clone(), ttl, data)
    }

    pub(crate) fn txt_record(&self, ttl: u32) -> Record {
        Record::from_rdata(
            self.instance.clone(),
            ttl,
            RData::TXT(TXT::new(self.txt.clone())),
        )
    }

    /// SRV, A/AAAA, TXT: what an announcement or a goodbye (TTL 0) carries.
    pub(crate) fn announcement(&self, ttl: u32) -> Message {
        let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
        msg.metadata.authoritative = true;
        msg.add_answers([self.srv(ttl), self.addr(ttl), self.txt_record(ttl)]);
        msg
    }

    /// A probe as go-micro sends it: a PTR question for the instance name, with
    /// the records we intend to own (SRV 0 0, TXT) in the authority section.
    pub(crate) fn probe(&self) -> Message {
        let mut msg = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(self.instance.clone(), RecordType::PTR));
        msg.add_authorities([
            Record::from_rdata(
                self.instance.clone(),
                TTL,
                RData::SRV(SRV::new(0, 0, self.port, self.host.clone())),
            ),
            self.txt_record(TTL),
        ]);
        msg
    }

    /// The records answering `question`, if it is about this node; in the
    /// order go-micro's client needs (SRV before the address it points to,
    /// TXT last).
    pub(crate) fn answer(&self, question: &Query) -> Vec<Record> {
        let qtype = question.query_type;
        let name = &question.name;
        let any = qtype == RecordType::ANY;
        let addr_matches = matches!(
            (qtype, self.ip),
            (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
        );
        if name == &self.service_name {
            if any || qtype == RecordType::PTR {
                return vec![
                    self.ptr(TTL),
                    self.srv(TTL),
                    self.addr(TTL),
                    self.txt_record(TTL),
                ];
            }
        } else if name == &self.instance {
            if any {
                return vec![self.srv(TTL), self.addr(TTL), self.txt_record(TTL)];
            }
            return match qtype {
                RecordType::SRV => vec![self.srv(TTL), self.addr(TTL)],
                RecordType::TXT => vec![self.txt_record(TTL)],
                _ if addr_matches => vec![self.addr(TTL)],
                _ => Vec::new(),
            };
        } else if name == &self.host && (any || addr_matches) {
            return vec![self.addr(TTL)];
        }
        Vec::new()
    }
}

/// The `_services` entry of one service name.
pub(crate) fn services_records(service: &str, host: &Name, ttl: u32) -> Option<Vec<Record>> {
    let instance = services_instance_name(service).ok()?;
    Some(vec![
        Record::from_rdata(services_name(), ttl, RData::PTR(PTR(instance.clone()))),
        Record::from_rdata(
            instance.clone(),
            ttl,
            RData::SRV(SRV::new(
                SRV_PRIORITY,
                SRV_WEIGHT,
                SERVICES_PORT,
                host.clone(),
            )),
        ),
        Record::from_rdata(host.clone(), ttl, RData::A(A(Ipv4Addr::UNSPECIFIED))),
        Record::from_rdata(instance, ttl, RData::TXT(TXT::new(Vec::new()))),
    ])
}

/// Whether `question` asks for the `_services` entry of `service`.
pub(crate) fn asks_services(question: &Query, service: &str) -> bool {
    let qtype = question.query_type;
    let any = qtype == RecordType::ANY;
    if question.name == services_name() {
        return any || qtype == RecordType::PTR;
    }
    services_instance_name(service).is_ok_and(|name| name == question.name)
        && matches!(
            qtype,
            RecordType::ANY | RecordType::SRV | RecordType::TXT | RecordType::PTR
        )
}

/// A response to `query` carrying `records`: the question echoed (go-micro's
/// client drops answers whose first question differs from its own), the
/// authoritative flag set, and the query's ID (0 for multicast, as go-micro;
/// a legacy unicast querier such as `dig` needs its own ID back).
pub(crate) fn response(query: &Message, id: u16, records: Vec<Record>) -> Message {
    let mut msg = Message::new(id, MessageType::Response, OpCode::Query);
    msg.metadata.authoritative = true;
    msg.add_queries(query.queries.iter().cloned());
    msg.add_answers(records);
    msg
}

/// The responses of our nodes to `query`: one message per node (go-micro's
/// client reads one instance per message) and one per service for
/// `_services` questions.
pub(crate) fn answers(
    locals: &[&LocalInstance],
    host: &Name,
    query: &Message,
    id: u16,
) -> Vec<Message> {
    let mut replies = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    for local in locals {
        let mut records: Vec<Record> = Vec::new();
        for question in &query.queries {
            for record in local.answer(question) {
                if !records.contains(&record) {
                    records.push(record);
                }
            }
        }
        if !records.is_empty() {
            replies.push(response(query, id, records));
        }
        let name = local.service.name.as_str();
        if !services.contains(&name) {
            services.push(name);
        }
    }
    for name in services {
        if query.queries.iter().any(|q| asks_services(q, name))
            && let Some(records) = services_records(name, host, TTL)
        {
            replies.push(response(query, id, records));
        }
    }
    replies
}

/// A one-shot query for `name` as go-micro's client sends it: random ID,
/// flags 0, class IN, no unicast-response bit.
pub(crate) fn query(name: Name, qtype: RecordType) -> Message {
    let mut msg = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(name, qtype));
    msg
}

/// `host:port` → address and port; the port must not be 0.
pub(crate) fn parse_address(address: &str) -> Result<(IpAddr, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("address {address:?} has a bad port"))?;
    if port == 0 {
        return Err(format!("address {address:?} has port 0"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("address {address:?}: mDNS needs an IP address, not {host:?}"))?;
    Ok((ip, port))
}

/// `ip:port` the way go-micro writes node addresses.
pub(crate) fn format_address(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Decodes a datagram with hickory-proto's header, question and record
/// decoders. Unlike `Message::from_vec` it accepts records with empty rdata
/// outside DNS UPDATE: go-micro's `_services` TXT has none (they come back as
/// `RData::Update0`).
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut decoder = BinDecoder::new(bytes);
    let Header { metadata, counts } = Header::read(&mut decoder)?;
    let mut msg = Message::new(metadata.id, metadata.message_type, metadata.op_code);
    msg.metadata = metadata;
    for _ in 0..counts.queries {
        msg.queries.push(Query::read(&mut decoder)?);
    }
    for _ in 0..counts.answers {
        msg.answers.push(Record::read(&mut decoder)?);
    }
    for _ in 0..counts.authorities {
        msg.authorities.push(Record::read(&mut decoder)?);
    }
    for _ in 0..counts.additionals {
        msg.additionals.push(Record::read(&mut decoder)?);
    }
    Ok(msg)
}

/// What one response message says about one instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InstanceUpdate {
    /// `key()` of the instance name.
    pub key: String,
    pub name: Name,
    /// Node id and service, when the TXT told us which service this is.
    pub node_id: Option<String>,
    /// Port and TTL.
    pub srv: Option<(u16, u32)>,
    /// Address and TTL.
    pub addr: Option<(IpAddr, u32)>,
    /// Decoded TXT and TTL.
    pub txt: Option<(TxtInfo, u32)>,
    /// A TTL-0 SRV or TXT: the node says goodbye.
    pub goodbye: bool,
}

/// Everything a response message told us.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    pub instances: Vec<InstanceUpdate>,
    /// Service names from `_services.micro.` PTRs, with TTL.
    pub service_names: Vec<(String, u32)>,
    /// Records under `micro.` we could not use (bad TXT, port 0, ...).
    pub malformed: u64,
    /// Records outside `micro.`.
    pub foreign: u64,
}

/// Reads the answer and additional sections of a response.
pub(crate) fn parse_response(msg: &Message) -> Parsed {
    let mut parsed = Parsed::default();
    let domain = labels_name([DOMAIN].into_iter()).unwrap_or_else(|_| Name::root());
    let services = services_name();
    let records: Vec<&Record> = msg.answers.iter().chain(&msg.additionals).collect();

    // Addresses by owner name, in message order.
    let mut addrs: HashMap<String, Vec<(IpAddr, u32)>> = HashMap::new();
    for record in &records {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        addrs
            .entry(key(&record.name))
            .or_default()
            .push((ip, record.ttl));
    }

    let mut order: Vec<String> = Vec::new();
    let mut updates: HashMap<String, InstanceUpdate> = HashMap::new();
    for record in &records {
        if !domain.zone_of(&record.name) {
            // Host addresses live outside `micro.`; anything else is not ours.
            if !matches!(record.data, RData::A(_) | RData::AAAA(_)) {
                parsed.foreign += 1;
            }
            continue;
        }
        match &record.data {
            RData::PTR(ptr) if record.name == services => match strip_suffix(&ptr.0, &services) {
                Some(name) if !name.is_empty() => parsed.service_names.push((name, record.ttl)),
                _ => parsed.malformed += 1,
            },
            RData::SRV(_) | RData::TXT(_) | RData::Update0(RecordType::TXT) => {
                if services.zone_of(&record.name) {
                    // A `_services` entry: its PTR says all we need.
                    continue;
                }
                let k = key(&record.name);
                let update = updates.entry(k.clone()).or_insert_with(|| {
                    order.push(k.clone());
                    InstanceUpdate {
                        key: k,
                        name: record.name.clone(),
                        node_id: None,
                        srv: None,
                        addr: None,
                        txt: None,
                        goodbye: false,
                    }
                });
                if record.ttl == 0 {
                    update.goodbye = true;
                    continue;
                }
                match &record.data {
                    RData::SRV(srv) => {
                        if srv.port == 0 {
                            parsed.malformed += 1;
                            continue;
                        }
                        update.srv = Some((srv.port, record.ttl));
                        // go-micro prefers IPv4; take the target's first usable address.
                        let candidates = addrs.get(&key(&srv.target));
                        let pick = |v4: bool| {
                            candidates.and_then(|list| {
                                list.iter().copied().find(|(ip, ttl)| {
                                    *ttl > 0 && ip.is_ipv4() == v4 && !ip.is_unspecified()
                                })
                            })
                        };
                        if let Some(addr) = pick(true).or_else(|| pick(false)) {
                            update.addr = Some(addr);
                        }
                    }
                    RData::TXT(txt) => match TxtInfo::decode(&txt.txt_data) {
                        Ok(info) => {
                            let Ok(suffix) = service_name(&info.service) else {
                                parsed.malformed += 1;
                                continue;
                            };
                            match strip_suffix(&record.name, &suffix) {
                                Some(id) if !id.is_empty() && !id.chars().any(char::is_control) => {
                                    update.node_id = Some(info.id.clone().unwrap_or(id));
                                    update.txt = Some((info, record.ttl));
                                }
                                _ => parsed.malformed += 1,
                            }
                        }
                        Err(e) => {
                            tracing::trace!(name = %record.name, "mdns: ignoring TXT: {e}");
                            parsed.malformed += 1;
                        }
                    },
                    // An empty TXT outside `_services`: not a go-micro node.
                    _ => parsed.malformed += 1,
                }
            }
            _ => {}
        }
    }
    parsed.instances = order
        .into_iter()
        .filter_map(|k| updates.remove(&k))
        .collect();
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("127.0.0.1:4242"),
            Ok(("127.0.0.1".parse().expect("ip"), 4242))
        );
        assert_eq!(
            parse_address("[::1]:80"),
            Ok(("::1".parse().expect("ip"), 80))
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "host:80",
            ":80",
            "",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert_eq!(format_address("::1".parse().expect("ip"), 80), "[::1]:80");
    }

    #[test]
    fn names() {
        let (name, exact) =
            instance_name("go.micro.srv.greeter-1", "go.micro.srv.greeter").expect("name");
        assert!(exact);
        assert_eq!(
            key(&name),
            "go.micro.srv.greeter-1.go.micro.srv.greeter.micro."
        );
        let suffix = service_name("go.micro.srv.greeter").expect("name");
        assert_eq!(
            strip_suffix(&name, &suffix).as_deref(),
            Some("go.micro.srv.greeter-1")
        );
        // Too long for a label: a compact name, the same in every process.
        let long = format!("{}-4b6e0b5e-6f7a-4c1d-9a2b-3c4d5e6f7a8b", "s".repeat(40));
        let (compact, exact) = instance_name(&long, "svc").expect("compact");
        assert!(!exact);
        assert_eq!(compact, instance_name(&long, "svc").expect("again").0);
        assert_ne!(
            compact,
            instance_name(&format!("{long}x"), "svc").expect("other").0
        );
        assert!(key(&compact).ends_with(".svc.micro."), "{compact}");
        assert!(instance_name("", "svc").is_err());
        assert!(instance_name("a", "").is_err());
        assert!(instance_name("a", &"x".repeat(64)).is_err());
        assert_eq!(key(&services_name()), "_services.micro.");
    }
}
