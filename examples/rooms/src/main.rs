//! The rooms example: `cargo run -p example-rooms` (see README.md).

use tidings_server::mint_token;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    // A real app takes the secret from its configuration and mints tokens at login.
    let secret = std::env::var("TIDINGS_JWT_SECRET")
        .unwrap_or_else(|_| format!("{:032x}", rand::random::<u128>()));
    let (tidings, router) = example_rooms::app(&secret)?;
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());
    let listener = tidings_server::listen(bind.parse()?)?;
    let addr = listener.local_addr()?;
    println!("Rooms on http://{addr}\n");
    for user in ["alice", "bob"] {
        let token = mint_token(&secret, user, 3600)?;
        println!("As {user}:  python3 -m websockets 'ws://{addr}/api/v1/ws?token={token}'");
    }
    let json = "-H 'content-type: application/json'";
    println!(
        r#"
Join a room:    {{"type":"subscribe","id":1,"data":{{"channel":"room:project_123"}}}}
Say something:  {{"type":"publish","id":2,"data":{{"channel":"room:project_123","event":{{"type":"room_message","data":{{"message":"Hello"}}}}}}}}
Leave it:       {{"type":"unsubscribe","id":3,"data":{{"channel":"room:project_123"}}}}

Upload (a job notifies alice and the room):  curl {json} -d '{{"user_id":"alice","filename":"data.csv"}}' http://{addr}/api/v1/projects/123/upload
Announce to everyone:  curl {json} -d '{{"message":"System maintenance in 5 minutes","level":"warning"}}' http://{addr}/api/v1/announcements
Who is connected:      curl http://{addr}/api/v1/ws/users   (and /api/v1/ws/users/alice, /api/v1/ws/rooms/project_123/members)
"#
    );
    tidings_server::serve(listener, tidings)
        .with_router(router)
        .await?;
    Ok(())
}
