//! The ping bot: `cargo run -p example-native-client -- --token <jwt>` (see README.md).

use clap::Parser;
use tidings_client::Client;

/// A bot that answers "ping" with "pong" in a channel.
#[derive(Parser)]
struct Args {
    /// The node's WebSocket endpoint.
    #[arg(long, env = "TIDINGS_URL", default_value = "ws://127.0.0.1:8000/ws")]
    url: String,
    /// The bot's token, e.g. from `tidings token --sub bot`.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    token: String,
    /// The channel to answer in.
    #[arg(long, default_value = "lobby")]
    channel: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // `start` rather than `connect`: the state handler then shows the attempts while a
    // server is down, where `connect` would wait silently.
    let client = Client::builder(args.url).token(args.token).start();
    client.on_state(|change| eprintln!("{change:?}"));
    example_native_client::run(&client, &args.channel).await?;
    eprintln!("answering pings in {} (ctrl-c to stop)", args.channel);
    tokio::signal::ctrl_c().await?;
    client.close().await;
    Ok(())
}
