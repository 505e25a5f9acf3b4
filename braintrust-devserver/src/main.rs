//! `braintrust-devserver`: run a local Braintrust-compatible server.

use std::path::PathBuf;
use std::process::ExitCode;

use braintrust_devserver::{DevServer, DevServerConfig};

const USAGE: &str = "\
Usage: braintrust-devserver [OPTIONS]

A local Braintrust-compatible server (SQLite storage, web trace viewer).

Options:
  --port N                      port to listen on (default 8000; 0 = any free port)
  --host ADDR                   interface to bind (default 127.0.0.1)
  --db PATH                     SQLite database file (default: in-memory, lost on exit)
  --api-key KEY                 accept only this API key (repeatable; default: any non-empty key)
  --org-name NAME               organisation name returned by login (default dev-org)
  --logs3-payload-max-bytes N   advertise and enforce a /logs3 body limit (enables overflow)
  -h, --help                    show this help
  -V, --version                 show the version
";

struct Args {
    config: DevServerConfig,
    db: Option<PathBuf>,
    api_keys: Vec<String>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut config = DevServerConfig::default().port(8000);
    let mut db = None;
    let mut api_keys = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("braintrust-devserver {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--port" => {
                let v = value("--port")?;
                let port = v.parse().map_err(|_| format!("invalid port: {v}"))?;
                config = config.port(port);
            }
            "--host" => config = config.host(value("--host")?),
            "--db" => db = Some(PathBuf::from(value("--db")?)),
            "--api-key" => api_keys.push(value("--api-key")?),
            "--org-name" => config = config.org_name(value("--org-name")?),
            "--logs3-payload-max-bytes" => {
                let v = value("--logs3-payload-max-bytes")?;
                let n = v.parse().map_err(|_| format!("invalid byte count: {v}"))?;
                config = config.logs3_payload_max_bytes(Some(n));
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Some(Args {
        config,
        db,
        api_keys,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braintrust-devserver: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let key_hint = args
        .api_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "dev-key".to_string());
    let config = args.config.db_path(args.db.clone()).api_keys(args.api_keys);
    let server = match DevServer::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("braintrust-devserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = server.url();
    println!("braintrust-devserver listening on {url}");
    println!("  trace viewer: {url}/");
    match &args.db {
        Some(p) => println!("  database:     {}", p.display()),
        None => println!("  database:     in-memory (use --db PATH to keep data)"),
    }
    println!();
    println!("Point an SDK at it with:");
    println!("  export BRAINTRUST_API_KEY={key_hint}");
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
