//! The fuzz targets' checks (slug decoder V1–V4, W3C `traceparent` /
//! `tracestate` / `baggage`, row merger) as short property tests that run in
//! CI; the `fuzz/` directory runs the same checks under cargo-fuzz.

#[path = "../../fuzz/checks/core.rs"]
mod checks;

use base64::Engine;
use proptest::prelude::*;

/// Near-valid traceparents: any version, valid or zero ids, extra fields.
fn traceparent_like() -> impl Strategy<Value = String> {
    (
        "[0-9a-fA-F]{2}",
        prop_oneof!["[0-9a-f]{32}", Just("0".repeat(32)), "[0-9a-z]{30,33}"],
        prop_oneof!["[0-9a-f]{16}", Just("0".repeat(16))],
        "[0-9a-f]{2}",
        prop_oneof![Just(String::new()), "-[a-z0-9-]{0,10}", "[a-z0-9]{1,4}"],
        prop_oneof![Just(""), Just(" "), Just("\t")],
    )
        .prop_map(|(v, t, s, f, extra, ws)| format!("{ws}{v}-{t}-{s}-{f}{extra}{ws}"))
}

fn baggage_like() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        "[a-z.%]{0,8}=[a-zA-Z0-9%:;, ]{0,12}",
        Just("braintrust.parent=project_id%3Ap".to_string()),
        "[ =;,]{0,4}",
    ];
    prop::collection::vec(member, 0..8).prop_map(|m| m.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn slug_any_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
        checks::slug(&data);
    }

    #[test]
    fn slug_versioned_headers(version in 0u8..6, kind in 0u8..4, body in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut raw = vec![version, kind];
        raw.extend(body);
        checks::slug(&raw);
        checks::slug(base64::engine::general_purpose::STANDARD.encode(&raw).as_bytes());
    }

    #[test]
    fn w3c_any_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
        checks::w3c(&data);
    }

    #[test]
    fn w3c_headers(tp in traceparent_like(), ts in "[a-z0-9=,@ ]{0,20}", bg in baggage_like()) {
        checks::w3c(format!("{tp}\n{ts}\n{bg}").as_bytes());
    }

    #[test]
    fn merge_any_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
        checks::merge(&data);
    }

    #[test]
    fn merge_rows(rows in prop::collection::vec(
        (prop::option::of(0u8..4), any::<bool>(), prop::option::of(0u8..3), "[a-z]{0,3}"),
        0..12,
    )) {
        let rows: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(id, merge, parent, v)| {
                let mut r = serde_json::json!({"_is_merge": merge, "metadata": {v.clone(): v}});
                if let Some(id) = id { r["id"] = format!("r{id}").into(); }
                if let Some(p) = parent { r["_parent_id"] = format!("r{p}").into(); }
                r
            })
            .collect();
        checks::merge(serde_json::to_string(&rows).unwrap().as_bytes());
    }
}
