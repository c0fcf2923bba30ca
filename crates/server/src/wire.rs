//! The wire guard: every request is walked on its protobuf wire bytes as they arrive, before
//! anything decodes it, and every repeated or map field is counted against
//! [`REPEATED_FIELD_LIMITS`].
//!
//! The walk allocates nothing per entry: it reads tags and lengths, skips what it does not
//! track, and keeps one counter per repeated field of the message or entry it is in. An entry
//! past its field's limit is counted and skipped, never descended into. Bytes go on to tonic's
//! decoder only as far as they have been walked; the last byte of a message goes on only once
//! the whole message is within its limits (and its cost has been charged, see `auth`), so a
//! refused message is never decoded: it is read to its end (to report the exact count, and so
//! the client gets a clean answer) without being kept. A message refused from its length
//! prefix alone (larger than its service allows, or than the caller's bytes budget) is
//! answered at once, unread.
//!
//! The [`Schema`] comes from the descriptor sets of everything served (puente.v1, health,
//! reflection); a path that is not in it is refused (UNIMPLEMENTED). A repeated field without
//! a limit in the table, reachable from any RPC's request, stops the server from starting
//! (and fails `every_repeated_request_field_has_a_limit_and_every_limit_is_used` below).
//!
//! Size: the wire guard's decoder and the table of every repeated field's limit for every RPC; the
//! table is long by nature.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::access::{Access, access};
use crate::error::{ApiError, Violation};
use crate::{
    BULK_SERVICES, CONTROL_MESSAGE_BYTES_MAX, MESSAGE_BYTES_MAX, METHOD_MESSAGE_BYTES_MAX,
    UNAUTHENTICATED_MESSAGE_BYTES_MAX,
};

/// Most entries of every repeated or map field of every request message, by the field's full
/// name. Every repeated field reachable from an RPC's request must be listed.
pub const REPEATED_FIELD_LIMITS: &[(&str, usize)] = &[
    ("puente.v1.CreateAccountsRequest.accounts", puente_ledger::BATCH_EVENTS_MAX),
    ("puente.v1.Account.metadata", puente_ledger::METADATA_ENTRIES_MAX),
    ("puente.v1.CreateTransfersRequest.transfers", puente_ledger::BATCH_EVENTS_MAX),
    ("puente.v1.Transfer.metadata", puente_ledger::METADATA_ENTRIES_MAX),
    ("puente.v1.SetRatesRequest.rates", crate::fx_desk::RATES_PER_CALL_MAX),
    ("puente.v1.StreamRatesRequest.rates", crate::fx_desk::RATES_PER_CALL_MAX),
    ("puente.v1.SetKycPolicyRequest.us_tiers", crate::holder_desk::US_TIERS_PER_POLICY_MAX),
    ("puente.v1.ParticipantProfile.currencies", puente_ledger::settlement::PROFILE_CURRENCIES_MAX),
    ("puente.v1.ReconcileStatementsRequest.documents", puente_settlement::reconcile::DOCUMENTS_MAX),
];

/// The descriptor sets of every service the server serves.
pub fn descriptor_sets() -> [&'static [u8]; 4] {
    [
        puente_proto::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// The schema of every served RPC, built once.
pub fn schema() -> Result<&'static Schema, String> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Schema::build(&descriptor_sets(), REPEATED_FIELD_LIMITS))
        .as_ref()
        .map_err(Clone::clone)
}

/// gRPC's length prefix: a compressed flag and a big-endian u32 length.
const GRPC_HEADER_BYTES: usize = 5;
/// Bits of a varint past which it is malformed (10 bytes).
const VARINT_SHIFT_BITS_MAX: u32 = 63;

/// What the walk needs of every RPC: where its request message starts, and whether the client
/// streams.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    root: usize,
    client_streaming: bool,
    /// Largest message: [`MESSAGE_BYTES_MAX`] for the bulk services,
    /// [`UNAUTHENTICATED_MESSAGE_BYTES_MAX`] for what needs no credentials, else
    /// [`CONTROL_MESSAGE_BYTES_MAX`].
    message_bytes_max: u32,
}

/// The tracked part of the request messages, unrolled into a tree per RPC (each node is one
/// message at one place; only fields that are repeated, or lead to one, are tracked).
#[derive(Debug)]
pub struct Schema {
    methods: HashMap<String, Method>,
    nodes: Vec<Node>,
    /// The full names of the limits the schema uses.
    used: HashSet<String>,
}

#[derive(Debug, Default)]
struct Node {
    /// The tracked fields by number (a handful at most: a scan beats hashing).
    fields: Vec<(u32, Rule)>,
    /// On a frame root (a request, or an entry of a repeated field): one counter per repeated
    /// field under it, singular message fields included.
    slots: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    /// Relative to the frame root: `metadata`, `profile.currencies`.
    path: String,
    limit: u32,
    /// A field of the request itself: its entries are the request's events.
    top_level: bool,
}

#[derive(Debug)]
enum Rule {
    /// A singular message field with repeated fields below it (repeated occurrences merge, so
    /// they share its counters).
    Singular { name: String, child: usize },
    /// A repeated or map field: `slot` counts its entries in the current frame.
    Repeated { name: String, slot: usize, element: Element },
}

#[derive(Debug, Clone, Copy)]
enum Element {
    /// Length-delimited and not walked (strings, bytes, messages without repeated fields).
    Opaque,
    Varint,
    Fixed32,
    Fixed64,
    /// Messages with repeated fields: each entry is a new frame.
    Entries(usize),
}

struct Builder<'a> {
    messages: &'a HashMap<String, DescriptorProto>,
    limits: &'a HashMap<&'a str, usize>,
    nodes: Vec<Node>,
    used: HashSet<String>,
    stack: Vec<String>,
}

impl Builder<'_> {
    /// The node of message `type_name` (`.pkg.Msg`), its repeated fields counted in `slots`.
    fn node(
        &mut self,
        type_name: &str,
        slots: &mut Vec<Slot>,
        prefix: &str,
        top: bool,
    ) -> Result<usize, String> {
        if self.stack.iter().any(|t| t == type_name) {
            return Err(format!("{type_name} is recursive: the wire guard cannot bound it"));
        }
        let message =
            self.messages.get(type_name).ok_or_else(|| format!("unknown message type {type_name}"))?;
        self.stack.push(type_name.to_owned());
        let id = self.nodes.len();
        self.nodes.push(Node::default());
        let mut fields = Vec::new();
        for field in &message.field {
            let number =
                u32::try_from(field.number()).map_err(|_| format!("{type_name}: bad field number"))?;
            let name = field.name();
            let full = format!("{}.{name}", type_name.trim_start_matches('.'));
            if field.r#type() == Type::Group {
                return Err(format!("{full}: groups are not supported"));
            }
            if field.label() == Label::Repeated {
                let limit = *self.limits.get(full.as_str()).ok_or_else(|| {
                    format!("{full} is repeated and has no limit in wire::REPEATED_FIELD_LIMITS")
                })?;
                let limit = u32::try_from(limit).map_err(|_| format!("{full}: limit too large"))?;
                self.used.insert(full);
                let slot = slots.len();
                slots.push(Slot { path: format!("{prefix}{name}"), limit, top_level: top });
                let element = match field.r#type() {
                    Type::Message => {
                        let mut entry_slots = Vec::new();
                        let child = self.node(field.type_name(), &mut entry_slots, "", false)?;
                        if self.nodes[child].fields.is_empty() {
                            Element::Opaque
                        } else {
                            self.nodes[child].slots = entry_slots;
                            Element::Entries(child)
                        }
                    }
                    Type::String | Type::Bytes => Element::Opaque,
                    Type::Fixed32 | Type::Sfixed32 | Type::Float => Element::Fixed32,
                    Type::Fixed64 | Type::Sfixed64 | Type::Double => Element::Fixed64,
                    _ => Element::Varint,
                };
                fields.push((number, Rule::Repeated { name: name.to_owned(), slot, element }));
            } else if field.r#type() == Type::Message {
                let child = self.node(field.type_name(), slots, &format!("{prefix}{name}."), false)?;
                if !self.nodes[child].fields.is_empty() {
                    fields.push((number, Rule::Singular { name: name.to_owned(), child }));
                }
            }
        }
        self.stack.pop();
        self.nodes[id].fields = fields;
        Ok(id)
    }
}

fn index_messages(out: &mut HashMap<String, DescriptorProto>, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        index_messages(out, &name, nested);
    }
    out.insert(name, message.clone());
}

impl Schema {
    /// Reads the encoded descriptor sets; refuses any repeated field reachable from a request
    /// without an entry in `limits`.
    pub fn build(sets: &[&[u8]], limits: &[(&str, usize)]) -> Result<Schema, String> {
        let mut messages = HashMap::new();
        let mut rpcs = Vec::new();
        for bytes in sets {
            let set = FileDescriptorSet::decode(*bytes).map_err(|e| format!("descriptor set: {e}"))?;
            for file in &set.file {
                let scope =
                    if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
                for message in &file.message_type {
                    index_messages(&mut messages, &scope, message);
                }
                for service in &file.service {
                    let service_name = format!("{}.{}", scope.trim_start_matches('.'), service.name());
                    let service_name = service_name.trim_start_matches('.').to_owned();
                    let bulk = BULK_SERVICES.contains(&service_name.as_str());
                    for method in &service.method {
                        let path = format!("/{service_name}/{}", method.name());
                        let own =
                            METHOD_MESSAGE_BYTES_MAX.iter().find(|(p, _)| *p == path).map(|(_, max)| *max);
                        let max = match (access(&path), own) {
                            (Access::Public | Access::Bootstrap, _) => UNAUTHENTICATED_MESSAGE_BYTES_MAX,
                            (_, Some(max)) => max,
                            _ if bulk => MESSAGE_BYTES_MAX,
                            _ => CONTROL_MESSAGE_BYTES_MAX,
                        };
                        let max =
                            u32::try_from(max).map_err(|_| "message size limit above 4 GiB".to_owned())?;
                        rpcs.push((path, method.input_type().to_owned(), method.client_streaming(), max));
                    }
                }
            }
        }
        let limits: HashMap<&str, usize> = limits.iter().copied().collect();
        let mut builder = Builder {
            messages: &messages,
            limits: &limits,
            nodes: Vec::new(),
            used: HashSet::new(),
            stack: Vec::new(),
        };
        let mut methods = HashMap::new();
        for (path, input, client_streaming, message_bytes_max) in rpcs {
            let mut slots = Vec::new();
            let root = builder.node(&input, &mut slots, "", true)?;
            builder.nodes[root].slots = slots;
            methods.insert(path, Method { root, client_streaming, message_bytes_max });
        }
        Ok(Schema { methods, nodes: builder.nodes, used: builder.used })
    }

    /// The RPC at an HTTP/2 path (`/puente.v1.LedgerService/CreateTransfers`).
    pub fn method(&self, path: &str) -> Option<Method> {
        self.methods.get(path).copied()
    }

    /// The limits (full field names) the schema uses.
    pub fn used_limits(&self) -> &HashSet<String> {
        &self.used
    }

    /// Every (RPC path, repeated field path, limit) of the request messages: `transfers`,
    /// `transfers[].metadata`, `profile.currencies`.
    pub fn repeated_fields(&self) -> Vec<(String, String, u32)> {
        let mut out = Vec::new();
        for (path, method) in &self.methods {
            self.collect(method.root, "", path, &mut out);
        }
        out.sort();
        out
    }

    fn collect(&self, frame: usize, prefix: &str, rpc: &str, out: &mut Vec<(String, String, u32)>) {
        for slot in &self.nodes[frame].slots {
            out.push((rpc.to_owned(), format!("{prefix}{}", slot.path), slot.limit));
        }
        // Entries of repeated fields open frames of their own.
        let mut stack = vec![(frame, prefix.to_owned())];
        while let Some((node, at)) = stack.pop() {
            for (_, rule) in &self.nodes[node].fields {
                match rule {
                    Rule::Singular { name, child } => stack.push((*child, format!("{at}{name}."))),
                    Rule::Repeated { name, element: Element::Entries(child), .. } => {
                        self.collect(*child, &format!("{at}{name}[]."), rpc, out);
                    }
                    Rule::Repeated { .. } => {}
                }
            }
        }
    }

    /// The most events any one request can carry (its top-level entries).
    pub fn events_max(&self) -> u64 {
        self.methods
            .values()
            .map(|m| {
                self.nodes[m.root].slots.iter().filter(|s| s.top_level).map(|s| u64::from(s.limit)).sum()
            })
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy)]
enum Segment<'s> {
    Root,
    Field(&'s str),
    Entry(&'s str, u32),
}

#[derive(Debug)]
struct Level<'s> {
    node: usize,
    /// The frame root whose counters this level uses.
    frame_node: usize,
    base: usize,
    end: u64,
    frame: bool,
    segment: Segment<'s>,
}

#[derive(Debug, Clone, Copy)]
enum Then<'s> {
    Skip,
    Descend { node: usize, frame: bool, segment: Segment<'s> },
    PackedVarints { slot: usize },
    PackedFixed { slot: usize, width: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Token<'s> {
    Key { value: u64, shift: u32 },
    Length { value: u64, shift: u32, then: Then<'s> },
    SkipVarint { shift: u32 },
    Skip { remaining: u64 },
    PackedVarints { remaining: u64, slot: usize },
}

const FRESH_KEY: Token<'static> = Token::Key { value: 0, shift: 0 };

/// One varint byte: `Ok(true)` when the varint is complete.
fn varint_step(value: &mut u64, shift: &mut u32, byte: u8) -> Result<bool, String> {
    if *shift > VARINT_SHIFT_BITS_MAX {
        return Err("a varint longer than 10 bytes".into());
    }
    *value |= u64::from(byte & 0x7f) << *shift;
    *shift += 7;
    Ok(byte < 0x80)
}

/// The walk of one message, fed its bytes in any pieces.
#[derive(Debug)]
pub struct MessageScan<'s> {
    schema: &'s Schema,
    len: u64,
    pos: u64,
    levels: Vec<Level<'s>>,
    counters: Vec<u32>,
    token: Token<'s>,
    over: bool,
    violations: Vec<Violation>,
    malformed: Option<String>,
}

impl<'s> MessageScan<'s> {
    pub fn new(schema: &'s Schema, method: Method, len: u64) -> MessageScan<'s> {
        let root = method.root;
        MessageScan {
            schema,
            len,
            pos: 0,
            levels: vec![Level {
                node: root,
                frame_node: root,
                base: 0,
                end: len,
                frame: true,
                segment: Segment::Root,
            }],
            counters: vec![0; schema.nodes[root].slots.len()],
            token: FRESH_KEY,
            over: false,
            violations: Vec::new(),
            malformed: None,
        }
    }

    /// True once the message is known to be refused: its remaining bytes are only read.
    pub fn refused(&self) -> bool {
        self.over || self.malformed.is_some()
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.malformed.is_none() {
            self.malformed = Some(why.into());
        }
    }

    /// Walks the next bytes of the message (never more than its length in all).
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() && self.malformed.is_none() {
            if matches!(self.token, Token::Key { shift: 0, .. }) {
                self.close_levels();
            }
            let level_end = self.levels.last().map_or(self.len, |l| l.end);
            if self.pos >= level_end {
                self.fail("bytes past the end of the message");
                break;
            }
            match self.token {
                Token::Key { mut value, mut shift } => {
                    let byte = data[i];
                    i += 1;
                    self.pos += 1;
                    match varint_step(&mut value, &mut shift, byte) {
                        Err(e) => self.fail(e),
                        Ok(false) => self.token = Token::Key { value, shift },
                        Ok(true) => self.on_key(value),
                    }
                }
                Token::Length { mut value, mut shift, then } => {
                    let byte = data[i];
                    i += 1;
                    self.pos += 1;
                    match varint_step(&mut value, &mut shift, byte) {
                        Err(e) => self.fail(e),
                        Ok(false) => self.token = Token::Length { value, shift, then },
                        Ok(true) => self.on_length(value, then),
                    }
                }
                Token::SkipVarint { shift } => {
                    let byte = data[i];
                    i += 1;
                    self.pos += 1;
                    if shift > VARINT_SHIFT_BITS_MAX {
                        self.fail("a varint longer than 10 bytes");
                    } else if byte < 0x80 {
                        self.token = FRESH_KEY;
                    } else {
                        self.token = Token::SkipVarint { shift: shift + 7 };
                    }
                }
                Token::Skip { remaining } => {
                    let n = remaining.min((data.len() - i) as u64);
                    i += n as usize;
                    self.pos += n;
                    self.token =
                        if n == remaining { FRESH_KEY } else { Token::Skip { remaining: remaining - n } };
                }
                Token::PackedVarints { remaining, slot, .. } => {
                    let n = remaining.min((data.len() - i) as u64);
                    let piece = &data[i..i + n as usize];
                    let values = piece.iter().filter(|b| **b < 0x80).count();
                    self.count(slot, values as u64);
                    i += n as usize;
                    self.pos += n;
                    let last = piece.last().copied().unwrap_or(0);
                    if n < remaining {
                        self.token = Token::PackedVarints { remaining: remaining - n, slot };
                    } else if last >= 0x80 {
                        self.fail("a packed field ends inside a varint");
                    } else {
                        self.token = FRESH_KEY;
                    }
                }
            }
        }
        // A malformed message is read to its end, not walked.
        self.pos += (data.len() - i) as u64;
    }

    /// Adds `n` entries to the counter `slot` (relative to the current frame).
    fn count(&mut self, slot: usize, n: u64) -> u64 {
        let Some(level) = self.levels.last() else { return 0 };
        let limit = self.schema.nodes[level.frame_node].slots[slot].limit;
        let counter = &mut self.counters[level.base + slot];
        *counter = counter.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if *counter > limit {
            self.over = true;
        }
        u64::from(*counter)
    }

    fn on_key(&mut self, key: u64) {
        self.token = FRESH_KEY;
        let Ok(key) = u32::try_from(key) else { return self.fail("a field key above 2^32") };
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return self.fail("field number 0");
        }
        let Some(level) = self.levels.last() else { return };
        let schema = self.schema;
        let frame_node = level.frame_node;
        let length = |then| Token::Length { value: 0, shift: 0, then };
        let rule = schema.nodes[level.node].fields.iter().find(|(n, _)| *n == number).map(|(_, rule)| rule);
        self.token = match (rule, wire_type) {
            (_, 3 | 4) => return self.fail("groups are not accepted"),
            (_, 6 | 7) => return self.fail(format!("field {number}: invalid wire type {wire_type}")),
            (None, 0) => Token::SkipVarint { shift: 0 },
            (None, 1) => Token::Skip { remaining: 8 },
            (None, 5) => Token::Skip { remaining: 4 },
            (None, _) => length(Then::Skip),
            (Some(Rule::Singular { name, child }), 2) => {
                length(Then::Descend { node: *child, frame: false, segment: Segment::Field(name) })
            }
            (Some(Rule::Repeated { name, slot, element }), wire_type) => match (*element, wire_type) {
                (Element::Entries(child), 2) => {
                    let n = self.count(*slot, 1);
                    if n <= u64::from(schema.nodes[frame_node].slots[*slot].limit) {
                        let index = u32::try_from(n - 1).unwrap_or(u32::MAX);
                        length(Then::Descend {
                            node: child,
                            frame: true,
                            segment: Segment::Entry(name, index),
                        })
                    } else {
                        length(Then::Skip)
                    }
                }
                (Element::Opaque, 2) => {
                    self.count(*slot, 1);
                    length(Then::Skip)
                }
                (Element::Varint, 0) => {
                    self.count(*slot, 1);
                    Token::SkipVarint { shift: 0 }
                }
                (Element::Fixed64, 1) => {
                    self.count(*slot, 1);
                    Token::Skip { remaining: 8 }
                }
                (Element::Fixed32, 5) => {
                    self.count(*slot, 1);
                    Token::Skip { remaining: 4 }
                }
                (Element::Varint, 2) => length(Then::PackedVarints { slot: *slot }),
                (Element::Fixed32, 2) => length(Then::PackedFixed { slot: *slot, width: 4 }),
                (Element::Fixed64, 2) => length(Then::PackedFixed { slot: *slot, width: 8 }),
                _ => return self.fail(format!("{name}: wire type {wire_type} does not match the field")),
            },
            (Some(Rule::Singular { name, .. }), _) => {
                return self.fail(format!("{name}: wire type {wire_type} does not match the field"));
            }
        };
    }

    fn on_length(&mut self, value: u64, then: Then<'s>) {
        self.token = FRESH_KEY;
        let Some(parent) = self.levels.last() else { return };
        if value > parent.end - self.pos {
            return self.fail("a length past the end of its message");
        }
        match then {
            Then::Skip if value > 0 => self.token = Token::Skip { remaining: value },
            Then::Skip => {}
            Then::Descend { node, frame, segment } => {
                let (frame_node, base) =
                    if frame { (node, self.counters.len()) } else { (parent.frame_node, parent.base) };
                if frame {
                    let slots = self.schema.nodes[node].slots.len();
                    self.counters.resize(base + slots, 0);
                }
                self.levels.push(Level { node, frame_node, base, end: self.pos + value, frame, segment });
            }
            Then::PackedVarints { slot } if value > 0 => {
                self.token = Token::PackedVarints { remaining: value, slot };
            }
            Then::PackedVarints { .. } => {}
            Then::PackedFixed { slot, width } => {
                if !value.is_multiple_of(width) {
                    return self.fail("a packed field of fixed-width values with a ragged length");
                }
                self.count(slot, value / width);
                if value > 0 {
                    self.token = Token::Skip { remaining: value };
                }
            }
        }
    }

    /// Closes every nested message that ends here, checking the counters of frames.
    fn close_levels(&mut self) {
        while self.levels.len() > 1 && self.levels.last().is_some_and(|l| l.end == self.pos) {
            self.close_level();
        }
    }

    fn close_level(&mut self) {
        let Some(level) = self.levels.last() else { return };
        if level.frame {
            let (frame_node, base) = (level.frame_node, level.base);
            let mut found = Vec::new();
            for (i, slot) in self.schema.nodes[frame_node].slots.iter().enumerate() {
                let count = self.counters[base + i];
                if count > slot.limit {
                    found.push(Violation::new(
                        self.path(&slot.path),
                        format!("at most {} entries, got {count}", slot.limit),
                    ));
                }
            }
            self.counters.truncate(base);
            if self.levels.len() == 1 {
                // The request's own fields first: they are what the caller must fix first.
                found.append(&mut self.violations);
                self.violations = found;
            } else {
                self.violations.append(&mut found);
            }
        }
        self.levels.pop();
    }

    /// `transfers[5].metadata`: the open levels, then `tail`.
    fn path(&self, tail: &str) -> String {
        let mut out = String::new();
        for level in self.levels.iter().skip(1) {
            let (Segment::Field(name) | Segment::Entry(name, _)) = level.segment else { continue };
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            if let Segment::Entry(_, index) = level.segment {
                out.push_str(&format!("[{index}]"));
            }
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(tail);
        out
    }

    /// The verdict once every byte has been fed: the request's events (its top-level entries,
    /// at least 1), or why it is refused.
    pub fn finish(mut self) -> Result<u32, ApiError> {
        if self.malformed.is_none() && self.pos != self.len {
            self.fail("the message is shorter than its length");
        }
        if self.malformed.is_none() && !matches!(self.token, Token::Key { shift: 0, .. }) {
            self.fail("a field is cut off at the end of the message");
        }
        if let Some(why) = self.malformed.take() {
            return Err(ApiError::Malformed(why));
        }
        let root = self.levels.first().map_or(0, |l| l.node);
        let events: u64 = self.schema.nodes[root]
            .slots
            .iter()
            .zip(&self.counters)
            .filter(|(slot, _)| slot.top_level)
            .map(|(_, n)| u64::from(*n))
            .sum();
        let batch_too_large = self.schema.nodes[root]
            .slots
            .iter()
            .zip(&self.counters)
            .any(|(slot, n)| slot.top_level && *n > slot.limit);
        while !self.levels.is_empty() {
            self.close_level();
        }
        if batch_too_large {
            return Err(ApiError::BatchTooLarge(self.violations));
        }
        if !self.violations.is_empty() {
            return Err(ApiError::InvalidArgument(self.violations));
        }
        Ok(u32::try_from(events.max(1)).unwrap_or(u32::MAX))
    }
}

/// What a guard charges a request for (implemented by the caller's limits in `auth`).
pub trait Charge: Send + Sync {
    /// A message of `bytes` is about to be read.
    fn bytes(&self, bytes: u32) -> Result<(), ApiError>;
    /// A message of `events` is about to be decoded.
    fn events(&self, events: u32) -> Result<(), ApiError>;
}

/// The guard of one request body: gRPC framing, the walk of each message, and its charges.
pub struct Guard {
    schema: &'static Schema,
    method: Method,
    charge: Option<Box<dyn Charge>>,
    header: [u8; GRPC_HEADER_BYTES],
    header_len: usize,
    message: Option<(MessageScan<'static>, u64)>,
    messages: u64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("method", &self.method).field("messages", &self.messages).finish()
    }
}

impl Guard {
    pub fn new(schema: &'static Schema, method: Method, charge: Option<Box<dyn Charge>>) -> Guard {
        Guard {
            schema,
            method,
            charge,
            header: [0; GRPC_HEADER_BYTES],
            header_len: 0,
            message: None,
            messages: 0,
        }
    }

    /// Takes the next piece of the body: `Ok(n)` lets its first `n` bytes go on to the decoder;
    /// `Err((n, error))` lets `n` go on and then refuses the request.
    pub fn push(&mut self, data: &[u8]) -> Result<usize, (usize, ApiError)> {
        let mut i = 0;
        let mut forward = 0;
        while i < data.len() {
            let start = i;
            match &mut self.message {
                None => {
                    let take = (GRPC_HEADER_BYTES - self.header_len).min(data.len() - i);
                    self.header[self.header_len..self.header_len + take].copy_from_slice(&data[i..i + take]);
                    self.header_len += take;
                    i += take;
                    if self.header_len == GRPC_HEADER_BYTES {
                        self.header_len = 0;
                        self.start_message().map_err(|e| (start.min(forward), e))?;
                    }
                    forward = i;
                }
                Some((scan, remaining)) => {
                    let take = (*remaining).min((data.len() - i) as u64);
                    scan.feed(&data[i..i + take as usize]);
                    *remaining -= take;
                    i += take as usize;
                    if !scan.refused() {
                        forward = i;
                    }
                }
            }
            if self.message.as_ref().is_some_and(|(_, remaining)| *remaining == 0) {
                // The message's last byte has been read: it goes on only if accepted.
                self.finish_message().map_err(|e| (start.min(forward), e))?;
            }
        }
        Ok(forward)
    }

    fn start_message(&mut self) -> Result<(), ApiError> {
        self.messages += 1;
        if !self.method.client_streaming && self.messages > 1 {
            return Err(ApiError::Malformed("a unary call carries exactly one message".into()));
        }
        let [flag, length @ ..] = self.header;
        if flag != 0 {
            return Err(ApiError::Malformed("compressed messages are not accepted".into()));
        }
        let len = u32::from_be_bytes(length);
        let max = self.method.message_bytes_max;
        if len > max {
            return Err(ApiError::MessageTooLarge { bytes: u64::from(len), max_bytes: u64::from(max) });
        }
        if let Some(charge) = &self.charge {
            charge.bytes(len)?;
        }
        self.message = Some((MessageScan::new(self.schema, self.method, u64::from(len)), u64::from(len)));
        Ok(())
    }

    fn finish_message(&mut self) -> Result<(), ApiError> {
        let Some((scan, _)) = self.message.take() else { return Ok(()) };
        let events = scan.finish()?;
        if let Some(charge) = &self.charge {
            charge.events(events)?;
        }
        Ok(())
    }

    /// The body ended: refuses a message cut short, or a unary call without one.
    pub fn end(&mut self) -> Result<(), ApiError> {
        if self.header_len > 0 || self.message.is_some() {
            return Err(ApiError::Malformed("the request ended inside a message".into()));
        }
        if !self.method.client_streaming && self.messages == 0 {
            return Err(ApiError::Malformed("no request message".into()));
        }
        Ok(())
    }
}

/// A request body behind a [`Guard`]: data goes on only as far as the guard allows; a refusal
/// ends the body with the refusal's status (which tonic answers with as it is).
pub struct GuardedBody<B> {
    inner: B,
    guard: Guard,
    refusal: Option<ApiError>,
    done: bool,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: Guard) -> GuardedBody<B> {
        GuardedBody { inner, guard, refusal: None, done: false }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn refuse(error: ApiError) -> BoxError {
    Box::new(tonic::Status::from(error))
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(error) = this.refusal.take() {
                this.done = true;
                return Poll::Ready(Some(Err(refuse(error))));
            }
            let frame = match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.guard.end().err().map(|e| Err(refuse(e))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(other) => return Poll::Ready(Some(Ok(other))),
            };
            let forward = match this.guard.push(&data) {
                Ok(n) => n,
                Err((n, error)) => {
                    this.refusal = Some(error);
                    n
                }
            };
            if forward > 0 {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data.slice(..forward)))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(number << 3 | 2), out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn empties(number: u32, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            field(number, &[], &mut out);
        }
        out
    }

    fn method(path: &str) -> Method {
        schema().unwrap().method(path).unwrap()
    }

    const TRANSFERS: &str = "/puente.v1.LedgerService/CreateTransfers";

    fn scan_in_pieces(path: &str, message: &[u8], piece: usize) -> Result<u32, ApiError> {
        let mut scan = MessageScan::new(schema().unwrap(), method(path), message.len() as u64);
        for chunk in message.chunks(piece.max(1)) {
            scan.feed(chunk);
        }
        scan.finish()
    }

    fn violations(result: Result<u32, ApiError>) -> Vec<(String, String)> {
        match result {
            Err(ApiError::InvalidArgument(v) | ApiError::BatchTooLarge(v)) => {
                v.into_iter().map(|v| (v.field, v.description)).collect()
            }
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn every_repeated_request_field_has_a_limit_and_every_limit_is_used() {
        let schema = schema().unwrap();
        let unused: Vec<_> =
            REPEATED_FIELD_LIMITS.iter().filter(|(name, _)| !schema.used_limits().contains(*name)).collect();
        assert!(unused.is_empty(), "limits for fields no request has: {unused:?}");
        // Every puente.v1 RPC is there, and a repeated field without a limit stops the build.
        let set = FileDescriptorSet::decode(puente_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
        for file in &set.file {
            for service in &file.service {
                for m in &service.method {
                    assert!(schema.method(&format!("/puente.v1.{}/{}", service.name(), m.name())).is_some());
                }
            }
        }
        let missing = &REPEATED_FIELD_LIMITS[1..];
        let error = Schema::build(&descriptor_sets(), missing).unwrap_err();
        assert!(error.contains("puente.v1.CreateAccountsRequest.accounts"), "{error}");
        // No request can carry more events than a ledger batch.
        assert_eq!(schema.events_max(), puente_ledger::BATCH_EVENTS_MAX as u64);
    }

    #[test]
    fn too_many_entries_is_one_violation_with_the_exact_count() {
        let message = empties(1, 4_000);
        let mut schema_limits = REPEATED_FIELD_LIMITS.to_vec();
        schema_limits[2].1 = 100;
        let schema: &'static Schema =
            Box::leak(Box::new(Schema::build(&descriptor_sets(), &schema_limits).unwrap()));
        let mut scan = MessageScan::new(schema, schema.method(TRANSFERS).unwrap(), message.len() as u64);
        scan.feed(&message[..300]);
        assert!(scan.refused(), "known past the limit, before the end");
        scan.feed(&message[300..]);
        assert_eq!(violations(scan.finish()), [("transfers".into(), "at most 100 entries, got 4000".into())]);
        assert_eq!(scan_in_pieces(TRANSFERS, &empties(1, 8_189), 7).unwrap(), 8_189);
        assert_eq!(
            violations(scan_in_pieces(TRANSFERS, &empties(1, 8_190), 1000)),
            [("transfers".into(), "at most 8189 entries, got 8190".into())]
        );
    }

    #[test]
    fn nested_maps_are_counted_per_entry_and_singular_messages_merge() {
        // transfers[0] with 3 metadata entries, transfers[1] with 17, transfers[2] with 16.
        let mut message = Vec::new();
        for n in [3, 17, 16] {
            let mut transfer = Vec::new();
            field(1, b"some-id", &mut transfer);
            for k in 0..n {
                let mut entry = Vec::new();
                field(1, format!("k{k}").as_bytes(), &mut entry);
                field(2, b"v", &mut entry);
                field(10, &entry, &mut transfer);
            }
            field(1, &transfer, &mut message);
        }
        for piece in [1, 2, 3, 64, message.len()] {
            assert_eq!(
                violations(scan_in_pieces(TRANSFERS, &message, piece)),
                [("transfers[1].metadata".into(), "at most 16 entries, got 17".into())],
                "piece {piece}"
            );
        }
        // SetParticipantProfile: `profile` twice, 5 currencies each, merge into 10 (limit 8).
        let mut profile = Vec::new();
        for _ in 0..5 {
            field(5, &[], &mut profile);
        }
        let mut message = Vec::new();
        field(1, &profile, &mut message);
        field(1, &profile, &mut message);
        assert_eq!(
            violations(scan_in_pieces("/puente.v1.SettlementService/SetParticipantProfile", &message, 5)),
            [("profile.currencies".into(), "at most 8 entries, got 10".into())]
        );
    }

    #[test]
    fn malformed_bytes_are_refused_not_walked() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x0a, 0x05, 0x00], "a length past the end of its message"),
            (&[0x0a], "a field is cut off at the end of the message"),
            (&[0x00, 0x00], "field number 0"),
            (&[0x0b], "groups are not accepted"),
            (&[0x08, 0x01], "transfers: wire type 0 does not match the field"),
            (&[0xff; 12], "a varint longer than 10 bytes"),
        ];
        for (bytes, why) in cases {
            match scan_in_pieces(TRANSFERS, bytes, 1) {
                Err(ApiError::Malformed(text)) => assert_eq!(&text, why),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        // Unknown fields of every wire type are skipped.
        let mut message = vec![0x78, 0x01, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7d, 1, 2, 3, 4];
        field(14, b"unknown", &mut message);
        assert_eq!(scan_in_pieces(TRANSFERS, &message, 1).unwrap(), 1);
    }

    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(&'static str, u32)>>>);

    impl Charge for Recorder {
        fn bytes(&self, bytes: u32) -> Result<(), ApiError> {
            self.0.lock().unwrap().push(("bytes", bytes));
            Ok(())
        }
        fn events(&self, events: u32) -> Result<(), ApiError> {
            self.0.lock().unwrap().push(("events", events));
            if events > 2 {
                Err(ApiError::RateLimited { limit: "events_per_second", retry_after_ms: 1 })
            } else {
                Ok(())
            }
        }
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn the_guard_holds_back_the_last_byte_until_the_message_is_accepted_and_charged() {
        let charges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let schema = schema().unwrap();
        let body = framed(&empties(1, 2));
        let mut guard = Guard::new(schema, method(TRANSFERS), Some(Box::new(Recorder(charges.clone()))));
        // Piece by piece: all but the last byte go on as they are walked.
        let (head, last) = body.split_at(body.len() - 1);
        assert_eq!(guard.push(head).ok(), Some(head.len()));
        assert_eq!(guard.push(last).ok(), Some(1));
        assert!(guard.end().is_ok());
        assert_eq!(*charges.lock().unwrap(), [("bytes", 4), ("events", 2)]);

        // Over the (test) event charge: the last byte is held back.
        let body = framed(&empties(1, 3));
        let mut guard = Guard::new(schema, method(TRANSFERS), Some(Box::new(Recorder(charges.clone()))));
        let (forward, error) = guard.push(&body).unwrap_err();
        assert_eq!(forward, 5, "the length prefix only");
        assert!(matches!(error, ApiError::RateLimited { .. }));

        // A unary call with two messages, an empty body, a compressed message, a cut body.
        let mut two = framed(&[]);
        two.extend(framed(&[]));
        let mut guard = Guard::new(schema, method(TRANSFERS), None);
        assert!(matches!(guard.push(&two), Err((5, ApiError::Malformed(_)))));
        assert!(matches!(Guard::new(schema, method(TRANSFERS), None).end(), Err(ApiError::Malformed(_))));
        let mut guard = Guard::new(schema, method(TRANSFERS), None);
        assert!(matches!(guard.push(&[1, 0, 0, 0, 0]), Err((0, ApiError::Malformed(_)))));
        let mut guard = Guard::new(schema, method(TRANSFERS), None);
        assert_eq!(guard.push(&framed(&empties(1, 2))[..4]).ok(), Some(4));
        assert!(matches!(guard.end(), Err(ApiError::Malformed(_))));
        // Too large, refused from the header alone: 4 MiB for the control services.
        let mut guard = Guard::new(schema, method("/puente.v1.HolderService/SetKycPolicy"), None);
        let too_large = ((CONTROL_MESSAGE_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(
            guard.push(&[0, too_large[0], too_large[1], too_large[2], too_large[3]]),
            Err((0, ApiError::MessageTooLarge { max_bytes: 4_194_304, .. }))
        ));
        let mut guard = Guard::new(schema, method("/grpc.health.v1.Health/Check"), None);
        assert!(matches!(
            guard.push(&[0, 0, 1, 0, 1]),
            Err((0, ApiError::MessageTooLarge { max_bytes: 65_536, .. }))
        ));
        let mut guard = Guard::new(schema, method(TRANSFERS), None);
        assert!(matches!(
            guard.push(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err((0, ApiError::MessageTooLarge { .. }))
        ));
        // A client stream carries many messages, each walked and charged on its own.
        let rates = method("/puente.v1.FxService/StreamRates");
        let mut guard = Guard::new(schema, rates, None);
        let mut stream = framed(&empties(1, 64));
        stream.extend(framed(&empties(1, 65)));
        let (forward, error) = guard.push(&stream).unwrap_err();
        assert_eq!(forward, 5 + 128 + 5, "the first message goes on, and the length prefix of the second");
        assert!(matches!(error, ApiError::BatchTooLarge(_)));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_pieces_give_a_verdict_and_the_same_one(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            piece in 1usize..50,
        ) {
            let whole = scan_in_pieces(TRANSFERS, &bytes, bytes.len()).map_err(|e| e.to_string());
            let pieces = scan_in_pieces(TRANSFERS, &bytes, piece).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(whole, pieces);
        }

        #[test]
        fn what_prost_decodes_the_walk_does_not_call_malformed(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            // Stricter than prost only on groups (skipped by prost as unknown fields; not part
            // of this API).
            if puente_proto::v1::CreateTransfersRequest::decode(bytes.as_slice()).is_ok()
                && let Err(ApiError::Malformed(why)) = scan_in_pieces(TRANSFERS, &bytes, 3)
            {
                proptest::prop_assert_eq!(why, "groups are not accepted");
            }
        }
    }
}
