//! The custom-authorizer example: `cargo run -p example-custom-authorizer` (see README.md).

use example_custom_authorizer::{Tickets, app};
use tidings_server::mint_token;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real app takes the secret from its configuration and mints tokens at login.
    let secret = std::env::var("TIDINGS_JWT_SECRET")
        .unwrap_or_else(|_| format!("{:032x}", rand::random::<u128>()));
    let (tidings, router) = app(&secret, Tickets::demo())?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3001".to_owned());
    let listener = tidings_server::listen(bind.parse()?)?;
    let addr = listener.local_addr()?;
    println!("Support desk on ws://{addr}: ticket 107 is alice's and bob's, 108 is carol's.\n");
    for user in ["alice", "carol"] {
        let token = mint_token(&secret, user, 3600)?;
        println!("As {user}:  python3 -m websockets 'ws://{addr}/ws/chat/107?token={token}'");
    }
    println!();
    tidings_server::serve(listener, tidings)
        .with_router(router)
        .await?;
    Ok(())
}
