//! The `tidings` binary: `tidings serve` runs a node, `tidings token` mints a test token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use figment::Figment;
use figment::value::Value;
use tidings_server::config::{ConfigError, ENV_ALIASES, ENV_PREFIX, Override};
use tidings_server::{Config, Tidings, mint_token};

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Real-time channels over WebSocket, with an HTTP API for back ends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Tidings node.
    Serve(ServeArgs),
    /// Print an HS256 token for a user (for development and tests).
    Token(TokenArgs),
}

/// `serve`'s flags. Each one that is given overrides the same setting from the environment,
/// the file and the defaults (see `overrides`); none restates a default by hand.
#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// TOML configuration file: any field of `tidings_server::Config`.
    #[arg(long, env = "TIDINGS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// HS256 secret that verifies client tokens.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
    /// PEM public key (RSA or EC) that verifies RS256/ES256 client tokens.
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<String>,
    /// Bearer key for the HTTP API (unset: the API answers 401).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Allowed browser origins, comma-separated (unset: any origin).
    #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
    allowed_origins: Option<Vec<String>>,
    /// Directory of the embedded SQLite database.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL (`postgres://...`, for several nodes) or SQLite (`sqlite://...`) URL.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Keep publications in memory only (lost on restart).
    #[arg(long)]
    ephemeral: bool,
    /// Other nodes, for several nodes: `redis://host:6379` or `nats://host:4222` (needs a
    /// PostgreSQL `--database-url`).
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Development mode: make up any missing secrets (kept in the data directory so tokens
    /// survive restarts) and print a ready token and the URLs.
    #[arg(long)]
    dev: bool,
}

impl ServeArgs {
    /// The flags that were given, each as the setting it overrides.
    fn overrides(&self) -> Vec<Override> {
        let path = |p: &PathBuf| Value::from(p.to_string_lossy().into_owned());
        let given: [(&str, &str, Option<Value>); 9] = [
            ("--bind", "bind", self.bind.clone().map(Value::from)),
            (
                "--jwt-secret",
                "jwt.secret",
                self.jwt_secret.clone().map(Value::from),
            ),
            (
                "--jwt-public-key",
                "jwt.public_key_pem_file",
                self.jwt_public_key.clone().map(Value::from),
            ),
            (
                "--api-key",
                "api_key",
                self.api_key.clone().map(Value::from),
            ),
            (
                "--allowed-origins",
                "allowed_origins",
                self.allowed_origins.clone().map(Value::from),
            ),
            (
                "--data-dir",
                "storage.data_dir",
                self.data_dir.as_ref().map(path),
            ),
            (
                "--database-url",
                "storage.database_url",
                self.database_url.clone().map(Value::from),
            ),
            (
                "--ephemeral",
                "storage.ephemeral",
                self.ephemeral.then_some(Value::from(true)),
            ),
            ("--broker", "broker", self.broker.clone().map(Value::from)),
        ];
        given
            .into_iter()
            .filter_map(|(flag, key, value)| value.map(|v| Override::new(flag, key, v)))
            .collect()
    }
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// The HS256 secret (the same as the server's).
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    secret: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => mint_token(&args.secret, &args.sub, args.ttl)
            .map(|token| println!("{token}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tidings: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Flags beat `TIDINGS_*` variables, which beat the file, which beats the defaults
/// (`Config::figment` holds the middle layers).
fn load_config(args: &ServeArgs) -> Result<Config, String> {
    for variable in tidings_server::config::ignored_env_vars() {
        tracing::warn!(%variable, "environment variable ignored: it names no setting");
    }
    let figment = args
        .overrides()
        .into_iter()
        .fold(Config::figment(args.config.as_deref()), Figment::merge);
    let config = Config::from_figment(&figment).map_err(invalid)?;
    config.validate().map_err(invalid)?;
    Ok(config)
}

fn invalid(error: ConfigError) -> String {
    format!("invalid configuration: {error}")
}

/// The command line, with defaults shown from `Config::default()` and the environment
/// described from the list of variables the library reads.
fn command() -> clap::Command {
    let defaults = Config::default();
    let data_dir = defaults.storage.data_dir.display().to_string();
    Cli::command().mut_subcommand("serve", |serve| {
        serve
            .mut_arg("bind", |arg| with_default(arg, &defaults.bind))
            .mut_arg("data_dir", |arg| with_default(arg, &data_dir))
            .after_help(environment_help())
    })
}

fn with_default(arg: clap::Arg, default: &str) -> clap::Arg {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    arg.help(format!("{help} [default: {default}]"))
}

fn environment_help() -> String {
    let aliases: Vec<String> = ENV_ALIASES
        .iter()
        .map(|alias| format!("  {} = {}", alias.variable, alias.key))
        .collect();
    format!(
        "Settings, weakest first: defaults, the TOML file (--config), environment, flags.\n\
         Any setting can be set as {ENV_PREFIX}<KEY>, with __ between nested keys, e.g.\n  \
         {ENV_PREFIX}HEARTBEAT=25s  {ENV_PREFIX}LIMITS__MAX_FRAME_BYTES=131072\n\
         Also read:\n{}",
        aliases.join("\n")
    )
}

/// Secrets made up by `--dev`, kept so that tokens stay valid across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    api_key: String,
}

fn dev_secrets(data_dir: &std::path::Path) -> Result<DevSecrets, String> {
    let path = data_dir.join("dev-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(secrets) = serde_json::from_str(&text)
    {
        return Ok(secrets);
    }
    let secrets = DevSecrets {
        jwt_secret: format!("{:032x}", rand::random::<u128>()),
        api_key: format!("{:032x}", rand::random::<u128>()),
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let text = serde_json::to_string_pretty(&secrets).map_err(|e| e.to_string())?;
    write_private(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secrets)
}

/// Writes a file only its owner may read (mode 0600 on Unix): it holds secrets.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = load_config(&args)?;
    if args.dev
        && (config.jwt.secret.is_none() && config.jwt.public_key_pem_file.is_none()
            || config.api_key.is_none())
    {
        let secrets = dev_secrets(&config.storage.data_dir)?;
        config.jwt.secret.get_or_insert(secrets.jwt_secret);
        config.api_key.get_or_insert(secrets.api_key);
    }
    if config.jwt.secret.is_none() && config.jwt.public_key_pem_file.is_none() {
        return Err(
            "no JWT key: set TIDINGS_JWT_SECRET (or --jwt-public-key), or run with --dev"
                .to_owned(),
        );
    }
    let addr: SocketAddr = config
        .bind
        .parse()
        .map_err(|e| format!("invalid bind address {}: {e}", config.bind))?;
    let store = tidings_server::store::open(&config)
        .await
        .map_err(|e| format!("cannot open the publication store: {e}"))?;
    let storage = if config.storage.ephemeral {
        "memory (--ephemeral)".to_owned()
    } else if config.storage.database_url.is_some() {
        "database URL".to_owned()
    } else {
        format!("SQLite in {}", config.storage.data_dir.display())
    };
    tracing::info!(%storage, "publication store open");
    if let Some(url) = &config.broker {
        tracing::info!(url, "broker");
    }
    // The builder opens the broker `config.broker` names.
    let tidings = Tidings::builder()
        .config(config)
        .store(store)
        .build()
        .map_err(|e| e.to_string())?;
    let listener =
        tidings_server::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if args.dev {
        print_dev_banner(&tidings, local);
    }
    tracing::info!(%local, "tidings listening");
    tidings_server::serve(listener, tidings)
        .await
        .map_err(|e| e.to_string())
}

fn print_dev_banner(tidings: &Tidings, addr: SocketAddr) {
    let config = tidings.config();
    let secret = config.jwt.secret.clone().unwrap_or_default();
    let token = mint_token(&secret, "dev", 24 * 3600).unwrap_or_default();
    let api_key = config.api_key.clone().unwrap_or_default();
    println!(
        "\nTidings dev server on http://{addr}\n\n  \
         WebSocket (user \"dev\", valid 24 h):\n    ws://{addr}/ws?token={token}\n\n  \
         Try it:\n    python3 -m websockets 'ws://{addr}/ws?token={token}'\n    \
         then type {{\"type\":\"subscribe\",\"id\":1,\"data\":{{\"channel\":\"lobby\"}}}}\n\n  \
         HTTP API key: {api_key}\n    \
         curl -H 'Authorization: Bearer {api_key}' -H 'content-type: application/json' \\\n      \
         -d '{{\"channel\":\"lobby\",\"event\":{{\"type\":\"notification\",\"data\":{{\"message\":\"hi\"}}}}}}' \\\n      \
         http://{addr}/api/publish\n\n  \
         More tokens: TIDINGS_JWT_SECRET={secret} tidings token --sub alice\n  \
         (secrets are kept in {secrets_file})\n",
        secrets_file = config.storage.data_dir.join("dev-secrets.json").display()
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_command_line_is_well_formed_and_shows_the_defaults() {
        command().debug_assert();
        let mut serve = command().find_subcommand("serve").cloned().unwrap();
        let help = serve.render_help().to_string();
        assert!(help.contains("[default: 127.0.0.1:8000]"), "{help}");
        assert!(help.contains("TIDINGS_JWT_SECRET = jwt.secret"), "{help}");
    }

    #[test]
    fn only_given_flags_override() {
        let matches = command()
            .try_get_matches_from(["tidings", "serve", "--bind", "0.0.0.0:9", "--ephemeral"])
            .unwrap();
        let Command::Serve(args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not serve");
        };
        let figment = args
            .overrides()
            .into_iter()
            .fold(Figment::new(), Figment::merge);
        let config = Config::from_figment(&figment).unwrap();
        assert_eq!(config.bind, "0.0.0.0:9");
        assert!(config.storage.ephemeral);
        assert_eq!(config.storage.data_dir, Config::default().storage.data_dir);
        assert_eq!(args.overrides().len(), 2);
    }
}
