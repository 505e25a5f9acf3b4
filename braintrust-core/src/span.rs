//! The span handle users hold, its arguments and its type.

use std::borrow::Cow;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::context::{self, SpanGuard};
use crate::event::{check_propagated_event, Event, ValidationError};
use crate::ids::Id;
use crate::logger::ObjectInner;

/// `span_attributes.type`: the span types the protocol knows (spec §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpanType {
    /// A call to a language model.
    Llm,
    /// A scorer.
    Score,
    /// A function (the `#[traced]` default).
    Function,
    /// An evaluation (experiment roots).
    Eval,
    /// A task (project-log roots).
    Task,
    /// A tool call.
    Tool,
    /// An automation.
    Automation,
    /// A facet.
    Facet,
    /// A preprocessor.
    Preprocessor,
    /// A classifier.
    Classifier,
    /// A review.
    Review,
    /// A decision.
    Decision,
    /// A question.
    Question,
    /// A log line.
    Log,
}

impl SpanType {
    /// Every span type, in the spec's order.
    pub const ALL: [SpanType; 14] = [
        SpanType::Llm,
        SpanType::Score,
        SpanType::Function,
        SpanType::Eval,
        SpanType::Task,
        SpanType::Tool,
        SpanType::Automation,
        SpanType::Facet,
        SpanType::Preprocessor,
        SpanType::Classifier,
        SpanType::Review,
        SpanType::Decision,
        SpanType::Question,
        SpanType::Log,
    ];

    /// The wire name, e.g. `"llm"`.
    ///
    /// ```
    /// use braintrust_core::SpanType;
    /// assert_eq!(SpanType::Llm.as_str(), "llm");
    /// assert_eq!(SpanType::Tool.as_str(), "tool");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            SpanType::Llm => "llm",
            SpanType::Score => "score",
            SpanType::Function => "function",
            SpanType::Eval => "eval",
            SpanType::Task => "task",
            SpanType::Tool => "tool",
            SpanType::Automation => "automation",
            SpanType::Facet => "facet",
            SpanType::Preprocessor => "preprocessor",
            SpanType::Classifier => "classifier",
            SpanType::Review => "review",
            SpanType::Decision => "decision",
            SpanType::Question => "question",
            SpanType::Log => "log",
        }
    }
}

impl fmt::Display for SpanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SpanType {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpanType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "type",
                    format!(
                        "unknown span type {s:?}; expected one of: {}",
                        SpanType::ALL.map(|t| t.as_str()).join(", ")
                    ),
                )
            })
    }
}

/// Where a new span hangs in the trace. Wins over the current span (spec §6.1).
#[derive(Debug, Clone)]
pub enum Parent {
    /// Under this span (same trace, same container).
    Span(Span),
    /// Under the span an exported slug names (see [`Span::export`]), possibly
    /// from another process or SDK.
    Slug(String),
    /// Under the span a W3C trace context names (see [`crate::extract`]).
    W3c(crate::w3c::TraceContext),
    /// No parent: a new trace.
    Root,
}

impl From<Span> for Parent {
    fn from(s: Span) -> Self {
        Parent::Span(s)
    }
}
impl From<&Span> for Parent {
    fn from(s: &Span) -> Self {
        Parent::Span(s.clone())
    }
}
impl From<String> for Parent {
    fn from(s: String) -> Self {
        Parent::Slug(s)
    }
}
impl From<&str> for Parent {
    fn from(s: &str) -> Self {
        Parent::Slug(s.to_string())
    }
}
impl From<crate::w3c::TraceContext> for Parent {
    fn from(c: crate::w3c::TraceContext) -> Self {
        Parent::W3c(c)
    }
}

/// Arguments of a new span. Everything is optional.
///
/// ```
/// use braintrust_core::{init_logger, Config, Event, LifecyclePolicy, LoggerOptions, SpanArgs, SpanType, State};
/// # let state = State::new(
/// #     Config::default().api_key("k").app_url("http://127.0.0.1:9").lifecycle(LifecyclePolicy::Manual),
/// # ).unwrap();
/// # let logger = init_logger(LoggerOptions::new().project("docs").state(state.clone())).unwrap();
/// let root = logger.start_span(SpanArgs::new().name("request"));
/// let retrieve = root.start_span(
///     SpanArgs::new()
///         .name("retrieve")
///         .span_type(SpanType::Tool)
///         .event(Event::new().input("query")),
/// );
/// // The parent came from `root`: same trace, `root` as the only parent.
/// assert_eq!(retrieve.root_span_id(), root.root_span_id());
/// assert_eq!(retrieve.span_parents(), vec![root.span_id()]);
/// // An explicit id, e.g. to update the row later.
/// let named = logger.start_span(SpanArgs::new().id("case-42"));
/// assert_eq!(named.id(), "case-42");
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "SpanArgs is a builder: pass it to start_span"]
pub struct SpanArgs {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) span_type: Option<SpanType>,
    pub(crate) parent: Option<Parent>,
    pub(crate) extra_parents: Vec<Span>,
    pub(crate) event: Option<Event>,
    pub(crate) start_time: Option<f64>,
    /// Checked by the builder; an error is reported when the span starts.
    pub(crate) propagated_event: Option<Result<Map<String, Value>, ValidationError>>,
    pub(crate) row_id: Option<String>,
    pub(crate) function_name: Option<&'static str>,
    pub(crate) instrumentation: Option<&'static str>,
}

impl SpanArgs {
    /// Empty arguments: default name and type, parent from context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Display name (default: `root` for roots, `file:line` of the caller for
    /// children). An empty name gets the default, with one warning.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Span type (default: `task` for logger roots, `eval` for experiment roots, none for children).
    pub fn span_type(mut self, t: SpanType) -> Self {
        self.span_type = Some(t);
        self
    }
    /// An explicit parent, which wins over the current span.
    pub fn parent(mut self, p: impl Into<Parent>) -> Self {
        self.parent = Some(p.into());
        self
    }
    /// Another parent: the trace is a DAG and `span_parents` lists them all.
    /// They must be spans of the same trace as the first parent.
    pub fn also_parent(mut self, p: &Span) -> Self {
        self.extra_parents.push(p.clone());
        self
    }
    /// Fields logged with the span's first row, validated when the span
    /// starts. An invalid event is rejected on its own (one warning names the
    /// field and rule, and [`Stats::rejected_span_args`](crate::Stats::rejected_span_args)
    /// counts it): the span and its children are still recorded.
    pub fn event(mut self, e: Event) -> Self {
        self.event = Some(e);
        self
    }
    /// Start time in float Unix seconds (default: now). A time that is not
    /// finite or outside years 1 to 9999 is replaced by now, with one warning.
    pub fn start_time(mut self, t: f64) -> Self {
        self.start_time = Some(t);
        self
    }
    /// Fields deep-merged into this span's first row and every descendant's
    /// (winning on conflicts), and carried in its exported slug: an object of
    /// event fields, as [`Event::from_json`] takes them (`null`: none).
    ///
    /// Anything else (not an object, an `id`, an unknown field, a score out
    /// of range...) is rejected when the span starts, as an invalid
    /// [`event`](Self::event) is: one warning per process names the field and
    /// rule, [`Stats::rejected_span_args`](crate::Stats::rejected_span_args)
    /// counts it, and the span starts as if none was given (it inherits its
    /// parent span's).
    ///
    /// ```
    /// use braintrust_core::{init_logger, Config, LifecyclePolicy, LoggerOptions, SpanArgs, SpanComponents, State};
    /// use serde_json::json;
    /// # let state = State::new(
    /// #     Config::default().api_key("k").app_url("http://127.0.0.1:9").lifecycle(LifecyclePolicy::Manual),
    /// # ).unwrap();
    /// # let logger = init_logger(LoggerOptions::new().project("docs").state(state.clone())).unwrap();
    /// let tenant =
    ///     logger.start_span(SpanArgs::new().propagated_event(json!({"metadata": {"tenant": "t-1"}})));
    /// // Carried in the exported slug: a service resuming the trace applies it too.
    /// let slug = SpanComponents::parse(&tenant.export()).unwrap();
    /// assert_eq!(
    ///     serde_json::Value::Object(slug.propagated_event.unwrap()),
    ///     json!({"metadata": {"tenant": "t-1"}})
    /// );
    /// // Rejected when the span starts (`id` is not an event field), and counted.
    /// logger.start_span(SpanArgs::new().propagated_event(json!({"id": "x"}))).end();
    /// assert_eq!(state.stats().rejected_span_args, 1);
    /// ```
    pub fn propagated_event(mut self, e: Value) -> Self {
        self.propagated_event = match e {
            Value::Null => None,
            e => Some(check_propagated_event("propagated_event", e)),
        };
        self
    }
    /// The row id (default: a fresh UUID). Reusing an id overwrites that row.
    /// An empty id gets a fresh UUID, with one warning.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.row_id = Some(id.into());
        self
    }
    /// The calling function's name, written to `context.caller_functionname`
    /// (set by `#[traced]`).
    pub fn function_name(mut self, f: &'static str) -> Self {
        self.function_name = Some(f);
        self
    }
    /// `context.span_origin.instrumentation.name` (e.g. `"openai"`).
    pub fn instrumentation(mut self, name: &'static str) -> Self {
        self.instrumentation = Some(name);
        self
    }
}

/// A span's parents' span ids.
pub(crate) type Parents = smallvec::SmallVec<[Id; 1]>;

/// The tree position of a new span: trace id, parents and inherited bits.
pub(crate) struct Lineage {
    pub root_span_id: Id,
    pub parents: Parents,
    pub propagated: Option<Arc<Map<String, Value>>>,
    pub w3c: Option<Arc<InboundW3c>>,
}

/// W3C state a trace came in with (spec §7.8), inherited by the subtree and
/// forwarded by [`Span::inject`]: the inbound `traceparent` flags, verbatim,
/// and the inbound `tracestate`.
pub(crate) struct InboundW3c {
    pub flags: String,
    pub tracestate: Option<String>,
}

pub(crate) struct SpanCore {
    pub(crate) object: Arc<ObjectInner>,
    pub(crate) row_id: Id,
    pub(crate) span_id: Id,
    pub(crate) root_span_id: Id,
    /// Empty for a root. One parent is stored inline (no allocation).
    pub(crate) parents: Parents,
    pub(crate) propagated: Option<Arc<Map<String, Value>>>,
    pub(crate) w3c: Option<Arc<InboundW3c>>,
    /// The start time, so no end is written before it.
    start: f64,
    handles: AtomicUsize,
    ended: AtomicBool,
    /// An application thread wrote a row of this span (see
    /// `pipeline::spill`): its later rows may meet that one in a round,
    /// so they take the path that merges rows of one id.
    pub(crate) spilled: AtomicBool,
    /// What was logged and not yet taken by the logger thread. Logging merges
    /// here, so a span queues at most one entry however often it logs before
    /// the logger thread catches up (spec §4.5 merge, done early and cheaply).
    pub(crate) pending: Mutex<Pending>,
}

/// A span's unsent writes.
#[derive(Default)]
pub(crate) struct Pending {
    pub start: Option<StartInfo>,
    pub event: Option<Event>,
    pub end: Option<f64>,
    /// An entry for this span is in the queue.
    pub queued: bool,
    /// The span's entry was dropped (queue full): later writes are dropped
    /// too, and the span was counted once.
    pub dropped: bool,
    /// Estimated payload bytes of these writes (the byte budget's share).
    pub bytes: usize,
}

impl Pending {
    /// True when there is something to write.
    pub(crate) fn has_writes(&self) -> bool {
        self.start.is_some() || self.event.is_some() || self.end.is_some()
    }

    /// True when a value shared with the caller (`Event::input_shared`)
    /// waits here: it is serialized on the logger thread only.
    pub(crate) fn has_shared(&self) -> bool {
        let start = self.start.as_ref().and_then(|s| s.event.as_ref());
        [start, self.event.as_ref()]
            .into_iter()
            .flatten()
            .any(|e| !e.shared().is_empty())
    }
}

impl SpanCore {
    /// Applies `f` (writing about `bytes` of payload, plus the bytes `f`
    /// returns: copies it made to merge) to the unsent writes and queues the
    /// span if it is not queued yet.
    pub(crate) fn update(self: &Arc<Self>, bytes: usize, f: impl FnOnce(&mut Pending) -> usize) {
        let (enqueue, bytes) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.dropped {
                return;
            }
            let bytes = bytes + f(&mut p);
            // Counted under the lock, so a concurrent take never subtracts
            // bytes not yet added.
            if bytes > 0 {
                p.bytes += bytes;
                self.object.state.pipeline().add_payload_bytes(bytes);
            }
            (!std::mem::replace(&mut p.queued, true), bytes)
        };
        if enqueue {
            self.object.state.enqueue_span(self, bytes);
        }
    }

    /// Takes the unsent writes (logger thread).
    pub(crate) fn take_pending(&self) -> Pending {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *p);
        if taken.bytes > 0 {
            self.object.state.pipeline().sub_payload_bytes(taken.bytes);
        }
        taken
    }

    /// The queue had no room for this span: drop its writes, now and later.
    pub(crate) fn mark_dropped(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.bytes > 0 {
            self.object.state.pipeline().sub_payload_bytes(p.bytes);
        }
        *p = Pending {
            dropped: true,
            queued: true,
            ..Pending::default()
        };
    }
}

static EXEC_COUNTER: AtomicU64 = AtomicU64::new(1);

use crate::time::now_secs;

/// What the first row needs besides ids; moved to the logger thread as is.
pub(crate) struct StartInfo {
    pub start: f64,
    pub name: Option<Cow<'static, str>>,
    pub span_type: Option<SpanType>,
    pub exec_counter: u64,
    pub caller: &'static Location<'static>,
    pub function_name: Option<&'static str>,
    pub instrumentation: Option<&'static str>,
    pub event: Option<Event>,
}

/// A span: one node of a trace. Cheap to clone; every clone is the same span.
///
/// A span ends when [`end`](Span::end) is called or when the last handle is
/// dropped, whichever comes first, so no span is ever left open and lost.
/// With no logger initialized, spans are no-ops that allocate nothing.
pub struct Span {
    core: Option<Arc<SpanCore>>,
}

impl Clone for Span {
    fn clone(&self) -> Self {
        if let Some(c) = &self.core {
            c.handles.fetch_add(1, Ordering::Relaxed);
        }
        Span {
            core: self.core.clone(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(c) = &self.core {
            if c.handles.fetch_sub(1, Ordering::AcqRel) == 1 && !c.ended.load(Ordering::Acquire) {
                end_core(c, now_secs());
            }
        }
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.core {
            None => f.write_str("Span(noop)"),
            Some(c) => f
                .debug_struct("Span")
                .field("id", &c.row_id)
                .field("span_id", &c.span_id)
                .field("root_span_id", &c.root_span_id)
                .finish(),
        }
    }
}

fn end_core(c: &Arc<SpanCore>, at: f64) -> bool {
    if c.ended.swap(true, Ordering::AcqRel) {
        return false;
    }
    // A span never ends before it started (e.g. with a start time in the
    // future): the row would read as never ended.
    let at = at.max(c.start);
    c.update(0, |p| {
        p.end = Some(at);
        0
    });
    true
}

impl Span {
    /// A span that records nothing (what you get with no logger).
    pub const fn noop() -> Span {
        Span { core: None }
    }

    /// True for the no-op span.
    pub fn is_noop(&self) -> bool {
        self.core.is_none()
    }

    pub(crate) fn core(&self) -> Option<&Arc<SpanCore>> {
        self.core.as_ref()
    }

    /// Creates a span under `object` and queues its first row. What the
    /// protocol forbids in `args` is dropped (counted in
    /// `Stats::rejected_span_args`) or replaced (see [`SpanArgs`]), with one
    /// warning per kind, never the span itself.
    pub(crate) fn start(
        object: &Arc<ObjectInner>,
        lineage: Option<Lineage>,
        args: SpanArgs,
        caller: &'static Location<'static>,
    ) -> Span {
        Self::start_inner(object, lineage, args, caller, false)
    }

    /// [`start`](Self::start) for a span that ends as it starts
    /// (`Logger::log`): its start and end are one write, so it is one row
    /// however soon the logger thread takes it.
    pub(crate) fn start_ended(
        object: &Arc<ObjectInner>,
        args: SpanArgs,
        caller: &'static Location<'static>,
    ) -> Span {
        Self::start_inner(object, None, args, caller, true)
    }

    fn start_inner(
        object: &Arc<ObjectInner>,
        lineage: Option<Lineage>,
        args: SpanArgs,
        caller: &'static Location<'static>,
        ended: bool,
    ) -> Span {
        let event = args.event.and_then(|e| match e.validate() {
            Ok(e) => Some(e),
            Err(err) => {
                crate::diagnostics::warn_once(
                    "invalid-span-event",
                    &format!("braintrust: the event given to a new span was rejected ({err}); the span was started without it"),
                );
                object.state.pipeline().count_rejected_span_arg();
                None
            }
        });
        let legacy = object.state.legacy_ids();
        let span_id = Id::new_span_id(legacy);
        let is_root = lineage.is_none();
        let (root_span_id, parents, propagated, w3c) = match lineage {
            Some(l) => {
                let mut parents = l.parents;
                for extra in &args.extra_parents {
                    if let Some(c) = extra.core() {
                        if !parents.contains(&c.span_id) {
                            parents.push(c.span_id.clone());
                        }
                    }
                }
                (l.root_span_id, parents, l.propagated, l.w3c)
            }
            None => {
                let root = if legacy {
                    span_id.clone()
                } else {
                    Id::new_trace_id(false)
                };
                (root, Parents::new(), None, None)
            }
        };
        let propagated = match args.propagated_event {
            Some(Ok(p)) => Some(Arc::new(p)),
            Some(Err(err)) => {
                crate::diagnostics::warn_once(
                    "invalid-propagated-event",
                    &format!("braintrust: the propagated_event of a new span was rejected ({err}); the span was started without it"),
                );
                object.state.pipeline().count_rejected_span_arg();
                propagated
            }
            None => propagated,
        };
        let row_id = match args.row_id {
            Some(id) if !id.is_empty() => Id::Str(Arc::from(id.as_str())),
            Some(_) => {
                crate::diagnostics::warn_once(
                    "empty-row-id",
                    "braintrust: ignoring an empty span id (SpanArgs::id); using a fresh UUID",
                );
                Id::new_uuid()
            }
            None => Id::new_uuid(),
        };
        let span_type = args.span_type.or(if is_root {
            Some(object.default_root_type())
        } else {
            None
        });
        let name = match args.name {
            Some(n) if n.is_empty() => {
                crate::diagnostics::warn_once(
                    "empty-span-name",
                    "braintrust: ignoring an empty span name (SpanArgs::name); using the default name",
                );
                None
            }
            n => n,
        };
        let name = name.or(if is_root {
            Some(Cow::Borrowed("root"))
        } else {
            None
        });
        let start = match args.start_time {
            Some(t) => crate::time::valid_time_or_now(t, "start_time"),
            None => now_secs(),
        };
        let core = Arc::new(SpanCore {
            object: object.clone(),
            row_id,
            span_id,
            root_span_id,
            parents,
            propagated,
            w3c,
            start,
            handles: AtomicUsize::new(1),
            ended: AtomicBool::new(ended),
            spilled: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
        });
        let bytes = event.as_ref().map_or(0, Event::approx_bytes);
        let info = StartInfo {
            start,
            name,
            span_type,
            exec_counter: EXEC_COUNTER.fetch_add(1, Ordering::Relaxed),
            caller,
            function_name: args.function_name,
            instrumentation: args.instrumentation,
            event,
        };
        core.update(bytes, |p| {
            p.start = Some(info);
            if ended {
                p.end = Some(start);
            }
            0
        });
        Span { core: Some(core) }
    }

    /// The lineage a child of this span gets.
    pub(crate) fn child_lineage(&self) -> Option<Lineage> {
        self.core.as_ref().map(|c| Lineage {
            root_span_id: c.root_span_id.clone(),
            parents: Parents::from_elem(c.span_id.clone(), 1),
            propagated: c.propagated.clone(),
            w3c: c.w3c.clone(),
        })
    }

    /// Logs fields on this span (a merge row). Invalid fields are rejected
    /// with an error naming the field and rule, and nothing is queued.
    ///
    /// ```
    /// use braintrust_core::{current_span, Event};
    /// // On the no-op span this validates and then does nothing.
    /// current_span().log(Event::new().output("done")).unwrap();
    /// assert!(current_span().log(Event::new().score("s", 2.0)).is_err());
    /// ```
    pub fn log(&self, event: Event) -> Result<(), ValidationError> {
        let event = event.validate()?;
        if let Some(c) = &self.core {
            if !event.is_empty() {
                c.update(event.approx_bytes(), |p| match &mut p.event {
                    Some(e) => e.merge_from(event),
                    None => {
                        p.event = Some(event);
                        0
                    }
                });
            }
        }
        Ok(())
    }

    /// Logs fields on this span and never fails: the form for code that
    /// should not handle logging errors (no `.ok()`, no `From<ValidationError>`
    /// for `?`), as the Python SDK's `span.log` never throws. An event
    /// [`log`](Span::log) would reject is not logged; the first rejection of
    /// each field is reported on stderr, and every one is counted in the
    /// span's backend's [`Stats::rejected_logs`](crate::Stats::rejected_logs).
    ///
    /// ```
    /// use braintrust_core::{init_logger, Config, Event, LifecyclePolicy, LoggerOptions, SpanArgs, State};
    /// let state = State::new(Config::default().api_key("k").app_url("http://127.0.0.1:9")
    ///     .lifecycle(LifecyclePolicy::Manual)).unwrap();
    /// let logger = init_logger(LoggerOptions::new().project("p").state(state.clone())).unwrap();
    /// let span = logger.start_span(SpanArgs::new().name("answer"));
    /// span.log_or_report(Event::new().output("done"));
    /// // Out of range: reported once on stderr, counted, not logged.
    /// span.log_or_report(Event::new().score("accuracy", 2.0));
    /// assert_eq!(state.stats().rejected_logs, 1);
    /// ```
    pub fn log_or_report(&self, event: Event) {
        if let Err(e) = self.log(event) {
            // Keyed by field: some rules quote the value, and one line per
            // field says what to fix without flooding stderr.
            crate::diagnostics::warn_once(
                &format!("log-or-report:{}", e.field),
                &format!("braintrust: span.log_or_report: {e}; the event was not logged (later rejections of `{}` are only counted in Stats::rejected_logs)", e.field),
            );
            if let Some(c) = &self.core {
                c.object.state.pipeline().count_rejected_log();
            }
        }
    }

    /// Logs metrics only (e.g. token counts).
    pub fn log_metrics<K: Into<String>>(&self, metrics: impl IntoIterator<Item = (K, f64)>) {
        // Metric values are plain floats, so this cannot fail validation.
        let _ = self.log(Event::new().metrics(metrics));
    }

    /// Renames the span and/or changes its type (a merge row on
    /// `span_attributes`). An empty name is ignored: a span keeps a name.
    pub fn set_attributes(&self, name: Option<&str>, span_type: Option<SpanType>) {
        let mut attrs = Map::new();
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            attrs.insert("name".into(), Value::String(n.to_string()));
        }
        if let Some(t) = span_type {
            attrs.insert("type".into(), Value::String(t.as_str().into()));
        }
        if !attrs.is_empty() {
            let _ = self.log(Event::new().span_attributes(Value::Object(attrs)));
        }
    }

    /// Starts a child span of this one (same trace and container).
    #[track_caller]
    pub fn start_span(&self, args: SpanArgs) -> Span {
        let caller = Location::caller();
        match &self.core {
            None => Span::noop(),
            Some(c) => {
                let object = c.object.clone();
                crate::logger::start_with_parent(&object, Some(self), args, caller)
            }
        }
    }

    /// Ends the span now and returns the end time (float Unix seconds).
    /// Idempotent: later calls write nothing and return the current time.
    pub fn end(&self) -> f64 {
        self.end_at(now_secs())
    }

    /// Ends the span at the given float Unix time and returns the time
    /// written. A time that is not finite or outside years 1 to 9999 is
    /// replaced by now, and one before the span's start by the start, each
    /// with one warning: the row never reads as ended before it started.
    ///
    /// ```
    /// use braintrust_core::Span;
    /// // The no-op span writes nothing and returns the time as given.
    /// assert_eq!(Span::noop().end_at(5.0), 5.0);
    /// ```
    pub fn end_at(&self, at: f64) -> f64 {
        let Some(c) = &self.core else {
            return at;
        };
        let mut at = crate::time::valid_time_or_now(at, "end_time");
        if at < c.start {
            crate::diagnostics::warn_once(
                "end-before-start",
                &format!("braintrust: a span end time ({at}) was before its start ({}); the start is used", c.start),
            );
            at = c.start;
        }
        end_core(c, at);
        at
    }

    /// True once [`end`](Span::end) ran (always true for the no-op span).
    pub fn is_ended(&self) -> bool {
        self.core
            .as_ref()
            .is_none_or(|c| c.ended.load(Ordering::Acquire))
    }

    /// The row id (`""` for the no-op span). Use it with `Logger::update_span`.
    pub fn id(&self) -> String {
        self.core
            .as_ref()
            .map(|c| c.row_id.to_string())
            .unwrap_or_default()
    }

    /// The span id (`""` for the no-op span).
    pub fn span_id(&self) -> String {
        self.core
            .as_ref()
            .map(|c| c.span_id.to_string())
            .unwrap_or_default()
    }

    /// The trace id (`""` for the no-op span).
    pub fn root_span_id(&self) -> String {
        self.core
            .as_ref()
            .map(|c| c.root_span_id.to_string())
            .unwrap_or_default()
    }

    /// The parents' span ids (empty for roots).
    pub fn span_parents(&self) -> Vec<String> {
        self.core
            .as_ref()
            .map(|c| c.parents.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    }

    /// Makes this span current on this thread until the guard drops.
    pub fn enter(&self) -> SpanGuard {
        SpanGuard::enter(self)
    }

    /// Runs `f` with this span current.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.enter();
        f()
    }

    /// Waits until everything queued by this span's backend is delivered.
    pub fn flush(&self) -> Result<(), crate::Error> {
        match &self.core {
            Some(c) => c.object.state.flush(),
            None => Ok(()),
        }
    }

    /// True when both handles are the same span.
    pub fn same_span(&self, other: &Span) -> bool {
        match (&self.core, &other.core) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// True when this span is current on this thread.
    pub fn is_current(&self) -> bool {
        context::current_span().same_span(self)
    }
}
