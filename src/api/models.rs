//! Wire models of the JSM organization API, shaped to survive real payloads.
//!
//! Owns serde types for requests and responses only. It must not carry
//! business rules or snapshot shapes (see `model`): the API drifts (ids as
//! strings, optional fields, renamed lists) and every tolerance lives here.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// An organization as the API returns it. `id` is a JSON string on the wire
/// (an integer in paths and bodies); both spellings are accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Organization {
    #[serde(deserialize_with = "id_from_string_or_number")]
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default, rename = "scimManaged")]
    pub scim_managed: Option<bool>,
    /// `DateDTO`, absent on older organizations; kept verbatim.
    #[serde(default)]
    pub created: Option<Value>,
}

/// One page of a paged list (`PagedDTO*`). There is no total: follow
/// `isLastPage` and advance `start` by the number of values received.
/// `isLastPage` and `values` are required: a body without them (`{}` from a
/// broken proxy) is a decode error, retried, never a silently short list.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub start: u64,
    #[serde(default)]
    pub limit: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(rename = "isLastPage")]
    pub is_last_page: bool,
    pub values: Vec<T>,
}

/// A customer (`UserDTO`); email and name may be hidden by privacy settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    #[serde(rename = "accountId")]
    pub account_id: String,
    #[serde(default, rename = "emailAddress")]
    pub email_address: Option<String>,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
}

/// `PropertyKeys`: the list is `keys` in the reference, `entityPropertyKeyBeans`
/// in the spec's example; both are accepted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PropertyKeys {
    #[serde(default, alias = "entityPropertyKeyBeans")]
    pub keys: Vec<PropertyKey>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PropertyKey {
    pub key: String,
}

/// `EntityProperty`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EntityProperty {
    pub key: String,
    #[serde(default)]
    pub value: Value,
}

/// `ServiceDeskDTO` (only what the tool uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceDesk {
    #[serde(deserialize_with = "string_from_string_or_number")]
    pub id: String,
    #[serde(default, rename = "projectKey")]
    pub project_key: Option<String>,
    #[serde(default, rename = "projectName")]
    pub project_name: Option<String>,
}

/// `ErrorResponse`, plus the Jira platform's `errorMessages`/`errors` shape
/// that gateways in front of JSM sometimes answer with.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, rename = "errorMessage")]
    pub error_message: Option<String>,
    #[serde(default, rename = "errorMessages")]
    pub error_messages: Vec<String>,
    #[serde(default)]
    pub errors: serde_json::Map<String, Value>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ErrorBody {
    /// The most specific human message the body carries, if any.
    pub fn text(&self) -> Option<String> {
        if let Some(m) = self.error_message.as_ref().filter(|m| !m.is_empty()) {
            return Some(m.clone());
        }
        let mut parts: Vec<String> = self.error_messages.clone();
        for (field, v) in &self.errors {
            parts.push(format!("{field}: {}", v.as_str().unwrap_or(&v.to_string())));
        }
        if parts.is_empty() {
            self.message.clone().filter(|m| !m.is_empty())
        } else {
            Some(parts.join("; "))
        }
    }
}

/// Body of `POST /organization`.
#[derive(Debug, Serialize)]
pub struct CreateOrganization<'a> {
    pub name: &'a str,
}

/// Body of `POST|DELETE /organization/{id}/user`.
#[derive(Debug, Serialize)]
pub struct AccountIds<'a> {
    #[serde(rename = "accountIds")]
    pub account_ids: &'a [String],
}

/// Body of `POST|DELETE /servicedesk/{id}/organization`.
#[derive(Debug, Serialize)]
pub struct OrganizationIdBody {
    #[serde(rename = "organizationId")]
    pub organization_id: u64,
}

fn id_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = string_from_string_or_number(d)?;
    s.trim().parse::<u64>().map_err(|_| serde::de::Error::custom(format!("organization id {s:?} is not an integer")))
}

fn string_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a string or number id, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_accepts_string_and_integer_ids_and_optional_fields() {
        let a: Organization = serde_json::from_str(
            r#"{"id":"12","name":"A","_links":{"self":"x"},"uuid":"u","scimManaged":false,
                "created":{"epochMillis":1,"iso8601":"2020-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(a.id, 12);
        assert_eq!(a.scim_managed, Some(false));
        assert_eq!(a.created.unwrap()["epochMillis"], 1);
        let b: Organization = serde_json::from_str(r#"{"id":7,"name":"B"}"#).unwrap();
        assert_eq!((b.id, b.uuid, b.created), (7, None, None));
        assert!(serde_json::from_str::<Organization>(r#"{"id":"x","name":"B"}"#).is_err());
    }

    #[test]
    fn a_page_without_is_last_page_or_values_is_not_a_page() {
        assert!(serde_json::from_str::<Page<User>>("{}").is_err());
        assert!(serde_json::from_str::<Page<User>>(r#"{"values":[]}"#).is_err());
        assert!(serde_json::from_str::<Page<User>>(r#"{"isLastPage":true}"#).is_err());
        let p: Page<User> = serde_json::from_str(r#"{"isLastPage":true,"values":[]}"#).unwrap();
        assert!(p.is_last_page && p.values.is_empty());
    }

    #[test]
    fn property_keys_accept_both_list_names() {
        let a: PropertyKeys = serde_json::from_str(r#"{"keys":[{"key":"k","self":"s"}]}"#).unwrap();
        let b: PropertyKeys = serde_json::from_str(r#"{"entityPropertyKeyBeans":[{"key":"k","self":"s"}]}"#).unwrap();
        assert_eq!(a.keys, b.keys);
        assert_eq!(a.keys[0].key, "k");
    }

    #[test]
    fn error_body_text_prefers_error_message_then_platform_shape() {
        let a: ErrorBody =
            serde_json::from_str(r#"{"errorMessage":"bad","i18nErrorMessage":{"i18nKey":"k","parameters":[]}}"#)
                .unwrap();
        assert_eq!(a.text().as_deref(), Some("bad"));
        let b: ErrorBody = serde_json::from_str(r#"{"errorMessages":["x"],"errors":{"name":"too long"}}"#).unwrap();
        assert_eq!(b.text().as_deref(), Some("x; name: too long"));
        assert_eq!(ErrorBody::default().text(), None);
    }
}
