//! Continuing traces across processes: exported slugs (spec §7.6), W3C trace
//! context (§7.8), span updates by slug (§6.2) and links (§7.7).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::check_propagated_event;
use crate::export::{ObjectType, SpanComponents};
use crate::ids::Id;
use crate::logger::{ObjectInner, ObjectSpec};
use crate::span::{InboundW3c, Lineage, Parent, Span};
use crate::state::State;
use crate::w3c::{self, BraintrustParent, Carrier, TraceContext};
use crate::{Error, Event, ValidationError};

/// Where a span started under an explicit parent goes: its container and its
/// place in the trace (`lineage: None` starts a new trace in `object`).
pub(crate) struct Continuation {
    /// `None`: no container can be named (the span is a no-op).
    pub object: Option<Arc<ObjectInner>>,
    pub lineage: Option<Lineage>,
    /// The slug's `propagated_event`, checked (used unless the span passes
    /// its own; an error is reported when the span starts).
    pub propagated: Option<Result<Map<String, Value>, ValidationError>>,
}

/// Resolves an explicit parent (spec §7.6, §7.8). `fallback` is the container
/// the call was made on (a logger or span), else the current span's or
/// logger's. A slug or W3C parent naming the fallback's container reuses it,
/// so its id is resolved (and a project registered) once, not per span.
///
/// `None` means "ignore this parent": an empty slug (what a no-op span
/// exports), an undecodable slug, or W3C context that cannot be routed (an
/// invalid `braintrust.parent`, or none and no fallback). The caller then
/// applies the usual precedence (current span, then logger), as the official
/// SDKs do when the parent is falsy or cannot be resolved.
pub(crate) fn continue_from(
    state: &State,
    parent: &Parent,
    fallback: Option<&Arc<ObjectInner>>,
) -> Option<Continuation> {
    match parent {
        Parent::Span(s) => Some(Continuation {
            object: s.core().map(|c| c.object.clone()).or(fallback.cloned()),
            lineage: s.child_lineage(),
            propagated: None,
        }),
        Parent::Root => Some(Continuation {
            object: fallback.cloned(),
            lineage: None,
            propagated: None,
        }),
        Parent::Slug(slug) if slug.trim().is_empty() => None,
        Parent::Slug(slug) => {
            let c = match SpanComponents::parse(slug) {
                Ok(c) => c,
                Err(e) => {
                    crate::diagnostics::warn_once(
                        "bad-parent-slug",
                        &format!("braintrust: ignoring an invalid parent slug ({e})"),
                    );
                    return None;
                }
            };
            let object = object_from_components(state, &c, fallback);
            // Object-only slug: a new trace under that object (spec §7.6).
            let lineage = match (&c.row_id, &c.span_id, &c.root_span_id) {
                (Some(_), Some(span), Some(root)) if c.has_row_ids() => Some(Lineage {
                    root_span_id: Id::parse(root),
                    parents: crate::span::Parents::from_elem(Id::parse(span), 1),
                    propagated: None,
                    w3c: None,
                }),
                _ => None,
            };
            Some(Continuation {
                object: Some(object),
                lineage,
                propagated: c
                    .propagated_event
                    .map(|p| check_propagated_event("parent.propagated_event", Value::Object(p))),
            })
        }
        Parent::W3c(ctx) => {
            let Some(tp) = ctx.trace_parent() else {
                crate::diagnostics::warn_once(
                    "w3c-bad-traceparent",
                    "braintrust: ignoring W3C trace context with an invalid traceparent",
                );
                return None;
            };
            let object = match ctx.braintrust_parent() {
                Some(value) => match BraintrustParent::parse(&value) {
                    Some(bp) => object_from_braintrust_parent(state, bp, fallback),
                    None => {
                        crate::diagnostics::warn_once(
                            "w3c-bad-braintrust-parent",
                            &format!(
                                "braintrust: invalid braintrust.parent {value:?} in baggage; starting a fresh local span"
                            ),
                        );
                        return None;
                    }
                },
                None => match fallback {
                    Some(f) => f.clone(),
                    None => {
                        crate::diagnostics::warn_once(
                            "w3c-no-object",
                            "braintrust: received a traceparent without a braintrust.parent and no active logger or experiment; cannot route the trace",
                        );
                        return None;
                    }
                },
            };
            Some(Continuation {
                object: Some(object),
                lineage: Some(Lineage {
                    root_span_id: Id::parse(&tp.trace_id),
                    parents: crate::span::Parents::from_elem(Id::parse(&tp.span_id), 1),
                    propagated: None,
                    w3c: Some(Arc::new(InboundW3c {
                        flags: tp.flags,
                        tracestate: ctx.tracestate.clone().filter(|t| !t.is_empty()),
                    })),
                }),
                propagated: None,
            })
        }
    }
}

/// True when `obj` is the container named by `kind` plus an id and/or a
/// project name (from a slug or `braintrust.parent`).
fn names_object(obj: &ObjectInner, kind: ObjectType, id: Option<&str>, name: Option<&str>) -> bool {
    if obj.kind != kind {
        return false;
    }
    if let (Some(id), Some(r)) = (id, obj.resolved.get()) {
        return r.id == id;
    }
    match &obj.spec {
        ObjectSpec::Known { id: k } => id == Some(k.as_str()),
        ObjectSpec::Project { name: n, id: i } => match id {
            Some(id) => i.as_deref() == Some(id),
            None => name.is_some() && n.as_deref() == name,
        },
        ObjectSpec::Experiment { .. } => false,
    }
}

fn known(state: &State, kind: ObjectType, id: &str) -> Arc<ObjectInner> {
    ObjectInner::new(
        state.clone(),
        kind,
        ObjectSpec::Known { id: id.to_string() },
    )
}

fn object_from_braintrust_parent(
    state: &State,
    bp: BraintrustParent,
    fallback: Option<&Arc<ObjectInner>>,
) -> Arc<ObjectInner> {
    let (kind, id, name) = match &bp {
        BraintrustParent::ProjectId(id) => (ObjectType::ProjectLogs, Some(id.as_str()), None),
        BraintrustParent::ExperimentId(id) => (ObjectType::Experiment, Some(id.as_str()), None),
        BraintrustParent::ProjectName(n) => (ObjectType::ProjectLogs, None, Some(n.as_str())),
    };
    if let Some(f) = fallback.filter(|f| names_object(f, kind, id, name)) {
        return f.clone();
    }
    match (id, name) {
        (Some(id), _) => known(state, kind, id),
        (None, name) => ObjectInner::new(
            state.clone(),
            ObjectType::ProjectLogs,
            ObjectSpec::Project {
                name: name.map(str::to_string),
                id: None,
            },
        ),
    }
}

/// The container a slug names: its `object_id`, or its compute args, which
/// are resolved lazily on the logger thread (a project known only by name is
/// registered there, spec §7.5).
fn object_from_components(
    state: &State,
    c: &SpanComponents,
    fallback: Option<&Arc<ObjectInner>>,
) -> Arc<ObjectInner> {
    let args = c.compute_object_metadata_args.clone().unwrap_or_default();
    let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    let object_id = c.object_id.clone().filter(|s| !s.is_empty());
    let (id, name) = match &object_id {
        Some(id) => (Some(id.clone()), None),
        None => (arg("project_id"), arg("project_name")),
    };
    if let Some(f) =
        fallback.filter(|f| names_object(f, c.object_type, id.as_deref(), name.as_deref()))
    {
        return f.clone();
    }
    if let Some(id) = object_id {
        return known(state, c.object_type, &id);
    }
    ObjectInner::new(
        state.clone(),
        c.object_type,
        ObjectSpec::Project { name, id },
    )
}

/// The slug components naming `object` itself, resolving an experiment's id
/// first (blocking) as the official SDKs do: experiments cannot be named by
/// compute args (spec §7.5). `None` when that resolution fails.
pub(crate) fn object_components(object: &Arc<ObjectInner>) -> Option<SpanComponents> {
    if object.resolved.get().is_none() && matches!(object.spec, ObjectSpec::Experiment { .. }) {
        if let Err(e) = object.state.resolve_blocking(object) {
            crate::diagnostics::warn_once(
                "export-experiment-unresolved",
                &format!("braintrust: cannot export: the experiment id is unknown ({e})"),
            );
            return None;
        }
    }
    Some(object.components())
}

/// The slug text for `c`: V3 in legacy id mode, else V4 (spec §7.1; Python
/// picks the writer by the id mode, and our V3 writer never packs hex ids).
pub(crate) fn encode_components(state: &State, c: &SpanComponents) -> String {
    if state.legacy_ids() {
        c.to_v3_string()
    } else {
        c.to_v4_string()
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
    /// in `compute_object_metadata_args`, exactly as the official SDKs do. An
    /// experiment's id is resolved first (blocking; `""` if that fails), since
    /// experiments cannot be named by compute args. The span's
    /// `propagated_event` travels in the slug.
    pub fn export(&self) -> String {
        let Some(c) = self.core() else {
            return String::new();
        };
        let Some(mut comp) = object_components(&c.object) else {
            return String::new();
        };
        comp.row_id = Some(c.row_id.to_string());
        comp.span_id = Some(c.span_id.to_string());
        comp.root_span_id = Some(c.root_span_id.to_string());
        comp.propagated_event = c.propagated.as_ref().map(|p| (**p).clone());
        encode_components(&c.object.state, &comp)
    }

    /// Writes `traceparent` and the `braintrust.parent` baggage member into
    /// outgoing headers (W3C trace context, spec §7.8). Other baggage members
    /// are kept. When the trace came in over W3C, its flags are sent back
    /// verbatim and its `tracestate` is forwarded (by every span of the
    /// subtree). Does nothing for no-op spans and legacy ids.
    ///
    /// ```
    /// let mut headers = http::HeaderMap::new();
    /// braintrust_core::current_span().inject(&mut headers); // no-op span: nothing written
    /// assert!(headers.is_empty());
    /// ```
    pub fn inject<C: Carrier + ?Sized>(&self, headers: &mut C) {
        let Some(c) = self.core() else { return };
        let (trace_id, span_id) = (c.root_span_id.to_string(), c.span_id.to_string());
        if !(w3c::is_w3c_trace_id(&trace_id) && w3c::is_w3c_span_id(&span_id)) {
            return;
        }
        let inbound = c.w3c.as_deref();
        let flags = inbound.map_or(w3c::DEFAULT_TRACE_FLAGS, |w| w.flags.as_str());
        let parent = braintrust_parent_value(&c.object);
        w3c::inject_into(headers, &trace_id, &span_id, flags, parent.as_deref());
        if let Some(ts) = inbound.and_then(|w| w.tracestate.clone()) {
            headers.set(w3c::TRACESTATE_HEADER, ts);
        }
    }

    /// A link to this span in the Braintrust UI, built without network calls
    /// (spec §7.7). The org comes from the login, else `Config::org_name`;
    /// without one it is an error link naming what is missing.
    pub fn link(&self) -> String {
        let Some(c) = self.core() else {
            return NOOP_LINK.to_string();
        };
        let state = &c.object.state;
        let login = state.login_info();
        let org = login
            .as_ref()
            .map(|l| l.org_name.clone())
            .filter(|o| !o.is_empty())
            .or_else(|| state.config().org_name.clone());
        let app = login.map_or_else(|| state.config().app_url.clone(), |l| l.app_url);
        let app = app.trim_end_matches('/');
        let row = form_encode(&c.row_id.to_string());
        let resolved = c.object.resolved.get().map(|r| r.id.clone());
        match c.object.kind {
            ObjectType::Experiment => {
                let Some(org) = org else {
                    return error_link("provide-app-url-or-org-name");
                };
                match resolved {
                    Some(id) => format!(
                        "{app}/app/{org}/object?object_type=experiment&object_id={}&id={row}",
                        form_encode(&id)
                    ),
                    None => error_link("resolve-experiment-id"),
                }
            }
            ObjectType::ProjectLogs => {
                let Some(org) = org else {
                    return error_link("login-or-provide-org-name");
                };
                let (spec_name, spec_id) = match &c.object.spec {
                    ObjectSpec::Project { name, id } => (name.clone(), id.clone()),
                    _ => (None, None),
                };
                match (resolved.or(spec_id), spec_name) {
                    (Some(id), _) => format!(
                        "{app}/app/{org}/object?object_type=project_logs&object_id={}&id={row}",
                        form_encode(&id)
                    ),
                    (None, Some(name)) => {
                        format!("{app}/app/{org}/p/{}/logs?oid={row}", uri_component(&name))
                    }
                    (None, None) => error_link("no-project-id-or-name"),
                }
            }
            ObjectType::PlaygroundLogs => NOOP_LINK.to_string(),
        }
    }

    /// A link to this span's row in the UI (spec §7.7), from its exported
    /// slug: [`permalink`] with this span's backend. Unlike
    /// [`link`](Span::link) it may log in and resolve the container (blocking).
    pub fn permalink(&self) -> String {
        match self.core() {
            None => NOOP_LINK.to_string(),
            Some(c) => permalink(&self.export(), Some(&c.object.state)),
        }
    }
}

const NOOP_LINK: &str = "https://www.braintrust.dev/noop-span";

fn error_link(code: &str) -> String {
    format!("https://www.braintrust.dev/error-generating-link?msg={code}")
}

/// The `braintrust.parent` baggage value naming `object` (spec §7.8). An
/// experiment's id is resolved first (blocking), as the official SDKs do.
fn braintrust_parent_value(object: &Arc<ObjectInner>) -> Option<String> {
    let resolved = object.resolved.get().map(|r| r.id.clone());
    match object.kind {
        ObjectType::Experiment => resolved
            .or_else(|| object.state.resolve_blocking(object).ok())
            .map(|id| format!("experiment_id:{id}")),
        ObjectType::ProjectLogs => match (resolved, &object.spec) {
            (Some(id), _) => Some(format!("project_id:{id}")),
            (None, ObjectSpec::Project { id: Some(i), .. }) => Some(format!("project_id:{i}")),
            (None, ObjectSpec::Project { name: Some(n), .. }) => Some(format!("project_name:{n}")),
            _ => None,
        },
        ObjectType::PlaygroundLogs => None,
    }
}

/// `application/x-www-form-urlencoded`: unreserved characters kept, space as `+`.
fn form_encode(s: &str) -> String {
    s.split(' ')
        .map(crate::w3c::encode_baggage_value)
        .collect::<Vec<_>>()
        .join("+")
}

fn uri_component(s: &str) -> String {
    crate::w3c::encode_baggage_value(s)
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
    let Ok(state) = pick_state(state) else {
        return error_link("login-or-provide-org-name");
    };
    let login = match state.login_info().map(Ok).unwrap_or_else(|| state.login()) {
        Ok(l) => l,
        Err(_) => return error_link("login-or-provide-org-name"),
    };
    let object_id = match comps.object_id.clone() {
        Some(id) => id,
        None => {
            let logger = logger_object_of(&state);
            let obj = object_from_components(&state, &comps, logger.as_ref());
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

/// The backend for slug-only calls: the one given, else the current
/// logger's, else the process default.
fn pick_state(state: Option<&State>) -> Result<State, Error> {
    match state {
        Some(s) => Ok(s.clone()),
        None => match crate::current_logger() {
            Some(l) => Ok(l.state().clone()),
            None => State::default_state(),
        },
    }
}

/// The current logger's container, if it logs to `state`.
fn logger_object_of(state: &State) -> Option<Arc<ObjectInner>> {
    crate::current_logger()
        .filter(|l| Arc::ptr_eq(&l.state().0, &state.0))
        .map(|l| l.object.clone())
}

/// Updates a span named by an exported slug (spec §6.2): one row
/// `{id, span_id, root_span_id, <fields>, <object ids>, _is_merge: true}`
/// with **no** `span_parents`, as the official SDKs write it. The fields are
/// validated like [`Span::log`] (the error names the field). Update a span
/// only after its original rows were flushed. `state` defaults to the current
/// logger's backend, else the process default.
///
/// ```
/// use braintrust_core::{update_span, Event};
/// // Not a slug: the decoder's error, nothing queued.
/// assert!(update_span("not a slug", Event::new().output(1), None).is_err());
/// // Invalid fields are named.
/// let err = update_span("", Event::new().score("s", 7.0), None).unwrap_err();
/// assert!(err.to_string().contains("scores.s"));
/// ```
pub fn update_span(exported: &str, event: Event, state: Option<&State>) -> Result<(), Error> {
    let event = event.validate()?;
    let comps = SpanComponents::parse(exported)?;
    let (Some(row_id), Some(span_id), Some(root)) =
        (&comps.row_id, &comps.span_id, &comps.root_span_id)
    else {
        return Err(Error::Validation(crate::ValidationError::new(
            "exported",
            "Exported span must have a row_id",
        )));
    };
    let state = pick_state(state)?;
    let logger = logger_object_of(&state);
    let object = object_from_components(&state, &comps, logger.as_ref());
    let mut row = Map::new();
    row.insert("id".into(), Value::String(row_id.clone()));
    row.insert("span_id".into(), Value::String(span_id.clone()));
    row.insert("root_span_id".into(), Value::String(root.clone()));
    event.write_into(&mut row);
    row.insert("_is_merge".into(), Value::Bool(true));
    state.enqueue_row(object, row);
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
