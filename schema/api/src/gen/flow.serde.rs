impl serde::Serialize for AgentEvent {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.notification.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.AgentEvent", len)?;
        if self.r#type != 0 {
            let v = AgentEventType::try_from(self.r#type)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.r#type)))?;
            struct_ser.serialize_field("type", &v)?;
        }
        if let Some(v) = self.notification.as_ref() {
            match v {
                agent_event::Notification::Unknown(v) => {
                    struct_ser.serialize_field("unknown", v)?;
                }
                agent_event::Notification::AgentStart(v) => {
                    struct_ser.serialize_field("agent_start", v)?;
                }
                agent_event::Notification::PolicyUpdate(v) => {
                    struct_ser.serialize_field("policy_update", v)?;
                }
                agent_event::Notification::EndpointRegenerate(v) => {
                    struct_ser.serialize_field("endpoint_regenerate", v)?;
                }
                agent_event::Notification::EndpointUpdate(v) => {
                    struct_ser.serialize_field("endpoint_update", v)?;
                }
                agent_event::Notification::IpcacheUpdate(v) => {
                    struct_ser.serialize_field("ipcache_update", v)?;
                }
                agent_event::Notification::ServiceUpsert(v) => {
                    struct_ser.serialize_field("service_upsert", v)?;
                }
                agent_event::Notification::ServiceDelete(v) => {
                    struct_ser.serialize_field("service_delete", v)?;
                }
            }
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for AgentEvent {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "unknown",
            "agent_start",
            "agentStart",
            "policy_update",
            "policyUpdate",
            "endpoint_regenerate",
            "endpointRegenerate",
            "endpoint_update",
            "endpointUpdate",
            "ipcache_update",
            "ipcacheUpdate",
            "service_upsert",
            "serviceUpsert",
            "service_delete",
            "serviceDelete",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Unknown,
            AgentStart,
            PolicyUpdate,
            EndpointRegenerate,
            EndpointUpdate,
            IpcacheUpdate,
            ServiceUpsert,
            ServiceDelete,
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
                            "type" => Ok(GeneratedField::Type),
                            "unknown" => Ok(GeneratedField::Unknown),
                            "agentStart" | "agent_start" => Ok(GeneratedField::AgentStart),
                            "policyUpdate" | "policy_update" => Ok(GeneratedField::PolicyUpdate),
                            "endpointRegenerate" | "endpoint_regenerate" => Ok(GeneratedField::EndpointRegenerate),
                            "endpointUpdate" | "endpoint_update" => Ok(GeneratedField::EndpointUpdate),
                            "ipcacheUpdate" | "ipcache_update" => Ok(GeneratedField::IpcacheUpdate),
                            "serviceUpsert" | "service_upsert" => Ok(GeneratedField::ServiceUpsert),
                            "serviceDelete" | "service_delete" => Ok(GeneratedField::ServiceDelete),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = AgentEvent;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.AgentEvent")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<AgentEvent, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut notification__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value::<AgentEventType>()? as i32);
                        }
                        GeneratedField::Unknown => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("unknown"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::Unknown)
;
                        }
                        GeneratedField::AgentStart => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("agentStart"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::AgentStart)
;
                        }
                        GeneratedField::PolicyUpdate => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("policyUpdate"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::PolicyUpdate)
;
                        }
                        GeneratedField::EndpointRegenerate => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("endpointRegenerate"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::EndpointRegenerate)
;
                        }
                        GeneratedField::EndpointUpdate => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("endpointUpdate"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::EndpointUpdate)
;
                        }
                        GeneratedField::IpcacheUpdate => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipcacheUpdate"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::IpcacheUpdate)
;
                        }
                        GeneratedField::ServiceUpsert => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("serviceUpsert"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::ServiceUpsert)
;
                        }
                        GeneratedField::ServiceDelete => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("serviceDelete"));
                            }
                            notification__ = map_.next_value::<::std::option::Option<_>>()?.map(agent_event::Notification::ServiceDelete)
;
                        }
                    }
                }
                Ok(AgentEvent {
                    r#type: r#type__.unwrap_or_default(),
                    notification: notification__,
                })
            }
        }
        deserializer.deserialize_struct("flow.AgentEvent", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for AgentEventType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::AgentEventUnknown => "AGENT_EVENT_UNKNOWN",
            Self::AgentStarted => "AGENT_STARTED",
            Self::PolicyUpdated => "POLICY_UPDATED",
            Self::PolicyDeleted => "POLICY_DELETED",
            Self::EndpointRegenerateSuccess => "ENDPOINT_REGENERATE_SUCCESS",
            Self::EndpointRegenerateFailure => "ENDPOINT_REGENERATE_FAILURE",
            Self::EndpointCreated => "ENDPOINT_CREATED",
            Self::EndpointDeleted => "ENDPOINT_DELETED",
            Self::IpcacheUpserted => "IPCACHE_UPSERTED",
            Self::IpcacheDeleted => "IPCACHE_DELETED",
            Self::ServiceUpserted => "SERVICE_UPSERTED",
            Self::ServiceDeleted => "SERVICE_DELETED",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for AgentEventType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "AGENT_EVENT_UNKNOWN",
            "AGENT_STARTED",
            "POLICY_UPDATED",
            "POLICY_DELETED",
            "ENDPOINT_REGENERATE_SUCCESS",
            "ENDPOINT_REGENERATE_FAILURE",
            "ENDPOINT_CREATED",
            "ENDPOINT_DELETED",
            "IPCACHE_UPSERTED",
            "IPCACHE_DELETED",
            "SERVICE_UPSERTED",
            "SERVICE_DELETED",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = AgentEventType;

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
                    "AGENT_EVENT_UNKNOWN" => Ok(AgentEventType::AgentEventUnknown),
                    "AGENT_STARTED" => Ok(AgentEventType::AgentStarted),
                    "POLICY_UPDATED" => Ok(AgentEventType::PolicyUpdated),
                    "POLICY_DELETED" => Ok(AgentEventType::PolicyDeleted),
                    "ENDPOINT_REGENERATE_SUCCESS" => Ok(AgentEventType::EndpointRegenerateSuccess),
                    "ENDPOINT_REGENERATE_FAILURE" => Ok(AgentEventType::EndpointRegenerateFailure),
                    "ENDPOINT_CREATED" => Ok(AgentEventType::EndpointCreated),
                    "ENDPOINT_DELETED" => Ok(AgentEventType::EndpointDeleted),
                    "IPCACHE_UPSERTED" => Ok(AgentEventType::IpcacheUpserted),
                    "IPCACHE_DELETED" => Ok(AgentEventType::IpcacheDeleted),
                    "SERVICE_UPSERTED" => Ok(AgentEventType::ServiceUpserted),
                    "SERVICE_DELETED" => Ok(AgentEventType::ServiceDeleted),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for AgentEventUnknown {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.r#type.is_empty() {
            len += 1;
        }
        if !self.notification.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.AgentEventUnknown", len)?;
        if !self.r#type.is_empty() {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if !self.notification.is_empty() {
            struct_ser.serialize_field("notification", &self.notification)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for AgentEventUnknown {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "notification",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Notification,
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
                            "type" => Ok(GeneratedField::Type),
                            "notification" => Ok(GeneratedField::Notification),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = AgentEventUnknown;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.AgentEventUnknown")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<AgentEventUnknown, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut notification__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Notification => {
                            if notification__.is_some() {
                                return Err(serde::de::Error::duplicate_field("notification"));
                            }
                            notification__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(AgentEventUnknown {
                    r#type: r#type__.unwrap_or_default(),
                    notification: notification__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.AgentEventUnknown", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Aggregate {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.ingress_flow_count != 0 {
            len += 1;
        }
        if self.egress_flow_count != 0 {
            len += 1;
        }
        if self.unknown_direction_flow_count != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Aggregate", len)?;
        if self.ingress_flow_count != 0 {
            struct_ser.serialize_field("ingress_flow_count", &self.ingress_flow_count)?;
        }
        if self.egress_flow_count != 0 {
            struct_ser.serialize_field("egress_flow_count", &self.egress_flow_count)?;
        }
        if self.unknown_direction_flow_count != 0 {
            struct_ser.serialize_field("unknown_direction_flow_count", &self.unknown_direction_flow_count)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Aggregate {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "ingress_flow_count",
            "ingressFlowCount",
            "egress_flow_count",
            "egressFlowCount",
            "unknown_direction_flow_count",
            "unknownDirectionFlowCount",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            IngressFlowCount,
            EgressFlowCount,
            UnknownDirectionFlowCount,
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
                            "ingressFlowCount" | "ingress_flow_count" => Ok(GeneratedField::IngressFlowCount),
                            "egressFlowCount" | "egress_flow_count" => Ok(GeneratedField::EgressFlowCount),
                            "unknownDirectionFlowCount" | "unknown_direction_flow_count" => Ok(GeneratedField::UnknownDirectionFlowCount),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Aggregate;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Aggregate")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Aggregate, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut ingress_flow_count__ = None;
                let mut egress_flow_count__ = None;
                let mut unknown_direction_flow_count__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::IngressFlowCount => {
                            if ingress_flow_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ingressFlowCount"));
                            }
                            ingress_flow_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::EgressFlowCount => {
                            if egress_flow_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("egressFlowCount"));
                            }
                            egress_flow_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::UnknownDirectionFlowCount => {
                            if unknown_direction_flow_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("unknownDirectionFlowCount"));
                            }
                            unknown_direction_flow_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Aggregate {
                    ingress_flow_count: ingress_flow_count__.unwrap_or_default(),
                    egress_flow_count: egress_flow_count__.unwrap_or_default(),
                    unknown_direction_flow_count: unknown_direction_flow_count__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Aggregate", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for AuthType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Disabled => "DISABLED",
            Self::Spire => "SPIRE",
            Self::TestAlwaysFail => "TEST_ALWAYS_FAIL",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for AuthType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "DISABLED",
            "SPIRE",
            "TEST_ALWAYS_FAIL",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = AuthType;

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
                    "DISABLED" => Ok(AuthType::Disabled),
                    "SPIRE" => Ok(AuthType::Spire),
                    "TEST_ALWAYS_FAIL" => Ok(AuthType::TestAlwaysFail),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for CiliumEventType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.sub_type != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.CiliumEventType", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if self.sub_type != 0 {
            struct_ser.serialize_field("sub_type", &self.sub_type)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for CiliumEventType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "sub_type",
            "subType",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            SubType,
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
                            "type" => Ok(GeneratedField::Type),
                            "subType" | "sub_type" => Ok(GeneratedField::SubType),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = CiliumEventType;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.CiliumEventType")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<CiliumEventType, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut sub_type__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::SubType => {
                            if sub_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("subType"));
                            }
                            sub_type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(CiliumEventType {
                    r#type: r#type__.unwrap_or_default(),
                    sub_type: sub_type__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.CiliumEventType", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Dns {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.query.is_empty() {
            len += 1;
        }
        if !self.ips.is_empty() {
            len += 1;
        }
        if self.ttl != 0 {
            len += 1;
        }
        if !self.cnames.is_empty() {
            len += 1;
        }
        if !self.observation_source.is_empty() {
            len += 1;
        }
        if self.rcode != 0 {
            len += 1;
        }
        if !self.qtypes.is_empty() {
            len += 1;
        }
        if !self.rrtypes.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.DNS", len)?;
        if !self.query.is_empty() {
            struct_ser.serialize_field("query", &self.query)?;
        }
        if !self.ips.is_empty() {
            struct_ser.serialize_field("ips", &self.ips)?;
        }
        if self.ttl != 0 {
            struct_ser.serialize_field("ttl", &self.ttl)?;
        }
        if !self.cnames.is_empty() {
            struct_ser.serialize_field("cnames", &self.cnames)?;
        }
        if !self.observation_source.is_empty() {
            struct_ser.serialize_field("observation_source", &self.observation_source)?;
        }
        if self.rcode != 0 {
            struct_ser.serialize_field("rcode", &self.rcode)?;
        }
        if !self.qtypes.is_empty() {
            struct_ser.serialize_field("qtypes", &self.qtypes)?;
        }
        if !self.rrtypes.is_empty() {
            struct_ser.serialize_field("rrtypes", &self.rrtypes)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Dns {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "query",
            "ips",
            "ttl",
            "cnames",
            "observation_source",
            "observationSource",
            "rcode",
            "qtypes",
            "rrtypes",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Query,
            Ips,
            Ttl,
            Cnames,
            ObservationSource,
            Rcode,
            Qtypes,
            Rrtypes,
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
                            "query" => Ok(GeneratedField::Query),
                            "ips" => Ok(GeneratedField::Ips),
                            "ttl" => Ok(GeneratedField::Ttl),
                            "cnames" => Ok(GeneratedField::Cnames),
                            "observationSource" | "observation_source" => Ok(GeneratedField::ObservationSource),
                            "rcode" => Ok(GeneratedField::Rcode),
                            "qtypes" => Ok(GeneratedField::Qtypes),
                            "rrtypes" => Ok(GeneratedField::Rrtypes),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Dns;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.DNS")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Dns, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut query__ = None;
                let mut ips__ = None;
                let mut ttl__ = None;
                let mut cnames__ = None;
                let mut observation_source__ = None;
                let mut rcode__ = None;
                let mut qtypes__ = None;
                let mut rrtypes__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Ips => {
                            if ips__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ips"));
                            }
                            ips__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Ttl => {
                            if ttl__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ttl"));
                            }
                            ttl__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Cnames => {
                            if cnames__.is_some() {
                                return Err(serde::de::Error::duplicate_field("cnames"));
                            }
                            cnames__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ObservationSource => {
                            if observation_source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("observationSource"));
                            }
                            observation_source__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Rcode => {
                            if rcode__.is_some() {
                                return Err(serde::de::Error::duplicate_field("rcode"));
                            }
                            rcode__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Qtypes => {
                            if qtypes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("qtypes"));
                            }
                            qtypes__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Rrtypes => {
                            if rrtypes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("rrtypes"));
                            }
                            rrtypes__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Dns {
                    query: query__.unwrap_or_default(),
                    ips: ips__.unwrap_or_default(),
                    ttl: ttl__.unwrap_or_default(),
                    cnames: cnames__.unwrap_or_default(),
                    observation_source: observation_source__.unwrap_or_default(),
                    rcode: rcode__.unwrap_or_default(),
                    qtypes: qtypes__.unwrap_or_default(),
                    rrtypes: rrtypes__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.DNS", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for DebugCapturePoint {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::DbgCapturePointUnknown => "DBG_CAPTURE_POINT_UNKNOWN",
            Self::DbgCaptureDelivery => "DBG_CAPTURE_DELIVERY",
            Self::DbgCaptureFromLb => "DBG_CAPTURE_FROM_LB",
            Self::DbgCaptureAfterV46 => "DBG_CAPTURE_AFTER_V46",
            Self::DbgCaptureAfterV64 => "DBG_CAPTURE_AFTER_V64",
            Self::DbgCaptureProxyPre => "DBG_CAPTURE_PROXY_PRE",
            Self::DbgCaptureProxyPost => "DBG_CAPTURE_PROXY_POST",
            Self::DbgCaptureSnatPre => "DBG_CAPTURE_SNAT_PRE",
            Self::DbgCaptureSnatPost => "DBG_CAPTURE_SNAT_POST",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for DebugCapturePoint {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "DBG_CAPTURE_POINT_UNKNOWN",
            "DBG_CAPTURE_DELIVERY",
            "DBG_CAPTURE_FROM_LB",
            "DBG_CAPTURE_AFTER_V46",
            "DBG_CAPTURE_AFTER_V64",
            "DBG_CAPTURE_PROXY_PRE",
            "DBG_CAPTURE_PROXY_POST",
            "DBG_CAPTURE_SNAT_PRE",
            "DBG_CAPTURE_SNAT_POST",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = DebugCapturePoint;

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
                    "DBG_CAPTURE_POINT_UNKNOWN" => Ok(DebugCapturePoint::DbgCapturePointUnknown),
                    "DBG_CAPTURE_DELIVERY" => Ok(DebugCapturePoint::DbgCaptureDelivery),
                    "DBG_CAPTURE_FROM_LB" => Ok(DebugCapturePoint::DbgCaptureFromLb),
                    "DBG_CAPTURE_AFTER_V46" => Ok(DebugCapturePoint::DbgCaptureAfterV46),
                    "DBG_CAPTURE_AFTER_V64" => Ok(DebugCapturePoint::DbgCaptureAfterV64),
                    "DBG_CAPTURE_PROXY_PRE" => Ok(DebugCapturePoint::DbgCaptureProxyPre),
                    "DBG_CAPTURE_PROXY_POST" => Ok(DebugCapturePoint::DbgCaptureProxyPost),
                    "DBG_CAPTURE_SNAT_PRE" => Ok(DebugCapturePoint::DbgCaptureSnatPre),
                    "DBG_CAPTURE_SNAT_POST" => Ok(DebugCapturePoint::DbgCaptureSnatPost),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for DebugEvent {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.source.is_some() {
            len += 1;
        }
        if self.hash.is_some() {
            len += 1;
        }
        if self.arg1.is_some() {
            len += 1;
        }
        if self.arg2.is_some() {
            len += 1;
        }
        if self.arg3.is_some() {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        if self.cpu.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.DebugEvent", len)?;
        if self.r#type != 0 {
            let v = DebugEventType::try_from(self.r#type)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.r#type)))?;
            struct_ser.serialize_field("type", &v)?;
        }
        if let Some(v) = self.source.as_ref() {
            struct_ser.serialize_field("source", v)?;
        }
        if let Some(v) = self.hash.as_ref() {
            struct_ser.serialize_field("hash", v)?;
        }
        if let Some(v) = self.arg1.as_ref() {
            struct_ser.serialize_field("arg1", v)?;
        }
        if let Some(v) = self.arg2.as_ref() {
            struct_ser.serialize_field("arg2", v)?;
        }
        if let Some(v) = self.arg3.as_ref() {
            struct_ser.serialize_field("arg3", v)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        if let Some(v) = self.cpu.as_ref() {
            struct_ser.serialize_field("cpu", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for DebugEvent {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "source",
            "hash",
            "arg1",
            "arg2",
            "arg3",
            "message",
            "cpu",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Source,
            Hash,
            Arg1,
            Arg2,
            Arg3,
            Message,
            Cpu,
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
                            "type" => Ok(GeneratedField::Type),
                            "source" => Ok(GeneratedField::Source),
                            "hash" => Ok(GeneratedField::Hash),
                            "arg1" => Ok(GeneratedField::Arg1),
                            "arg2" => Ok(GeneratedField::Arg2),
                            "arg3" => Ok(GeneratedField::Arg3),
                            "message" => Ok(GeneratedField::Message),
                            "cpu" => Ok(GeneratedField::Cpu),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = DebugEvent;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.DebugEvent")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<DebugEvent, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut source__ = None;
                let mut hash__ = None;
                let mut arg1__ = None;
                let mut arg2__ = None;
                let mut arg3__ = None;
                let mut message__ = None;
                let mut cpu__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value::<DebugEventType>()? as i32);
                        }
                        GeneratedField::Source => {
                            if source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("source"));
                            }
                            source__ = map_.next_value()?;
                        }
                        GeneratedField::Hash => {
                            if hash__.is_some() {
                                return Err(serde::de::Error::duplicate_field("hash"));
                            }
                            hash__ = map_.next_value()?;
                        }
                        GeneratedField::Arg1 => {
                            if arg1__.is_some() {
                                return Err(serde::de::Error::duplicate_field("arg1"));
                            }
                            arg1__ = map_.next_value()?;
                        }
                        GeneratedField::Arg2 => {
                            if arg2__.is_some() {
                                return Err(serde::de::Error::duplicate_field("arg2"));
                            }
                            arg2__ = map_.next_value()?;
                        }
                        GeneratedField::Arg3 => {
                            if arg3__.is_some() {
                                return Err(serde::de::Error::duplicate_field("arg3"));
                            }
                            arg3__ = map_.next_value()?;
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Cpu => {
                            if cpu__.is_some() {
                                return Err(serde::de::Error::duplicate_field("cpu"));
                            }
                            cpu__ = map_.next_value()?;
                        }
                    }
                }
                Ok(DebugEvent {
                    r#type: r#type__.unwrap_or_default(),
                    source: source__,
                    hash: hash__,
                    arg1: arg1__,
                    arg2: arg2__,
                    arg3: arg3__,
                    message: message__.unwrap_or_default(),
                    cpu: cpu__,
                })
            }
        }
        deserializer.deserialize_struct("flow.DebugEvent", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for DebugEventType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::DbgEventUnknown => "DBG_EVENT_UNKNOWN",
            Self::DbgGeneric => "DBG_GENERIC",
            Self::DbgLocalDelivery => "DBG_LOCAL_DELIVERY",
            Self::DbgEncap => "DBG_ENCAP",
            Self::DbgLxcFound => "DBG_LXC_FOUND",
            Self::DbgPolicyDenied => "DBG_POLICY_DENIED",
            Self::DbgCtLookup => "DBG_CT_LOOKUP",
            Self::DbgCtLookupRev => "DBG_CT_LOOKUP_REV",
            Self::DbgCtMatch => "DBG_CT_MATCH",
            Self::DbgCtCreated => "DBG_CT_CREATED",
            Self::DbgCtCreated2 => "DBG_CT_CREATED2",
            Self::DbgIcmp6Handle => "DBG_ICMP6_HANDLE",
            Self::DbgIcmp6Request => "DBG_ICMP6_REQUEST",
            Self::DbgIcmp6Ns => "DBG_ICMP6_NS",
            Self::DbgIcmp6TimeExceeded => "DBG_ICMP6_TIME_EXCEEDED",
            Self::DbgCtVerdict => "DBG_CT_VERDICT",
            Self::DbgDecap => "DBG_DECAP",
            Self::DbgPortMap => "DBG_PORT_MAP",
            Self::DbgErrorRet => "DBG_ERROR_RET",
            Self::DbgToHost => "DBG_TO_HOST",
            Self::DbgToStack => "DBG_TO_STACK",
            Self::DbgPktHash => "DBG_PKT_HASH",
            Self::DbgLb6LookupFrontend => "DBG_LB6_LOOKUP_FRONTEND",
            Self::DbgLb6LookupFrontendFail => "DBG_LB6_LOOKUP_FRONTEND_FAIL",
            Self::DbgLb6LookupBackendSlot => "DBG_LB6_LOOKUP_BACKEND_SLOT",
            Self::DbgLb6LookupBackendSlotSuccess => "DBG_LB6_LOOKUP_BACKEND_SLOT_SUCCESS",
            Self::DbgLb6LookupBackendSlotV2Fail => "DBG_LB6_LOOKUP_BACKEND_SLOT_V2_FAIL",
            Self::DbgLb6LookupBackendFail => "DBG_LB6_LOOKUP_BACKEND_FAIL",
            Self::DbgLb6ReverseNatLookup => "DBG_LB6_REVERSE_NAT_LOOKUP",
            Self::DbgLb6ReverseNat => "DBG_LB6_REVERSE_NAT",
            Self::DbgLb4LookupFrontend => "DBG_LB4_LOOKUP_FRONTEND",
            Self::DbgLb4LookupFrontendFail => "DBG_LB4_LOOKUP_FRONTEND_FAIL",
            Self::DbgLb4LookupBackendSlot => "DBG_LB4_LOOKUP_BACKEND_SLOT",
            Self::DbgLb4LookupBackendSlotSuccess => "DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS",
            Self::DbgLb4LookupBackendSlotV2Fail => "DBG_LB4_LOOKUP_BACKEND_SLOT_V2_FAIL",
            Self::DbgLb4LookupBackendFail => "DBG_LB4_LOOKUP_BACKEND_FAIL",
            Self::DbgLb4ReverseNatLookup => "DBG_LB4_REVERSE_NAT_LOOKUP",
            Self::DbgLb4ReverseNat => "DBG_LB4_REVERSE_NAT",
            Self::DbgLb4LoopbackSnat => "DBG_LB4_LOOPBACK_SNAT",
            Self::DbgLb4LoopbackSnatRev => "DBG_LB4_LOOPBACK_SNAT_REV",
            Self::DbgCtLookup4 => "DBG_CT_LOOKUP4",
            Self::DbgRrBackendSlotSel => "DBG_RR_BACKEND_SLOT_SEL",
            Self::DbgRevProxyLookup => "DBG_REV_PROXY_LOOKUP",
            Self::DbgRevProxyFound => "DBG_REV_PROXY_FOUND",
            Self::DbgRevProxyUpdate => "DBG_REV_PROXY_UPDATE",
            Self::DbgL4Policy => "DBG_L4_POLICY",
            Self::DbgNetdevInCluster => "DBG_NETDEV_IN_CLUSTER",
            Self::DbgNetdevEncap4 => "DBG_NETDEV_ENCAP4",
            Self::DbgCtLookup41 => "DBG_CT_LOOKUP4_1",
            Self::DbgCtLookup42 => "DBG_CT_LOOKUP4_2",
            Self::DbgCtCreated4 => "DBG_CT_CREATED4",
            Self::DbgCtLookup61 => "DBG_CT_LOOKUP6_1",
            Self::DbgCtLookup62 => "DBG_CT_LOOKUP6_2",
            Self::DbgCtCreated6 => "DBG_CT_CREATED6",
            Self::DbgSkipProxy => "DBG_SKIP_PROXY",
            Self::DbgL4Create => "DBG_L4_CREATE",
            Self::DbgIpIdMapFailed4 => "DBG_IP_ID_MAP_FAILED4",
            Self::DbgIpIdMapFailed6 => "DBG_IP_ID_MAP_FAILED6",
            Self::DbgIpIdMapSucceed4 => "DBG_IP_ID_MAP_SUCCEED4",
            Self::DbgIpIdMapSucceed6 => "DBG_IP_ID_MAP_SUCCEED6",
            Self::DbgLbStaleCt => "DBG_LB_STALE_CT",
            Self::DbgInheritIdentity => "DBG_INHERIT_IDENTITY",
            Self::DbgSkLookup4 => "DBG_SK_LOOKUP4",
            Self::DbgSkLookup6 => "DBG_SK_LOOKUP6",
            Self::DbgSkAssign => "DBG_SK_ASSIGN",
            Self::DbgL7Lb => "DBG_L7_LB",
            Self::DbgSkipPolicy => "DBG_SKIP_POLICY",
            Self::DbgLb6LoopbackSnat => "DBG_LB6_LOOPBACK_SNAT",
            Self::DbgLb6LoopbackSnatRev => "DBG_LB6_LOOPBACK_SNAT_REV",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for DebugEventType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "DBG_EVENT_UNKNOWN",
            "DBG_GENERIC",
            "DBG_LOCAL_DELIVERY",
            "DBG_ENCAP",
            "DBG_LXC_FOUND",
            "DBG_POLICY_DENIED",
            "DBG_CT_LOOKUP",
            "DBG_CT_LOOKUP_REV",
            "DBG_CT_MATCH",
            "DBG_CT_CREATED",
            "DBG_CT_CREATED2",
            "DBG_ICMP6_HANDLE",
            "DBG_ICMP6_REQUEST",
            "DBG_ICMP6_NS",
            "DBG_ICMP6_TIME_EXCEEDED",
            "DBG_CT_VERDICT",
            "DBG_DECAP",
            "DBG_PORT_MAP",
            "DBG_ERROR_RET",
            "DBG_TO_HOST",
            "DBG_TO_STACK",
            "DBG_PKT_HASH",
            "DBG_LB6_LOOKUP_FRONTEND",
            "DBG_LB6_LOOKUP_FRONTEND_FAIL",
            "DBG_LB6_LOOKUP_BACKEND_SLOT",
            "DBG_LB6_LOOKUP_BACKEND_SLOT_SUCCESS",
            "DBG_LB6_LOOKUP_BACKEND_SLOT_V2_FAIL",
            "DBG_LB6_LOOKUP_BACKEND_FAIL",
            "DBG_LB6_REVERSE_NAT_LOOKUP",
            "DBG_LB6_REVERSE_NAT",
            "DBG_LB4_LOOKUP_FRONTEND",
            "DBG_LB4_LOOKUP_FRONTEND_FAIL",
            "DBG_LB4_LOOKUP_BACKEND_SLOT",
            "DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS",
            "DBG_LB4_LOOKUP_BACKEND_SLOT_V2_FAIL",
            "DBG_LB4_LOOKUP_BACKEND_FAIL",
            "DBG_LB4_REVERSE_NAT_LOOKUP",
            "DBG_LB4_REVERSE_NAT",
            "DBG_LB4_LOOPBACK_SNAT",
            "DBG_LB4_LOOPBACK_SNAT_REV",
            "DBG_CT_LOOKUP4",
            "DBG_RR_BACKEND_SLOT_SEL",
            "DBG_REV_PROXY_LOOKUP",
            "DBG_REV_PROXY_FOUND",
            "DBG_REV_PROXY_UPDATE",
            "DBG_L4_POLICY",
            "DBG_NETDEV_IN_CLUSTER",
            "DBG_NETDEV_ENCAP4",
            "DBG_CT_LOOKUP4_1",
            "DBG_CT_LOOKUP4_2",
            "DBG_CT_CREATED4",
            "DBG_CT_LOOKUP6_1",
            "DBG_CT_LOOKUP6_2",
            "DBG_CT_CREATED6",
            "DBG_SKIP_PROXY",
            "DBG_L4_CREATE",
            "DBG_IP_ID_MAP_FAILED4",
            "DBG_IP_ID_MAP_FAILED6",
            "DBG_IP_ID_MAP_SUCCEED4",
            "DBG_IP_ID_MAP_SUCCEED6",
            "DBG_LB_STALE_CT",
            "DBG_INHERIT_IDENTITY",
            "DBG_SK_LOOKUP4",
            "DBG_SK_LOOKUP6",
            "DBG_SK_ASSIGN",
            "DBG_L7_LB",
            "DBG_SKIP_POLICY",
            "DBG_LB6_LOOPBACK_SNAT",
            "DBG_LB6_LOOPBACK_SNAT_REV",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = DebugEventType;

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
                    "DBG_EVENT_UNKNOWN" => Ok(DebugEventType::DbgEventUnknown),
                    "DBG_GENERIC" => Ok(DebugEventType::DbgGeneric),
                    "DBG_LOCAL_DELIVERY" => Ok(DebugEventType::DbgLocalDelivery),
                    "DBG_ENCAP" => Ok(DebugEventType::DbgEncap),
                    "DBG_LXC_FOUND" => Ok(DebugEventType::DbgLxcFound),
                    "DBG_POLICY_DENIED" => Ok(DebugEventType::DbgPolicyDenied),
                    "DBG_CT_LOOKUP" => Ok(DebugEventType::DbgCtLookup),
                    "DBG_CT_LOOKUP_REV" => Ok(DebugEventType::DbgCtLookupRev),
                    "DBG_CT_MATCH" => Ok(DebugEventType::DbgCtMatch),
                    "DBG_CT_CREATED" => Ok(DebugEventType::DbgCtCreated),
                    "DBG_CT_CREATED2" => Ok(DebugEventType::DbgCtCreated2),
                    "DBG_ICMP6_HANDLE" => Ok(DebugEventType::DbgIcmp6Handle),
                    "DBG_ICMP6_REQUEST" => Ok(DebugEventType::DbgIcmp6Request),
                    "DBG_ICMP6_NS" => Ok(DebugEventType::DbgIcmp6Ns),
                    "DBG_ICMP6_TIME_EXCEEDED" => Ok(DebugEventType::DbgIcmp6TimeExceeded),
                    "DBG_CT_VERDICT" => Ok(DebugEventType::DbgCtVerdict),
                    "DBG_DECAP" => Ok(DebugEventType::DbgDecap),
                    "DBG_PORT_MAP" => Ok(DebugEventType::DbgPortMap),
                    "DBG_ERROR_RET" => Ok(DebugEventType::DbgErrorRet),
                    "DBG_TO_HOST" => Ok(DebugEventType::DbgToHost),
                    "DBG_TO_STACK" => Ok(DebugEventType::DbgToStack),
                    "DBG_PKT_HASH" => Ok(DebugEventType::DbgPktHash),
                    "DBG_LB6_LOOKUP_FRONTEND" => Ok(DebugEventType::DbgLb6LookupFrontend),
                    "DBG_LB6_LOOKUP_FRONTEND_FAIL" => Ok(DebugEventType::DbgLb6LookupFrontendFail),
                    "DBG_LB6_LOOKUP_BACKEND_SLOT" => Ok(DebugEventType::DbgLb6LookupBackendSlot),
                    "DBG_LB6_LOOKUP_BACKEND_SLOT_SUCCESS" => Ok(DebugEventType::DbgLb6LookupBackendSlotSuccess),
                    "DBG_LB6_LOOKUP_BACKEND_SLOT_V2_FAIL" => Ok(DebugEventType::DbgLb6LookupBackendSlotV2Fail),
                    "DBG_LB6_LOOKUP_BACKEND_FAIL" => Ok(DebugEventType::DbgLb6LookupBackendFail),
                    "DBG_LB6_REVERSE_NAT_LOOKUP" => Ok(DebugEventType::DbgLb6ReverseNatLookup),
                    "DBG_LB6_REVERSE_NAT" => Ok(DebugEventType::DbgLb6ReverseNat),
                    "DBG_LB4_LOOKUP_FRONTEND" => Ok(DebugEventType::DbgLb4LookupFrontend),
                    "DBG_LB4_LOOKUP_FRONTEND_FAIL" => Ok(DebugEventType::DbgLb4LookupFrontendFail),
                    "DBG_LB4_LOOKUP_BACKEND_SLOT" => Ok(DebugEventType::DbgLb4LookupBackendSlot),
                    "DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS" => Ok(DebugEventType::DbgLb4LookupBackendSlotSuccess),
                    "DBG_LB4_LOOKUP_BACKEND_SLOT_V2_FAIL" => Ok(DebugEventType::DbgLb4LookupBackendSlotV2Fail),
                    "DBG_LB4_LOOKUP_BACKEND_FAIL" => Ok(DebugEventType::DbgLb4LookupBackendFail),
                    "DBG_LB4_REVERSE_NAT_LOOKUP" => Ok(DebugEventType::DbgLb4ReverseNatLookup),
                    "DBG_LB4_REVERSE_NAT" => Ok(DebugEventType::DbgLb4ReverseNat),
                    "DBG_LB4_LOOPBACK_SNAT" => Ok(DebugEventType::DbgLb4LoopbackSnat),
                    "DBG_LB4_LOOPBACK_SNAT_REV" => Ok(DebugEventType::DbgLb4LoopbackSnatRev),
                    "DBG_CT_LOOKUP4" => Ok(DebugEventType::DbgCtLookup4),
                    "DBG_RR_BACKEND_SLOT_SEL" => Ok(DebugEventType::DbgRrBackendSlotSel),
                    "DBG_REV_PROXY_LOOKUP" => Ok(DebugEventType::DbgRevProxyLookup),
                    "DBG_REV_PROXY_FOUND" => Ok(DebugEventType::DbgRevProxyFound),
                    "DBG_REV_PROXY_UPDATE" => Ok(DebugEventType::DbgRevProxyUpdate),
                    "DBG_L4_POLICY" => Ok(DebugEventType::DbgL4Policy),
                    "DBG_NETDEV_IN_CLUSTER" => Ok(DebugEventType::DbgNetdevInCluster),
                    "DBG_NETDEV_ENCAP4" => Ok(DebugEventType::DbgNetdevEncap4),
                    "DBG_CT_LOOKUP4_1" => Ok(DebugEventType::DbgCtLookup41),
                    "DBG_CT_LOOKUP4_2" => Ok(DebugEventType::DbgCtLookup42),
                    "DBG_CT_CREATED4" => Ok(DebugEventType::DbgCtCreated4),
                    "DBG_CT_LOOKUP6_1" => Ok(DebugEventType::DbgCtLookup61),
                    "DBG_CT_LOOKUP6_2" => Ok(DebugEventType::DbgCtLookup62),
                    "DBG_CT_CREATED6" => Ok(DebugEventType::DbgCtCreated6),
                    "DBG_SKIP_PROXY" => Ok(DebugEventType::DbgSkipProxy),
                    "DBG_L4_CREATE" => Ok(DebugEventType::DbgL4Create),
                    "DBG_IP_ID_MAP_FAILED4" => Ok(DebugEventType::DbgIpIdMapFailed4),
                    "DBG_IP_ID_MAP_FAILED6" => Ok(DebugEventType::DbgIpIdMapFailed6),
                    "DBG_IP_ID_MAP_SUCCEED4" => Ok(DebugEventType::DbgIpIdMapSucceed4),
                    "DBG_IP_ID_MAP_SUCCEED6" => Ok(DebugEventType::DbgIpIdMapSucceed6),
                    "DBG_LB_STALE_CT" => Ok(DebugEventType::DbgLbStaleCt),
                    "DBG_INHERIT_IDENTITY" => Ok(DebugEventType::DbgInheritIdentity),
                    "DBG_SK_LOOKUP4" => Ok(DebugEventType::DbgSkLookup4),
                    "DBG_SK_LOOKUP6" => Ok(DebugEventType::DbgSkLookup6),
                    "DBG_SK_ASSIGN" => Ok(DebugEventType::DbgSkAssign),
                    "DBG_L7_LB" => Ok(DebugEventType::DbgL7Lb),
                    "DBG_SKIP_POLICY" => Ok(DebugEventType::DbgSkipPolicy),
                    "DBG_LB6_LOOPBACK_SNAT" => Ok(DebugEventType::DbgLb6LoopbackSnat),
                    "DBG_LB6_LOOPBACK_SNAT_REV" => Ok(DebugEventType::DbgLb6LoopbackSnatRev),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for DropReason {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "DROP_REASON_UNKNOWN",
            Self::InvalidSourceMac => "INVALID_SOURCE_MAC",
            Self::InvalidDestinationMac => "INVALID_DESTINATION_MAC",
            Self::InvalidSourceIp => "INVALID_SOURCE_IP",
            Self::PolicyDenied => "POLICY_DENIED",
            Self::InvalidPacketDropped => "INVALID_PACKET_DROPPED",
            Self::CtTruncatedOrInvalidHeader => "CT_TRUNCATED_OR_INVALID_HEADER",
            Self::CtMissingTcpAckFlag => "CT_MISSING_TCP_ACK_FLAG",
            Self::CtUnknownL4Protocol => "CT_UNKNOWN_L4_PROTOCOL",
            Self::CtCannotCreateEntryFromPacket => "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
            Self::UnsupportedL3Protocol => "UNSUPPORTED_L3_PROTOCOL",
            Self::MissedTailCall => "MISSED_TAIL_CALL",
            Self::ErrorWritingToPacket => "ERROR_WRITING_TO_PACKET",
            Self::UnknownL4Protocol => "UNKNOWN_L4_PROTOCOL",
            Self::UnknownIcmpv4Code => "UNKNOWN_ICMPV4_CODE",
            Self::UnknownIcmpv4Type => "UNKNOWN_ICMPV4_TYPE",
            Self::UnknownIcmpv6Code => "UNKNOWN_ICMPV6_CODE",
            Self::UnknownIcmpv6Type => "UNKNOWN_ICMPV6_TYPE",
            Self::ErrorRetrievingTunnelKey => "ERROR_RETRIEVING_TUNNEL_KEY",
            Self::ErrorRetrievingTunnelOptions => "ERROR_RETRIEVING_TUNNEL_OPTIONS",
            Self::InvalidGeneveOption => "INVALID_GENEVE_OPTION",
            Self::UnknownL3TargetAddress => "UNKNOWN_L3_TARGET_ADDRESS",
            Self::StaleOrUnroutableIp => "STALE_OR_UNROUTABLE_IP",
            Self::NoMatchingLocalContainerFound => "NO_MATCHING_LOCAL_CONTAINER_FOUND",
            Self::ErrorWhileCorrectingL3Checksum => "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
            Self::ErrorWhileCorrectingL4Checksum => "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
            Self::CtMapInsertionFailed => "CT_MAP_INSERTION_FAILED",
            Self::InvalidIpv6ExtensionHeader => "INVALID_IPV6_EXTENSION_HEADER",
            Self::IpFragmentationNotSupported => "IP_FRAGMENTATION_NOT_SUPPORTED",
            Self::ServiceBackendNotFound => "SERVICE_BACKEND_NOT_FOUND",
            Self::NoTunnelOrEncapsulationEndpoint => "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
            Self::FailedToInsertIntoProxymap => "FAILED_TO_INSERT_INTO_PROXYMAP",
            Self::ReachedEdtRateLimitingDropHorizon => "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
            Self::UnknownConnectionTrackingState => "UNKNOWN_CONNECTION_TRACKING_STATE",
            Self::LocalHostIsUnreachable => "LOCAL_HOST_IS_UNREACHABLE",
            Self::NoConfigurationAvailableToPerformPolicyDecision => "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
            Self::UnsupportedL2Protocol => "UNSUPPORTED_L2_PROTOCOL",
            Self::NoMappingForNatMasquerade => "NO_MAPPING_FOR_NAT_MASQUERADE",
            Self::UnsupportedProtocolForNatMasquerade => "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
            Self::FibLookupFailed => "FIB_LOOKUP_FAILED",
            Self::EncapsulationTrafficIsProhibited => "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
            Self::InvalidIdentity => "INVALID_IDENTITY",
            Self::UnknownSender => "UNKNOWN_SENDER",
            Self::NatNotNeeded => "NAT_NOT_NEEDED",
            Self::IsAClusterip => "IS_A_CLUSTERIP",
            Self::FirstLogicalDatagramFragmentNotFound => "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
            Self::ForbiddenIcmpv6Message => "FORBIDDEN_ICMPV6_MESSAGE",
            Self::DeniedByLbSrcRangeCheck => "DENIED_BY_LB_SRC_RANGE_CHECK",
            Self::SocketLookupFailed => "SOCKET_LOOKUP_FAILED",
            Self::SocketAssignFailed => "SOCKET_ASSIGN_FAILED",
            Self::ProxyRedirectionNotSupportedForProtocol => "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
            Self::PolicyDeny => "POLICY_DENY",
            Self::VlanFiltered => "VLAN_FILTERED",
            Self::InvalidVni => "INVALID_VNI",
            Self::InvalidTcBuffer => "INVALID_TC_BUFFER",
            Self::NoSid => "NO_SID",
            Self::MissingSrv6State => "MISSING_SRV6_STATE",
            Self::Nat46 => "NAT46",
            Self::Nat64 => "NAT64",
            Self::AuthRequired => "AUTH_REQUIRED",
            Self::CtNoMapFound => "CT_NO_MAP_FOUND",
            Self::SnatNoMapFound => "SNAT_NO_MAP_FOUND",
            Self::InvalidClusterId => "INVALID_CLUSTER_ID",
            Self::UnsupportedProtocolForDsrEncap => "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP",
            Self::NoEgressGateway => "NO_EGRESS_GATEWAY",
            Self::UnencryptedTraffic => "UNENCRYPTED_TRAFFIC",
            Self::TtlExceeded => "TTL_EXCEEDED",
            Self::NoNodeId => "NO_NODE_ID",
            Self::DropRateLimited => "DROP_RATE_LIMITED",
            Self::IgmpHandled => "IGMP_HANDLED",
            Self::IgmpSubscribed => "IGMP_SUBSCRIBED",
            Self::MulticastHandled => "MULTICAST_HANDLED",
            Self::DropHostNotReady => "DROP_HOST_NOT_READY",
            Self::DropEpNotReady => "DROP_EP_NOT_READY",
            Self::DropNoEgressIp => "DROP_NO_EGRESS_IP",
            Self::DropPuntProxy => "DROP_PUNT_PROXY",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for DropReason {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "DROP_REASON_UNKNOWN",
            "INVALID_SOURCE_MAC",
            "INVALID_DESTINATION_MAC",
            "INVALID_SOURCE_IP",
            "POLICY_DENIED",
            "INVALID_PACKET_DROPPED",
            "CT_TRUNCATED_OR_INVALID_HEADER",
            "CT_MISSING_TCP_ACK_FLAG",
            "CT_UNKNOWN_L4_PROTOCOL",
            "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
            "UNSUPPORTED_L3_PROTOCOL",
            "MISSED_TAIL_CALL",
            "ERROR_WRITING_TO_PACKET",
            "UNKNOWN_L4_PROTOCOL",
            "UNKNOWN_ICMPV4_CODE",
            "UNKNOWN_ICMPV4_TYPE",
            "UNKNOWN_ICMPV6_CODE",
            "UNKNOWN_ICMPV6_TYPE",
            "ERROR_RETRIEVING_TUNNEL_KEY",
            "ERROR_RETRIEVING_TUNNEL_OPTIONS",
            "INVALID_GENEVE_OPTION",
            "UNKNOWN_L3_TARGET_ADDRESS",
            "STALE_OR_UNROUTABLE_IP",
            "NO_MATCHING_LOCAL_CONTAINER_FOUND",
            "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
            "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
            "CT_MAP_INSERTION_FAILED",
            "INVALID_IPV6_EXTENSION_HEADER",
            "IP_FRAGMENTATION_NOT_SUPPORTED",
            "SERVICE_BACKEND_NOT_FOUND",
            "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
            "FAILED_TO_INSERT_INTO_PROXYMAP",
            "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
            "UNKNOWN_CONNECTION_TRACKING_STATE",
            "LOCAL_HOST_IS_UNREACHABLE",
            "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
            "UNSUPPORTED_L2_PROTOCOL",
            "NO_MAPPING_FOR_NAT_MASQUERADE",
            "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
            "FIB_LOOKUP_FAILED",
            "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
            "INVALID_IDENTITY",
            "UNKNOWN_SENDER",
            "NAT_NOT_NEEDED",
            "IS_A_CLUSTERIP",
            "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
            "FORBIDDEN_ICMPV6_MESSAGE",
            "DENIED_BY_LB_SRC_RANGE_CHECK",
            "SOCKET_LOOKUP_FAILED",
            "SOCKET_ASSIGN_FAILED",
            "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
            "POLICY_DENY",
            "VLAN_FILTERED",
            "INVALID_VNI",
            "INVALID_TC_BUFFER",
            "NO_SID",
            "MISSING_SRV6_STATE",
            "NAT46",
            "NAT64",
            "AUTH_REQUIRED",
            "CT_NO_MAP_FOUND",
            "SNAT_NO_MAP_FOUND",
            "INVALID_CLUSTER_ID",
            "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP",
            "NO_EGRESS_GATEWAY",
            "UNENCRYPTED_TRAFFIC",
            "TTL_EXCEEDED",
            "NO_NODE_ID",
            "DROP_RATE_LIMITED",
            "IGMP_HANDLED",
            "IGMP_SUBSCRIBED",
            "MULTICAST_HANDLED",
            "DROP_HOST_NOT_READY",
            "DROP_EP_NOT_READY",
            "DROP_NO_EGRESS_IP",
            "DROP_PUNT_PROXY",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = DropReason;

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
                    "DROP_REASON_UNKNOWN" => Ok(DropReason::Unknown),
                    "INVALID_SOURCE_MAC" => Ok(DropReason::InvalidSourceMac),
                    "INVALID_DESTINATION_MAC" => Ok(DropReason::InvalidDestinationMac),
                    "INVALID_SOURCE_IP" => Ok(DropReason::InvalidSourceIp),
                    "POLICY_DENIED" => Ok(DropReason::PolicyDenied),
                    "INVALID_PACKET_DROPPED" => Ok(DropReason::InvalidPacketDropped),
                    "CT_TRUNCATED_OR_INVALID_HEADER" => Ok(DropReason::CtTruncatedOrInvalidHeader),
                    "CT_MISSING_TCP_ACK_FLAG" => Ok(DropReason::CtMissingTcpAckFlag),
                    "CT_UNKNOWN_L4_PROTOCOL" => Ok(DropReason::CtUnknownL4Protocol),
                    "CT_CANNOT_CREATE_ENTRY_FROM_PACKET" => Ok(DropReason::CtCannotCreateEntryFromPacket),
                    "UNSUPPORTED_L3_PROTOCOL" => Ok(DropReason::UnsupportedL3Protocol),
                    "MISSED_TAIL_CALL" => Ok(DropReason::MissedTailCall),
                    "ERROR_WRITING_TO_PACKET" => Ok(DropReason::ErrorWritingToPacket),
                    "UNKNOWN_L4_PROTOCOL" => Ok(DropReason::UnknownL4Protocol),
                    "UNKNOWN_ICMPV4_CODE" => Ok(DropReason::UnknownIcmpv4Code),
                    "UNKNOWN_ICMPV4_TYPE" => Ok(DropReason::UnknownIcmpv4Type),
                    "UNKNOWN_ICMPV6_CODE" => Ok(DropReason::UnknownIcmpv6Code),
                    "UNKNOWN_ICMPV6_TYPE" => Ok(DropReason::UnknownIcmpv6Type),
                    "ERROR_RETRIEVING_TUNNEL_KEY" => Ok(DropReason::ErrorRetrievingTunnelKey),
                    "ERROR_RETRIEVING_TUNNEL_OPTIONS" => Ok(DropReason::ErrorRetrievingTunnelOptions),
                    "INVALID_GENEVE_OPTION" => Ok(DropReason::InvalidGeneveOption),
                    "UNKNOWN_L3_TARGET_ADDRESS" => Ok(DropReason::UnknownL3TargetAddress),
                    "STALE_OR_UNROUTABLE_IP" => Ok(DropReason::StaleOrUnroutableIp),
                    "NO_MATCHING_LOCAL_CONTAINER_FOUND" => Ok(DropReason::NoMatchingLocalContainerFound),
                    "ERROR_WHILE_CORRECTING_L3_CHECKSUM" => Ok(DropReason::ErrorWhileCorrectingL3Checksum),
                    "ERROR_WHILE_CORRECTING_L4_CHECKSUM" => Ok(DropReason::ErrorWhileCorrectingL4Checksum),
                    "CT_MAP_INSERTION_FAILED" => Ok(DropReason::CtMapInsertionFailed),
                    "INVALID_IPV6_EXTENSION_HEADER" => Ok(DropReason::InvalidIpv6ExtensionHeader),
                    "IP_FRAGMENTATION_NOT_SUPPORTED" => Ok(DropReason::IpFragmentationNotSupported),
                    "SERVICE_BACKEND_NOT_FOUND" => Ok(DropReason::ServiceBackendNotFound),
                    "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT" => Ok(DropReason::NoTunnelOrEncapsulationEndpoint),
                    "FAILED_TO_INSERT_INTO_PROXYMAP" => Ok(DropReason::FailedToInsertIntoProxymap),
                    "REACHED_EDT_RATE_LIMITING_DROP_HORIZON" => Ok(DropReason::ReachedEdtRateLimitingDropHorizon),
                    "UNKNOWN_CONNECTION_TRACKING_STATE" => Ok(DropReason::UnknownConnectionTrackingState),
                    "LOCAL_HOST_IS_UNREACHABLE" => Ok(DropReason::LocalHostIsUnreachable),
                    "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION" => Ok(DropReason::NoConfigurationAvailableToPerformPolicyDecision),
                    "UNSUPPORTED_L2_PROTOCOL" => Ok(DropReason::UnsupportedL2Protocol),
                    "NO_MAPPING_FOR_NAT_MASQUERADE" => Ok(DropReason::NoMappingForNatMasquerade),
                    "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE" => Ok(DropReason::UnsupportedProtocolForNatMasquerade),
                    "FIB_LOOKUP_FAILED" => Ok(DropReason::FibLookupFailed),
                    "ENCAPSULATION_TRAFFIC_IS_PROHIBITED" => Ok(DropReason::EncapsulationTrafficIsProhibited),
                    "INVALID_IDENTITY" => Ok(DropReason::InvalidIdentity),
                    "UNKNOWN_SENDER" => Ok(DropReason::UnknownSender),
                    "NAT_NOT_NEEDED" => Ok(DropReason::NatNotNeeded),
                    "IS_A_CLUSTERIP" => Ok(DropReason::IsAClusterip),
                    "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND" => Ok(DropReason::FirstLogicalDatagramFragmentNotFound),
                    "FORBIDDEN_ICMPV6_MESSAGE" => Ok(DropReason::ForbiddenIcmpv6Message),
                    "DENIED_BY_LB_SRC_RANGE_CHECK" => Ok(DropReason::DeniedByLbSrcRangeCheck),
                    "SOCKET_LOOKUP_FAILED" => Ok(DropReason::SocketLookupFailed),
                    "SOCKET_ASSIGN_FAILED" => Ok(DropReason::SocketAssignFailed),
                    "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL" => Ok(DropReason::ProxyRedirectionNotSupportedForProtocol),
                    "POLICY_DENY" => Ok(DropReason::PolicyDeny),
                    "VLAN_FILTERED" => Ok(DropReason::VlanFiltered),
                    "INVALID_VNI" => Ok(DropReason::InvalidVni),
                    "INVALID_TC_BUFFER" => Ok(DropReason::InvalidTcBuffer),
                    "NO_SID" => Ok(DropReason::NoSid),
                    "MISSING_SRV6_STATE" => Ok(DropReason::MissingSrv6State),
                    "NAT46" => Ok(DropReason::Nat46),
                    "NAT64" => Ok(DropReason::Nat64),
                    "AUTH_REQUIRED" => Ok(DropReason::AuthRequired),
                    "CT_NO_MAP_FOUND" => Ok(DropReason::CtNoMapFound),
                    "SNAT_NO_MAP_FOUND" => Ok(DropReason::SnatNoMapFound),
                    "INVALID_CLUSTER_ID" => Ok(DropReason::InvalidClusterId),
                    "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP" => Ok(DropReason::UnsupportedProtocolForDsrEncap),
                    "NO_EGRESS_GATEWAY" => Ok(DropReason::NoEgressGateway),
                    "UNENCRYPTED_TRAFFIC" => Ok(DropReason::UnencryptedTraffic),
                    "TTL_EXCEEDED" => Ok(DropReason::TtlExceeded),
                    "NO_NODE_ID" => Ok(DropReason::NoNodeId),
                    "DROP_RATE_LIMITED" => Ok(DropReason::DropRateLimited),
                    "IGMP_HANDLED" => Ok(DropReason::IgmpHandled),
                    "IGMP_SUBSCRIBED" => Ok(DropReason::IgmpSubscribed),
                    "MULTICAST_HANDLED" => Ok(DropReason::MulticastHandled),
                    "DROP_HOST_NOT_READY" => Ok(DropReason::DropHostNotReady),
                    "DROP_EP_NOT_READY" => Ok(DropReason::DropEpNotReady),
                    "DROP_NO_EGRESS_IP" => Ok(DropReason::DropNoEgressIp),
                    "DROP_PUNT_PROXY" => Ok(DropReason::DropPuntProxy),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Emitter {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.version.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Emitter", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.version.is_empty() {
            struct_ser.serialize_field("version", &self.version)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Emitter {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "version",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Version,
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
                            "name" => Ok(GeneratedField::Name),
                            "version" => Ok(GeneratedField::Version),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Emitter;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Emitter")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Emitter, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut version__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Version => {
                            if version__.is_some() {
                                return Err(serde::de::Error::duplicate_field("version"));
                            }
                            version__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Emitter {
                    name: name__.unwrap_or_default(),
                    version: version__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Emitter", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Endpoint {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.id != 0 {
            len += 1;
        }
        if self.identity != 0 {
            len += 1;
        }
        if !self.cluster_name.is_empty() {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        if !self.labels.is_empty() {
            len += 1;
        }
        if !self.pod_name.is_empty() {
            len += 1;
        }
        if !self.workloads.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Endpoint", len)?;
        if self.id != 0 {
            struct_ser.serialize_field("ID", &self.id)?;
        }
        if self.identity != 0 {
            struct_ser.serialize_field("identity", &self.identity)?;
        }
        if !self.cluster_name.is_empty() {
            struct_ser.serialize_field("cluster_name", &self.cluster_name)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if !self.pod_name.is_empty() {
            struct_ser.serialize_field("pod_name", &self.pod_name)?;
        }
        if !self.workloads.is_empty() {
            struct_ser.serialize_field("workloads", &self.workloads)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Endpoint {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "ID",
            "identity",
            "cluster_name",
            "clusterName",
            "namespace",
            "labels",
            "pod_name",
            "podName",
            "workloads",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
            Identity,
            ClusterName,
            Namespace,
            Labels,
            PodName,
            Workloads,
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
                            "ID" => Ok(GeneratedField::Id),
                            "identity" => Ok(GeneratedField::Identity),
                            "clusterName" | "cluster_name" => Ok(GeneratedField::ClusterName),
                            "namespace" => Ok(GeneratedField::Namespace),
                            "labels" => Ok(GeneratedField::Labels),
                            "podName" | "pod_name" => Ok(GeneratedField::PodName),
                            "workloads" => Ok(GeneratedField::Workloads),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Endpoint;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Endpoint")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Endpoint, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                let mut identity__ = None;
                let mut cluster_name__ = None;
                let mut namespace__ = None;
                let mut labels__ = None;
                let mut pod_name__ = None;
                let mut workloads__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ID"));
                            }
                            id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Identity => {
                            if identity__.is_some() {
                                return Err(serde::de::Error::duplicate_field("identity"));
                            }
                            identity__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::ClusterName => {
                            if cluster_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("clusterName"));
                            }
                            cluster_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::PodName => {
                            if pod_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("podName"));
                            }
                            pod_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Workloads => {
                            if workloads__.is_some() {
                                return Err(serde::de::Error::duplicate_field("workloads"));
                            }
                            workloads__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Endpoint {
                    id: id__.unwrap_or_default(),
                    identity: identity__.unwrap_or_default(),
                    cluster_name: cluster_name__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                    labels: labels__.unwrap_or_default(),
                    pod_name: pod_name__.unwrap_or_default(),
                    workloads: workloads__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Endpoint", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for EndpointRegenNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.id != 0 {
            len += 1;
        }
        if !self.labels.is_empty() {
            len += 1;
        }
        if !self.error.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.EndpointRegenNotification", len)?;
        if self.id != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("id", ToString::to_string(&self.id).as_str())?;
        }
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if !self.error.is_empty() {
            struct_ser.serialize_field("error", &self.error)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for EndpointRegenNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "id",
            "labels",
            "error",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
            Labels,
            Error,
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
                            "id" => Ok(GeneratedField::Id),
                            "labels" => Ok(GeneratedField::Labels),
                            "error" => Ok(GeneratedField::Error),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = EndpointRegenNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.EndpointRegenNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<EndpointRegenNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                let mut labels__ = None;
                let mut error__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("id"));
                            }
                            id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Error => {
                            if error__.is_some() {
                                return Err(serde::de::Error::duplicate_field("error"));
                            }
                            error__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(EndpointRegenNotification {
                    id: id__.unwrap_or_default(),
                    labels: labels__.unwrap_or_default(),
                    error: error__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.EndpointRegenNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for EndpointUpdateNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.id != 0 {
            len += 1;
        }
        if !self.labels.is_empty() {
            len += 1;
        }
        if !self.error.is_empty() {
            len += 1;
        }
        if !self.pod_name.is_empty() {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.EndpointUpdateNotification", len)?;
        if self.id != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("id", ToString::to_string(&self.id).as_str())?;
        }
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if !self.error.is_empty() {
            struct_ser.serialize_field("error", &self.error)?;
        }
        if !self.pod_name.is_empty() {
            struct_ser.serialize_field("pod_name", &self.pod_name)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for EndpointUpdateNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "id",
            "labels",
            "error",
            "pod_name",
            "podName",
            "namespace",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
            Labels,
            Error,
            PodName,
            Namespace,
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
                            "id" => Ok(GeneratedField::Id),
                            "labels" => Ok(GeneratedField::Labels),
                            "error" => Ok(GeneratedField::Error),
                            "podName" | "pod_name" => Ok(GeneratedField::PodName),
                            "namespace" => Ok(GeneratedField::Namespace),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = EndpointUpdateNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.EndpointUpdateNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<EndpointUpdateNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                let mut labels__ = None;
                let mut error__ = None;
                let mut pod_name__ = None;
                let mut namespace__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("id"));
                            }
                            id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Error => {
                            if error__.is_some() {
                                return Err(serde::de::Error::duplicate_field("error"));
                            }
                            error__ = Some(map_.next_value()?);
                        }
                        GeneratedField::PodName => {
                            if pod_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("podName"));
                            }
                            pod_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(EndpointUpdateNotification {
                    id: id__.unwrap_or_default(),
                    labels: labels__.unwrap_or_default(),
                    error: error__.unwrap_or_default(),
                    pod_name: pod_name__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.EndpointUpdateNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Ethernet {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.source.is_empty() {
            len += 1;
        }
        if !self.destination.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Ethernet", len)?;
        if !self.source.is_empty() {
            struct_ser.serialize_field("source", &self.source)?;
        }
        if !self.destination.is_empty() {
            struct_ser.serialize_field("destination", &self.destination)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Ethernet {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source",
            "destination",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Source,
            Destination,
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
                            "source" => Ok(GeneratedField::Source),
                            "destination" => Ok(GeneratedField::Destination),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Ethernet;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Ethernet")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Ethernet, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source__ = None;
                let mut destination__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Source => {
                            if source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("source"));
                            }
                            source__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Destination => {
                            if destination__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destination"));
                            }
                            destination__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Ethernet {
                    source: source__.unwrap_or_default(),
                    destination: destination__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Ethernet", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for EventType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "UNKNOWN",
            Self::EventSample => "EventSample",
            Self::RecordLost => "RecordLost",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for EventType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN",
            "EventSample",
            "RecordLost",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = EventType;

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
                    "UNKNOWN" => Ok(EventType::Unknown),
                    "EventSample" => Ok(EventType::EventSample),
                    "RecordLost" => Ok(EventType::RecordLost),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for EventTypeFilter {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.match_sub_type {
            len += 1;
        }
        if self.sub_type != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.EventTypeFilter", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if self.match_sub_type {
            struct_ser.serialize_field("match_sub_type", &self.match_sub_type)?;
        }
        if self.sub_type != 0 {
            struct_ser.serialize_field("sub_type", &self.sub_type)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for EventTypeFilter {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "match_sub_type",
            "matchSubType",
            "sub_type",
            "subType",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            MatchSubType,
            SubType,
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
                            "type" => Ok(GeneratedField::Type),
                            "matchSubType" | "match_sub_type" => Ok(GeneratedField::MatchSubType),
                            "subType" | "sub_type" => Ok(GeneratedField::SubType),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = EventTypeFilter;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.EventTypeFilter")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<EventTypeFilter, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut match_sub_type__ = None;
                let mut sub_type__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::MatchSubType => {
                            if match_sub_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("matchSubType"));
                            }
                            match_sub_type__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SubType => {
                            if sub_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("subType"));
                            }
                            sub_type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(EventTypeFilter {
                    r#type: r#type__.unwrap_or_default(),
                    match_sub_type: match_sub_type__.unwrap_or_default(),
                    sub_type: sub_type__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.EventTypeFilter", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for FileInfo {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if self.line != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.FileInfo", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if self.line != 0 {
            struct_ser.serialize_field("line", &self.line)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for FileInfo {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "line",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Line,
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
                            "name" => Ok(GeneratedField::Name),
                            "line" => Ok(GeneratedField::Line),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = FileInfo;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.FileInfo")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<FileInfo, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut line__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Line => {
                            if line__.is_some() {
                                return Err(serde::de::Error::duplicate_field("line"));
                            }
                            line__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(FileInfo {
                    name: name__.unwrap_or_default(),
                    line: line__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.FileInfo", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Flow {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.time.is_some() {
            len += 1;
        }
        if !self.uuid.is_empty() {
            len += 1;
        }
        if self.emitter.is_some() {
            len += 1;
        }
        if self.verdict != 0 {
            len += 1;
        }
        if self.drop_reason != 0 {
            len += 1;
        }
        if self.auth_type != 0 {
            len += 1;
        }
        if self.ethernet.is_some() {
            len += 1;
        }
        if self.ip.is_some() {
            len += 1;
        }
        if self.l4.is_some() {
            len += 1;
        }
        if self.tunnel.is_some() {
            len += 1;
        }
        if self.source.is_some() {
            len += 1;
        }
        if self.destination.is_some() {
            len += 1;
        }
        if self.r#type != 0 {
            len += 1;
        }
        if !self.node_name.is_empty() {
            len += 1;
        }
        if !self.node_labels.is_empty() {
            len += 1;
        }
        if !self.source_names.is_empty() {
            len += 1;
        }
        if !self.destination_names.is_empty() {
            len += 1;
        }
        if self.l7.is_some() {
            len += 1;
        }
        if self.reply {
            len += 1;
        }
        if self.event_type.is_some() {
            len += 1;
        }
        if self.source_service.is_some() {
            len += 1;
        }
        if self.destination_service.is_some() {
            len += 1;
        }
        if self.traffic_direction != 0 {
            len += 1;
        }
        if self.policy_match_type != 0 {
            len += 1;
        }
        if self.trace_observation_point != 0 {
            len += 1;
        }
        if self.trace_reason != 0 {
            len += 1;
        }
        if self.file.is_some() {
            len += 1;
        }
        if self.ip_trace_id.is_some() {
            len += 1;
        }
        if self.drop_reason_desc != 0 {
            len += 1;
        }
        if self.is_reply.is_some() {
            len += 1;
        }
        if self.debug_capture_point != 0 {
            len += 1;
        }
        if self.interface.is_some() {
            len += 1;
        }
        if self.proxy_port != 0 {
            len += 1;
        }
        if self.trace_context.is_some() {
            len += 1;
        }
        if self.sock_xlate_point != 0 {
            len += 1;
        }
        if self.socket_cookie != 0 {
            len += 1;
        }
        if self.cgroup_id != 0 {
            len += 1;
        }
        if !self.summary.is_empty() {
            len += 1;
        }
        if self.extensions.is_some() {
            len += 1;
        }
        if !self.egress_allowed_by.is_empty() {
            len += 1;
        }
        if !self.ingress_allowed_by.is_empty() {
            len += 1;
        }
        if !self.egress_denied_by.is_empty() {
            len += 1;
        }
        if !self.ingress_denied_by.is_empty() {
            len += 1;
        }
        if !self.policy_log.is_empty() {
            len += 1;
        }
        if self.aggregate.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Flow", len)?;
        if let Some(v) = self.time.as_ref() {
            struct_ser.serialize_field("time", v)?;
        }
        if !self.uuid.is_empty() {
            struct_ser.serialize_field("uuid", &self.uuid)?;
        }
        if let Some(v) = self.emitter.as_ref() {
            struct_ser.serialize_field("emitter", v)?;
        }
        if self.verdict != 0 {
            let v = Verdict::try_from(self.verdict)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.verdict)))?;
            struct_ser.serialize_field("verdict", &v)?;
        }
        if self.drop_reason != 0 {
            struct_ser.serialize_field("drop_reason", &self.drop_reason)?;
        }
        if self.auth_type != 0 {
            let v = AuthType::try_from(self.auth_type)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.auth_type)))?;
            struct_ser.serialize_field("auth_type", &v)?;
        }
        if let Some(v) = self.ethernet.as_ref() {
            struct_ser.serialize_field("ethernet", v)?;
        }
        if let Some(v) = self.ip.as_ref() {
            struct_ser.serialize_field("IP", v)?;
        }
        if let Some(v) = self.l4.as_ref() {
            struct_ser.serialize_field("l4", v)?;
        }
        if let Some(v) = self.tunnel.as_ref() {
            struct_ser.serialize_field("tunnel", v)?;
        }
        if let Some(v) = self.source.as_ref() {
            struct_ser.serialize_field("source", v)?;
        }
        if let Some(v) = self.destination.as_ref() {
            struct_ser.serialize_field("destination", v)?;
        }
        if self.r#type != 0 {
            let v = FlowType::try_from(self.r#type)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.r#type)))?;
            struct_ser.serialize_field("Type", &v)?;
        }
        if !self.node_name.is_empty() {
            struct_ser.serialize_field("node_name", &self.node_name)?;
        }
        if !self.node_labels.is_empty() {
            struct_ser.serialize_field("node_labels", &self.node_labels)?;
        }
        if !self.source_names.is_empty() {
            struct_ser.serialize_field("source_names", &self.source_names)?;
        }
        if !self.destination_names.is_empty() {
            struct_ser.serialize_field("destination_names", &self.destination_names)?;
        }
        if let Some(v) = self.l7.as_ref() {
            struct_ser.serialize_field("l7", v)?;
        }
        if self.reply {
            struct_ser.serialize_field("reply", &self.reply)?;
        }
        if let Some(v) = self.event_type.as_ref() {
            struct_ser.serialize_field("event_type", v)?;
        }
        if let Some(v) = self.source_service.as_ref() {
            struct_ser.serialize_field("source_service", v)?;
        }
        if let Some(v) = self.destination_service.as_ref() {
            struct_ser.serialize_field("destination_service", v)?;
        }
        if self.traffic_direction != 0 {
            let v = TrafficDirection::try_from(self.traffic_direction)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.traffic_direction)))?;
            struct_ser.serialize_field("traffic_direction", &v)?;
        }
        if self.policy_match_type != 0 {
            struct_ser.serialize_field("policy_match_type", &self.policy_match_type)?;
        }
        if self.trace_observation_point != 0 {
            let v = TraceObservationPoint::try_from(self.trace_observation_point)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.trace_observation_point)))?;
            struct_ser.serialize_field("trace_observation_point", &v)?;
        }
        if self.trace_reason != 0 {
            let v = TraceReason::try_from(self.trace_reason)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.trace_reason)))?;
            struct_ser.serialize_field("trace_reason", &v)?;
        }
        if let Some(v) = self.file.as_ref() {
            struct_ser.serialize_field("file", v)?;
        }
        if let Some(v) = self.ip_trace_id.as_ref() {
            struct_ser.serialize_field("ip_trace_id", v)?;
        }
        if self.drop_reason_desc != 0 {
            let v = DropReason::try_from(self.drop_reason_desc)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.drop_reason_desc)))?;
            struct_ser.serialize_field("drop_reason_desc", &v)?;
        }
        if let Some(v) = self.is_reply.as_ref() {
            struct_ser.serialize_field("is_reply", v)?;
        }
        if self.debug_capture_point != 0 {
            let v = DebugCapturePoint::try_from(self.debug_capture_point)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.debug_capture_point)))?;
            struct_ser.serialize_field("debug_capture_point", &v)?;
        }
        if let Some(v) = self.interface.as_ref() {
            struct_ser.serialize_field("interface", v)?;
        }
        if self.proxy_port != 0 {
            struct_ser.serialize_field("proxy_port", &self.proxy_port)?;
        }
        if let Some(v) = self.trace_context.as_ref() {
            struct_ser.serialize_field("trace_context", v)?;
        }
        if self.sock_xlate_point != 0 {
            let v = SocketTranslationPoint::try_from(self.sock_xlate_point)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.sock_xlate_point)))?;
            struct_ser.serialize_field("sock_xlate_point", &v)?;
        }
        if self.socket_cookie != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("socket_cookie", ToString::to_string(&self.socket_cookie).as_str())?;
        }
        if self.cgroup_id != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("cgroup_id", ToString::to_string(&self.cgroup_id).as_str())?;
        }
        if !self.summary.is_empty() {
            struct_ser.serialize_field("Summary", &self.summary)?;
        }
        if let Some(v) = self.extensions.as_ref() {
            struct_ser.serialize_field("extensions", v)?;
        }
        if !self.egress_allowed_by.is_empty() {
            struct_ser.serialize_field("egress_allowed_by", &self.egress_allowed_by)?;
        }
        if !self.ingress_allowed_by.is_empty() {
            struct_ser.serialize_field("ingress_allowed_by", &self.ingress_allowed_by)?;
        }
        if !self.egress_denied_by.is_empty() {
            struct_ser.serialize_field("egress_denied_by", &self.egress_denied_by)?;
        }
        if !self.ingress_denied_by.is_empty() {
            struct_ser.serialize_field("ingress_denied_by", &self.ingress_denied_by)?;
        }
        if !self.policy_log.is_empty() {
            struct_ser.serialize_field("policy_log", &self.policy_log)?;
        }
        if let Some(v) = self.aggregate.as_ref() {
            struct_ser.serialize_field("aggregate", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Flow {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "time",
            "uuid",
            "emitter",
            "verdict",
            "drop_reason",
            "dropReason",
            "auth_type",
            "authType",
            "ethernet",
            "IP",
            "l4",
            "tunnel",
            "source",
            "destination",
            "Type",
            "node_name",
            "nodeName",
            "node_labels",
            "nodeLabels",
            "source_names",
            "sourceNames",
            "destination_names",
            "destinationNames",
            "l7",
            "reply",
            "event_type",
            "eventType",
            "source_service",
            "sourceService",
            "destination_service",
            "destinationService",
            "traffic_direction",
            "trafficDirection",
            "policy_match_type",
            "policyMatchType",
            "trace_observation_point",
            "traceObservationPoint",
            "trace_reason",
            "traceReason",
            "file",
            "ip_trace_id",
            "ipTraceId",
            "drop_reason_desc",
            "dropReasonDesc",
            "is_reply",
            "isReply",
            "debug_capture_point",
            "debugCapturePoint",
            "interface",
            "proxy_port",
            "proxyPort",
            "trace_context",
            "traceContext",
            "sock_xlate_point",
            "sockXlatePoint",
            "socket_cookie",
            "socketCookie",
            "cgroup_id",
            "cgroupId",
            "Summary",
            "extensions",
            "egress_allowed_by",
            "egressAllowedBy",
            "ingress_allowed_by",
            "ingressAllowedBy",
            "egress_denied_by",
            "egressDeniedBy",
            "ingress_denied_by",
            "ingressDeniedBy",
            "policy_log",
            "policyLog",
            "aggregate",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Time,
            Uuid,
            Emitter,
            Verdict,
            DropReason,
            AuthType,
            Ethernet,
            Ip,
            L4,
            Tunnel,
            Source,
            Destination,
            Type,
            NodeName,
            NodeLabels,
            SourceNames,
            DestinationNames,
            L7,
            Reply,
            EventType,
            SourceService,
            DestinationService,
            TrafficDirection,
            PolicyMatchType,
            TraceObservationPoint,
            TraceReason,
            File,
            IpTraceId,
            DropReasonDesc,
            IsReply,
            DebugCapturePoint,
            Interface,
            ProxyPort,
            TraceContext,
            SockXlatePoint,
            SocketCookie,
            CgroupId,
            Summary,
            Extensions,
            EgressAllowedBy,
            IngressAllowedBy,
            EgressDeniedBy,
            IngressDeniedBy,
            PolicyLog,
            Aggregate,
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
                            "time" => Ok(GeneratedField::Time),
                            "uuid" => Ok(GeneratedField::Uuid),
                            "emitter" => Ok(GeneratedField::Emitter),
                            "verdict" => Ok(GeneratedField::Verdict),
                            "dropReason" | "drop_reason" => Ok(GeneratedField::DropReason),
                            "authType" | "auth_type" => Ok(GeneratedField::AuthType),
                            "ethernet" => Ok(GeneratedField::Ethernet),
                            "IP" => Ok(GeneratedField::Ip),
                            "l4" => Ok(GeneratedField::L4),
                            "tunnel" => Ok(GeneratedField::Tunnel),
                            "source" => Ok(GeneratedField::Source),
                            "destination" => Ok(GeneratedField::Destination),
                            "Type" => Ok(GeneratedField::Type),
                            "nodeName" | "node_name" => Ok(GeneratedField::NodeName),
                            "nodeLabels" | "node_labels" => Ok(GeneratedField::NodeLabels),
                            "sourceNames" | "source_names" => Ok(GeneratedField::SourceNames),
                            "destinationNames" | "destination_names" => Ok(GeneratedField::DestinationNames),
                            "l7" => Ok(GeneratedField::L7),
                            "reply" => Ok(GeneratedField::Reply),
                            "eventType" | "event_type" => Ok(GeneratedField::EventType),
                            "sourceService" | "source_service" => Ok(GeneratedField::SourceService),
                            "destinationService" | "destination_service" => Ok(GeneratedField::DestinationService),
                            "trafficDirection" | "traffic_direction" => Ok(GeneratedField::TrafficDirection),
                            "policyMatchType" | "policy_match_type" => Ok(GeneratedField::PolicyMatchType),
                            "traceObservationPoint" | "trace_observation_point" => Ok(GeneratedField::TraceObservationPoint),
                            "traceReason" | "trace_reason" => Ok(GeneratedField::TraceReason),
                            "file" => Ok(GeneratedField::File),
                            "ipTraceId" | "ip_trace_id" => Ok(GeneratedField::IpTraceId),
                            "dropReasonDesc" | "drop_reason_desc" => Ok(GeneratedField::DropReasonDesc),
                            "isReply" | "is_reply" => Ok(GeneratedField::IsReply),
                            "debugCapturePoint" | "debug_capture_point" => Ok(GeneratedField::DebugCapturePoint),
                            "interface" => Ok(GeneratedField::Interface),
                            "proxyPort" | "proxy_port" => Ok(GeneratedField::ProxyPort),
                            "traceContext" | "trace_context" => Ok(GeneratedField::TraceContext),
                            "sockXlatePoint" | "sock_xlate_point" => Ok(GeneratedField::SockXlatePoint),
                            "socketCookie" | "socket_cookie" => Ok(GeneratedField::SocketCookie),
                            "cgroupId" | "cgroup_id" => Ok(GeneratedField::CgroupId),
                            "Summary" => Ok(GeneratedField::Summary),
                            "extensions" => Ok(GeneratedField::Extensions),
                            "egressAllowedBy" | "egress_allowed_by" => Ok(GeneratedField::EgressAllowedBy),
                            "ingressAllowedBy" | "ingress_allowed_by" => Ok(GeneratedField::IngressAllowedBy),
                            "egressDeniedBy" | "egress_denied_by" => Ok(GeneratedField::EgressDeniedBy),
                            "ingressDeniedBy" | "ingress_denied_by" => Ok(GeneratedField::IngressDeniedBy),
                            "policyLog" | "policy_log" => Ok(GeneratedField::PolicyLog),
                            "aggregate" => Ok(GeneratedField::Aggregate),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Flow;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Flow")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Flow, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut time__ = None;
                let mut uuid__ = None;
                let mut emitter__ = None;
                let mut verdict__ = None;
                let mut drop_reason__ = None;
                let mut auth_type__ = None;
                let mut ethernet__ = None;
                let mut ip__ = None;
                let mut l4__ = None;
                let mut tunnel__ = None;
                let mut source__ = None;
                let mut destination__ = None;
                let mut r#type__ = None;
                let mut node_name__ = None;
                let mut node_labels__ = None;
                let mut source_names__ = None;
                let mut destination_names__ = None;
                let mut l7__ = None;
                let mut reply__ = None;
                let mut event_type__ = None;
                let mut source_service__ = None;
                let mut destination_service__ = None;
                let mut traffic_direction__ = None;
                let mut policy_match_type__ = None;
                let mut trace_observation_point__ = None;
                let mut trace_reason__ = None;
                let mut file__ = None;
                let mut ip_trace_id__ = None;
                let mut drop_reason_desc__ = None;
                let mut is_reply__ = None;
                let mut debug_capture_point__ = None;
                let mut interface__ = None;
                let mut proxy_port__ = None;
                let mut trace_context__ = None;
                let mut sock_xlate_point__ = None;
                let mut socket_cookie__ = None;
                let mut cgroup_id__ = None;
                let mut summary__ = None;
                let mut extensions__ = None;
                let mut egress_allowed_by__ = None;
                let mut ingress_allowed_by__ = None;
                let mut egress_denied_by__ = None;
                let mut ingress_denied_by__ = None;
                let mut policy_log__ = None;
                let mut aggregate__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Time => {
                            if time__.is_some() {
                                return Err(serde::de::Error::duplicate_field("time"));
                            }
                            time__ = map_.next_value()?;
                        }
                        GeneratedField::Uuid => {
                            if uuid__.is_some() {
                                return Err(serde::de::Error::duplicate_field("uuid"));
                            }
                            uuid__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Emitter => {
                            if emitter__.is_some() {
                                return Err(serde::de::Error::duplicate_field("emitter"));
                            }
                            emitter__ = map_.next_value()?;
                        }
                        GeneratedField::Verdict => {
                            if verdict__.is_some() {
                                return Err(serde::de::Error::duplicate_field("verdict"));
                            }
                            verdict__ = Some(map_.next_value::<Verdict>()? as i32);
                        }
                        GeneratedField::DropReason => {
                            if drop_reason__.is_some() {
                                return Err(serde::de::Error::duplicate_field("dropReason"));
                            }
                            drop_reason__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::AuthType => {
                            if auth_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("authType"));
                            }
                            auth_type__ = Some(map_.next_value::<AuthType>()? as i32);
                        }
                        GeneratedField::Ethernet => {
                            if ethernet__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ethernet"));
                            }
                            ethernet__ = map_.next_value()?;
                        }
                        GeneratedField::Ip => {
                            if ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("IP"));
                            }
                            ip__ = map_.next_value()?;
                        }
                        GeneratedField::L4 => {
                            if l4__.is_some() {
                                return Err(serde::de::Error::duplicate_field("l4"));
                            }
                            l4__ = map_.next_value()?;
                        }
                        GeneratedField::Tunnel => {
                            if tunnel__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tunnel"));
                            }
                            tunnel__ = map_.next_value()?;
                        }
                        GeneratedField::Source => {
                            if source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("source"));
                            }
                            source__ = map_.next_value()?;
                        }
                        GeneratedField::Destination => {
                            if destination__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destination"));
                            }
                            destination__ = map_.next_value()?;
                        }
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("Type"));
                            }
                            r#type__ = Some(map_.next_value::<FlowType>()? as i32);
                        }
                        GeneratedField::NodeName => {
                            if node_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("nodeName"));
                            }
                            node_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::NodeLabels => {
                            if node_labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("nodeLabels"));
                            }
                            node_labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceNames => {
                            if source_names__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceNames"));
                            }
                            source_names__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationNames => {
                            if destination_names__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationNames"));
                            }
                            destination_names__ = Some(map_.next_value()?);
                        }
                        GeneratedField::L7 => {
                            if l7__.is_some() {
                                return Err(serde::de::Error::duplicate_field("l7"));
                            }
                            l7__ = map_.next_value()?;
                        }
                        GeneratedField::Reply => {
                            if reply__.is_some() {
                                return Err(serde::de::Error::duplicate_field("reply"));
                            }
                            reply__ = Some(map_.next_value()?);
                        }
                        GeneratedField::EventType => {
                            if event_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("eventType"));
                            }
                            event_type__ = map_.next_value()?;
                        }
                        GeneratedField::SourceService => {
                            if source_service__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceService"));
                            }
                            source_service__ = map_.next_value()?;
                        }
                        GeneratedField::DestinationService => {
                            if destination_service__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationService"));
                            }
                            destination_service__ = map_.next_value()?;
                        }
                        GeneratedField::TrafficDirection => {
                            if traffic_direction__.is_some() {
                                return Err(serde::de::Error::duplicate_field("trafficDirection"));
                            }
                            traffic_direction__ = Some(map_.next_value::<TrafficDirection>()? as i32);
                        }
                        GeneratedField::PolicyMatchType => {
                            if policy_match_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("policyMatchType"));
                            }
                            policy_match_type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TraceObservationPoint => {
                            if trace_observation_point__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceObservationPoint"));
                            }
                            trace_observation_point__ = Some(map_.next_value::<TraceObservationPoint>()? as i32);
                        }
                        GeneratedField::TraceReason => {
                            if trace_reason__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceReason"));
                            }
                            trace_reason__ = Some(map_.next_value::<TraceReason>()? as i32);
                        }
                        GeneratedField::File => {
                            if file__.is_some() {
                                return Err(serde::de::Error::duplicate_field("file"));
                            }
                            file__ = map_.next_value()?;
                        }
                        GeneratedField::IpTraceId => {
                            if ip_trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipTraceId"));
                            }
                            ip_trace_id__ = map_.next_value()?;
                        }
                        GeneratedField::DropReasonDesc => {
                            if drop_reason_desc__.is_some() {
                                return Err(serde::de::Error::duplicate_field("dropReasonDesc"));
                            }
                            drop_reason_desc__ = Some(map_.next_value::<DropReason>()? as i32);
                        }
                        GeneratedField::IsReply => {
                            if is_reply__.is_some() {
                                return Err(serde::de::Error::duplicate_field("isReply"));
                            }
                            is_reply__ = map_.next_value()?;
                        }
                        GeneratedField::DebugCapturePoint => {
                            if debug_capture_point__.is_some() {
                                return Err(serde::de::Error::duplicate_field("debugCapturePoint"));
                            }
                            debug_capture_point__ = Some(map_.next_value::<DebugCapturePoint>()? as i32);
                        }
                        GeneratedField::Interface => {
                            if interface__.is_some() {
                                return Err(serde::de::Error::duplicate_field("interface"));
                            }
                            interface__ = map_.next_value()?;
                        }
                        GeneratedField::ProxyPort => {
                            if proxy_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("proxyPort"));
                            }
                            proxy_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TraceContext => {
                            if trace_context__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceContext"));
                            }
                            trace_context__ = map_.next_value()?;
                        }
                        GeneratedField::SockXlatePoint => {
                            if sock_xlate_point__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sockXlatePoint"));
                            }
                            sock_xlate_point__ = Some(map_.next_value::<SocketTranslationPoint>()? as i32);
                        }
                        GeneratedField::SocketCookie => {
                            if socket_cookie__.is_some() {
                                return Err(serde::de::Error::duplicate_field("socketCookie"));
                            }
                            socket_cookie__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::CgroupId => {
                            if cgroup_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("cgroupId"));
                            }
                            cgroup_id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Summary => {
                            if summary__.is_some() {
                                return Err(serde::de::Error::duplicate_field("Summary"));
                            }
                            summary__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Extensions => {
                            if extensions__.is_some() {
                                return Err(serde::de::Error::duplicate_field("extensions"));
                            }
                            extensions__ = map_.next_value()?;
                        }
                        GeneratedField::EgressAllowedBy => {
                            if egress_allowed_by__.is_some() {
                                return Err(serde::de::Error::duplicate_field("egressAllowedBy"));
                            }
                            egress_allowed_by__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IngressAllowedBy => {
                            if ingress_allowed_by__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ingressAllowedBy"));
                            }
                            ingress_allowed_by__ = Some(map_.next_value()?);
                        }
                        GeneratedField::EgressDeniedBy => {
                            if egress_denied_by__.is_some() {
                                return Err(serde::de::Error::duplicate_field("egressDeniedBy"));
                            }
                            egress_denied_by__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IngressDeniedBy => {
                            if ingress_denied_by__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ingressDeniedBy"));
                            }
                            ingress_denied_by__ = Some(map_.next_value()?);
                        }
                        GeneratedField::PolicyLog => {
                            if policy_log__.is_some() {
                                return Err(serde::de::Error::duplicate_field("policyLog"));
                            }
                            policy_log__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Aggregate => {
                            if aggregate__.is_some() {
                                return Err(serde::de::Error::duplicate_field("aggregate"));
                            }
                            aggregate__ = map_.next_value()?;
                        }
                    }
                }
                Ok(Flow {
                    time: time__,
                    uuid: uuid__.unwrap_or_default(),
                    emitter: emitter__,
                    verdict: verdict__.unwrap_or_default(),
                    drop_reason: drop_reason__.unwrap_or_default(),
                    auth_type: auth_type__.unwrap_or_default(),
                    ethernet: ethernet__,
                    ip: ip__,
                    l4: l4__,
                    tunnel: tunnel__,
                    source: source__,
                    destination: destination__,
                    r#type: r#type__.unwrap_or_default(),
                    node_name: node_name__.unwrap_or_default(),
                    node_labels: node_labels__.unwrap_or_default(),
                    source_names: source_names__.unwrap_or_default(),
                    destination_names: destination_names__.unwrap_or_default(),
                    l7: l7__,
                    reply: reply__.unwrap_or_default(),
                    event_type: event_type__,
                    source_service: source_service__,
                    destination_service: destination_service__,
                    traffic_direction: traffic_direction__.unwrap_or_default(),
                    policy_match_type: policy_match_type__.unwrap_or_default(),
                    trace_observation_point: trace_observation_point__.unwrap_or_default(),
                    trace_reason: trace_reason__.unwrap_or_default(),
                    file: file__,
                    ip_trace_id: ip_trace_id__,
                    drop_reason_desc: drop_reason_desc__.unwrap_or_default(),
                    is_reply: is_reply__,
                    debug_capture_point: debug_capture_point__.unwrap_or_default(),
                    interface: interface__,
                    proxy_port: proxy_port__.unwrap_or_default(),
                    trace_context: trace_context__,
                    sock_xlate_point: sock_xlate_point__.unwrap_or_default(),
                    socket_cookie: socket_cookie__.unwrap_or_default(),
                    cgroup_id: cgroup_id__.unwrap_or_default(),
                    summary: summary__.unwrap_or_default(),
                    extensions: extensions__,
                    egress_allowed_by: egress_allowed_by__.unwrap_or_default(),
                    ingress_allowed_by: ingress_allowed_by__.unwrap_or_default(),
                    egress_denied_by: egress_denied_by__.unwrap_or_default(),
                    ingress_denied_by: ingress_denied_by__.unwrap_or_default(),
                    policy_log: policy_log__.unwrap_or_default(),
                    aggregate: aggregate__,
                })
            }
        }
        deserializer.deserialize_struct("flow.Flow", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for FlowFilter {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.uuid.is_empty() {
            len += 1;
        }
        if !self.source_ip.is_empty() {
            len += 1;
        }
        if !self.source_ip_xlated.is_empty() {
            len += 1;
        }
        if !self.source_pod.is_empty() {
            len += 1;
        }
        if !self.source_fqdn.is_empty() {
            len += 1;
        }
        if !self.source_label.is_empty() {
            len += 1;
        }
        if !self.source_service.is_empty() {
            len += 1;
        }
        if !self.source_workload.is_empty() {
            len += 1;
        }
        if !self.source_cluster_name.is_empty() {
            len += 1;
        }
        if !self.destination_ip.is_empty() {
            len += 1;
        }
        if !self.destination_pod.is_empty() {
            len += 1;
        }
        if !self.destination_fqdn.is_empty() {
            len += 1;
        }
        if !self.destination_label.is_empty() {
            len += 1;
        }
        if !self.destination_service.is_empty() {
            len += 1;
        }
        if !self.destination_workload.is_empty() {
            len += 1;
        }
        if !self.destination_cluster_name.is_empty() {
            len += 1;
        }
        if !self.traffic_direction.is_empty() {
            len += 1;
        }
        if !self.verdict.is_empty() {
            len += 1;
        }
        if !self.drop_reason_desc.is_empty() {
            len += 1;
        }
        if !self.interface.is_empty() {
            len += 1;
        }
        if !self.event_type.is_empty() {
            len += 1;
        }
        if !self.http_status_code.is_empty() {
            len += 1;
        }
        if !self.protocol.is_empty() {
            len += 1;
        }
        if !self.source_port.is_empty() {
            len += 1;
        }
        if !self.destination_port.is_empty() {
            len += 1;
        }
        if !self.reply.is_empty() {
            len += 1;
        }
        if !self.dns_query.is_empty() {
            len += 1;
        }
        if !self.source_identity.is_empty() {
            len += 1;
        }
        if !self.destination_identity.is_empty() {
            len += 1;
        }
        if !self.http_method.is_empty() {
            len += 1;
        }
        if !self.http_path.is_empty() {
            len += 1;
        }
        if !self.http_url.is_empty() {
            len += 1;
        }
        if !self.http_header.is_empty() {
            len += 1;
        }
        if !self.tcp_flags.is_empty() {
            len += 1;
        }
        if !self.node_name.is_empty() {
            len += 1;
        }
        if !self.node_labels.is_empty() {
            len += 1;
        }
        if !self.ip_version.is_empty() {
            len += 1;
        }
        if !self.trace_id.is_empty() {
            len += 1;
        }
        if !self.ip_trace_id.is_empty() {
            len += 1;
        }
        if !self.encrypted.is_empty() {
            len += 1;
        }
        if self.experimental.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.FlowFilter", len)?;
        if !self.uuid.is_empty() {
            struct_ser.serialize_field("uuid", &self.uuid)?;
        }
        if !self.source_ip.is_empty() {
            struct_ser.serialize_field("source_ip", &self.source_ip)?;
        }
        if !self.source_ip_xlated.is_empty() {
            struct_ser.serialize_field("source_ip_xlated", &self.source_ip_xlated)?;
        }
        if !self.source_pod.is_empty() {
            struct_ser.serialize_field("source_pod", &self.source_pod)?;
        }
        if !self.source_fqdn.is_empty() {
            struct_ser.serialize_field("source_fqdn", &self.source_fqdn)?;
        }
        if !self.source_label.is_empty() {
            struct_ser.serialize_field("source_label", &self.source_label)?;
        }
        if !self.source_service.is_empty() {
            struct_ser.serialize_field("source_service", &self.source_service)?;
        }
        if !self.source_workload.is_empty() {
            struct_ser.serialize_field("source_workload", &self.source_workload)?;
        }
        if !self.source_cluster_name.is_empty() {
            struct_ser.serialize_field("source_cluster_name", &self.source_cluster_name)?;
        }
        if !self.destination_ip.is_empty() {
            struct_ser.serialize_field("destination_ip", &self.destination_ip)?;
        }
        if !self.destination_pod.is_empty() {
            struct_ser.serialize_field("destination_pod", &self.destination_pod)?;
        }
        if !self.destination_fqdn.is_empty() {
            struct_ser.serialize_field("destination_fqdn", &self.destination_fqdn)?;
        }
        if !self.destination_label.is_empty() {
            struct_ser.serialize_field("destination_label", &self.destination_label)?;
        }
        if !self.destination_service.is_empty() {
            struct_ser.serialize_field("destination_service", &self.destination_service)?;
        }
        if !self.destination_workload.is_empty() {
            struct_ser.serialize_field("destination_workload", &self.destination_workload)?;
        }
        if !self.destination_cluster_name.is_empty() {
            struct_ser.serialize_field("destination_cluster_name", &self.destination_cluster_name)?;
        }
        if !self.traffic_direction.is_empty() {
            let v = self.traffic_direction.iter().cloned().map(|v| {
                TrafficDirection::try_from(v)
                    .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", v)))
                }).collect::<std::result::Result<Vec<_>, _>>()?;
            struct_ser.serialize_field("traffic_direction", &v)?;
        }
        if !self.verdict.is_empty() {
            let v = self.verdict.iter().cloned().map(|v| {
                Verdict::try_from(v)
                    .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", v)))
                }).collect::<std::result::Result<Vec<_>, _>>()?;
            struct_ser.serialize_field("verdict", &v)?;
        }
        if !self.drop_reason_desc.is_empty() {
            let v = self.drop_reason_desc.iter().cloned().map(|v| {
                DropReason::try_from(v)
                    .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", v)))
                }).collect::<std::result::Result<Vec<_>, _>>()?;
            struct_ser.serialize_field("drop_reason_desc", &v)?;
        }
        if !self.interface.is_empty() {
            struct_ser.serialize_field("interface", &self.interface)?;
        }
        if !self.event_type.is_empty() {
            struct_ser.serialize_field("event_type", &self.event_type)?;
        }
        if !self.http_status_code.is_empty() {
            struct_ser.serialize_field("http_status_code", &self.http_status_code)?;
        }
        if !self.protocol.is_empty() {
            struct_ser.serialize_field("protocol", &self.protocol)?;
        }
        if !self.source_port.is_empty() {
            struct_ser.serialize_field("source_port", &self.source_port)?;
        }
        if !self.destination_port.is_empty() {
            struct_ser.serialize_field("destination_port", &self.destination_port)?;
        }
        if !self.reply.is_empty() {
            struct_ser.serialize_field("reply", &self.reply)?;
        }
        if !self.dns_query.is_empty() {
            struct_ser.serialize_field("dns_query", &self.dns_query)?;
        }
        if !self.source_identity.is_empty() {
            struct_ser.serialize_field("source_identity", &self.source_identity)?;
        }
        if !self.destination_identity.is_empty() {
            struct_ser.serialize_field("destination_identity", &self.destination_identity)?;
        }
        if !self.http_method.is_empty() {
            struct_ser.serialize_field("http_method", &self.http_method)?;
        }
        if !self.http_path.is_empty() {
            struct_ser.serialize_field("http_path", &self.http_path)?;
        }
        if !self.http_url.is_empty() {
            struct_ser.serialize_field("http_url", &self.http_url)?;
        }
        if !self.http_header.is_empty() {
            struct_ser.serialize_field("http_header", &self.http_header)?;
        }
        if !self.tcp_flags.is_empty() {
            struct_ser.serialize_field("tcp_flags", &self.tcp_flags)?;
        }
        if !self.node_name.is_empty() {
            struct_ser.serialize_field("node_name", &self.node_name)?;
        }
        if !self.node_labels.is_empty() {
            struct_ser.serialize_field("node_labels", &self.node_labels)?;
        }
        if !self.ip_version.is_empty() {
            let v = self.ip_version.iter().cloned().map(|v| {
                IpVersion::try_from(v)
                    .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", v)))
                }).collect::<std::result::Result<Vec<_>, _>>()?;
            struct_ser.serialize_field("ip_version", &v)?;
        }
        if !self.trace_id.is_empty() {
            struct_ser.serialize_field("trace_id", &self.trace_id)?;
        }
        if !self.ip_trace_id.is_empty() {
            struct_ser.serialize_field("ip_trace_id", &self.ip_trace_id.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        }
        if !self.encrypted.is_empty() {
            struct_ser.serialize_field("encrypted", &self.encrypted)?;
        }
        if let Some(v) = self.experimental.as_ref() {
            struct_ser.serialize_field("experimental", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for FlowFilter {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "uuid",
            "source_ip",
            "sourceIp",
            "source_ip_xlated",
            "sourceIpXlated",
            "source_pod",
            "sourcePod",
            "source_fqdn",
            "sourceFqdn",
            "source_label",
            "sourceLabel",
            "source_service",
            "sourceService",
            "source_workload",
            "sourceWorkload",
            "source_cluster_name",
            "sourceClusterName",
            "destination_ip",
            "destinationIp",
            "destination_pod",
            "destinationPod",
            "destination_fqdn",
            "destinationFqdn",
            "destination_label",
            "destinationLabel",
            "destination_service",
            "destinationService",
            "destination_workload",
            "destinationWorkload",
            "destination_cluster_name",
            "destinationClusterName",
            "traffic_direction",
            "trafficDirection",
            "verdict",
            "drop_reason_desc",
            "dropReasonDesc",
            "interface",
            "event_type",
            "eventType",
            "http_status_code",
            "httpStatusCode",
            "protocol",
            "source_port",
            "sourcePort",
            "destination_port",
            "destinationPort",
            "reply",
            "dns_query",
            "dnsQuery",
            "source_identity",
            "sourceIdentity",
            "destination_identity",
            "destinationIdentity",
            "http_method",
            "httpMethod",
            "http_path",
            "httpPath",
            "http_url",
            "httpUrl",
            "http_header",
            "httpHeader",
            "tcp_flags",
            "tcpFlags",
            "node_name",
            "nodeName",
            "node_labels",
            "nodeLabels",
            "ip_version",
            "ipVersion",
            "trace_id",
            "traceId",
            "ip_trace_id",
            "ipTraceId",
            "encrypted",
            "experimental",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Uuid,
            SourceIp,
            SourceIpXlated,
            SourcePod,
            SourceFqdn,
            SourceLabel,
            SourceService,
            SourceWorkload,
            SourceClusterName,
            DestinationIp,
            DestinationPod,
            DestinationFqdn,
            DestinationLabel,
            DestinationService,
            DestinationWorkload,
            DestinationClusterName,
            TrafficDirection,
            Verdict,
            DropReasonDesc,
            Interface,
            EventType,
            HttpStatusCode,
            Protocol,
            SourcePort,
            DestinationPort,
            Reply,
            DnsQuery,
            SourceIdentity,
            DestinationIdentity,
            HttpMethod,
            HttpPath,
            HttpUrl,
            HttpHeader,
            TcpFlags,
            NodeName,
            NodeLabels,
            IpVersion,
            TraceId,
            IpTraceId,
            Encrypted,
            Experimental,
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
                            "uuid" => Ok(GeneratedField::Uuid),
                            "sourceIp" | "source_ip" => Ok(GeneratedField::SourceIp),
                            "sourceIpXlated" | "source_ip_xlated" => Ok(GeneratedField::SourceIpXlated),
                            "sourcePod" | "source_pod" => Ok(GeneratedField::SourcePod),
                            "sourceFqdn" | "source_fqdn" => Ok(GeneratedField::SourceFqdn),
                            "sourceLabel" | "source_label" => Ok(GeneratedField::SourceLabel),
                            "sourceService" | "source_service" => Ok(GeneratedField::SourceService),
                            "sourceWorkload" | "source_workload" => Ok(GeneratedField::SourceWorkload),
                            "sourceClusterName" | "source_cluster_name" => Ok(GeneratedField::SourceClusterName),
                            "destinationIp" | "destination_ip" => Ok(GeneratedField::DestinationIp),
                            "destinationPod" | "destination_pod" => Ok(GeneratedField::DestinationPod),
                            "destinationFqdn" | "destination_fqdn" => Ok(GeneratedField::DestinationFqdn),
                            "destinationLabel" | "destination_label" => Ok(GeneratedField::DestinationLabel),
                            "destinationService" | "destination_service" => Ok(GeneratedField::DestinationService),
                            "destinationWorkload" | "destination_workload" => Ok(GeneratedField::DestinationWorkload),
                            "destinationClusterName" | "destination_cluster_name" => Ok(GeneratedField::DestinationClusterName),
                            "trafficDirection" | "traffic_direction" => Ok(GeneratedField::TrafficDirection),
                            "verdict" => Ok(GeneratedField::Verdict),
                            "dropReasonDesc" | "drop_reason_desc" => Ok(GeneratedField::DropReasonDesc),
                            "interface" => Ok(GeneratedField::Interface),
                            "eventType" | "event_type" => Ok(GeneratedField::EventType),
                            "httpStatusCode" | "http_status_code" => Ok(GeneratedField::HttpStatusCode),
                            "protocol" => Ok(GeneratedField::Protocol),
                            "sourcePort" | "source_port" => Ok(GeneratedField::SourcePort),
                            "destinationPort" | "destination_port" => Ok(GeneratedField::DestinationPort),
                            "reply" => Ok(GeneratedField::Reply),
                            "dnsQuery" | "dns_query" => Ok(GeneratedField::DnsQuery),
                            "sourceIdentity" | "source_identity" => Ok(GeneratedField::SourceIdentity),
                            "destinationIdentity" | "destination_identity" => Ok(GeneratedField::DestinationIdentity),
                            "httpMethod" | "http_method" => Ok(GeneratedField::HttpMethod),
                            "httpPath" | "http_path" => Ok(GeneratedField::HttpPath),
                            "httpUrl" | "http_url" => Ok(GeneratedField::HttpUrl),
                            "httpHeader" | "http_header" => Ok(GeneratedField::HttpHeader),
                            "tcpFlags" | "tcp_flags" => Ok(GeneratedField::TcpFlags),
                            "nodeName" | "node_name" => Ok(GeneratedField::NodeName),
                            "nodeLabels" | "node_labels" => Ok(GeneratedField::NodeLabels),
                            "ipVersion" | "ip_version" => Ok(GeneratedField::IpVersion),
                            "traceId" | "trace_id" => Ok(GeneratedField::TraceId),
                            "ipTraceId" | "ip_trace_id" => Ok(GeneratedField::IpTraceId),
                            "encrypted" => Ok(GeneratedField::Encrypted),
                            "experimental" => Ok(GeneratedField::Experimental),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = FlowFilter;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.FlowFilter")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<FlowFilter, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut uuid__ = None;
                let mut source_ip__ = None;
                let mut source_ip_xlated__ = None;
                let mut source_pod__ = None;
                let mut source_fqdn__ = None;
                let mut source_label__ = None;
                let mut source_service__ = None;
                let mut source_workload__ = None;
                let mut source_cluster_name__ = None;
                let mut destination_ip__ = None;
                let mut destination_pod__ = None;
                let mut destination_fqdn__ = None;
                let mut destination_label__ = None;
                let mut destination_service__ = None;
                let mut destination_workload__ = None;
                let mut destination_cluster_name__ = None;
                let mut traffic_direction__ = None;
                let mut verdict__ = None;
                let mut drop_reason_desc__ = None;
                let mut interface__ = None;
                let mut event_type__ = None;
                let mut http_status_code__ = None;
                let mut protocol__ = None;
                let mut source_port__ = None;
                let mut destination_port__ = None;
                let mut reply__ = None;
                let mut dns_query__ = None;
                let mut source_identity__ = None;
                let mut destination_identity__ = None;
                let mut http_method__ = None;
                let mut http_path__ = None;
                let mut http_url__ = None;
                let mut http_header__ = None;
                let mut tcp_flags__ = None;
                let mut node_name__ = None;
                let mut node_labels__ = None;
                let mut ip_version__ = None;
                let mut trace_id__ = None;
                let mut ip_trace_id__ = None;
                let mut encrypted__ = None;
                let mut experimental__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Uuid => {
                            if uuid__.is_some() {
                                return Err(serde::de::Error::duplicate_field("uuid"));
                            }
                            uuid__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceIp => {
                            if source_ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceIp"));
                            }
                            source_ip__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceIpXlated => {
                            if source_ip_xlated__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceIpXlated"));
                            }
                            source_ip_xlated__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourcePod => {
                            if source_pod__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePod"));
                            }
                            source_pod__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceFqdn => {
                            if source_fqdn__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceFqdn"));
                            }
                            source_fqdn__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceLabel => {
                            if source_label__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceLabel"));
                            }
                            source_label__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceService => {
                            if source_service__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceService"));
                            }
                            source_service__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceWorkload => {
                            if source_workload__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceWorkload"));
                            }
                            source_workload__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceClusterName => {
                            if source_cluster_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceClusterName"));
                            }
                            source_cluster_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationIp => {
                            if destination_ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationIp"));
                            }
                            destination_ip__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationPod => {
                            if destination_pod__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationPod"));
                            }
                            destination_pod__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationFqdn => {
                            if destination_fqdn__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationFqdn"));
                            }
                            destination_fqdn__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationLabel => {
                            if destination_label__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationLabel"));
                            }
                            destination_label__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationService => {
                            if destination_service__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationService"));
                            }
                            destination_service__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationWorkload => {
                            if destination_workload__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationWorkload"));
                            }
                            destination_workload__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationClusterName => {
                            if destination_cluster_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationClusterName"));
                            }
                            destination_cluster_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::TrafficDirection => {
                            if traffic_direction__.is_some() {
                                return Err(serde::de::Error::duplicate_field("trafficDirection"));
                            }
                            traffic_direction__ = Some(map_.next_value::<Vec<TrafficDirection>>()?.into_iter().map(|x| x as i32).collect());
                        }
                        GeneratedField::Verdict => {
                            if verdict__.is_some() {
                                return Err(serde::de::Error::duplicate_field("verdict"));
                            }
                            verdict__ = Some(map_.next_value::<Vec<Verdict>>()?.into_iter().map(|x| x as i32).collect());
                        }
                        GeneratedField::DropReasonDesc => {
                            if drop_reason_desc__.is_some() {
                                return Err(serde::de::Error::duplicate_field("dropReasonDesc"));
                            }
                            drop_reason_desc__ = Some(map_.next_value::<Vec<DropReason>>()?.into_iter().map(|x| x as i32).collect());
                        }
                        GeneratedField::Interface => {
                            if interface__.is_some() {
                                return Err(serde::de::Error::duplicate_field("interface"));
                            }
                            interface__ = Some(map_.next_value()?);
                        }
                        GeneratedField::EventType => {
                            if event_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("eventType"));
                            }
                            event_type__ = Some(map_.next_value()?);
                        }
                        GeneratedField::HttpStatusCode => {
                            if http_status_code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("httpStatusCode"));
                            }
                            http_status_code__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Protocol => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("protocol"));
                            }
                            protocol__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourcePort => {
                            if source_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePort"));
                            }
                            source_port__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DestinationPort => {
                            if destination_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationPort"));
                            }
                            destination_port__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Reply => {
                            if reply__.is_some() {
                                return Err(serde::de::Error::duplicate_field("reply"));
                            }
                            reply__ = Some(map_.next_value()?);
                        }
                        GeneratedField::DnsQuery => {
                            if dns_query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("dnsQuery"));
                            }
                            dns_query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceIdentity => {
                            if source_identity__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceIdentity"));
                            }
                            source_identity__ = 
                                Some(map_.next_value::<Vec<::pbjson::private::NumberDeserialize<_>>>()?
                                    .into_iter().map(|x| x.0).collect())
                            ;
                        }
                        GeneratedField::DestinationIdentity => {
                            if destination_identity__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationIdentity"));
                            }
                            destination_identity__ = 
                                Some(map_.next_value::<Vec<::pbjson::private::NumberDeserialize<_>>>()?
                                    .into_iter().map(|x| x.0).collect())
                            ;
                        }
                        GeneratedField::HttpMethod => {
                            if http_method__.is_some() {
                                return Err(serde::de::Error::duplicate_field("httpMethod"));
                            }
                            http_method__ = Some(map_.next_value()?);
                        }
                        GeneratedField::HttpPath => {
                            if http_path__.is_some() {
                                return Err(serde::de::Error::duplicate_field("httpPath"));
                            }
                            http_path__ = Some(map_.next_value()?);
                        }
                        GeneratedField::HttpUrl => {
                            if http_url__.is_some() {
                                return Err(serde::de::Error::duplicate_field("httpUrl"));
                            }
                            http_url__ = Some(map_.next_value()?);
                        }
                        GeneratedField::HttpHeader => {
                            if http_header__.is_some() {
                                return Err(serde::de::Error::duplicate_field("httpHeader"));
                            }
                            http_header__ = Some(map_.next_value()?);
                        }
                        GeneratedField::TcpFlags => {
                            if tcp_flags__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tcpFlags"));
                            }
                            tcp_flags__ = Some(map_.next_value()?);
                        }
                        GeneratedField::NodeName => {
                            if node_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("nodeName"));
                            }
                            node_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::NodeLabels => {
                            if node_labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("nodeLabels"));
                            }
                            node_labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IpVersion => {
                            if ip_version__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipVersion"));
                            }
                            ip_version__ = Some(map_.next_value::<Vec<IpVersion>>()?.into_iter().map(|x| x as i32).collect());
                        }
                        GeneratedField::TraceId => {
                            if trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceId"));
                            }
                            trace_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IpTraceId => {
                            if ip_trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipTraceId"));
                            }
                            ip_trace_id__ = 
                                Some(map_.next_value::<Vec<::pbjson::private::NumberDeserialize<_>>>()?
                                    .into_iter().map(|x| x.0).collect())
                            ;
                        }
                        GeneratedField::Encrypted => {
                            if encrypted__.is_some() {
                                return Err(serde::de::Error::duplicate_field("encrypted"));
                            }
                            encrypted__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Experimental => {
                            if experimental__.is_some() {
                                return Err(serde::de::Error::duplicate_field("experimental"));
                            }
                            experimental__ = map_.next_value()?;
                        }
                    }
                }
                Ok(FlowFilter {
                    uuid: uuid__.unwrap_or_default(),
                    source_ip: source_ip__.unwrap_or_default(),
                    source_ip_xlated: source_ip_xlated__.unwrap_or_default(),
                    source_pod: source_pod__.unwrap_or_default(),
                    source_fqdn: source_fqdn__.unwrap_or_default(),
                    source_label: source_label__.unwrap_or_default(),
                    source_service: source_service__.unwrap_or_default(),
                    source_workload: source_workload__.unwrap_or_default(),
                    source_cluster_name: source_cluster_name__.unwrap_or_default(),
                    destination_ip: destination_ip__.unwrap_or_default(),
                    destination_pod: destination_pod__.unwrap_or_default(),
                    destination_fqdn: destination_fqdn__.unwrap_or_default(),
                    destination_label: destination_label__.unwrap_or_default(),
                    destination_service: destination_service__.unwrap_or_default(),
                    destination_workload: destination_workload__.unwrap_or_default(),
                    destination_cluster_name: destination_cluster_name__.unwrap_or_default(),
                    traffic_direction: traffic_direction__.unwrap_or_default(),
                    verdict: verdict__.unwrap_or_default(),
                    drop_reason_desc: drop_reason_desc__.unwrap_or_default(),
                    interface: interface__.unwrap_or_default(),
                    event_type: event_type__.unwrap_or_default(),
                    http_status_code: http_status_code__.unwrap_or_default(),
                    protocol: protocol__.unwrap_or_default(),
                    source_port: source_port__.unwrap_or_default(),
                    destination_port: destination_port__.unwrap_or_default(),
                    reply: reply__.unwrap_or_default(),
                    dns_query: dns_query__.unwrap_or_default(),
                    source_identity: source_identity__.unwrap_or_default(),
                    destination_identity: destination_identity__.unwrap_or_default(),
                    http_method: http_method__.unwrap_or_default(),
                    http_path: http_path__.unwrap_or_default(),
                    http_url: http_url__.unwrap_or_default(),
                    http_header: http_header__.unwrap_or_default(),
                    tcp_flags: tcp_flags__.unwrap_or_default(),
                    node_name: node_name__.unwrap_or_default(),
                    node_labels: node_labels__.unwrap_or_default(),
                    ip_version: ip_version__.unwrap_or_default(),
                    trace_id: trace_id__.unwrap_or_default(),
                    ip_trace_id: ip_trace_id__.unwrap_or_default(),
                    encrypted: encrypted__.unwrap_or_default(),
                    experimental: experimental__,
                })
            }
        }
        deserializer.deserialize_struct("flow.FlowFilter", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for flow_filter::Experimental {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.cel_expression.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.FlowFilter.Experimental", len)?;
        if !self.cel_expression.is_empty() {
            struct_ser.serialize_field("cel_expression", &self.cel_expression)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for flow_filter::Experimental {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "cel_expression",
            "celExpression",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            CelExpression,
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
                            "celExpression" | "cel_expression" => Ok(GeneratedField::CelExpression),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = flow_filter::Experimental;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.FlowFilter.Experimental")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<flow_filter::Experimental, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut cel_expression__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::CelExpression => {
                            if cel_expression__.is_some() {
                                return Err(serde::de::Error::duplicate_field("celExpression"));
                            }
                            cel_expression__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(flow_filter::Experimental {
                    cel_expression: cel_expression__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.FlowFilter.Experimental", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for FlowType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::L3L4 => "L3_L4",
            Self::L7 => "L7",
            Self::Sock => "SOCK",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for FlowType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN_TYPE",
            "L3_L4",
            "L7",
            "SOCK",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = FlowType;

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
                    "UNKNOWN_TYPE" => Ok(FlowType::UnknownType),
                    "L3_L4" => Ok(FlowType::L3L4),
                    "L7" => Ok(FlowType::L7),
                    "SOCK" => Ok(FlowType::Sock),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Http {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.code != 0 {
            len += 1;
        }
        if !self.method.is_empty() {
            len += 1;
        }
        if !self.url.is_empty() {
            len += 1;
        }
        if !self.protocol.is_empty() {
            len += 1;
        }
        if !self.headers.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.HTTP", len)?;
        if self.code != 0 {
            struct_ser.serialize_field("code", &self.code)?;
        }
        if !self.method.is_empty() {
            struct_ser.serialize_field("method", &self.method)?;
        }
        if !self.url.is_empty() {
            struct_ser.serialize_field("url", &self.url)?;
        }
        if !self.protocol.is_empty() {
            struct_ser.serialize_field("protocol", &self.protocol)?;
        }
        if !self.headers.is_empty() {
            struct_ser.serialize_field("headers", &self.headers)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Http {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "code",
            "method",
            "url",
            "protocol",
            "headers",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Code,
            Method,
            Url,
            Protocol,
            Headers,
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
                            "code" => Ok(GeneratedField::Code),
                            "method" => Ok(GeneratedField::Method),
                            "url" => Ok(GeneratedField::Url),
                            "protocol" => Ok(GeneratedField::Protocol),
                            "headers" => Ok(GeneratedField::Headers),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Http;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.HTTP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Http, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut code__ = None;
                let mut method__ = None;
                let mut url__ = None;
                let mut protocol__ = None;
                let mut headers__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Code => {
                            if code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("code"));
                            }
                            code__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Method => {
                            if method__.is_some() {
                                return Err(serde::de::Error::duplicate_field("method"));
                            }
                            method__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Url => {
                            if url__.is_some() {
                                return Err(serde::de::Error::duplicate_field("url"));
                            }
                            url__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Protocol => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("protocol"));
                            }
                            protocol__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Headers => {
                            if headers__.is_some() {
                                return Err(serde::de::Error::duplicate_field("headers"));
                            }
                            headers__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Http {
                    code: code__.unwrap_or_default(),
                    method: method__.unwrap_or_default(),
                    url: url__.unwrap_or_default(),
                    protocol: protocol__.unwrap_or_default(),
                    headers: headers__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.HTTP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for HttpHeader {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.key.is_empty() {
            len += 1;
        }
        if !self.value.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.HTTPHeader", len)?;
        if !self.key.is_empty() {
            struct_ser.serialize_field("key", &self.key)?;
        }
        if !self.value.is_empty() {
            struct_ser.serialize_field("value", &self.value)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for HttpHeader {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "key",
            "value",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Key,
            Value,
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
                            "key" => Ok(GeneratedField::Key),
                            "value" => Ok(GeneratedField::Value),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = HttpHeader;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.HTTPHeader")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<HttpHeader, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut key__ = None;
                let mut value__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Key => {
                            if key__.is_some() {
                                return Err(serde::de::Error::duplicate_field("key"));
                            }
                            key__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Value => {
                            if value__.is_some() {
                                return Err(serde::de::Error::duplicate_field("value"));
                            }
                            value__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(HttpHeader {
                    key: key__.unwrap_or_default(),
                    value: value__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.HTTPHeader", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for IcmPv4 {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.code != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.ICMPv4", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if self.code != 0 {
            struct_ser.serialize_field("code", &self.code)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for IcmPv4 {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "code",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Code,
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
                            "type" => Ok(GeneratedField::Type),
                            "code" => Ok(GeneratedField::Code),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = IcmPv4;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.ICMPv4")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<IcmPv4, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut code__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Code => {
                            if code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("code"));
                            }
                            code__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(IcmPv4 {
                    r#type: r#type__.unwrap_or_default(),
                    code: code__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.ICMPv4", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for IcmPv6 {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.code != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.ICMPv6", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if self.code != 0 {
            struct_ser.serialize_field("code", &self.code)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for IcmPv6 {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "code",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Code,
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
                            "type" => Ok(GeneratedField::Type),
                            "code" => Ok(GeneratedField::Code),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = IcmPv6;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.ICMPv6")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<IcmPv6, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut code__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Code => {
                            if code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("code"));
                            }
                            code__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(IcmPv6 {
                    r#type: r#type__.unwrap_or_default(),
                    code: code__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.ICMPv6", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Igmp {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if !self.group_address.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.IGMP", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if !self.group_address.is_empty() {
            struct_ser.serialize_field("group_address", &self.group_address)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Igmp {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "group_address",
            "groupAddress",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            GroupAddress,
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
                            "type" => Ok(GeneratedField::Type),
                            "groupAddress" | "group_address" => Ok(GeneratedField::GroupAddress),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Igmp;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.IGMP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Igmp, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut group_address__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::GroupAddress => {
                            if group_address__.is_some() {
                                return Err(serde::de::Error::duplicate_field("groupAddress"));
                            }
                            group_address__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Igmp {
                    r#type: r#type__.unwrap_or_default(),
                    group_address: group_address__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.IGMP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Ip {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.source.is_empty() {
            len += 1;
        }
        if !self.source_xlated.is_empty() {
            len += 1;
        }
        if !self.destination.is_empty() {
            len += 1;
        }
        if self.ip_version != 0 {
            len += 1;
        }
        if self.encrypted {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.IP", len)?;
        if !self.source.is_empty() {
            struct_ser.serialize_field("source", &self.source)?;
        }
        if !self.source_xlated.is_empty() {
            struct_ser.serialize_field("source_xlated", &self.source_xlated)?;
        }
        if !self.destination.is_empty() {
            struct_ser.serialize_field("destination", &self.destination)?;
        }
        if self.ip_version != 0 {
            let v = IpVersion::try_from(self.ip_version)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.ip_version)))?;
            struct_ser.serialize_field("ipVersion", &v)?;
        }
        if self.encrypted {
            struct_ser.serialize_field("encrypted", &self.encrypted)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Ip {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source",
            "source_xlated",
            "sourceXlated",
            "destination",
            "ipVersion",
            "encrypted",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Source,
            SourceXlated,
            Destination,
            IpVersion,
            Encrypted,
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
                            "source" => Ok(GeneratedField::Source),
                            "sourceXlated" | "source_xlated" => Ok(GeneratedField::SourceXlated),
                            "destination" => Ok(GeneratedField::Destination),
                            "ipVersion" => Ok(GeneratedField::IpVersion),
                            "encrypted" => Ok(GeneratedField::Encrypted),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Ip;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.IP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Ip, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source__ = None;
                let mut source_xlated__ = None;
                let mut destination__ = None;
                let mut ip_version__ = None;
                let mut encrypted__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Source => {
                            if source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("source"));
                            }
                            source__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SourceXlated => {
                            if source_xlated__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourceXlated"));
                            }
                            source_xlated__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Destination => {
                            if destination__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destination"));
                            }
                            destination__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IpVersion => {
                            if ip_version__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipVersion"));
                            }
                            ip_version__ = Some(map_.next_value::<IpVersion>()? as i32);
                        }
                        GeneratedField::Encrypted => {
                            if encrypted__.is_some() {
                                return Err(serde::de::Error::duplicate_field("encrypted"));
                            }
                            encrypted__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Ip {
                    source: source__.unwrap_or_default(),
                    source_xlated: source_xlated__.unwrap_or_default(),
                    destination: destination__.unwrap_or_default(),
                    ip_version: ip_version__.unwrap_or_default(),
                    encrypted: encrypted__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.IP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for IpCacheNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.cidr.is_empty() {
            len += 1;
        }
        if self.identity != 0 {
            len += 1;
        }
        if self.old_identity.is_some() {
            len += 1;
        }
        if !self.host_ip.is_empty() {
            len += 1;
        }
        if !self.old_host_ip.is_empty() {
            len += 1;
        }
        if self.encrypt_key != 0 {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        if !self.pod_name.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.IPCacheNotification", len)?;
        if !self.cidr.is_empty() {
            struct_ser.serialize_field("cidr", &self.cidr)?;
        }
        if self.identity != 0 {
            struct_ser.serialize_field("identity", &self.identity)?;
        }
        if let Some(v) = self.old_identity.as_ref() {
            struct_ser.serialize_field("old_identity", v)?;
        }
        if !self.host_ip.is_empty() {
            struct_ser.serialize_field("host_ip", &self.host_ip)?;
        }
        if !self.old_host_ip.is_empty() {
            struct_ser.serialize_field("old_host_ip", &self.old_host_ip)?;
        }
        if self.encrypt_key != 0 {
            struct_ser.serialize_field("encrypt_key", &self.encrypt_key)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        if !self.pod_name.is_empty() {
            struct_ser.serialize_field("pod_name", &self.pod_name)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for IpCacheNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "cidr",
            "identity",
            "old_identity",
            "oldIdentity",
            "host_ip",
            "hostIp",
            "old_host_ip",
            "oldHostIp",
            "encrypt_key",
            "encryptKey",
            "namespace",
            "pod_name",
            "podName",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Cidr,
            Identity,
            OldIdentity,
            HostIp,
            OldHostIp,
            EncryptKey,
            Namespace,
            PodName,
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
                            "cidr" => Ok(GeneratedField::Cidr),
                            "identity" => Ok(GeneratedField::Identity),
                            "oldIdentity" | "old_identity" => Ok(GeneratedField::OldIdentity),
                            "hostIp" | "host_ip" => Ok(GeneratedField::HostIp),
                            "oldHostIp" | "old_host_ip" => Ok(GeneratedField::OldHostIp),
                            "encryptKey" | "encrypt_key" => Ok(GeneratedField::EncryptKey),
                            "namespace" => Ok(GeneratedField::Namespace),
                            "podName" | "pod_name" => Ok(GeneratedField::PodName),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = IpCacheNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.IPCacheNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<IpCacheNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut cidr__ = None;
                let mut identity__ = None;
                let mut old_identity__ = None;
                let mut host_ip__ = None;
                let mut old_host_ip__ = None;
                let mut encrypt_key__ = None;
                let mut namespace__ = None;
                let mut pod_name__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Cidr => {
                            if cidr__.is_some() {
                                return Err(serde::de::Error::duplicate_field("cidr"));
                            }
                            cidr__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Identity => {
                            if identity__.is_some() {
                                return Err(serde::de::Error::duplicate_field("identity"));
                            }
                            identity__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::OldIdentity => {
                            if old_identity__.is_some() {
                                return Err(serde::de::Error::duplicate_field("oldIdentity"));
                            }
                            old_identity__ = map_.next_value()?;
                        }
                        GeneratedField::HostIp => {
                            if host_ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("hostIp"));
                            }
                            host_ip__ = Some(map_.next_value()?);
                        }
                        GeneratedField::OldHostIp => {
                            if old_host_ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("oldHostIp"));
                            }
                            old_host_ip__ = Some(map_.next_value()?);
                        }
                        GeneratedField::EncryptKey => {
                            if encrypt_key__.is_some() {
                                return Err(serde::de::Error::duplicate_field("encryptKey"));
                            }
                            encrypt_key__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                        GeneratedField::PodName => {
                            if pod_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("podName"));
                            }
                            pod_name__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(IpCacheNotification {
                    cidr: cidr__.unwrap_or_default(),
                    identity: identity__.unwrap_or_default(),
                    old_identity: old_identity__,
                    host_ip: host_ip__.unwrap_or_default(),
                    old_host_ip: old_host_ip__.unwrap_or_default(),
                    encrypt_key: encrypt_key__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                    pod_name: pod_name__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.IPCacheNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for IpTraceId {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.trace_id != 0 {
            len += 1;
        }
        if self.ip_option_type != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.IPTraceID", len)?;
        if self.trace_id != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("trace_id", ToString::to_string(&self.trace_id).as_str())?;
        }
        if self.ip_option_type != 0 {
            struct_ser.serialize_field("ip_option_type", &self.ip_option_type)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for IpTraceId {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "trace_id",
            "traceId",
            "ip_option_type",
            "ipOptionType",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TraceId,
            IpOptionType,
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
                            "traceId" | "trace_id" => Ok(GeneratedField::TraceId),
                            "ipOptionType" | "ip_option_type" => Ok(GeneratedField::IpOptionType),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = IpTraceId;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.IPTraceID")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<IpTraceId, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut trace_id__ = None;
                let mut ip_option_type__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TraceId => {
                            if trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceId"));
                            }
                            trace_id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::IpOptionType => {
                            if ip_option_type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ipOptionType"));
                            }
                            ip_option_type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(IpTraceId {
                    trace_id: trace_id__.unwrap_or_default(),
                    ip_option_type: ip_option_type__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.IPTraceID", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for IpVersion {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::IpNotUsed => "IP_NOT_USED",
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for IpVersion {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "IP_NOT_USED",
            "IPv4",
            "IPv6",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = IpVersion;

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
                    "IP_NOT_USED" => Ok(IpVersion::IpNotUsed),
                    "IPv4" => Ok(IpVersion::IPv4),
                    "IPv6" => Ok(IpVersion::IPv6),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Kafka {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.error_code != 0 {
            len += 1;
        }
        if self.api_version != 0 {
            len += 1;
        }
        if !self.api_key.is_empty() {
            len += 1;
        }
        if self.correlation_id != 0 {
            len += 1;
        }
        if !self.topic.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Kafka", len)?;
        if self.error_code != 0 {
            struct_ser.serialize_field("error_code", &self.error_code)?;
        }
        if self.api_version != 0 {
            struct_ser.serialize_field("api_version", &self.api_version)?;
        }
        if !self.api_key.is_empty() {
            struct_ser.serialize_field("api_key", &self.api_key)?;
        }
        if self.correlation_id != 0 {
            struct_ser.serialize_field("correlation_id", &self.correlation_id)?;
        }
        if !self.topic.is_empty() {
            struct_ser.serialize_field("topic", &self.topic)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Kafka {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "error_code",
            "errorCode",
            "api_version",
            "apiVersion",
            "api_key",
            "apiKey",
            "correlation_id",
            "correlationId",
            "topic",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            ErrorCode,
            ApiVersion,
            ApiKey,
            CorrelationId,
            Topic,
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
                            "errorCode" | "error_code" => Ok(GeneratedField::ErrorCode),
                            "apiVersion" | "api_version" => Ok(GeneratedField::ApiVersion),
                            "apiKey" | "api_key" => Ok(GeneratedField::ApiKey),
                            "correlationId" | "correlation_id" => Ok(GeneratedField::CorrelationId),
                            "topic" => Ok(GeneratedField::Topic),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Kafka;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Kafka")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Kafka, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut error_code__ = None;
                let mut api_version__ = None;
                let mut api_key__ = None;
                let mut correlation_id__ = None;
                let mut topic__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::ErrorCode => {
                            if error_code__.is_some() {
                                return Err(serde::de::Error::duplicate_field("errorCode"));
                            }
                            error_code__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::ApiVersion => {
                            if api_version__.is_some() {
                                return Err(serde::de::Error::duplicate_field("apiVersion"));
                            }
                            api_version__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::ApiKey => {
                            if api_key__.is_some() {
                                return Err(serde::de::Error::duplicate_field("apiKey"));
                            }
                            api_key__ = Some(map_.next_value()?);
                        }
                        GeneratedField::CorrelationId => {
                            if correlation_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("correlationId"));
                            }
                            correlation_id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Topic => {
                            if topic__.is_some() {
                                return Err(serde::de::Error::duplicate_field("topic"));
                            }
                            topic__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Kafka {
                    error_code: error_code__.unwrap_or_default(),
                    api_version: api_version__.unwrap_or_default(),
                    api_key: api_key__.unwrap_or_default(),
                    correlation_id: correlation_id__.unwrap_or_default(),
                    topic: topic__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Kafka", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for L7FlowType {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::UnknownL7Type => "UNKNOWN_L7_TYPE",
            Self::Request => "REQUEST",
            Self::Response => "RESPONSE",
            Self::Sample => "SAMPLE",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for L7FlowType {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN_L7_TYPE",
            "REQUEST",
            "RESPONSE",
            "SAMPLE",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = L7FlowType;

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
                    "UNKNOWN_L7_TYPE" => Ok(L7FlowType::UnknownL7Type),
                    "REQUEST" => Ok(L7FlowType::Request),
                    "RESPONSE" => Ok(L7FlowType::Response),
                    "SAMPLE" => Ok(L7FlowType::Sample),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Layer4 {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.protocol.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Layer4", len)?;
        if let Some(v) = self.protocol.as_ref() {
            match v {
                layer4::Protocol::Tcp(v) => {
                    struct_ser.serialize_field("TCP", v)?;
                }
                layer4::Protocol::Udp(v) => {
                    struct_ser.serialize_field("UDP", v)?;
                }
                layer4::Protocol::IcmPv4(v) => {
                    struct_ser.serialize_field("ICMPv4", v)?;
                }
                layer4::Protocol::IcmPv6(v) => {
                    struct_ser.serialize_field("ICMPv6", v)?;
                }
                layer4::Protocol::Sctp(v) => {
                    struct_ser.serialize_field("SCTP", v)?;
                }
                layer4::Protocol::Vrrp(v) => {
                    struct_ser.serialize_field("VRRP", v)?;
                }
                layer4::Protocol::Igmp(v) => {
                    struct_ser.serialize_field("IGMP", v)?;
                }
            }
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Layer4 {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "TCP",
            "UDP",
            "ICMPv4",
            "ICMPv6",
            "SCTP",
            "VRRP",
            "IGMP",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Tcp,
            Udp,
            IcmPv4,
            IcmPv6,
            Sctp,
            Vrrp,
            Igmp,
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
                            "TCP" => Ok(GeneratedField::Tcp),
                            "UDP" => Ok(GeneratedField::Udp),
                            "ICMPv4" => Ok(GeneratedField::IcmPv4),
                            "ICMPv6" => Ok(GeneratedField::IcmPv6),
                            "SCTP" => Ok(GeneratedField::Sctp),
                            "VRRP" => Ok(GeneratedField::Vrrp),
                            "IGMP" => Ok(GeneratedField::Igmp),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Layer4;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Layer4")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Layer4, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut protocol__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Tcp => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("TCP"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::Tcp)
;
                        }
                        GeneratedField::Udp => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("UDP"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::Udp)
;
                        }
                        GeneratedField::IcmPv4 => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ICMPv4"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::IcmPv4)
;
                        }
                        GeneratedField::IcmPv6 => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ICMPv6"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::IcmPv6)
;
                        }
                        GeneratedField::Sctp => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("SCTP"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::Sctp)
;
                        }
                        GeneratedField::Vrrp => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("VRRP"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::Vrrp)
;
                        }
                        GeneratedField::Igmp => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("IGMP"));
                            }
                            protocol__ = map_.next_value::<::std::option::Option<_>>()?.map(layer4::Protocol::Igmp)
;
                        }
                    }
                }
                Ok(Layer4 {
                    protocol: protocol__,
                })
            }
        }
        deserializer.deserialize_struct("flow.Layer4", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Layer7 {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.latency_ns != 0 {
            len += 1;
        }
        if self.record.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Layer7", len)?;
        if self.r#type != 0 {
            let v = L7FlowType::try_from(self.r#type)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.r#type)))?;
            struct_ser.serialize_field("type", &v)?;
        }
        if self.latency_ns != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("latency_ns", ToString::to_string(&self.latency_ns).as_str())?;
        }
        if let Some(v) = self.record.as_ref() {
            match v {
                layer7::Record::Dns(v) => {
                    struct_ser.serialize_field("dns", v)?;
                }
                layer7::Record::Http(v) => {
                    struct_ser.serialize_field("http", v)?;
                }
                layer7::Record::Kafka(v) => {
                    struct_ser.serialize_field("kafka", v)?;
                }
            }
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Layer7 {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "latency_ns",
            "latencyNs",
            "dns",
            "http",
            "kafka",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            LatencyNs,
            Dns,
            Http,
            Kafka,
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
                            "type" => Ok(GeneratedField::Type),
                            "latencyNs" | "latency_ns" => Ok(GeneratedField::LatencyNs),
                            "dns" => Ok(GeneratedField::Dns),
                            "http" => Ok(GeneratedField::Http),
                            "kafka" => Ok(GeneratedField::Kafka),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Layer7;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Layer7")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Layer7, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut latency_ns__ = None;
                let mut record__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value::<L7FlowType>()? as i32);
                        }
                        GeneratedField::LatencyNs => {
                            if latency_ns__.is_some() {
                                return Err(serde::de::Error::duplicate_field("latencyNs"));
                            }
                            latency_ns__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Dns => {
                            if record__.is_some() {
                                return Err(serde::de::Error::duplicate_field("dns"));
                            }
                            record__ = map_.next_value::<::std::option::Option<_>>()?.map(layer7::Record::Dns)
;
                        }
                        GeneratedField::Http => {
                            if record__.is_some() {
                                return Err(serde::de::Error::duplicate_field("http"));
                            }
                            record__ = map_.next_value::<::std::option::Option<_>>()?.map(layer7::Record::Http)
;
                        }
                        GeneratedField::Kafka => {
                            if record__.is_some() {
                                return Err(serde::de::Error::duplicate_field("kafka"));
                            }
                            record__ = map_.next_value::<::std::option::Option<_>>()?.map(layer7::Record::Kafka)
;
                        }
                    }
                }
                Ok(Layer7 {
                    r#type: r#type__.unwrap_or_default(),
                    latency_ns: latency_ns__.unwrap_or_default(),
                    record: record__,
                })
            }
        }
        deserializer.deserialize_struct("flow.Layer7", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for LostEvent {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.source != 0 {
            len += 1;
        }
        if self.num_events_lost != 0 {
            len += 1;
        }
        if self.cpu.is_some() {
            len += 1;
        }
        if self.first.is_some() {
            len += 1;
        }
        if self.last.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.LostEvent", len)?;
        if self.source != 0 {
            let v = LostEventSource::try_from(self.source)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.source)))?;
            struct_ser.serialize_field("source", &v)?;
        }
        if self.num_events_lost != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("num_events_lost", ToString::to_string(&self.num_events_lost).as_str())?;
        }
        if let Some(v) = self.cpu.as_ref() {
            struct_ser.serialize_field("cpu", v)?;
        }
        if let Some(v) = self.first.as_ref() {
            struct_ser.serialize_field("first", v)?;
        }
        if let Some(v) = self.last.as_ref() {
            struct_ser.serialize_field("last", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for LostEvent {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source",
            "num_events_lost",
            "numEventsLost",
            "cpu",
            "first",
            "last",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Source,
            NumEventsLost,
            Cpu,
            First,
            Last,
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
                            "source" => Ok(GeneratedField::Source),
                            "numEventsLost" | "num_events_lost" => Ok(GeneratedField::NumEventsLost),
                            "cpu" => Ok(GeneratedField::Cpu),
                            "first" => Ok(GeneratedField::First),
                            "last" => Ok(GeneratedField::Last),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = LostEvent;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.LostEvent")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<LostEvent, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source__ = None;
                let mut num_events_lost__ = None;
                let mut cpu__ = None;
                let mut first__ = None;
                let mut last__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Source => {
                            if source__.is_some() {
                                return Err(serde::de::Error::duplicate_field("source"));
                            }
                            source__ = Some(map_.next_value::<LostEventSource>()? as i32);
                        }
                        GeneratedField::NumEventsLost => {
                            if num_events_lost__.is_some() {
                                return Err(serde::de::Error::duplicate_field("numEventsLost"));
                            }
                            num_events_lost__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Cpu => {
                            if cpu__.is_some() {
                                return Err(serde::de::Error::duplicate_field("cpu"));
                            }
                            cpu__ = map_.next_value()?;
                        }
                        GeneratedField::First => {
                            if first__.is_some() {
                                return Err(serde::de::Error::duplicate_field("first"));
                            }
                            first__ = map_.next_value()?;
                        }
                        GeneratedField::Last => {
                            if last__.is_some() {
                                return Err(serde::de::Error::duplicate_field("last"));
                            }
                            last__ = map_.next_value()?;
                        }
                    }
                }
                Ok(LostEvent {
                    source: source__.unwrap_or_default(),
                    num_events_lost: num_events_lost__.unwrap_or_default(),
                    cpu: cpu__,
                    first: first__,
                    last: last__,
                })
            }
        }
        deserializer.deserialize_struct("flow.LostEvent", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for LostEventSource {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::UnknownLostEventSource => "UNKNOWN_LOST_EVENT_SOURCE",
            Self::PerfEventRingBuffer => "PERF_EVENT_RING_BUFFER",
            Self::ObserverEventsQueue => "OBSERVER_EVENTS_QUEUE",
            Self::HubbleRingBuffer => "HUBBLE_RING_BUFFER",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for LostEventSource {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN_LOST_EVENT_SOURCE",
            "PERF_EVENT_RING_BUFFER",
            "OBSERVER_EVENTS_QUEUE",
            "HUBBLE_RING_BUFFER",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = LostEventSource;

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
                    "UNKNOWN_LOST_EVENT_SOURCE" => Ok(LostEventSource::UnknownLostEventSource),
                    "PERF_EVENT_RING_BUFFER" => Ok(LostEventSource::PerfEventRingBuffer),
                    "OBSERVER_EVENTS_QUEUE" => Ok(LostEventSource::ObserverEventsQueue),
                    "HUBBLE_RING_BUFFER" => Ok(LostEventSource::HubbleRingBuffer),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for NetworkInterface {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.index != 0 {
            len += 1;
        }
        if !self.name.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.NetworkInterface", len)?;
        if self.index != 0 {
            struct_ser.serialize_field("index", &self.index)?;
        }
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for NetworkInterface {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "index",
            "name",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Index,
            Name,
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
                            "index" => Ok(GeneratedField::Index),
                            "name" => Ok(GeneratedField::Name),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = NetworkInterface;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.NetworkInterface")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<NetworkInterface, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut index__ = None;
                let mut name__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Index => {
                            if index__.is_some() {
                                return Err(serde::de::Error::duplicate_field("index"));
                            }
                            index__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(NetworkInterface {
                    index: index__.unwrap_or_default(),
                    name: name__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.NetworkInterface", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Policy {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        if !self.labels.is_empty() {
            len += 1;
        }
        if self.revision != 0 {
            len += 1;
        }
        if !self.kind.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Policy", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if self.revision != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("revision", ToString::to_string(&self.revision).as_str())?;
        }
        if !self.kind.is_empty() {
            struct_ser.serialize_field("kind", &self.kind)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Policy {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "namespace",
            "labels",
            "revision",
            "kind",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Namespace,
            Labels,
            Revision,
            Kind,
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
                            "name" => Ok(GeneratedField::Name),
                            "namespace" => Ok(GeneratedField::Namespace),
                            "labels" => Ok(GeneratedField::Labels),
                            "revision" => Ok(GeneratedField::Revision),
                            "kind" => Ok(GeneratedField::Kind),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Policy;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Policy")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Policy, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut namespace__ = None;
                let mut labels__ = None;
                let mut revision__ = None;
                let mut kind__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Revision => {
                            if revision__.is_some() {
                                return Err(serde::de::Error::duplicate_field("revision"));
                            }
                            revision__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Kind => {
                            if kind__.is_some() {
                                return Err(serde::de::Error::duplicate_field("kind"));
                            }
                            kind__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Policy {
                    name: name__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                    labels: labels__.unwrap_or_default(),
                    revision: revision__.unwrap_or_default(),
                    kind: kind__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Policy", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for PolicyUpdateNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.labels.is_empty() {
            len += 1;
        }
        if self.revision != 0 {
            len += 1;
        }
        if self.rule_count != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.PolicyUpdateNotification", len)?;
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if self.revision != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("revision", ToString::to_string(&self.revision).as_str())?;
        }
        if self.rule_count != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("rule_count", ToString::to_string(&self.rule_count).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for PolicyUpdateNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "labels",
            "revision",
            "rule_count",
            "ruleCount",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Labels,
            Revision,
            RuleCount,
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
                            "labels" => Ok(GeneratedField::Labels),
                            "revision" => Ok(GeneratedField::Revision),
                            "ruleCount" | "rule_count" => Ok(GeneratedField::RuleCount),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = PolicyUpdateNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.PolicyUpdateNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<PolicyUpdateNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut labels__ = None;
                let mut revision__ = None;
                let mut rule_count__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Revision => {
                            if revision__.is_some() {
                                return Err(serde::de::Error::duplicate_field("revision"));
                            }
                            revision__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::RuleCount => {
                            if rule_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ruleCount"));
                            }
                            rule_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(PolicyUpdateNotification {
                    labels: labels__.unwrap_or_default(),
                    revision: revision__.unwrap_or_default(),
                    rule_count: rule_count__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.PolicyUpdateNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Sctp {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.source_port != 0 {
            len += 1;
        }
        if self.destination_port != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.SCTP", len)?;
        if self.source_port != 0 {
            struct_ser.serialize_field("source_port", &self.source_port)?;
        }
        if self.destination_port != 0 {
            struct_ser.serialize_field("destination_port", &self.destination_port)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Sctp {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source_port",
            "sourcePort",
            "destination_port",
            "destinationPort",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            SourcePort,
            DestinationPort,
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
                            "sourcePort" | "source_port" => Ok(GeneratedField::SourcePort),
                            "destinationPort" | "destination_port" => Ok(GeneratedField::DestinationPort),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Sctp;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.SCTP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Sctp, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source_port__ = None;
                let mut destination_port__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::SourcePort => {
                            if source_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePort"));
                            }
                            source_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::DestinationPort => {
                            if destination_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationPort"));
                            }
                            destination_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Sctp {
                    source_port: source_port__.unwrap_or_default(),
                    destination_port: destination_port__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.SCTP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Service {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Service", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Service {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "namespace",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Namespace,
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
                            "name" => Ok(GeneratedField::Name),
                            "namespace" => Ok(GeneratedField::Namespace),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Service;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Service")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Service, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut namespace__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Service {
                    name: name__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Service", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for ServiceDeleteNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.id != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.ServiceDeleteNotification", len)?;
        if self.id != 0 {
            struct_ser.serialize_field("id", &self.id)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ServiceDeleteNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "id",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
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
                            "id" => Ok(GeneratedField::Id),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ServiceDeleteNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.ServiceDeleteNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ServiceDeleteNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("id"));
                            }
                            id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(ServiceDeleteNotification {
                    id: id__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.ServiceDeleteNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for ServiceUpsertNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.id != 0 {
            len += 1;
        }
        if self.frontend_address.is_some() {
            len += 1;
        }
        if !self.backend_addresses.is_empty() {
            len += 1;
        }
        if !self.r#type.is_empty() {
            len += 1;
        }
        if !self.traffic_policy.is_empty() {
            len += 1;
        }
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.namespace.is_empty() {
            len += 1;
        }
        if !self.ext_traffic_policy.is_empty() {
            len += 1;
        }
        if !self.int_traffic_policy.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.ServiceUpsertNotification", len)?;
        if self.id != 0 {
            struct_ser.serialize_field("id", &self.id)?;
        }
        if let Some(v) = self.frontend_address.as_ref() {
            struct_ser.serialize_field("frontend_address", v)?;
        }
        if !self.backend_addresses.is_empty() {
            struct_ser.serialize_field("backend_addresses", &self.backend_addresses)?;
        }
        if !self.r#type.is_empty() {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if !self.traffic_policy.is_empty() {
            struct_ser.serialize_field("traffic_policy", &self.traffic_policy)?;
        }
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.namespace.is_empty() {
            struct_ser.serialize_field("namespace", &self.namespace)?;
        }
        if !self.ext_traffic_policy.is_empty() {
            struct_ser.serialize_field("ext_traffic_policy", &self.ext_traffic_policy)?;
        }
        if !self.int_traffic_policy.is_empty() {
            struct_ser.serialize_field("int_traffic_policy", &self.int_traffic_policy)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ServiceUpsertNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "id",
            "frontend_address",
            "frontendAddress",
            "backend_addresses",
            "backendAddresses",
            "type",
            "traffic_policy",
            "trafficPolicy",
            "name",
            "namespace",
            "ext_traffic_policy",
            "extTrafficPolicy",
            "int_traffic_policy",
            "intTrafficPolicy",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Id,
            FrontendAddress,
            BackendAddresses,
            Type,
            TrafficPolicy,
            Name,
            Namespace,
            ExtTrafficPolicy,
            IntTrafficPolicy,
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
                            "id" => Ok(GeneratedField::Id),
                            "frontendAddress" | "frontend_address" => Ok(GeneratedField::FrontendAddress),
                            "backendAddresses" | "backend_addresses" => Ok(GeneratedField::BackendAddresses),
                            "type" => Ok(GeneratedField::Type),
                            "trafficPolicy" | "traffic_policy" => Ok(GeneratedField::TrafficPolicy),
                            "name" => Ok(GeneratedField::Name),
                            "namespace" => Ok(GeneratedField::Namespace),
                            "extTrafficPolicy" | "ext_traffic_policy" => Ok(GeneratedField::ExtTrafficPolicy),
                            "intTrafficPolicy" | "int_traffic_policy" => Ok(GeneratedField::IntTrafficPolicy),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ServiceUpsertNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.ServiceUpsertNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ServiceUpsertNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut id__ = None;
                let mut frontend_address__ = None;
                let mut backend_addresses__ = None;
                let mut r#type__ = None;
                let mut traffic_policy__ = None;
                let mut name__ = None;
                let mut namespace__ = None;
                let mut ext_traffic_policy__ = None;
                let mut int_traffic_policy__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Id => {
                            if id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("id"));
                            }
                            id__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::FrontendAddress => {
                            if frontend_address__.is_some() {
                                return Err(serde::de::Error::duplicate_field("frontendAddress"));
                            }
                            frontend_address__ = map_.next_value()?;
                        }
                        GeneratedField::BackendAddresses => {
                            if backend_addresses__.is_some() {
                                return Err(serde::de::Error::duplicate_field("backendAddresses"));
                            }
                            backend_addresses__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value()?);
                        }
                        GeneratedField::TrafficPolicy => {
                            if traffic_policy__.is_some() {
                                return Err(serde::de::Error::duplicate_field("trafficPolicy"));
                            }
                            traffic_policy__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Namespace => {
                            if namespace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("namespace"));
                            }
                            namespace__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ExtTrafficPolicy => {
                            if ext_traffic_policy__.is_some() {
                                return Err(serde::de::Error::duplicate_field("extTrafficPolicy"));
                            }
                            ext_traffic_policy__ = Some(map_.next_value()?);
                        }
                        GeneratedField::IntTrafficPolicy => {
                            if int_traffic_policy__.is_some() {
                                return Err(serde::de::Error::duplicate_field("intTrafficPolicy"));
                            }
                            int_traffic_policy__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(ServiceUpsertNotification {
                    id: id__.unwrap_or_default(),
                    frontend_address: frontend_address__,
                    backend_addresses: backend_addresses__.unwrap_or_default(),
                    r#type: r#type__.unwrap_or_default(),
                    traffic_policy: traffic_policy__.unwrap_or_default(),
                    name: name__.unwrap_or_default(),
                    namespace: namespace__.unwrap_or_default(),
                    ext_traffic_policy: ext_traffic_policy__.unwrap_or_default(),
                    int_traffic_policy: int_traffic_policy__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.ServiceUpsertNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for ServiceUpsertNotificationAddr {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.ip.is_empty() {
            len += 1;
        }
        if self.port != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.ServiceUpsertNotificationAddr", len)?;
        if !self.ip.is_empty() {
            struct_ser.serialize_field("ip", &self.ip)?;
        }
        if self.port != 0 {
            struct_ser.serialize_field("port", &self.port)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ServiceUpsertNotificationAddr {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "ip",
            "port",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Ip,
            Port,
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
                            "ip" => Ok(GeneratedField::Ip),
                            "port" => Ok(GeneratedField::Port),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ServiceUpsertNotificationAddr;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.ServiceUpsertNotificationAddr")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ServiceUpsertNotificationAddr, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut ip__ = None;
                let mut port__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Ip => {
                            if ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ip"));
                            }
                            ip__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Port => {
                            if port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("port"));
                            }
                            port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(ServiceUpsertNotificationAddr {
                    ip: ip__.unwrap_or_default(),
                    port: port__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.ServiceUpsertNotificationAddr", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SocketTranslationPoint {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::SockXlatePointUnknown => "SOCK_XLATE_POINT_UNKNOWN",
            Self::SockXlatePointPreDirectionFwd => "SOCK_XLATE_POINT_PRE_DIRECTION_FWD",
            Self::SockXlatePointPostDirectionFwd => "SOCK_XLATE_POINT_POST_DIRECTION_FWD",
            Self::SockXlatePointPreDirectionRev => "SOCK_XLATE_POINT_PRE_DIRECTION_REV",
            Self::SockXlatePointPostDirectionRev => "SOCK_XLATE_POINT_POST_DIRECTION_REV",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for SocketTranslationPoint {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "SOCK_XLATE_POINT_UNKNOWN",
            "SOCK_XLATE_POINT_PRE_DIRECTION_FWD",
            "SOCK_XLATE_POINT_POST_DIRECTION_FWD",
            "SOCK_XLATE_POINT_PRE_DIRECTION_REV",
            "SOCK_XLATE_POINT_POST_DIRECTION_REV",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = SocketTranslationPoint;

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
                    "SOCK_XLATE_POINT_UNKNOWN" => Ok(SocketTranslationPoint::SockXlatePointUnknown),
                    "SOCK_XLATE_POINT_PRE_DIRECTION_FWD" => Ok(SocketTranslationPoint::SockXlatePointPreDirectionFwd),
                    "SOCK_XLATE_POINT_POST_DIRECTION_FWD" => Ok(SocketTranslationPoint::SockXlatePointPostDirectionFwd),
                    "SOCK_XLATE_POINT_PRE_DIRECTION_REV" => Ok(SocketTranslationPoint::SockXlatePointPreDirectionRev),
                    "SOCK_XLATE_POINT_POST_DIRECTION_REV" => Ok(SocketTranslationPoint::SockXlatePointPostDirectionRev),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Tcp {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.source_port != 0 {
            len += 1;
        }
        if self.destination_port != 0 {
            len += 1;
        }
        if self.flags.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.TCP", len)?;
        if self.source_port != 0 {
            struct_ser.serialize_field("source_port", &self.source_port)?;
        }
        if self.destination_port != 0 {
            struct_ser.serialize_field("destination_port", &self.destination_port)?;
        }
        if let Some(v) = self.flags.as_ref() {
            struct_ser.serialize_field("flags", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Tcp {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source_port",
            "sourcePort",
            "destination_port",
            "destinationPort",
            "flags",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            SourcePort,
            DestinationPort,
            Flags,
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
                            "sourcePort" | "source_port" => Ok(GeneratedField::SourcePort),
                            "destinationPort" | "destination_port" => Ok(GeneratedField::DestinationPort),
                            "flags" => Ok(GeneratedField::Flags),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Tcp;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.TCP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Tcp, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source_port__ = None;
                let mut destination_port__ = None;
                let mut flags__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::SourcePort => {
                            if source_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePort"));
                            }
                            source_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::DestinationPort => {
                            if destination_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationPort"));
                            }
                            destination_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Flags => {
                            if flags__.is_some() {
                                return Err(serde::de::Error::duplicate_field("flags"));
                            }
                            flags__ = map_.next_value()?;
                        }
                    }
                }
                Ok(Tcp {
                    source_port: source_port__.unwrap_or_default(),
                    destination_port: destination_port__.unwrap_or_default(),
                    flags: flags__,
                })
            }
        }
        deserializer.deserialize_struct("flow.TCP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TcpFlags {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.fin {
            len += 1;
        }
        if self.syn {
            len += 1;
        }
        if self.rst {
            len += 1;
        }
        if self.psh {
            len += 1;
        }
        if self.ack {
            len += 1;
        }
        if self.urg {
            len += 1;
        }
        if self.ece {
            len += 1;
        }
        if self.cwr {
            len += 1;
        }
        if self.ns {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.TCPFlags", len)?;
        if self.fin {
            struct_ser.serialize_field("FIN", &self.fin)?;
        }
        if self.syn {
            struct_ser.serialize_field("SYN", &self.syn)?;
        }
        if self.rst {
            struct_ser.serialize_field("RST", &self.rst)?;
        }
        if self.psh {
            struct_ser.serialize_field("PSH", &self.psh)?;
        }
        if self.ack {
            struct_ser.serialize_field("ACK", &self.ack)?;
        }
        if self.urg {
            struct_ser.serialize_field("URG", &self.urg)?;
        }
        if self.ece {
            struct_ser.serialize_field("ECE", &self.ece)?;
        }
        if self.cwr {
            struct_ser.serialize_field("CWR", &self.cwr)?;
        }
        if self.ns {
            struct_ser.serialize_field("NS", &self.ns)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TcpFlags {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "FIN",
            "SYN",
            "RST",
            "PSH",
            "ACK",
            "URG",
            "ECE",
            "CWR",
            "NS",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Fin,
            Syn,
            Rst,
            Psh,
            Ack,
            Urg,
            Ece,
            Cwr,
            Ns,
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
                            "FIN" => Ok(GeneratedField::Fin),
                            "SYN" => Ok(GeneratedField::Syn),
                            "RST" => Ok(GeneratedField::Rst),
                            "PSH" => Ok(GeneratedField::Psh),
                            "ACK" => Ok(GeneratedField::Ack),
                            "URG" => Ok(GeneratedField::Urg),
                            "ECE" => Ok(GeneratedField::Ece),
                            "CWR" => Ok(GeneratedField::Cwr),
                            "NS" => Ok(GeneratedField::Ns),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TcpFlags;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.TCPFlags")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TcpFlags, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut fin__ = None;
                let mut syn__ = None;
                let mut rst__ = None;
                let mut psh__ = None;
                let mut ack__ = None;
                let mut urg__ = None;
                let mut ece__ = None;
                let mut cwr__ = None;
                let mut ns__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Fin => {
                            if fin__.is_some() {
                                return Err(serde::de::Error::duplicate_field("FIN"));
                            }
                            fin__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Syn => {
                            if syn__.is_some() {
                                return Err(serde::de::Error::duplicate_field("SYN"));
                            }
                            syn__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Rst => {
                            if rst__.is_some() {
                                return Err(serde::de::Error::duplicate_field("RST"));
                            }
                            rst__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Psh => {
                            if psh__.is_some() {
                                return Err(serde::de::Error::duplicate_field("PSH"));
                            }
                            psh__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Ack => {
                            if ack__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ACK"));
                            }
                            ack__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Urg => {
                            if urg__.is_some() {
                                return Err(serde::de::Error::duplicate_field("URG"));
                            }
                            urg__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Ece => {
                            if ece__.is_some() {
                                return Err(serde::de::Error::duplicate_field("ECE"));
                            }
                            ece__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Cwr => {
                            if cwr__.is_some() {
                                return Err(serde::de::Error::duplicate_field("CWR"));
                            }
                            cwr__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Ns => {
                            if ns__.is_some() {
                                return Err(serde::de::Error::duplicate_field("NS"));
                            }
                            ns__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(TcpFlags {
                    fin: fin__.unwrap_or_default(),
                    syn: syn__.unwrap_or_default(),
                    rst: rst__.unwrap_or_default(),
                    psh: psh__.unwrap_or_default(),
                    ack: ack__.unwrap_or_default(),
                    urg: urg__.unwrap_or_default(),
                    ece: ece__.unwrap_or_default(),
                    cwr: cwr__.unwrap_or_default(),
                    ns: ns__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.TCPFlags", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TimeNotification {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.time.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.TimeNotification", len)?;
        if let Some(v) = self.time.as_ref() {
            struct_ser.serialize_field("time", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TimeNotification {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "time",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Time,
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
                            "time" => Ok(GeneratedField::Time),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TimeNotification;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.TimeNotification")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TimeNotification, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut time__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Time => {
                            if time__.is_some() {
                                return Err(serde::de::Error::duplicate_field("time"));
                            }
                            time__ = map_.next_value()?;
                        }
                    }
                }
                Ok(TimeNotification {
                    time: time__,
                })
            }
        }
        deserializer.deserialize_struct("flow.TimeNotification", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TraceContext {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.parent.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.TraceContext", len)?;
        if let Some(v) = self.parent.as_ref() {
            struct_ser.serialize_field("parent", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TraceContext {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "parent",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Parent,
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
                            "parent" => Ok(GeneratedField::Parent),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TraceContext;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.TraceContext")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TraceContext, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut parent__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Parent => {
                            if parent__.is_some() {
                                return Err(serde::de::Error::duplicate_field("parent"));
                            }
                            parent__ = map_.next_value()?;
                        }
                    }
                }
                Ok(TraceContext {
                    parent: parent__,
                })
            }
        }
        deserializer.deserialize_struct("flow.TraceContext", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TraceObservationPoint {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::UnknownPoint => "UNKNOWN_POINT",
            Self::ToProxy => "TO_PROXY",
            Self::ToHost => "TO_HOST",
            Self::ToStack => "TO_STACK",
            Self::ToOverlay => "TO_OVERLAY",
            Self::ToEndpoint => "TO_ENDPOINT",
            Self::FromEndpoint => "FROM_ENDPOINT",
            Self::FromProxy => "FROM_PROXY",
            Self::FromHost => "FROM_HOST",
            Self::FromStack => "FROM_STACK",
            Self::FromOverlay => "FROM_OVERLAY",
            Self::FromNetwork => "FROM_NETWORK",
            Self::ToNetwork => "TO_NETWORK",
            Self::FromCrypto => "FROM_CRYPTO",
            Self::ToCrypto => "TO_CRYPTO",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for TraceObservationPoint {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN_POINT",
            "TO_PROXY",
            "TO_HOST",
            "TO_STACK",
            "TO_OVERLAY",
            "TO_ENDPOINT",
            "FROM_ENDPOINT",
            "FROM_PROXY",
            "FROM_HOST",
            "FROM_STACK",
            "FROM_OVERLAY",
            "FROM_NETWORK",
            "TO_NETWORK",
            "FROM_CRYPTO",
            "TO_CRYPTO",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = TraceObservationPoint;

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
                    "UNKNOWN_POINT" => Ok(TraceObservationPoint::UnknownPoint),
                    "TO_PROXY" => Ok(TraceObservationPoint::ToProxy),
                    "TO_HOST" => Ok(TraceObservationPoint::ToHost),
                    "TO_STACK" => Ok(TraceObservationPoint::ToStack),
                    "TO_OVERLAY" => Ok(TraceObservationPoint::ToOverlay),
                    "TO_ENDPOINT" => Ok(TraceObservationPoint::ToEndpoint),
                    "FROM_ENDPOINT" => Ok(TraceObservationPoint::FromEndpoint),
                    "FROM_PROXY" => Ok(TraceObservationPoint::FromProxy),
                    "FROM_HOST" => Ok(TraceObservationPoint::FromHost),
                    "FROM_STACK" => Ok(TraceObservationPoint::FromStack),
                    "FROM_OVERLAY" => Ok(TraceObservationPoint::FromOverlay),
                    "FROM_NETWORK" => Ok(TraceObservationPoint::FromNetwork),
                    "TO_NETWORK" => Ok(TraceObservationPoint::ToNetwork),
                    "FROM_CRYPTO" => Ok(TraceObservationPoint::FromCrypto),
                    "TO_CRYPTO" => Ok(TraceObservationPoint::ToCrypto),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for TraceParent {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.trace_id.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.TraceParent", len)?;
        if !self.trace_id.is_empty() {
            struct_ser.serialize_field("trace_id", &self.trace_id)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TraceParent {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "trace_id",
            "traceId",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TraceId,
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
                            "traceId" | "trace_id" => Ok(GeneratedField::TraceId),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TraceParent;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.TraceParent")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TraceParent, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut trace_id__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TraceId => {
                            if trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceId"));
                            }
                            trace_id__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(TraceParent {
                    trace_id: trace_id__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.TraceParent", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TraceReason {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "TRACE_REASON_UNKNOWN",
            Self::New => "NEW",
            Self::Established => "ESTABLISHED",
            Self::Reply => "REPLY",
            Self::Related => "RELATED",
            Self::Reopened => "REOPENED",
            Self::Srv6Encap => "SRV6_ENCAP",
            Self::Srv6Decap => "SRV6_DECAP",
            Self::EncryptOverlay => "ENCRYPT_OVERLAY",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for TraceReason {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "TRACE_REASON_UNKNOWN",
            "NEW",
            "ESTABLISHED",
            "REPLY",
            "RELATED",
            "REOPENED",
            "SRV6_ENCAP",
            "SRV6_DECAP",
            "ENCRYPT_OVERLAY",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = TraceReason;

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
                    "TRACE_REASON_UNKNOWN" => Ok(TraceReason::Unknown),
                    "NEW" => Ok(TraceReason::New),
                    "ESTABLISHED" => Ok(TraceReason::Established),
                    "REPLY" => Ok(TraceReason::Reply),
                    "RELATED" => Ok(TraceReason::Related),
                    "REOPENED" => Ok(TraceReason::Reopened),
                    "SRV6_ENCAP" => Ok(TraceReason::Srv6Encap),
                    "SRV6_DECAP" => Ok(TraceReason::Srv6Decap),
                    "ENCRYPT_OVERLAY" => Ok(TraceReason::EncryptOverlay),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for TrafficDirection {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "TRAFFIC_DIRECTION_UNKNOWN",
            Self::Ingress => "INGRESS",
            Self::Egress => "EGRESS",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for TrafficDirection {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "TRAFFIC_DIRECTION_UNKNOWN",
            "INGRESS",
            "EGRESS",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = TrafficDirection;

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
                    "TRAFFIC_DIRECTION_UNKNOWN" => Ok(TrafficDirection::Unknown),
                    "INGRESS" => Ok(TrafficDirection::Ingress),
                    "EGRESS" => Ok(TrafficDirection::Egress),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Tunnel {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.protocol != 0 {
            len += 1;
        }
        if self.ip.is_some() {
            len += 1;
        }
        if self.l4.is_some() {
            len += 1;
        }
        if self.vni != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Tunnel", len)?;
        if self.protocol != 0 {
            let v = tunnel::Protocol::try_from(self.protocol)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.protocol)))?;
            struct_ser.serialize_field("protocol", &v)?;
        }
        if let Some(v) = self.ip.as_ref() {
            struct_ser.serialize_field("IP", v)?;
        }
        if let Some(v) = self.l4.as_ref() {
            struct_ser.serialize_field("l4", v)?;
        }
        if self.vni != 0 {
            struct_ser.serialize_field("vni", &self.vni)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Tunnel {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "protocol",
            "IP",
            "l4",
            "vni",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Protocol,
            Ip,
            L4,
            Vni,
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
                            "protocol" => Ok(GeneratedField::Protocol),
                            "IP" => Ok(GeneratedField::Ip),
                            "l4" => Ok(GeneratedField::L4),
                            "vni" => Ok(GeneratedField::Vni),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Tunnel;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Tunnel")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Tunnel, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut protocol__ = None;
                let mut ip__ = None;
                let mut l4__ = None;
                let mut vni__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Protocol => {
                            if protocol__.is_some() {
                                return Err(serde::de::Error::duplicate_field("protocol"));
                            }
                            protocol__ = Some(map_.next_value::<tunnel::Protocol>()? as i32);
                        }
                        GeneratedField::Ip => {
                            if ip__.is_some() {
                                return Err(serde::de::Error::duplicate_field("IP"));
                            }
                            ip__ = map_.next_value()?;
                        }
                        GeneratedField::L4 => {
                            if l4__.is_some() {
                                return Err(serde::de::Error::duplicate_field("l4"));
                            }
                            l4__ = map_.next_value()?;
                        }
                        GeneratedField::Vni => {
                            if vni__.is_some() {
                                return Err(serde::de::Error::duplicate_field("vni"));
                            }
                            vni__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Tunnel {
                    protocol: protocol__.unwrap_or_default(),
                    ip: ip__,
                    l4: l4__,
                    vni: vni__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Tunnel", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for tunnel::Protocol {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "UNKNOWN",
            Self::Vxlan => "VXLAN",
            Self::Geneve => "GENEVE",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for tunnel::Protocol {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "UNKNOWN",
            "VXLAN",
            "GENEVE",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = tunnel::Protocol;

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
                    "UNKNOWN" => Ok(tunnel::Protocol::Unknown),
                    "VXLAN" => Ok(tunnel::Protocol::Vxlan),
                    "GENEVE" => Ok(tunnel::Protocol::Geneve),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Udp {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.source_port != 0 {
            len += 1;
        }
        if self.destination_port != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.UDP", len)?;
        if self.source_port != 0 {
            struct_ser.serialize_field("source_port", &self.source_port)?;
        }
        if self.destination_port != 0 {
            struct_ser.serialize_field("destination_port", &self.destination_port)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Udp {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "source_port",
            "sourcePort",
            "destination_port",
            "destinationPort",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            SourcePort,
            DestinationPort,
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
                            "sourcePort" | "source_port" => Ok(GeneratedField::SourcePort),
                            "destinationPort" | "destination_port" => Ok(GeneratedField::DestinationPort),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Udp;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.UDP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Udp, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut source_port__ = None;
                let mut destination_port__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::SourcePort => {
                            if source_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("sourcePort"));
                            }
                            source_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::DestinationPort => {
                            if destination_port__.is_some() {
                                return Err(serde::de::Error::duplicate_field("destinationPort"));
                            }
                            destination_port__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Udp {
                    source_port: source_port__.unwrap_or_default(),
                    destination_port: destination_port__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.UDP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Vrrp {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.r#type != 0 {
            len += 1;
        }
        if self.vrid != 0 {
            len += 1;
        }
        if self.priority != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.VRRP", len)?;
        if self.r#type != 0 {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if self.vrid != 0 {
            struct_ser.serialize_field("vrid", &self.vrid)?;
        }
        if self.priority != 0 {
            struct_ser.serialize_field("priority", &self.priority)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Vrrp {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "vrid",
            "priority",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Vrid,
            Priority,
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
                            "type" => Ok(GeneratedField::Type),
                            "vrid" => Ok(GeneratedField::Vrid),
                            "priority" => Ok(GeneratedField::Priority),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Vrrp;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.VRRP")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Vrrp, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut vrid__ = None;
                let mut priority__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Vrid => {
                            if vrid__.is_some() {
                                return Err(serde::de::Error::duplicate_field("vrid"));
                            }
                            vrid__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Priority => {
                            if priority__.is_some() {
                                return Err(serde::de::Error::duplicate_field("priority"));
                            }
                            priority__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Vrrp {
                    r#type: r#type__.unwrap_or_default(),
                    vrid: vrid__.unwrap_or_default(),
                    priority: priority__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.VRRP", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Verdict {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Unknown => "VERDICT_UNKNOWN",
            Self::Forwarded => "FORWARDED",
            Self::Dropped => "DROPPED",
            Self::Error => "ERROR",
            Self::Audit => "AUDIT",
            Self::Redirected => "REDIRECTED",
            Self::Traced => "TRACED",
            Self::Translated => "TRANSLATED",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for Verdict {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "VERDICT_UNKNOWN",
            "FORWARDED",
            "DROPPED",
            "ERROR",
            "AUDIT",
            "REDIRECTED",
            "TRACED",
            "TRANSLATED",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = Verdict;

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
                    "VERDICT_UNKNOWN" => Ok(Verdict::Unknown),
                    "FORWARDED" => Ok(Verdict::Forwarded),
                    "DROPPED" => Ok(Verdict::Dropped),
                    "ERROR" => Ok(Verdict::Error),
                    "AUDIT" => Ok(Verdict::Audit),
                    "REDIRECTED" => Ok(Verdict::Redirected),
                    "TRACED" => Ok(Verdict::Traced),
                    "TRANSLATED" => Ok(Verdict::Translated),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for Workload {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.kind.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("flow.Workload", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.kind.is_empty() {
            struct_ser.serialize_field("kind", &self.kind)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Workload {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "kind",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Kind,
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
                            "name" => Ok(GeneratedField::Name),
                            "kind" => Ok(GeneratedField::Kind),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Workload;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct flow.Workload")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Workload, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut kind__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Kind => {
                            if kind__.is_some() {
                                return Err(serde::de::Error::duplicate_field("kind"));
                            }
                            kind__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Workload {
                    name: name__.unwrap_or_default(),
                    kind: kind__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("flow.Workload", FIELDS, GeneratedVisitor)
    }
}
