//! The benchmark's baseline: an HTTP server that reads the whole body and answers 200, with
//! the same runtime and HTTP stack as ccrelay and nothing else. `scripts/bench-ingest.sh`
//! loads it and ccrelay one after the other and prints the ratio.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .expect("bind the baseline's address");
    let app = Router::new().route(
        "/ingest/{source}",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    axum::serve(listener, app).await.expect("serve");
}
