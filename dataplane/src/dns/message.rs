//! DNS messages as the proxy sees them: the question of a query, the addresses, names and
//! codes of a response, and the error replies the proxy writes itself (REFUSED for a name
//! policy forbids, SERVFAIL when the server's answer is unusable, FORMERR for a query that
//! does not parse).

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::RData,
    serialize::binary::DecodeError,
};
use std::net::IpAddr;

/// Why a message cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a DNS message (truncated, bad labels, bad counts...).
    #[error("malformed DNS message: {0}")]
    Malformed(#[from] DecodeError),
    /// A query with no question, or with a response bit set.
    #[error("not a query with a question")]
    NotAQuery,
    /// A response that answers another query (wrong id or question).
    #[error("response id {got} does not answer query {want}")]
    WrongId {
        /// The query's id.
        want: u16,
        /// The response's id.
        got: u16,
    },
    /// A message bit set that says it is a query, where a response was expected.
    #[error("not a response")]
    NotAResponse,
    /// The error reply could not be encoded.
    #[error("encoding a reply: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
}

/// A query's question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Message id.
    pub id: u16,
    /// The name asked for, normalised (lower case, no trailing dot).
    pub name: String,
    /// The name as a fully qualified name (trailing dot), as Hubble prints `query`.
    pub fqdn: String,
    /// Query types (`A`, `AAAA`...).
    pub qtypes: Vec<String>,
}

/// What a response says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED...).
    pub rcode: u16,
    /// A/AAAA addresses in the answer section, with their TTLs.
    pub ips: Vec<(IpAddr, u32)>,
    /// CNAME targets in the answer section, fully qualified.
    pub cnames: Vec<String>,
    /// Names (normalised) the addresses belong to: the question and every CNAME target.
    pub names: Vec<String>,
    /// Record types of the answer section.
    pub rrtypes: Vec<String>,
    /// The lowest TTL of the A/AAAA records (0 without any).
    pub ttl: u32,
}

/// Reads the question of a query.
pub fn parse_query(bytes: &[u8]) -> Result<Question, MessageError> {
    let m = Message::from_vec(bytes)?;
    if m.metadata.message_type != MessageType::Query {
        return Err(MessageError::NotAQuery);
    }
    let q = m.queries.first().ok_or(MessageError::NotAQuery)?;
    let fqdn = q.name().to_ascii();
    Ok(Question {
        id: m.metadata.id,
        name: lumen_policy::normalize_dns_name(&fqdn),
        fqdn: if fqdn.ends_with('.') {
            fqdn
        } else {
            format!("{fqdn}.")
        },
        qtypes: m
            .queries
            .iter()
            .map(|q| q.query_type().to_string())
            .collect(),
    })
}

/// Reads a response to `question`.
pub fn parse_response(bytes: &[u8], question: &Question) -> Result<Answer, MessageError> {
    let m = Message::from_vec(bytes)?;
    if m.metadata.message_type != MessageType::Response {
        return Err(MessageError::NotAResponse);
    }
    if m.metadata.id != question.id {
        return Err(MessageError::WrongId {
            want: question.id,
            got: m.metadata.id,
        });
    }
    let mut a = Answer {
        rcode: m.metadata.response_code.into(),
        names: vec![question.name.clone()],
        ..Answer::default()
    };
    for r in &m.answers {
        let rt = r.record_type().to_string();
        if !a.rrtypes.contains(&rt) {
            a.rrtypes.push(rt);
        }
        match &r.data {
            RData::A(ip) => a.ips.push((IpAddr::V4(ip.0), r.ttl)),
            RData::AAAA(ip) => a.ips.push((IpAddr::V6(ip.0), r.ttl)),
            RData::CNAME(c) => {
                let t = c.0.to_ascii();
                let n = lumen_policy::normalize_dns_name(&t);
                if !a.names.contains(&n) {
                    a.names.push(n);
                }
                a.cnames.push(t);
            }
            _ => {}
        }
    }
    a.ttl = a.ips.iter().map(|(_, t)| *t).min().unwrap_or(0);
    Ok(a)
}

/// An error reply to `query` with `rcode` (REFUSED, SERVFAIL), echoing its id, flags and
/// question; FORMERR with just the id when the query does not parse; `None` when not even
/// the id can be read.
pub fn error_reply(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let (id, op, rd, queries, rcode) = match Message::from_vec(query) {
        Ok(m) => (
            m.metadata.id,
            m.metadata.op_code,
            m.metadata.recursion_desired,
            m.queries,
            rcode,
        ),
        Err(_) if query.len() >= 2 => (
            u16::from_be_bytes([query[0], query[1]]),
            OpCode::Query,
            false,
            Vec::new(),
            ResponseCode::FormErr,
        ),
        Err(_) => return None,
    };
    let mut m = Message::error_msg(id, op, rcode);
    m.metadata.recursion_desired = rd;
    m.metadata.recursion_available = true;
    m.add_queries(queries);
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::Query,
        rr::{rdata, Name, RData, Record, RecordType},
    };
    use std::str::FromStr;

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn response(name: &str) -> Vec<u8> {
        let mut m = Message::response(0x1234, OpCode::Query);
        let n = Name::from_str(name).unwrap();
        m.add_query(Query::query(n.clone(), RecordType::A));
        let target = Name::from_str("edge.cdn.test.").unwrap();
        m.add_answer(Record::from_rdata(
            n,
            300,
            RData::CNAME(rdata::CNAME(target.clone())),
        ));
        m.add_answer(Record::from_rdata(
            target.clone(),
            60,
            RData::A(rdata::A::new(192, 0, 2, 10)),
        ));
        m.add_answer(Record::from_rdata(
            target,
            30,
            RData::A(rdata::A::new(192, 0, 2, 11)),
        ));
        m.to_vec().unwrap()
    }

    #[test]
    fn a_response_gives_addresses_ttl_and_cnames() {
        let q = parse_query(&query("API.example.test.")).unwrap();
        assert_eq!(q.name, "api.example.test");
        assert_eq!(q.fqdn.to_ascii_lowercase(), "api.example.test.");
        assert_eq!(q.qtypes, vec!["A"]);
        let a = parse_response(&response("api.example.test."), &q).unwrap();
        assert_eq!(a.rcode, 0);
        assert_eq!(
            a.ips,
            vec![
                ("192.0.2.10".parse().unwrap(), 60),
                ("192.0.2.11".parse().unwrap(), 30)
            ]
        );
        assert_eq!(a.ttl, 30);
        assert_eq!(a.cnames, vec!["edge.cdn.test."]);
        assert_eq!(a.names, vec!["api.example.test", "edge.cdn.test"]);
        assert_eq!(a.rrtypes, vec!["CNAME", "A"]);
    }

    #[test]
    fn truncated_and_garbage_responses_are_errors_never_panics() {
        let q = parse_query(&query("api.example.test.")).unwrap();
        let good = response("api.example.test.");
        for len in 0..good.len() {
            // Every truncation either fails or parses to something consistent.
            if let Ok(a) = parse_response(&good[..len], &q) {
                assert!(a.ips.len() <= 2);
            }
        }
        // A compression pointer loop, a label longer than the message, random bytes.
        let mut looped = good[..12].to_vec();
        looped[5] = 1; // one question
        looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(parse_response(&looped, &q).is_err());
        let mut long_label = good[..12].to_vec();
        long_label.extend_from_slice(&[63, b'a', b'b']);
        assert!(parse_response(&long_label, &q).is_err());
        let mut rng = 0x2545f491u32;
        for _ in 0..2000 {
            let mut buf = good.clone();
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let i = (rng as usize) % buf.len();
                buf[i] = (rng >> 8) as u8;
            }
            let _ = parse_response(&buf, &q);
        }
        // Another query's answer.
        let mut other = good.clone();
        other[1] ^= 1;
        assert!(matches!(
            parse_response(&other, &q),
            Err(MessageError::WrongId { .. })
        ));
    }

    #[test]
    fn error_replies_echo_the_query() {
        let r = error_reply(&query("evil.test."), ResponseCode::Refused).unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "evil.test.");
        // A query that does not parse: FORMERR with its id.
        let r = error_reply(&[0xab, 0xcd, 0xff], ResponseCode::ServFail).unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0xabcd, ResponseCode::FormErr)
        );
        assert!(error_reply(&[1], ResponseCode::ServFail).is_none());
    }
}
