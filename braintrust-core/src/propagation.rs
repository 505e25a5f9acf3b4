//! Continuing traces across processes: exported slugs (spec §7.6), W3C trace
//! context (§7.8), span updates by slug (§6.2) and links (§7.7).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::export::{ObjectType, SpanComponents};
use crate::ids::Id;
use crate::object::{ObjectInner, ObjectSpec};
use crate::span::{Lineage, Parent, Span};
use crate::state::State;
use crate::w3c::{self, BraintrustParent, Carrier, TraceContext};
use crate::{Error, Event};

/// The container a slug or W3C parent names. `fallback` (the current logger)
/// is used when the parent does not name one.
pub(crate) fn object_for_parent(
    state: &State,
    parent: Option<&Parent>,
    fallback: Option<Arc<ObjectInner>>,
) -> Option<Arc<ObjectInner>> {
    match parent? {
        Parent::Span(s) => s.core().map(|c| c.object.clone()),
        Parent::Root => fallback,
        Parent::Slug(slug) => {
            match SpanComponents::parse(slug) {
                Ok(c) => Some(object_from_components(state, &c)),
                Err(e) => {
                    crate::diagnostics::warn_once(
                    "bad-parent-slug",
                    &format!("braintrust: ignoring an invalid parent slug ({e}); starting a new trace"),
                );
                    fallback
                }
            }
        }
        Parent::W3c(ctx) => match ctx
            .braintrust_parent()
            .as_deref()
            .and_then(BraintrustParent::parse)
        {
            Some(BraintrustParent::ProjectId(id)) => {
                Some(known(state, ObjectType::ProjectLogs, &id))
            }
            Some(BraintrustParent::ExperimentId(id)) => {
                Some(known(state, ObjectType::Experiment, &id))
            }
            Some(BraintrustParent::ProjectName(name)) => Some(ObjectInner::new(
                state.clone(),
                ObjectType::ProjectLogs,
                ObjectSpec::Project {
                    name: Some(name),
                    id: None,
                },
            )),
            None => {
                if fallback.is_none() {
                    crate::diagnostics::warn_once(
                        "w3c-no-object",
                        "braintrust: W3C trace context has no braintrust.parent baggage and no logger is active; not tracing",
                    );
                }
                fallback
            }
        },
    }
}

fn known(state: &State, kind: ObjectType, id: &str) -> Arc<ObjectInner> {
    ObjectInner::new(
        state.clone(),
        kind,
        ObjectSpec::Known { id: id.to_string() },
    )
}

fn object_from_components(state: &State, c: &SpanComponents) -> Arc<ObjectInner> {
    if let Some(id) = c.object_id.as_deref().filter(|s| !s.is_empty()) {
        return known(state, c.object_type, id);
    }
    let args = c.compute_object_metadata_args.clone().unwrap_or_default();
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    ObjectInner::new(
        state.clone(),
        c.object_type,
        ObjectSpec::Project {
            name: s("project_name"),
            id: s("project_id"),
        },
    )
}

/// Where a span started under a slug or W3C parent hangs.
pub(crate) fn lineage_from_parent(parent: &Parent) -> Option<Lineage> {
    match parent {
        Parent::Span(s) => s.child_lineage(),
        Parent::Root => None,
        Parent::Slug(slug) => {
            let c = SpanComponents::parse(slug).ok()?;
            let propagated = c.propagated_event.clone().map(Arc::new);
            if c.has_row_ids() {
                Some(Lineage {
                    root_span_id: Id::parse(c.root_span_id.as_deref()?),
                    parents: vec![Id::parse(c.span_id.as_deref()?)],
                    propagated,
                    trace_flags: None,
                })
            } else {
                // Object-only slug: a new trace under that object; its
                // propagated event is applied by `slug_propagated_event`.
                None
            }
        }
        Parent::W3c(ctx) => {
            let tp = ctx.trace_parent()?;
            let flags = u8::from_str_radix(&tp.flags, 16).ok();
            Some(Lineage {
                root_span_id: Id::parse(&tp.trace_id),
                parents: vec![Id::parse(&tp.span_id)],
                propagated: None,
                trace_flags: flags,
            })
        }
    }
}

/// Propagated event of an object-only slug (applied as the span's own).
pub(crate) fn slug_propagated_event(parent: &Parent) -> Option<Map<String, Value>> {
    match parent {
        Parent::Slug(s) => SpanComponents::parse(s).ok()?.propagated_event,
        _ => None,
    }
}

/// Reads W3C trace context (`traceparent`, `baggage`, `tracestate`) from
/// inbound headers; `None` unless `traceparent` is valid. Pass the result to
/// [`SpanArgs::parent`](crate::SpanArgs::parent).
pub fn extract<C: Carrier + ?Sized>(headers: &C) -> Option<TraceContext> {
    w3c::extract(headers)
}

impl Span {
    /// Exports this span as a slug another process (or SDK) can continue the
    /// trace from: V4 with hex ids, V3 with legacy UUID ids; `""` for no-op.
    ///
    /// Before the container's id is known, the slug carries the project name
    /// in `compute_object_metadata_args`, exactly as the official SDKs do.
    pub fn export(&self) -> String {
        let Some(c) = self.core() else {
            return String::new();
        };
        let mut comp = c.object.components();
        comp.row_id = Some(c.row_id.to_string());
        comp.span_id = Some(c.span_id.to_string());
        comp.root_span_id = Some(c.root_span_id.to_string());
        comp.propagated_event = c.propagated.as_ref().map(|p| (**p).clone());
        if c.object.state.legacy_ids() || !(c.span_id.is_hex() && c.root_span_id.is_hex()) {
            comp.to_v3_string()
        } else {
            comp.to_v4_string()
        }
    }

    /// Writes `traceparent` and the `braintrust.parent` baggage member into
    /// outgoing headers (W3C trace context, spec §7.8). Other baggage members
    /// and `tracestate` are kept. Does nothing for no-op spans and legacy ids.
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// braintrust_core::current_span().inject(&mut headers); // no-op span: nothing written
    /// assert!(headers.is_empty());
    /// ```
    pub fn inject<C: Carrier + ?Sized>(&self, headers: &mut C) {
        let Some(c) = self.core() else { return };
        if !(c.span_id.is_hex() && c.root_span_id.is_hex()) {
            return;
        }
        let flags = format!("{:02x}", c.trace_flags.unwrap_or(1));
        let parent = braintrust_parent_value(&c.object);
        w3c::inject_into(
            headers,
            &c.root_span_id.to_string(),
            &c.span_id.to_string(),
            &flags,
            parent.as_deref(),
        );
    }

    /// A link to this span in the Braintrust UI, built without network calls
    /// (spec §7.7). Before login it is an error link naming what is missing.
    pub fn link(&self) -> String {
        let Some(c) = self.core() else {
            return NOOP_LINK.to_string();
        };
        let state = &c.object.state;
        let Some(login) = state.login_info() else {
            return error_link("login-or-provide-org-name");
        };
        let app = login.app_url.trim_end_matches('/');
        let org = &login.org_name;
        match c.object.resolved.get() {
            Some(r) => format!(
                "{app}/app/{org}/object?object_type={}&object_id={}&id={}",
                c.object.kind.as_str(),
                form_encode(&r.id),
                form_encode(&c.row_id.to_string())
            ),
            None => match &c.object.spec {
                ObjectSpec::Project { name: Some(n), .. } => format!(
                    "{app}/app/{org}/p/{}/logs?oid={}",
                    uri_component(n),
                    form_encode(&c.row_id.to_string())
                ),
                _ => error_link("provide-project-name-or-id"),
            },
        }
    }
}

const NOOP_LINK: &str = "https://www.braintrust.dev/noop-span";

fn error_link(code: &str) -> String {
    format!("https://www.braintrust.dev/error-generating-link?msg={code}")
}

fn braintrust_parent_value(object: &ObjectInner) -> Option<String> {
    let resolved = object.resolved.get();
    match object.kind {
        ObjectType::Experiment => resolved.map(|r| format!("experiment_id:{}", r.id)),
        ObjectType::ProjectLogs => match resolved {
            Some(r) => Some(format!("project_id:{}", r.id)),
            None => match &object.spec {
                ObjectSpec::Project { name: Some(n), .. } => Some(format!("project_name:{n}")),
                ObjectSpec::Project { id: Some(i), .. } => Some(format!("project_id:{i}")),
                _ => None,
            },
        },
        ObjectType::PlaygroundLogs => None,
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn uri_component(s: &str) -> String {
    form_encode(s).replace('+', "%20")
}

/// A link to the span an exported slug names (spec §7.7). Logs in (blocking)
/// with `state` if needed; failures give the spec's error link, never a panic.
pub fn permalink(slug: &str, state: Option<&State>) -> String {
    if slug.is_empty() {
        return NOOP_LINK.to_string();
    }
    let comps = match SpanComponents::parse(slug) {
        Ok(c) => c,
        Err(_) => return error_link("invalid-slug"),
    };
    let Some(row_id) = comps.row_id.clone() else {
        return error_link("slug-has-no-row-id");
    };
    let state = match state.cloned().map(Ok).unwrap_or_else(State::default_state) {
        Ok(s) => s,
        Err(_) => return error_link("login-or-provide-org-name"),
    };
    let login = match state.login_info().map(Ok).unwrap_or_else(|| state.login()) {
        Ok(l) => l,
        Err(_) => return error_link("login-or-provide-org-name"),
    };
    let object_id = match comps.object_id.clone() {
        Some(id) => id,
        None => {
            let obj = object_from_components(&state, &comps);
            match state.resolve_blocking(&obj) {
                Ok(id) => id,
                Err(_) => return error_link("resolve-object-id"),
            }
        }
    };
    format!(
        "{}/app/{}/object?object_type={}&object_id={}&id={}",
        login.app_url.trim_end_matches('/'),
        login.org_name,
        comps.object_type.as_str(),
        form_encode(&object_id),
        form_encode(&row_id)
    )
}

/// Updates a span named by an exported slug: one merge row with the given
/// fields and no `span_parents` (spec §6.2). Validated like [`Span::log`].
/// Do this after the span's original rows were flushed.
pub fn update_span(exported: &str, event: Event, state: Option<&State>) -> Result<(), Error> {
    let event = event.validate()?;
    let comps = SpanComponents::parse(exported)?;
    let (Some(row_id), Some(span_id), Some(root)) =
        (&comps.row_id, &comps.span_id, &comps.root_span_id)
    else {
        return Err(Error::Validation(crate::ValidationError::new(
            "exported",
            "the slug must name a span (row_id, span_id and root_span_id)",
        )));
    };
    let state = match state {
        Some(s) => s.clone(),
        None => match crate::current_logger() {
            Some(l) => l.state().clone(),
            None => State::default_state()?,
        },
    };
    let object = object_from_components(&state, &comps);
    let mut row = Map::new();
    row.insert("id".into(), Value::String(row_id.clone()));
    row.insert("span_id".into(), Value::String(span_id.clone()));
    row.insert("root_span_id".into(), Value::String(root.clone()));
    event.write_into(&mut row);
    row.insert("_is_merge".into(), Value::Bool(true));
    state.enqueue(crate::logger::Op::Row(object, Box::new(row)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_urlencode() {
        assert_eq!(form_encode("a b/c"), "a+b%2Fc");
        assert_eq!(uri_component("my project"), "my%20project");
    }
}
