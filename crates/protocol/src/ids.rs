//! Newtype ids: `VmId` (chosen by operators, validated) and `SessionId` (128 random bits, hex).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::validate::ValidationError;

/// Name of a VM, as operators write it in URLs: 1..=64 of `[A-Za-z0-9._-]`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct VmId(String);

impl VmId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if s.is_empty() || s.len() > Self::MAX_LEN || s.starts_with('.') || !s.chars().all(ok_char)
        {
            return Err(ValidationError::new(
                "vmId",
                "must be 1 to 64 characters of A-Z a-z 0-9 . _ - and not start with '.'",
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for VmId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for VmId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VmId::new(s).map_err(serde::de::Error::custom)
    }
}

/// A signalling session: one viewer's peer connection to one VM. 32 lowercase hex digits
/// (128 random bits), so that it cannot be guessed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh id from the operating system's random source.
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "sessionId",
                "must be 32 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_are_validated() {
        assert!(VmId::new("demo").is_ok());
        assert!(VmId::new("ci-runner_7.eu").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(VmId::new(bad).is_err(), "{bad:?} should be refused");
        }
        let err = serde_json::from_str::<VmId>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("vmId"), "{err}");
    }

    #[test]
    fn session_ids_are_random_and_parse_back() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()), Ok(a.clone()));
        assert!(SessionId::parse("ABCDEF").is_err());
        assert!(SessionId::parse(&"g".repeat(32)).is_err());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<SessionId>(&json).unwrap(), a);
    }
}

#[cfg(feature = "openapi")]
mod openapi {
    //! The ids' OpenAPI schemas: strings with the pattern their parsers check.
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    fn string(pattern: &str, min: usize, max: usize, example: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .min_length(Some(min))
            .max_length(Some(max))
            .examples([example])
            .into()
    }

    impl utoipa::PartialSchema for super::VmId {
        fn schema() -> RefOr<Schema> {
            string("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$", 1, 64, "demo")
        }
    }
    impl utoipa::ToSchema for super::VmId {}

    impl utoipa::PartialSchema for super::SessionId {
        fn schema() -> RefOr<Schema> {
            string("^[0-9a-f]{32}$", 32, 32, "0123456789abcdef0123456789abcdef")
        }
    }
    impl utoipa::ToSchema for super::SessionId {}
}
