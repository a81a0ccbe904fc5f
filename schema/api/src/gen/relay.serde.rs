impl serde::Serialize for NodeState {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::UnknownNodeState => "UNKNOWN_NODE_STATE",
            Self::NodeConnected => "NODE_CONNECTED",
            Self::NodeUnavailable => "NODE_UNAVAILABLE",
            Self::NodeGone => "NODE_GONE",
            Self::NodeError => "NODE_ERROR",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for NodeState {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN_NODE_STATE",
            "NODE_CONNECTED",
            "NODE_UNAVAILABLE",
            "NODE_GONE",
            "NODE_ERROR",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = NodeState;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "UNKNOWN_NODE_STATE" => Ok(NodeState::UnknownNodeState),
                    "NODE_CONNECTED" => Ok(NodeState::NodeConnected),
                    "NODE_UNAVAILABLE" => Ok(NodeState::NodeUnavailable),
                    "NODE_GONE" => Ok(NodeState::NodeGone),
                    "NODE_ERROR" => Ok(NodeState::NodeError),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for NodeStatusEvent {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.state_change != 0 {
            len += 1;
        }
        if !self.node_names.is_empty() {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("relay.NodeStatusEvent", len)?;
        if self.state_change != 0 {
            let v = NodeState::try_from(self.state_change)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.state_change)))?;
            struct_ser.serialize_field("state_change", &v)?;
        }
        if !self.node_names.is_empty() {
            struct_ser.serialize_field("node_names", &self.node_names)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for NodeStatusEvent {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "state_change",
            "stateChange",
            "node_names",
            "nodeNames",
            "message",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            StateChange,
            NodeNames,
            Message,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "stateChange" | "state_change" => Ok(GeneratedField::StateChange),
                            "nodeNames" | "node_names" => Ok(GeneratedField::NodeNames),
                            "message" => Ok(GeneratedField::Message),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = NodeStatusEvent;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct relay.NodeStatusEvent")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<NodeStatusEvent, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut state_change__ = None;
                let mut node_names__ = None;
                let mut message__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::StateChange => {
                            if state_change__.is_some() {
                                return Err(serde::de::Error::duplicate_field("stateChange"));
                            }
                            state_change__ = Some(map_.next_value::<NodeState>()? as i32);
                        }
                        GeneratedField::NodeNames => {
                            if node_names__.is_some() {
                                return Err(serde::de::Error::duplicate_field("nodeNames"));
                            }
                            node_names__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(NodeStatusEvent {
                    state_change: state_change__.unwrap_or_default(),
                    node_names: node_names__.unwrap_or_default(),
                    message: message__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("relay.NodeStatusEvent", FIELDS, GeneratedVisitor)
    }
}
