//! Containers spans are logged to: project logs ([`Logger`]) and experiments
//! ([`Experiment`]), plus the process-wide "current logger" and the top-level
//! [`start_span`].

use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::{Map, Value};

use crate::context;
use crate::event::{Event, ValidationError};
use crate::export::{ObjectType, SpanComponents};
use crate::span::{Parent, Span, SpanArgs, SpanType};
use crate::state::State;
use crate::Error;

/// What a container is, as given at init or read from a slug.
#[derive(Debug, Clone)]
pub(crate) enum ObjectSpec {
    Project {
        name: Option<String>,
        id: Option<String>,
    },
    Experiment {
        project_name: Option<String>,
        project_id: Option<String>,
        options: Box<ExperimentOptions>,
    },
    /// Known id (from a slug or an explicit id), any object type.
    Known { id: String },
}

/// The ids a container resolved to, once known.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub id: String,
}

pub(crate) struct ObjectInner {
    pub(crate) state: State,
    pub(crate) kind: ObjectType,
    pub(crate) spec: ObjectSpec,
    pub(crate) resolved: OnceLock<Resolved>,
    pub(crate) resolve_lock: tokio::sync::Mutex<()>,
}

impl ObjectInner {
    pub(crate) fn new(state: State, kind: ObjectType, spec: ObjectSpec) -> Arc<ObjectInner> {
        let resolved = OnceLock::new();
        match &spec {
            ObjectSpec::Known { id } => {
                let _ = resolved.set(Resolved { id: id.clone() });
            }
            ObjectSpec::Project {
                name: Some(_),
                id: Some(id),
            } => {
                // With both, the official SDKs make no call and trust them.
                let _ = resolved.set(Resolved { id: id.clone() });
            }
            _ => {}
        }
        Arc::new(ObjectInner {
            state,
            kind,
            spec,
            resolved,
            resolve_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn default_root_type(&self) -> SpanType {
        match self.kind {
            ObjectType::Experiment => SpanType::Eval,
            _ => SpanType::Task,
        }
    }

    /// The row fields naming this container (spec §7.5a), once resolved.
    pub(crate) fn id_fields(&self, id: &str, row: &mut Map<String, Value>) {
        match self.kind {
            ObjectType::Experiment => {
                row.insert("experiment_id".into(), Value::String(id.to_string()));
            }
            ObjectType::ProjectLogs => {
                row.insert("project_id".into(), Value::String(id.to_string()));
                row.insert("log_id".into(), Value::String("g".into()));
            }
            ObjectType::PlaygroundLogs => {
                row.insert("prompt_session_id".into(), Value::String(id.to_string()));
                row.insert("log_id".into(), Value::String("x".into()));
            }
        }
    }

    /// Slug components of the container itself (no row).
    pub(crate) fn components(&self) -> SpanComponents {
        let mut c = SpanComponents {
            object_type: self.kind,
            object_id: None,
            compute_object_metadata_args: None,
            row_id: None,
            span_id: None,
            root_span_id: None,
            propagated_event: None,
        };
        if let Some(r) = self.resolved.get() {
            c.object_id = Some(r.id.clone());
        } else {
            let mut args = Map::new();
            match &self.spec {
                ObjectSpec::Project { name, id } => {
                    args.insert(
                        "project_name".into(),
                        name.clone().map_or(Value::Null, Value::String),
                    );
                    args.insert(
                        "project_id".into(),
                        id.clone().map_or(Value::Null, Value::String),
                    );
                }
                ObjectSpec::Experiment { .. } | ObjectSpec::Known { .. } => {
                    // Experiments cannot be named by compute args (spec §7.5):
                    // callers resolve first (see `Experiment::export`).
                }
            }
            c.compute_object_metadata_args = Some(args);
        }
        c
    }
}

/// Options of [`init_logger`].
#[derive(Debug, Clone, Default)]
#[must_use = "LoggerOptions is a builder: pass it to init_logger"]
pub struct LoggerOptions {
    pub(crate) project_name: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) state: Option<State>,
    pub(crate) set_current: Option<bool>,
}

impl LoggerOptions {
    /// Defaults: project `"Global"`, the default state, becomes the current logger.
    pub fn new() -> Self {
        Self::default()
    }
    /// Project name (registered in the background, get-or-create).
    pub fn project(mut self, name: impl Into<String>) -> Self {
        self.project_name = Some(name.into());
        self
    }
    /// Project id (looked up in the background unless a name is given too).
    pub fn project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }
    /// The backend to log to (default: the process-wide state from the environment).
    pub fn state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }
    /// Whether this logger becomes the process's current logger (default true
    /// for the default state, false for an explicit one, so a second backend
    /// never captures spans meant for the first).
    pub fn set_current(mut self, on: bool) -> Self {
        self.set_current = Some(on);
        self
    }
}

/// Options of [`init_experiment`]: the project (as in [`LoggerOptions`]) and
/// the experiment's name, description, metadata, base experiment.
#[derive(Debug, Clone, Default)]
#[must_use = "ExperimentOptions is a builder: pass it to init_experiment"]
pub struct ExperimentOptions {
    pub(crate) project_name: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) metadata: Option<Map<String, Value>>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) public: bool,
    pub(crate) update: bool,
    pub(crate) base_experiment_id: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) state: Option<State>,
    pub(crate) set_current: Option<bool>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", self.config())
            .finish()
    }
}

impl ExperimentOptions {
    /// Defaults: a server-generated name.
    pub fn new() -> Self {
        Self::default()
    }
    /// Experiment name.
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = Some(n.into());
        self
    }
    /// Description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    /// Metadata (must be an object; other values are ignored).
    pub fn metadata(mut self, m: Value) -> Self {
        if let Value::Object(m) = m {
            self.metadata = Some(m);
        }
        self
    }
    /// Tags.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }
    /// Make the experiment public.
    pub fn public(mut self, on: bool) -> Self {
        self.public = on;
        self
    }
    /// Continue an existing experiment of that name instead of creating a new one.
    pub fn update(mut self, on: bool) -> Self {
        self.update = on;
        self
    }
    /// Compare against this base experiment.
    pub fn base_experiment_id(mut self, id: impl Into<String>) -> Self {
        self.base_experiment_id = Some(id.into());
        self
    }
    /// Project name (registered in the background, get-or-create), as
    /// [`LoggerOptions::project`].
    pub fn project(mut self, name: impl Into<String>) -> Self {
        self.project_name = Some(name.into());
        self
    }
    /// The project by id instead of by name.
    pub fn project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }
    /// The backend to log to.
    pub fn state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }
    /// Whether this experiment becomes current (default as for loggers).
    pub fn set_current(mut self, on: bool) -> Self {
        self.set_current = Some(on);
        self
    }
}

/// A project's logs: the container production traces go to.
#[derive(Clone)]
pub struct Logger {
    pub(crate) object: Arc<ObjectInner>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("type", &self.object.kind.as_str())
            .field("spec", &self.object.spec)
            .finish()
    }
}

static CURRENT_LOGGER: RwLock<Option<Logger>> = RwLock::new(None);
static HAS_CURRENT_LOGGER: AtomicBool = AtomicBool::new(false);

/// Starts logging to a project's logs. Returns at once: login and project
/// registration run in the background and never block or panic here.
///
/// ```
/// use braintrust_core::{init_logger, LoggerOptions, State, Config};
/// // A state pointed at a closed port: init still returns immediately.
/// let state = State::new(Config::default().api_key("k").app_url("http://127.0.0.1:9")).unwrap();
/// let logger = init_logger(LoggerOptions::new().project("My Project").state(state)).unwrap();
/// assert!(logger.export().len() > 0);
/// ```
pub fn init_logger(options: LoggerOptions) -> Result<Logger, Error> {
    let explicit = options.state.is_some();
    let state = match options.state {
        Some(s) => s,
        None => State::default_state()?,
    };
    let name = match (&options.project_name, &options.project_id) {
        (None, None) => Some("Global".to_string()),
        (n, _) => n.clone(),
    };
    let object = ObjectInner::new(
        state,
        ObjectType::ProjectLogs,
        ObjectSpec::Project {
            name,
            id: options.project_id,
        },
    );
    object.state.ensure_started();
    let logger = Logger { object };
    if options.set_current.unwrap_or(!explicit) {
        set_current_logger(Some(logger.clone()));
    }
    Ok(logger)
}

/// Creates (or, with [`ExperimentOptions::update`], continues) an experiment
/// in the options' project. Returns at once, like [`init_logger`]: the
/// project and experiment are registered in the background.
///
/// ```
/// use braintrust_core::{init_experiment, Config, ExperimentOptions, LifecyclePolicy, SpanArgs, State};
/// # fn main() -> Result<(), braintrust_core::Error> {
/// // Nothing listens on port 9: registration and delivery fail in the
/// // background, and this returns at once all the same.
/// let state = State::new(
///     Config::default().api_key("k").app_url("http://127.0.0.1:9").lifecycle(LifecyclePolicy::Manual),
/// )?;
/// let experiment = init_experiment(
///     ExperimentOptions::new().project("my-project").name("baseline").state(state.clone()),
/// )?;
/// experiment.as_logger().start_span(SpanArgs::new().name("case-1")).end();
/// // Counted at once (a row or two: see `Stats::logged`).
/// assert!(state.stats().logged >= 1);
/// # Ok(())
/// # }
/// ```
pub fn init_experiment(options: ExperimentOptions) -> Result<Experiment, Error> {
    let explicit = options.state.is_some();
    let state = match options.state.clone() {
        Some(s) => s,
        None => State::default_state()?,
    };
    let set_current = options.set_current.unwrap_or(!explicit);
    let object = ObjectInner::new(
        state,
        ObjectType::Experiment,
        ObjectSpec::Experiment {
            project_name: options.project_name.clone().filter(|p| !p.is_empty()),
            project_id: options.project_id.clone(),
            options: Box::new(options),
        },
    );
    object.state.ensure_started();
    let exp = Experiment(Logger { object });
    if set_current {
        set_current_logger(Some(exp.0.clone()));
    }
    Ok(exp)
}

/// Makes `logger` the process's current logger (or clears it): root spans
/// started with [`start_span`] or `#[traced]` outside any span go there.
pub fn set_current_logger(logger: Option<Logger>) {
    let mut g = CURRENT_LOGGER.write().unwrap_or_else(|e| e.into_inner());
    HAS_CURRENT_LOGGER.store(logger.is_some(), Ordering::Release);
    *g = logger;
}

/// The process's current logger or experiment, if any.
pub fn current_logger() -> Option<Logger> {
    if !HAS_CURRENT_LOGGER.load(Ordering::Acquire) {
        return None;
    }
    CURRENT_LOGGER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// True when a span is current or a logger is set: the one cheap check
/// `#[traced]` makes before doing anything.
#[inline]
pub fn is_enabled() -> bool {
    HAS_CURRENT_LOGGER.load(Ordering::Relaxed) || context::has_current()
}

/// Starts a span under the current span, else as a root of the current
/// logger, else returns a no-op span (spec §6.1 precedence). An explicit
/// parent in `args` wins.
///
/// ```
/// use braintrust_core::{start_span, SpanArgs};
/// let span = start_span(SpanArgs::new().name("work"));
/// assert!(span.is_noop()); // no logger initialized in this doctest
/// span.end();
/// ```
#[track_caller]
pub fn start_span(args: SpanArgs) -> Span {
    let caller = Location::caller();
    start_span_at(args, caller)
}

/// [`start_span`] with an explicit caller location (used by `#[traced]`).
pub fn start_span_at(args: SpanArgs, caller: &'static Location<'static>) -> Span {
    if args.parent.is_none() {
        if !is_enabled() {
            return Span::noop();
        }
        let current = context::current_span();
        if let Some(core) = current.core() {
            let object = core.object.clone();
            return start_with_parent(&object, Some(&current), args, caller);
        }
        return match current_logger() {
            Some(l) => start_with_parent(&l.object, None, args, caller),
            None => Span::noop(),
        };
    }
    // Explicit parent.
    let logger = current_logger();
    match args.parent.clone() {
        Some(Parent::Span(p)) => match p.core() {
            Some(c) => {
                let object = c.object.clone();
                start_with_parent(&object, None, args, caller)
            }
            None => Span::noop(),
        },
        Some(Parent::Root) => match logger {
            Some(l) => start_with_parent(&l.object, None, args, caller),
            None => Span::noop(),
        },
        Some(parent @ (Parent::Slug(_) | Parent::W3c(_))) => {
            // The container the call would use without the parent (the
            // current span's, else the logger's): a slug/W3C parent naming it
            // reuses it, a W3C parent without `braintrust.parent` baggage is
            // routed to it (spec §7.8), and an unusable parent (empty slug,
            // bad baggage) falls back to the usual precedence there.
            let current = context::current_span();
            if let Some(c) = current.core() {
                let object = c.object.clone();
                return start_with_parent(&object, Some(&current), args, caller);
            }
            if let Some(l) = &logger {
                return start_with_parent(&l.object, None, args, caller);
            }
            let Ok(state) = State::default_state() else {
                return Span::noop();
            };
            match crate::propagation::continue_from(&state, &parent, None) {
                Some(c) => start_continued(c, args, caller),
                // Unusable parent, and no current span or logger to fall back to.
                None => Span::noop(),
            }
        }
        None => unreachable!("checked above"),
    }
}

/// Starts a span in `object`. `implicit_parent` is the span the call was made
/// on or the current span; an explicit parent in `args` wins over it. A slug
/// or W3C parent names its own container (spec §7.6): `object` is used when
/// it is that container, or when the parent names none.
pub(crate) fn start_with_parent(
    object: &Arc<ObjectInner>,
    implicit_parent: Option<&Span>,
    mut args: SpanArgs,
    caller: &'static Location<'static>,
) -> Span {
    let cont = match args.parent.take() {
        Some(p) => crate::propagation::continue_from(&object.state, &p, Some(object)),
        None => None,
    };
    match cont {
        Some(c) => start_continued(c, args, caller),
        None => {
            let lineage = implicit_parent.and_then(|p| p.child_lineage());
            Span::start(object, lineage, args, caller)
        }
    }
}

/// Starts a span where an explicit parent resolved to.
fn start_continued(
    c: crate::propagation::Continuation,
    mut args: SpanArgs,
    caller: &'static Location<'static>,
) -> Span {
    let Some(object) = c.object else {
        return Span::noop();
    };
    if args.propagated_event.is_none() {
        args.propagated_event = c.propagated;
    }
    Span::start(&object, c.lineage, args, caller)
}

impl Logger {
    /// Starts a span in this container: under the current span when that span
    /// belongs here, else a new root. An explicit parent in `args` wins.
    #[track_caller]
    pub fn start_span(&self, args: SpanArgs) -> Span {
        let caller = Location::caller();
        let current = context::current_span();
        let implicit = match current.core() {
            Some(c) if Arc::ptr_eq(&c.object, &self.object) => Some(&current),
            _ => None,
        };
        start_with_parent(&self.object, implicit, args, caller)
    }

    /// Logs one complete root row (a span that starts and ends at once) and
    /// returns its row id. Never looks at the current span.
    #[track_caller]
    pub fn log(&self, event: Event) -> Result<String, ValidationError> {
        let caller = Location::caller();
        let event = event.validate()?;
        let span = Span::start_ended(&self.object, SpanArgs::new().event(event), caller);
        Ok(span.id())
    }

    /// Writes a merge row onto an existing span by its row id (spec §6.2).
    /// Do this after the span's original rows were flushed. An empty id or an
    /// invalid event is rejected and nothing is queued.
    pub fn update_span(&self, id: &str, event: Event) -> Result<(), ValidationError> {
        if id.is_empty() {
            return Err(ValidationError::new("id", "the row id must not be empty"));
        }
        let event = event.validate()?;
        let mut row = Map::new();
        row.insert("id".into(), Value::String(id.to_string()));
        event.write_into(&mut row);
        row.insert("_is_merge".into(), Value::Bool(true));
        self.object.state.enqueue_row(self.object.clone(), row);
        Ok(())
    }

    /// Waits until everything this logger's backend has queued is delivered
    /// (or has failed for good, which is returned as the error).
    pub fn flush(&self) -> Result<(), Error> {
        self.object.state.flush()
    }

    /// [`flush`](Logger::flush) for async code; never blocks the executor.
    pub async fn flush_async(&self) -> Result<(), Error> {
        self.object.state.flush_async().await
    }

    /// The slug naming this container (V4, or V3 with legacy ids). Before the
    /// project id is known it carries `compute_object_metadata_args`, exactly
    /// as the official SDKs do; an experiment's id is resolved first
    /// (blocking: experiments cannot be named by compute args). `""` if that
    /// resolution fails.
    pub fn export(&self) -> String {
        match crate::propagation::object_components(&self.object) {
            Some(c) => crate::propagation::encode_components(&self.object.state, &c),
            None => String::new(),
        }
    }

    /// The backend this logger sends to.
    pub fn state(&self) -> &State {
        &self.object.state
    }

    /// The container's id once it is known (after the first flush).
    pub fn id(&self) -> Option<String> {
        self.object.resolved.get().map(|r| r.id.clone())
    }

    /// Resolves and returns the container's id, logging in and registering
    /// if needed (blocking; use from sync code).
    pub fn resolve_id(&self) -> Result<String, Error> {
        self.object.state.resolve_blocking(&self.object)
    }

    /// True when both handles are the same container.
    pub fn same_logger(&self, other: &Logger) -> bool {
        Arc::ptr_eq(&self.object, &other.object)
    }
}

/// An experiment: a container of `eval` roots, logged to through
/// [`as_logger`](Self::as_logger) (spans, flush, ids) like a [`Logger`].
#[derive(Clone, Debug)]
pub struct Experiment(pub(crate) Logger);

impl Experiment {
    /// The logger view of this experiment: start spans, log, flush, resolve ids.
    pub fn as_logger(&self) -> &Logger {
        &self.0
    }
}
