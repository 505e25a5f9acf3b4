//! Span export ("slug") vectors from the official Python SDK
//! (`tests/vectors/span_export_v{3,4}.json`), plus property tests.

use base64::Engine as _;
use braintrust_core::__internal::INVALID_ENCODING_MESSAGE;
use braintrust_core::{ObjectType, SlugError, SpanComponents};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/../tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn opt_str(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("expected string or null, got {other}"),
    }
}

fn opt_map(v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Null => None,
        Value::Object(m) => Some(m.clone()),
        other => panic!("expected object or null, got {other}"),
    }
}

/// Builds components from a vector's `input`/`decoded` object.
fn components(v: &Value) -> SpanComponents {
    let object_type: ObjectType = v["object_type"].as_str().unwrap().parse().unwrap();
    if let Some(n) = v.get("object_type_enum") {
        assert_eq!(u64::from(object_type.as_u8()), n.as_u64().unwrap());
        assert_eq!(
            ObjectType::try_from(n.as_u64().unwrap() as u8).unwrap(),
            object_type
        );
    }
    SpanComponents {
        object_type,
        object_id: opt_str(&v["object_id"]),
        compute_object_metadata_args: opt_map(&v["compute_object_metadata_args"]),
        row_id: opt_str(&v["row_id"]),
        span_id: opt_str(&v["span_id"]),
        root_span_id: opt_str(&v["root_span_id"]),
        propagated_event: opt_map(&v["propagated_event"]),
    }
}

/// The vectors' JSON shape of decoded components.
fn to_json(c: &SpanComponents) -> Value {
    json!({
        "object_type": c.object_type.as_str(),
        "object_type_enum": c.object_type.as_u8(),
        "object_id": c.object_id,
        "compute_object_metadata_args": c.compute_object_metadata_args,
        "row_id": c.row_id,
        "span_id": c.span_id,
        "root_span_id": c.root_span_id,
        "propagated_event": c.propagated_event,
    })
}

fn raw_hex(slug: &str) -> String {
    hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(slug)
            .unwrap(),
    )
}

fn check_raw_bytes(case: &Value) {
    let slug = case["slug"].as_str().unwrap();
    let raw = &case["raw_bytes"];
    let h = raw_hex(slug);
    assert_eq!(h, raw["hex"].as_str().unwrap(), "raw bytes of {slug}");
    assert_eq!(h.len() / 2, raw["len"].as_u64().unwrap() as usize);
}

fn check_object_id_fields(c: &SpanComponents, expected: &Value) {
    match expected {
        Value::Null => {
            assert!(c.object_id_fields().is_empty());
            assert_eq!(c.try_object_id_fields(), Err(SlugError::MissingObjectId));
        }
        fields => {
            assert_eq!(&Value::Object(c.object_id_fields()), fields);
            assert_eq!(&Value::Object(c.try_object_id_fields().unwrap()), fields);
        }
    }
}

#[test]
fn v4_cases_encode_and_decode_exactly() {
    let v = load("span_export_v4.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let desc = case["description"].as_str().unwrap();
        let slug = case["slug"].as_str().unwrap();
        let input = components(&case["input"]);
        input.validate().unwrap();
        assert_eq!(input.to_v4_string(), slug, "encode: {desc}");
        check_raw_bytes(case);
        let decoded = SpanComponents::parse(slug).unwrap();
        assert_eq!(to_json(&decoded), case["decoded"], "decode: {desc}");
        assert_eq!(decoded, components(&case["decoded"]));
        assert!(case["roundtrip_exact"].as_bool().unwrap());
        assert_eq!(decoded, input, "roundtrip: {desc}");
        assert_eq!(slug.parse::<SpanComponents>().unwrap(), decoded);
        check_object_id_fields(&decoded, &case["object_id_fields"]);
    }
}

#[test]
fn v3_cases_encode_and_decode_exactly() {
    let v = load("span_export_v3.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    let mut lossy = 0;
    for case in cases {
        let desc = case["description"].as_str().unwrap();
        let slug = case["slug"].as_str().unwrap();
        let input = components(&case["input"]);
        input.validate().unwrap();
        check_raw_bytes(case);
        let decoded = SpanComponents::parse(slug).unwrap();
        assert_eq!(to_json(&decoded), case["decoded"], "decode: {desc}");
        // Our decoder is the V4 one (it handles every version).
        assert_eq!(case["decoded_by_v4_from_str"], case["decoded"], "{desc}");
        check_object_id_fields(&decoded, &case["object_id_fields"]);
        // Encoding the decoded form always reproduces the Python slug.
        assert_eq!(decoded.to_v3_string(), slug, "re-encode: {desc}");
        if case["roundtrip_exact"].as_bool().unwrap() {
            assert_eq!(input.to_v3_string(), slug, "encode: {desc}");
            assert_eq!(decoded, input);
        } else {
            // Python packs a 32-hex trace id as a UUID and it comes back dashed.
            // Our V3 writer packs only canonical UUIDs, so it stays lossless
            // (and differs from the Python slug).
            lossy += 1;
            assert_ne!(decoded, input);
            assert_eq!(
                decoded.root_span_id.as_deref(),
                Some("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
            );
            let ours = input.to_v3_string();
            assert_ne!(ours, slug);
            assert_eq!(SpanComponents::parse(&ours).unwrap(), input, "{desc}");
            // And the V4 writer, which is the one to use for hex ids, is exact too.
            assert_eq!(SpanComponents::parse(&input.to_v4_string()).unwrap(), input);
        }
    }
    assert_eq!(lossy, 1);
}

#[test]
fn v3_non_ascii_tail_uses_python_escapes() {
    let v = load("span_export_v3.json");
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["description"].as_str().unwrap().contains("non-ASCII"))
        .unwrap();
    let slug = case["slug"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(slug)
        .unwrap();
    assert!(String::from_utf8(raw)
        .unwrap()
        .contains(r#""Caf\u00e9 \u2603""#));
    assert_eq!(components(&case["input"]).to_v3_string(), slug);
    // The same tail through the V4 writer uses the same escapes.
    let v4 = components(&case["input"]).to_v4_string();
    let raw4 = base64::engine::general_purpose::STANDARD
        .decode(&v4)
        .unwrap();
    assert_eq!(
        &raw4[3..],
        &base64::engine::general_purpose::STANDARD
            .decode(slug)
            .unwrap()[3..]
    );
}

#[test]
fn legacy_v1_v2_decode() {
    let v = load("span_export_v4.json");
    let cases = v["legacy_v1_v2_decoded_by_v4"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let desc = case["description"].as_str().unwrap();
        let slug = case["slug"].as_str().unwrap();
        check_raw_bytes(case);
        let decoded = SpanComponents::parse(slug).unwrap_or_else(|e| panic!("{desc}: {e:?}"));
        assert_eq!(to_json(&decoded), case["decoded"], "{desc}");
        // Re-exporting a legacy slug gives an equivalent modern one.
        assert_eq!(
            SpanComponents::parse(&decoded.to_v4_string()).unwrap(),
            decoded
        );
        assert_eq!(
            SpanComponents::parse(&decoded.to_v3_string()).unwrap(),
            decoded
        );
    }
}

#[test]
fn invalid_slugs_give_the_exact_message() {
    let v = load("span_export_v4.json");
    let cases = v["invalid"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let slug = case["slug"].as_str().unwrap();
        let expected = case["v4_from_str"].as_str().unwrap();
        let expected = expected.strip_prefix("error: ").unwrap();
        assert_eq!(expected, INVALID_ENCODING_MESSAGE);
        let err = SpanComponents::parse(slug).unwrap_err();
        assert!(matches!(err, SlugError::InvalidEncoding { .. }), "{slug:?}");
        assert_eq!(err.to_string(), expected, "{slug:?}");
    }
}

#[test]
fn w3c_vector_child_export_decodes_as_v4() {
    // The child span of the W3C vector exports a V4 slug with hex ids.
    let v = load("w3c_propagation.json");
    let child = &v["inject_extract"][1]["child_export_decoded"];
    let c = components(child);
    let slug = c.to_v4_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&slug)
        .unwrap();
    assert_eq!(&raw[..4], &[4, 2, 2, 3]);
    assert_eq!(
        to_json(&SpanComponents::parse(&slug).unwrap())["span_id"],
        child["span_id"]
    );
    assert_eq!(c.to_export_string(), slug);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // serde_json without its `float_roundtrip` feature may parse extreme
        // floats 1 ULP off; that is the parser, not the slug format.
        any::<f64>()
            .prop_filter("finite, parsed back exactly by serde_json", |f| {
                f.is_finite()
                    && serde_json::from_str::<f64>(&serde_json::to_string(f).unwrap()).ok()
                        == Some(*f)
            })
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn non_empty_map() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((any::<String>(), json_value()), 1..4)
        .prop_map(|kv| kv.into_iter().collect::<Map<String, Value>>())
}

fn object_type() -> impl Strategy<Value = ObjectType> {
    prop_oneof![
        Just(ObjectType::Experiment),
        Just(ObjectType::ProjectLogs),
        Just(ObjectType::PlaygroundLogs),
    ]
}

fn uuid_string() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).hyphenated().to_string())
}

fn non_empty_string() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("non-empty", |s| !s.is_empty())
}

/// Object identity: an object id or compute args (exactly one).
fn object_identity(
    id: BoxedStrategy<String>,
) -> impl Strategy<Value = (Option<String>, Option<Map<String, Value>>)> {
    prop_oneof![
        id.prop_map(|s| (Some(s), None)),
        non_empty_map().prop_map(|m| (None, Some(m))),
    ]
}

fn components_strategy(
    id: BoxedStrategy<String>,
    span: BoxedStrategy<String>,
    root: BoxedStrategy<String>,
) -> impl Strategy<Value = SpanComponents> {
    (
        object_type(),
        object_identity(id.clone()),
        prop::option::of((id, span, root)),
        prop::option::of(non_empty_map()),
    )
        .prop_map(|(object_type, (object_id, args), rows, propagated_event)| {
            let (row_id, span_id, root_span_id) = match rows {
                Some((r, s, t)) => (Some(r), Some(s), Some(t)),
                None => (None, None, None),
            };
            SpanComponents {
                object_type,
                object_id,
                compute_object_metadata_args: args,
                row_id,
                span_id,
                root_span_id,
                propagated_event,
            }
        })
}

/// Empty strings and maps count as unset; encoding drops them.
fn normalized(mut c: SpanComponents) -> SpanComponents {
    for s in [
        &mut c.object_id,
        &mut c.row_id,
        &mut c.span_id,
        &mut c.root_span_id,
    ] {
        if s.as_deref() == Some("") {
            *s = None;
        }
    }
    for m in [&mut c.compute_object_metadata_args, &mut c.propagated_event] {
        if m.as_ref().is_some_and(|m| m.is_empty()) {
            *m = None;
        }
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v4_roundtrip_hex_ids(c in components_strategy(
        uuid_string().boxed(),
        "[0-9a-f]{16}".boxed(),
        "[0-9a-f]{32}".boxed(),
    )) {
        prop_assert!(c.validate().is_ok());
        let slug = c.to_v4_string();
        let raw = base64::engine::general_purpose::STANDARD.decode(&slug).unwrap();
        prop_assert_eq!(raw[0], 4);
        prop_assert_eq!(raw[2], if c.row_id.is_some() { 2 } else { 0 });
        // The JSON tail after the packed ids is pure ASCII (Python escapes).
        let packed = if c.row_id.is_some() { 9 + 17 } else { 0 };
        prop_assert!(raw[3 + packed..].is_ascii());
        prop_assert_eq!(SpanComponents::parse(&slug).unwrap(), c);
    }

    #[test]
    fn v3_roundtrip_uuid_ids(c in components_strategy(
        uuid_string().boxed(),
        uuid_string().boxed(),
        uuid_string().boxed(),
    )) {
        let slug = c.to_v3_string();
        let raw = base64::engine::general_purpose::STANDARD.decode(&slug).unwrap();
        prop_assert_eq!(raw[0], 3);
        let expected_packed = u8::from(c.object_id.is_some()) + if c.row_id.is_some() { 3 } else { 0 };
        prop_assert_eq!(raw[2], expected_packed);
        if c.compute_object_metadata_args.is_none() && c.propagated_event.is_none() {
            prop_assert_eq!(raw.len(), 3 + 17 * expected_packed as usize);
        }
        prop_assert_eq!(SpanComponents::parse(&slug).unwrap(), c.clone());
        prop_assert_eq!(SpanComponents::parse(&c.to_export_string()).unwrap(), c);
    }

    #[test]
    fn roundtrip_arbitrary_string_ids(c in components_strategy(
        non_empty_string().boxed(),
        non_empty_string().boxed(),
        non_empty_string().boxed(),
    )) {
        prop_assert_eq!(SpanComponents::parse(&c.to_v4_string()).unwrap(), c.clone());
        prop_assert_eq!(SpanComponents::parse(&c.to_v3_string()).unwrap(), c);
    }

    #[test]
    fn parse_never_panics_on_strings(s in any::<String>()) {
        if let Err(e) = SpanComponents::parse(&s) {
            prop_assert_eq!(e.to_string(), INVALID_ENCODING_MESSAGE);
        }
    }

    #[test]
    fn parse_never_panics_on_base64_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let slug = base64::engine::general_purpose::STANDARD.encode(&bytes);
        check_parse_result(&slug)?;
    }

    #[test]
    fn parse_never_panics_on_structured_garbage(
        version in 0u8..7,
        object_type in 0u8..5,
        count in prop_oneof![0u8..6, any::<u8>()],
        body in prop::collection::vec(prop_oneof![0u8..6, any::<u8>()], 0..120),
        tail in prop::option::of(json_value()),
    ) {
        let mut bytes = vec![version, object_type, count];
        bytes.extend_from_slice(&body);
        if let Some(t) = tail {
            bytes.extend_from_slice(t.to_string().as_bytes());
        }
        let slug = base64::engine::general_purpose::STANDARD.encode(&bytes);
        check_parse_result(&slug)?;
        // Truncations of a valid slug's bytes never panic either.
        let valid = SpanComponents::new(ObjectType::ProjectLogs, "p")
            .with_row_ids("r", "00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4736")
            .to_v4_string();
        let raw = base64::engine::general_purpose::STANDARD.decode(valid).unwrap();
        let cut = body.len() % raw.len();
        check_parse_result(&base64::engine::general_purpose::STANDARD.encode(&raw[..cut]))?;
    }

    #[test]
    fn parse_never_panics_on_valid_header_with_random_tail(
        version in 3u8..5,
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![version, 2, 0];
        bytes.extend_from_slice(b"{\"object_id\":\"x\"");
        bytes.extend_from_slice(&tail);
        check_parse_result(&base64::engine::general_purpose::STANDARD.encode(&bytes))?;
    }
}

/// Any successful parse is valid and stable under re-encoding; any failure has
/// the standard message.
fn check_parse_result(slug: &str) -> Result<(), TestCaseError> {
    match SpanComponents::parse(slug) {
        Ok(c) => {
            prop_assert!(c.validate().is_ok());
            let again = SpanComponents::parse(&c.to_v4_string()).unwrap();
            prop_assert_eq!(again, normalized(c.clone()));
            let again = SpanComponents::parse(&c.to_v3_string()).unwrap();
            prop_assert_eq!(again, normalized(c));
        }
        Err(e) => {
            let is_decode_error = matches!(e, SlugError::InvalidEncoding { .. });
            prop_assert!(is_decode_error);
            prop_assert_eq!(e.to_string(), INVALID_ENCODING_MESSAGE);
        }
    }
    Ok(())
}
