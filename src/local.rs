//! The embedded default for machines without an account: log to Braintrust
//! when `BRAINTRUST_API_KEY` is set, otherwise to a local Braintrust-compatible
//! server (`braintrust-devserver`) started in-process.

use braintrust_core::{Config, Error, Logger, LoggerOptions, State};
pub use braintrust_devserver::DevServer;

/// What [`init_logger_or_local`] returns: the logger it made current, and the
/// in-process server that logger writes to when there was no API key (`None`
/// when logging to Braintrust). Keep it alive as long as you log: dropping
/// the last handle of the server stops it.
#[derive(Debug)]
pub struct LocalSession {
    /// The logger (also made the current logger).
    pub logger: Logger,
    /// The in-process server, when one was started.
    pub server: Option<DevServer>,
}

impl LocalSession {
    /// Flushes, then returns the stored traces as an indented tree (names,
    /// types, durations, errors, scores), or `None` when logging to Braintrust.
    pub fn traces(&self) -> Result<Option<String>, Error> {
        self.logger.flush()?;
        Ok(self.server.as_ref().map(DevServer::render_all_traces))
    }
}

/// Starts a logger with `options`: on Braintrust when `BRAINTRUST_API_KEY`
/// is set, else on a local server started here (its URL is printed once).
/// The logger becomes the current logger either way.
///
/// ```
/// let session = braintrust::local::init_logger_or_local(
///     braintrust::LoggerOptions::new().project("demo"),
/// ).unwrap();
/// # if session.server.is_some() {
/// session.logger.log(braintrust::Event::new().input("hi")).unwrap();
/// assert!(session.traces().unwrap().unwrap().contains("root"));
/// # }
/// ```
pub fn init_logger_or_local(options: LoggerOptions) -> Result<LocalSession, Error> {
    let has_key = std::env::var("BRAINTRUST_API_KEY").is_ok_and(|k| !k.trim().is_empty());
    if has_key {
        let logger = braintrust_core::init_logger(options.set_current(true))?;
        return Ok(LocalSession {
            logger,
            server: None,
        });
    }
    let server = DevServer::start_blocking(Default::default()).map_err(|e| Error::Config {
        field: "local-server",
        rule: format!("could not start the local server: {e}"),
    })?;
    eprintln!(
        "braintrust: BRAINTRUST_API_KEY is not set; logging to a local server at {}",
        server.url()
    );
    let state = State::new(Config::from_env().api_key("local").app_url(server.url()))?;
    let logger = braintrust_core::init_logger(options.state(state).set_current(true))?;
    Ok(LocalSession {
        logger,
        server: Some(server),
    })
}
