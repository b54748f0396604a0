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
    // `build`, handlers, then `start` rather than `connect`: the state handler shows every
    // attempt, including the first, while a server is down.
    let client = Client::builder(args.url).token(args.token).build();
    client.on_state(|change| eprintln!("{change:?}"));
    client.start();
    example_native_client::run(&client, &args.channel).await?;
    eprintln!("answering pings in {} (ctrl-c to stop)", args.channel);
    tokio::signal::ctrl_c().await?;
    client.close().await;
    Ok(())
}
