//! Authentication, protocol versions and origins at connect time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use tidings_server::{Claims, auth::mint_claims};

#[tokio::test]
async fn missing_token_closes_4001_with_a_reason() {
    let server = start().await;
    let mut client = Client::open(&format!("ws://{}/ws", server.addr)).await;
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 4001);
    assert!(closed.reason.contains("missing token"), "{closed:?}");
}

#[tokio::test]
async fn invalid_and_forged_tokens_close_4001() {
    let server = start().await;
    let mut garbage = Client::open(&format!("ws://{}/ws?token=not-a-jwt", server.addr)).await;
    let closed = garbage.expect_close().await;
    assert_eq!(closed.code, 4001);
    assert!(closed.reason.starts_with("invalid token"), "{closed:?}");

    let forged = tidings_server::mint_token("another-secret", "7", 60).unwrap();
    let mut client = Client::open(&format!("ws://{}/ws?token={forged}", server.addr)).await;
    assert_eq!(client.expect_close().await.code, 4001);
}

#[tokio::test]
async fn expired_token_closes_4001_token_expired() {
    let server = start().await;
    let claims = Claims {
        sub: "7".into(),
        exp: now() - 5,
        channels: None,
        extra: Default::default(),
    };
    let token = mint_claims(SECRET, &claims).unwrap();
    let mut client = Client::open(&format!("ws://{}/ws?token={token}", server.addr)).await;
    assert_eq!(
        client.expect_close().await,
        Closed {
            code: 4001,
            reason: "token expired".into()
        }
    );
}

#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let server = start().await;
    let claims = Claims {
        sub: "7".into(),
        exp: now() + 2,
        channels: None,
        extra: Default::default(),
    };
    let token = mint_claims(SECRET, &claims).unwrap();
    let mut client = Client::open(&format!("ws://{}/ws?token={token}", server.addr)).await;
    assert_eq!(client.recv().await.kind(), "connected");
    client.ping_ok().await;
    let closed = client.expect_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 4001,
            reason: "token expired".into()
        }
    );
}

#[tokio::test]
async fn token_from_authorization_header_and_from_subprotocol() {
    let server = start().await;
    let url = format!("ws://{}/ws", server.addr);
    let mut by_header =
        Client::open_with(&url, &[("authorization", format!("Bearer {}", token("a")))])
            .await
            .unwrap();
    let connected = as_json(&by_header.recv().await);
    assert_eq!(connected["data"]["user_id"], "a");

    let protocols = format!("tidings.v1, tidings.token.{}", token("b"));
    let mut by_protocol = Client::open_with(&url, &[("sec-websocket-protocol", protocols)])
        .await
        .unwrap();
    let connected = as_json(&by_protocol.recv().await);
    assert_eq!(connected["data"]["user_id"], "b");
    assert_eq!(connected["data"]["protocol"], 1);
}

#[tokio::test]
async fn unknown_protocol_version_is_refused_with_a_reason() {
    let server = start().await;
    let mut client = Client::open_with(
        &server.url("7"),
        &[("sec-websocket-protocol", "tidings.v2".into())],
    )
    .await
    .unwrap();
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 4426);
    assert!(closed.reason.contains("speaks v1"), "{closed:?}");

    let mut by_query = Client::open(&format!("{}&protocol=3", server.url("7"))).await;
    assert_eq!(by_query.expect_close().await.code, 4426);

    // v1 by query is fine.
    let mut ok = Client::open(&format!("{}&protocol=1", server.url("7"))).await;
    assert_eq!(ok.recv().await.kind(), "connected");
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let mut config = config();
    config.allowed_origins = vec!["https://app.example.com".into()];
    let server = start_config(config).await;
    let refused = Client::open_with(
        &server.url("7"),
        &[("origin", "https://evil.example.com".into())],
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected HTTP 403, got {:?}", other.map(|_| ())),
    }
    let mut allowed = Client::open_with(
        &server.url("7"),
        &[("origin", "https://app.example.com".into())],
    )
    .await
    .unwrap();
    assert_eq!(allowed.recv().await.kind(), "connected");
}

#[tokio::test]
async fn per_user_connection_limit_closes_4010() {
    let mut config = config();
    config.limits.max_connections_per_user = 2;
    let server = start_config(config).await;
    let _a = server.connect("7").await;
    let _b = server.connect("7").await;
    let mut third = Client::open(&server.url("7")).await;
    assert_eq!(third.expect_close().await.code, 4010);
    // Another user is unaffected.
    let _other = server.connect("8").await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_pem_public_keys() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let claims = Claims {
        sub: "pem-user".into(),
        exp: now() + 60,
        channels: None,
        extra: Default::default(),
    };
    for (algorithm, private, public) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
    ] {
        let mut config = tidings_server::Config::default();
        config.jwt.public_key_pem_file = Some(format!("{keys}/{public}"));
        let server = start_config(config).await;
        let pem = std::fs::read(format!("{keys}/{private}")).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = encode(&Header::new(algorithm), &claims, &key).unwrap();
        let mut client = Client::open(&format!("ws://{}/ws?token={token}", server.addr)).await;
        assert_eq!(
            as_json(&client.recv().await)["data"]["user_id"],
            "pem-user",
            "{algorithm:?}"
        );
        // An HS256 token signed with some secret is refused by a PEM-configured server.
        let hs = tidings_server::mint_token("whatever", "x", 60).unwrap();
        let mut refused = Client::open(&format!("ws://{}/ws?token={hs}", server.addr)).await;
        assert_eq!(refused.expect_close().await.code, 4001);
    }
}
