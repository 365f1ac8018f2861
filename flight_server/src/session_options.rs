//! Flight session options (`SetSessionOptions`, `GetSessionOptions`), as the ADBC Flight SQL
//! driver uses them: `adbc.flight.sql.session.options` reads them all, and
//! `adbc.flight.sql.session.option.<name>` sets one. The messages are those of Flight.proto
//! (arrow-flight does not generate them), encoded here with prost.
//!
//! Sessions are stateless signed tokens, and a tenant sees one catalog (`barecount`) and one
//! schema (`published`): those are the options, each readable and settable to its own value.
//! Setting either to anything else answers INVALID_VALUE, erasing one ERROR, and any other name
//! INVALID_NAME — in the result, per option, as the protocol has it.

use crate::query::{CATALOG_NAME, SCHEMA_NAME};
use std::collections::HashMap;

pub const SET_ACTION: &str = "SetSessionOptions";
pub const GET_ACTION: &str = "GetSessionOptions";

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `SetSessionOptionsResult.ErrorValue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorValue {
    Unspecified = 0,
    InvalidName = 1,
    InvalidValue = 2,
    Error = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetError {
    #[prost(enumeration = "ErrorValue", tag = "1")]
    pub value: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

fn string(v: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(OptionValue::StringValue(v.to_owned())),
    }
}

/// The options of every session: its catalog and schema.
pub fn current() -> GetSessionOptionsResult {
    GetSessionOptionsResult {
        session_options: HashMap::from([
            ("catalog".to_owned(), string(CATALOG_NAME)),
            ("schema".to_owned(), string(SCHEMA_NAME)),
        ]),
    }
}

/// Answers a set request option by option.
pub fn set(req: &SetSessionOptionsRequest) -> SetSessionOptionsResult {
    let current = current().session_options;
    let errors = req
        .session_options
        .iter()
        .filter_map(|(name, value)| {
            let error = match (current.get(name), &value.option_value) {
                (None, _) => ErrorValue::InvalidName,
                (Some(_), None) => ErrorValue::Error, // erasing a fixed option
                (Some(have), Some(_)) if have == value => return None,
                (Some(_), Some(_)) => ErrorValue::InvalidValue,
            };
            Some((
                name.clone(),
                SetError {
                    value: error as i32,
                },
            ))
        })
        .collect();
    SetSessionOptionsResult { errors }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn fixed_options_accept_their_own_value_only() {
        let req = SetSessionOptionsRequest {
            session_options: HashMap::from([
                ("catalog".to_owned(), string("barecount")),
                ("schema".to_owned(), string("elsewhere")),
                ("search_path".to_owned(), string("x")),
                (
                    "catalog_erased".to_owned(),
                    SessionOptionValue { option_value: None },
                ),
            ]),
        };
        // through the wire format, as a client sends it
        let req = SetSessionOptionsRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let errors = set(&req).errors;
        assert!(!errors.contains_key("catalog"));
        assert_eq!(errors["schema"].value, ErrorValue::InvalidValue as i32);
        assert_eq!(errors["search_path"].value, ErrorValue::InvalidName as i32);
        assert_eq!(
            errors["catalog_erased"].value,
            ErrorValue::InvalidName as i32
        );
        let erase = SetSessionOptionsRequest {
            session_options: HashMap::from([(
                "schema".to_owned(),
                SessionOptionValue { option_value: None },
            )]),
        };
        assert_eq!(set(&erase).errors["schema"].value, ErrorValue::Error as i32);
        let got = GetSessionOptionsResult::decode(current().encode_to_vec().as_slice()).unwrap();
        assert_eq!(got.session_options["schema"], string("published"));
    }
}
