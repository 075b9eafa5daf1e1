//! Refusals of bad input. Each names the field path and the reason.

use serde::Serialize;
use std::fmt;

/// What the refusal maps to in the seed's response shape (`http_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RejectKind {
    /// 400: the body is malformed or a field is invalid.
    BadRequest,
    /// 403: the caller may not do this (signature, policy).
    Forbidden,
}

impl RejectKind {
    pub fn http_code(self) -> u16 {
        match self {
            RejectKind::BadRequest => 400,
            RejectKind::Forbidden => 403,
        }
    }
}

/// A refused command: `field` is a JSON path such as `list[0].src[2].relofftime`
/// (empty for the body as a whole), `reason` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct FieldError {
    pub kind: RejectKind,
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            kind: RejectKind::BadRequest,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

/// Builds `a.b[3].c` paths while walking a body.
#[derive(Debug, Clone, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }
    pub fn key(&self, k: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(k.to_owned())
        } else {
            FieldPath(format!("{}.{k}", self.0))
        }
    }
    pub fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }
    pub fn err(&self, reason: impl Into<String>) -> FieldError {
        FieldError::new(self.0.clone(), reason)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
