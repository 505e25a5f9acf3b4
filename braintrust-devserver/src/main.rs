//! `braintrust-devserver`: run a local Braintrust-compatible server.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use braintrust_devserver::{
    export_jsonl, import_jsonl, DevServer, DevServerConfig, RecordLimits, Target,
    DEFAULT_MAX_BODY_BYTES,
};
use clap::{Args, Parser, Subcommand};

/// A local Braintrust-compatible server (SQLite storage, web trace viewer).
///
/// Without a subcommand it serves; `import` and `export` move span trees in and out of a
/// database file.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import span trees (JSON lines of {name, input, output, expected, metadata, metrics,
    /// children}) from FILE or stdin, keeping their shape and start/end times.
    Import {
        #[command(flatten)]
        target: TargetArgs,
        /// Input file (default: stdin).
        file: Option<PathBuf>,
    },
    /// Export a project's logs or an experiment as span trees, one JSON line per trace.
    Export {
        #[command(flatten)]
        target: TargetArgs,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// SQLite database file (the one `--db` of the server uses).
    #[arg(long)]
    db: PathBuf,
    /// Project name (created on import when missing).
    #[arg(long, default_value = "imported")]
    project: String,
    /// Experiment of the project (default: the project's logs).
    #[arg(long)]
    experiment: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match &self.experiment {
            Some(e) => Target::Experiment {
                project: self.project.clone(),
                experiment: e.clone(),
            },
            None => Target::ProjectLogs(self.project.clone()),
        }
    }
}

#[derive(Debug, Args)]
struct Serve {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Interface to bind. Anything but a loopback address exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// SQLite database file, created with mode 0600 (default: in memory, lost on exit).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Accept only this API key, on every route including the viewer (repeatable; default:
    /// any non-empty key on the SDK routes, viewer open).
    #[arg(long = "api-key", value_name = "KEY", value_parser = non_empty_key)]
    api_keys: Vec<String>,
    /// Organisation name returned by login.
    #[arg(long, default_value = "dev-org")]
    org_name: String,
    /// Advertise and enforce a /logs3 body limit (enables the SDKs' overflow path).
    #[arg(long, value_name = "BYTES")]
    logs3_payload_max_bytes: Option<u64>,
    /// Largest request body accepted on any route.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: u64,
    /// Keep the last N requests in memory for GET /dev/api/requests (off by default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    record_requests: usize,
}

fn non_empty_key(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("the API key must not be empty (an empty key would reject every request)".into())
    } else {
        Ok(v.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => return serve(cli.serve),
        Some(Command::Import { target, file }) => {
            let input: Box<dyn std::io::BufRead> = match &file {
                Some(p) => match std::fs::File::open(p) {
                    Ok(f) => Box::new(BufReader::new(f)),
                    Err(e) => {
                        eprintln!("braintrust-devserver: cannot open {}: {e}", p.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => Box::new(std::io::stdin().lock()),
            };
            import_jsonl(&target.db, &target.target(), input).map(|done| {
                eprintln!("imported {} traces ({} spans)", done.traces, done.spans);
            })
        }
        Some(Command::Export { target, output }) => {
            let out: Box<dyn std::io::Write> = match &output {
                Some(p) => match std::fs::File::create(p) {
                    Ok(f) => Box::new(std::io::BufWriter::new(f)),
                    Err(e) => {
                        eprintln!("braintrust-devserver: cannot create {}: {e}", p.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => Box::new(std::io::stdout().lock()),
            };
            export_jsonl(&target.db, &target.target(), out)
                .map(|n| eprintln!("exported {n} traces"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braintrust-devserver: {e}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(cli: Serve) -> ExitCode {
    let key_hint = cli
        .api_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "dev-key".to_string());
    let config = DevServerConfig::default()
        .port(cli.port)
        .host(cli.host.clone())
        .db_path(cli.db.clone())
        .api_keys(cli.api_keys.clone())
        .org_name(cli.org_name)
        .logs3_payload_max_bytes(cli.logs3_payload_max_bytes)
        .max_body_bytes(cli.max_body_bytes)
        .record_requests(RecordLimits {
            max_requests: cli.record_requests,
            max_body_bytes: 256 << 20,
        });
    let server = match DevServer::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("braintrust-devserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    let addr = server.local_addr();
    println!("braintrust-devserver listening on {addr}");
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: bound to {addr}, which is reachable from other machines{}",
            if cli.api_keys.is_empty() {
                "; without --api-key anyone who can reach it can read and write all data"
            } else {
                ""
            }
        );
    }
    println!("  trace viewer: {url}/");
    match &cli.db {
        Some(p) => println!("  database:     {}", p.display()),
        None => println!("  database:     in-memory (use --db PATH to keep data)"),
    }
    println!();
    println!("Point an SDK at it with:");
    if cli.api_keys.is_empty() {
        println!("  export BRAINTRUST_API_KEY={key_hint}");
    } else {
        println!("  export BRAINTRUST_API_KEY=<one of the --api-key values>");
    }
    println!("  export BRAINTRUST_APP_URL={url}");
    println!("  export BRAINTRUST_API_URL={url}");
    println!();
    println!("Press Ctrl-C to stop.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("braintrust-devserver: cannot listen for Ctrl-C: {e}");
    }
    println!("shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
