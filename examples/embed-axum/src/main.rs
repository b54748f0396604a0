//! The embed-axum example: `cargo run -p example-embed-axum` (see README.md).

use tidings_server::{Tidings, mint_token};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real app takes the secret from its configuration and mints tokens at login.
    let secret = std::env::var("TIDINGS_JWT_SECRET")
        .unwrap_or_else(|_| format!("{:032x}", rand::random::<u128>()));
    let tidings = Tidings::builder().jwt_secret(&secret).build()?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tidings_server::listen(bind.parse()?)?;
    let addr = listener.local_addr()?;
    let token = mint_token(&secret, "alice", 3600)?;
    println!("The shop on http://{addr}\n");
    println!("Listen as alice:  python3 -m websockets 'ws://{addr}/realtime/ws?token={token}'");
    println!("Ship her order:   curl -X POST http://{addr}/orders/1/ship\n");

    let app = example_embed_axum::app(tidings.clone(), example_embed_axum::demo_orders());
    tidings_server::serve(listener, tidings)
        .with_router(app)
        .await?;
    Ok(())
}
