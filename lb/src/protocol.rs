//! L4 protocols of Service and EndpointSlice ports.

use std::fmt;

use crate::error::ParseError;

/// A Kubernetes port protocol. The default, when the field is absent, is TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    #[default]
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`; case-sensitive as the API is).
    pub fn parse(s: &str, path: &str) -> Result<Self, ParseError> {
        match s {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            "SCTP" => Ok(Self::Sctp),
            _ => Err(ParseError::UnknownValue {
                path: path.to_string(),
                what: "protocol",
                value: s.to_string(),
            }),
        }
    }

    /// The IP protocol number, as the eBPF maps and the 5-tuple hash use it.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Protocol::parse("SCTP", "p").unwrap().number(), 132);
        let e = Protocol::parse("HTTP", "spec.ports[1].protocol").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ports[1].protocol: unknown protocol \"HTTP\""
        );
    }
}
